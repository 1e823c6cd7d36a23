"""Transfer sets (`tasks[].transfer_split`): inputs without labels that the teachers label for the student.

No transfer input is one the run trains on, holds out or reports; labels are removed; the soft targets cover the
transfer rows; the student trains on them and the teachers and the control never see them; objectives that cannot
take unlabelled rows are refused; a mixture's hard part ignores them.
"""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import GLUE_SAMPLE, pipeline_recipe, requires_minilm, run_cli
from safetensors import safe_open

from mtkd.data.transfer import UNLABELLED_CLASS, build_transfer, labelled, with_transfer
from mtkd.errors import DataError, RecipeError
from mtkd.recipe import load_recipe


def _split(texts, labels=None, pair=False):
    rows = []
    for i, t in enumerate(texts):
        row = {"idx": i, "text_a": t, "label": (labels[i] if labels else 0)}
        if pair:
            row["text_b"] = "b"
        rows.append(row)
    return datasets.Dataset.from_list(rows)


def _texts(ds) -> set:
    return {(r["text_a"], r.get("text_b")) for r in ds}


# ---------------------------------------------------------------- the set itself


def test_labels_are_removed_and_inputs_held_elsewhere_are_dropped():
    pool = _split([f"s{i}" for i in range(20)], labels=[i % 2 for i in range(20)])
    train, holdout, dev = _split(["s0", "s1"]), _split(["s2"]), _split(["s3", "s4", "unrelated"])
    t = build_transfer(pool, split="unlabelled", task_type="classification", exclude=[train, holdout, None, dev],
                       max_examples=None, seed=0)
    assert t.read == 20 and t.overlap == 5 and len(t.rows) == 15
    assert not _texts(t.rows) & (_texts(train) | _texts(holdout) | _texts(dev))
    assert set(t.rows["label"]) == {UNLABELLED_CLASS}
    assert t.describe() == {"split": "unlabelled", "rows": 15, "read": 20, "dropped_overlap": 5,
                            "fingerprint": t.fingerprint}
    # a fixed-seed subsample, after the overlap is dropped
    small = build_transfer(pool, split="unlabelled", task_type="classification", exclude=[train], max_examples=4,
                           seed=0)
    again = build_transfer(pool, split="unlabelled", task_type="classification", exclude=[train], max_examples=4,
                           seed=0)
    assert len(small.rows) == 4 and small.fingerprint == again.fingerprint
    assert not _texts(small.rows) & _texts(train)
    # regression rows get NaN, which `labelled` masks out
    reg = build_transfer(_split(["a", "b"], labels=[1.5, 2.0]), split="test", task_type="regression", exclude=[],
                         max_examples=None, seed=0)
    assert all(np.isnan(reg.rows["label"]))
    assert not labelled(np.asarray(reg.rows["label"])).any()


def test_the_students_rows_are_the_training_rows_then_the_transfer_rows():
    train = datasets.Dataset.from_list([{"idx": 0, "text_a": "x", "label": 1}]).cast_column(
        "label", datasets.ClassLabel(names=["neg", "pos"]))
    t = build_transfer(_split(["y", "z"]), split="u", task_type="classification", exclude=[], max_examples=None,
                       seed=0)
    both = with_transfer(train, t.rows)
    assert both["text_a"] == ["x", "y", "z"] and both["label"] == [1, -1, -1]
    assert both.features == train.features


def test_labelled_masks():
    assert labelled(torch.tensor([0, -1, 2])).tolist() == [True, False, True]
    assert labelled(torch.tensor([0.5, float("nan")])).tolist() == [True, False]
    assert labelled(np.array([1, -1])).tolist() == [True, False]


# ---------------------------------------------------------------- objectives


def test_a_mixture_learns_unlabelled_rows_from_the_soft_part_only(registries):
    mixture = registries.losses.create("mixture", {"alpha": 0.25})
    assert mixture.handles_unlabelled
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    soft = torch.softmax(torch.randn(4, 3), dim=-1)
    labels = torch.tensor([2, -1, 0, -1])
    loss = mixture(logits, labels, soft)
    soft_part = -(soft * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    # by hand, per row: 0.25 * soft + 0.75 * ce on the two labelled rows, 0.25 * soft on the others; the mean
    rows = -(soft * F.log_softmax(logits, dim=-1)).sum(-1) * 0.25
    rows[[0, 2]] += 0.75 * F.cross_entropy(logits[[0, 2]], labels[[0, 2]], reduction="none")
    assert torch.allclose(loss, rows.mean())
    # a batch with no label at all: the soft part alone, and every row still gets a gradient
    none = torch.tensor([-1, -1, -1, -1])
    only_soft = mixture(logits, none, soft)
    assert torch.allclose(only_soft, 0.25 * soft_part)
    only_soft.backward()
    assert logits.grad.abs().sum(-1).gt(0).all()
    # regression: NaN labels are skipped by the hard mse
    reg = registries.losses.create("mixture", {"hard": "mse", "soft": "mse-soft", "alpha": 0.5})
    pred, gold, target = torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, float("nan")]), torch.tensor([[1.0], [1.0]])
    assert torch.allclose(reg(pred, gold, target), 0.5 * torch.tensor(0.5) + 0.5 * torch.tensor(1.0) / 2)
    # hard-label losses do not claim to handle them; soft-only losses do
    assert not getattr(registries.losses.create("ce", {}), "handles_unlabelled", False)
    assert registries.losses.create("kl", {}).handles_unlabelled


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize(("changes", "path"), [
    ({"student": None}, "tasks[1].transfer_split"),
    ({"teachers": None}, "tasks[1].transfer_split"),
    ({"teachers": {"members": [{"seed": 1}], "tasks": ["rte"]}}, "tasks[1].transfer_split"),
])
def test_a_transfer_split_without_teachers_and_student_is_refused(tmp_path, changes, path):
    recipe = pipeline_recipe(tmp_path, **changes)
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe, ["tasks[1].transfer_split=test"])
    assert exc.value.path == path and exc.value.found == "test"
    with pytest.raises(RecipeError) as exc:
        load_recipe(pipeline_recipe(tmp_path), ["tasks[0].max_transfer_examples=5"])
    assert exc.value.path == "tasks[0].max_transfer_examples"


def test_a_dev_split_is_never_a_transfer_set(tmp_path):
    from mtkd.stages.context import load_tasks

    recipe = load_recipe(pipeline_recipe(tmp_path), ["tasks[1].transfer_split=validation"])
    with pytest.raises(RecipeError) as exc:
        load_tasks(recipe)
    assert exc.value.path == "tasks[1].transfer_split" and exc.value.found == "validation"


def test_a_student_objective_that_cannot_take_unlabelled_rows_is_refused(tmp_path):
    from mtkd.progress import NullProgress
    from mtkd.stages.context import RunContext, check_before_training, load_tasks
    from mtkd.stages.store import RunStore

    recipe = load_recipe(pipeline_recipe(tmp_path, student={"seeds": [1], "objective": {
        "classification": {"type": "ce"}, "regression": {"type": "mse"}}}), ["tasks[1].transfer_split=train"])
    ctx = RunContext(recipe, RunStore(tmp_path / "unused"), load_tasks(recipe), NullProgress())
    with pytest.raises(RecipeError) as exc:
        check_before_training(ctx)
    assert exc.value.path == "student.objective.classification.type" and exc.value.found == "ce"


def test_the_glue_unlabelled_split(tmp_path, registries):
    from mtkd.components import TaskContext

    glue = tmp_path / "glue"
    shutil.copytree(GLUE_SAMPLE, glue)
    (glue / "RTE" / "unlabelled.tsv").write_text("index\tsentence1\tsentence2\n0\ta premise\ta hypothesis\n"
                                                 "1\tanother premise\tanother one\n", encoding="utf-8")
    task = registries.tasks.create("rte", {}, TaskContext(name="rte", sources={"glue": str(glue)}))
    ds = task.load_split("unlabelled")
    assert ds["text_a"] == ["a premise", "another premise"] and ds["text_b"][0] == "a hypothesis"
    assert set(ds["label"]) == {-1} and "unlabelled" in task.available_splits()
    sst2 = registries.tasks.create("sst2", {}, TaskContext(name="sst2", sources={"glue": str(glue)}))
    with pytest.raises(DataError, match="unlabelled"):
        sst2.load_split("unlabelled")  # no such file
    hub = registries.tasks.create("sst2", {"source": "nyu-mll/glue"}, TaskContext(name="sst2"))
    with pytest.raises(DataError) as exc:
        hub.load_split("unlabelled")
    assert "local data folder" in exc.value.expected


# ---------------------------------------------------------------- a whole run


@requires_minilm
def test_a_run_with_transfer_sets_leaks_nothing_and_trains_the_student_on_them(tmp_path):
    from mtkd.stages.context import TRANSFER, load_tasks

    glue = tmp_path / "glue"
    shutil.copytree(GLUE_SAMPLE, glue)
    dev = (glue / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:4]  # index, s1, s2, label
    lines = ["index\tsentence1\tsentence2"] + [f"{i}\t{line.split(chr(9))[1]}\t{line.split(chr(9))[2]}"
                                               for i, line in enumerate(dev)]
    lines += [f"{3 + i}\tnew premise {i}\tnew hypothesis {i}" for i in range(9)]
    (glue / "RTE" / "unlabelled.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe_path = pipeline_recipe(
        tmp_path, data={"glue": str(glue), "max_length": 32, "cache_dir": str(tmp_path / "cache")},
        tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 16, "transfer_split": "unlabelled"},
               {"name": "sst2", "max_train_examples": 24, "max_eval_examples": 16, "transfer_split": "train",
                "max_transfer_examples": 10}],
        student={"seeds": [1], "control": True}, teachers={"members": [{"seed": 1}]})
    result = run_cli("recipe", "run", recipe_path, "--quiet", "--set", "evaluation.selection=holdout:0.2")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    recipe = load_recipe(recipe_path, ["evaluation.selection=holdout:0.2"])
    tasks = load_tasks(recipe)
    rte, sst2 = tasks["rte"], tasks["sst2"]
    assert rte.transfer_info["dropped_overlap"] == 3 and len(rte.transfer) == 9  # the dev copies never get in
    assert len(sst2.transfer) == 10
    for tb in tasks.values():
        held = _texts(tb.train) | _texts(tb.holdout) | set().union(*(_texts(tb.task.load_split(s))
                                                                    for s in tb.task.eval_splits))
        assert not _texts(tb.transfer) & held
        assert set(tb.transfer["label"]) == {-1}
    # the teachers' outputs on the transfer rows, aggregated, cover exactly those rows
    (soft_dir,) = [p for p in (run_dir / "soft_targets").iterdir() if p.is_dir()]
    assert {p.name for p in soft_dir.glob("*.safetensors")} == {
        "rte.safetensors", "rte.transfer.safetensors", "sst2.safetensors", "sst2.transfer.safetensors"}
    for name, tb in tasks.items():
        with safe_open(str(soft_dir / f"{name}.{TRANSFER}.safetensors"), "np") as fh:
            assert fh.metadata()["fingerprint"] == tb.transfer_info["fingerprint"]
            assert fh.get_tensor("targets").shape == (len(tb.transfer), 2)
    # the student trained on its rows and the transfer rows; the teacher and the control on the rows alone
    rows = {"rte": len(rte.train) + len(rte.transfer), "sst2": len(sst2.train) + len(sst2.transfer)}
    plain = {"rte": len(rte.train), "sst2": len(sst2.train)}

    def trained_rows(stage):
        (job,) = [p for p in (run_dir / stage).iterdir() if p.is_dir()]
        return json.loads((job / "result.json").read_text())["train_rows"]

    assert trained_rows("students") == rows
    assert trained_rows("controls") == plain and trained_rows("teachers") == plain
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["transfer"]["rte"]["rows"] == 9 and metrics["transfer"]["sst2"]["split"] == "train"
    report = (run_dir / "report.md").read_text()
    assert "19 unlabelled inputs" in report and "## Transfer sets" in report
    assert "19 unlabelled inputs" in metrics["comparison"]["sentence"]
