"""The stage graph and the run store: what each recipe field invalidates, cascades, verified markers,
portable run folders, the run lock, typed variations, one temperature, recipe versions and models by role."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import glue_sample_with_test, mtkd_env, pipeline_recipe, requires_minilm, run_cli

from mtkd.errors import RecipeError

# ---------------------------------------------------------------- typed variations, duplicates, temperature


def write(tmp_path: Path, **changes) -> Path:
    return pipeline_recipe(tmp_path, **changes)


def test_a_member_override_is_coerced_by_the_base_models(tmp_path):
    from mtkd.recipe import load_recipe, variation_config

    path = write(tmp_path, teachers={"members": [{"seed": 1}, {"seed": 2, "training": {"lr": "3e-5"}}]})
    recipe = load_recipe(path)
    lr = variation_config(recipe, 1)["training"]["lr"]
    assert lr == 3e-5 and isinstance(lr, float)
    assert recipe.resolved["teachers"]["members"][1]["training"] == {"lr": 3e-5}

    bad = write(tmp_path, teachers={"members": [{"seed": 1}, {"seed": 2, "training": {"lr": "fast"}}]})
    with pytest.raises(RecipeError) as exc:
        load_recipe(bad)
    assert exc.value.path == "teachers.members[1].training.lr"


def test_a_head_that_changes_type_takes_the_new_types_defaults(tmp_path):
    from mtkd.recipe import load_recipe, variation_config

    path = write(tmp_path, heads={"default": {"type": "linear", "dropout": 0.3}},
                 teachers={"members": [{"seed": 1}, {"seed": 2, "heads": {"rte": {"type": "san"}}}]})
    head = variation_config(load_recipe(path), 1)["heads"]["rte"]
    assert head["type"] == "san" and head["steps"] == 5
    assert head["dropout"] == 0.1  # SAN's default, not the base linear head's 0.3


@pytest.mark.parametrize("teachers, student, where", [
    ({"members": [{"name": "a", "seed": 1}, {"name": "a", "seed": 2}]}, None, "teachers.members[1].name"),
    ({"members": [{"seed": 1}, {"seed": 1}]}, None, "teachers.members[1]"),
    (None, {"seeds": [1, 2, 1]}, "student.seeds[2]"),
])
def test_duplicate_members_and_seeds_are_errors(tmp_path, teachers, student, where):
    from mtkd.recipe import load_recipe

    changes = {}
    if teachers:
        changes["teachers"] = teachers
    if student:
        changes["student"] = student
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(tmp_path, **changes))
    assert exc.value.path == where


def test_the_readmes_temperature_mismatch_is_refused(tmp_path):
    """mean-probs at T = 1 with kl at T = 2: the student would learn logits twice the teacher's."""
    from mtkd.recipe import load_recipe

    objective = {"classification": {"type": "mixture", "alpha": 0.5, "hard": {"type": "ce"},
                                    "soft": {"type": "kl", "temperature": 2}},
                 "regression": {"type": "mixture", "hard": {"type": "mse"}, "soft": {"type": "mse-soft"}}}
    path = write(tmp_path, teachers={"members": [{"seed": 1}], "aggregation": {"type": "mean-probs"}},
                 student={"objective": objective})
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert exc.value.path == "student.objective.classification.soft.temperature"
    assert exc.value.found == 2 and "1.0" in exc.value.expected
    # one temperature for both: valid
    load_recipe(path, ["teachers.aggregation.temperature=2"])
    # the student's soft-ce at its default T = 1 against teachers softened at T = 3: refused too
    with pytest.raises(RecipeError):
        load_recipe(write(tmp_path, teachers={"members": [{"seed": 1}],
                                              "aggregation": {"type": "mean-probs", "temperature": 3}}))


# ---------------------------------------------------------------- what each recipe field invalidates

#: (--set, stages whose units get new keys, directly or through what they consume). The report is per recipe
#: version: every change makes a new one.
FIELD_EFFECTS = [
    ("training.num_threads=2", set()),
    ("training.log_every=7", set()),
    ("training.save_every=3", set()),
    ("training.eval_batch_size=8", set()),
    ("data.cache_dir=/tmp/elsewhere", set()),
    ("logging.quiet=true", set()),
    ("logging.group=g", set()),
    ("scaling.nproc=1", set()),
    ("description=another", set()),
    ("output_dir=/tmp/other-runs", set()),
    ("evaluation.serving_examples=4", {"evaluate"}),
    ("training.lr=1e-4", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("data.max_length=48", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("tasks[0].max_train_examples=20", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("encoder.dropout=0.2", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("heads.default.dropout=0.2", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("seed=7", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("objective.classification.label_smoothing=0.1",
     {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("teachers.members[0].training.lr=1e-4", {"teachers", "logits", "soft-targets", "student", "evaluate"}),
    ("teachers.members[1].training.precision=bf16", {"teachers", "logits", "soft-targets", "student", "evaluate"}),
    ("teachers.aggregation={type: mean-logits}", {"soft-targets", "student", "evaluate"}),
    ("teachers.min_dev_score=0", {"soft-targets", "student", "evaluate"}),
    ("teachers.tasks=[rte]", {"logits", "soft-targets", "student", "evaluate"}),
    # a transfer set is labelled by the teachers for the student alone: teachers and the control are reused
    ("tasks[1].transfer_split=train", {"logits", "soft-targets", "student", "evaluate"}),
    ("student.objective.classification.alpha=0.8", {"student", "evaluate"}),
    ("student.training.lr=1e-4", {"student", "control", "evaluate"}),
    ("student.encoder.num_layers=1", {"student", "control", "evaluate"}),
    ("student.init_from_teacher=0", {"student", "control", "evaluate"}),
    ("teachers.members[0].name=renamed", {"evaluate"}),
    # a headline without a task also chooses checkpoints without it (training.best_tasks): every job changes
    ("evaluation.exclude_from_score=[sst2]", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    ("evaluation.score_tasks=[rte]", {"teachers", "logits", "soft-targets", "student", "control", "evaluate"}),
    # a variant is keyed by what it trains: one identical to the plain student reuses its units
    ("student.variants=[{name: same}]", {"evaluate"}),
    ("student.variants=[{name: l1, encoder: {num_layers: 1}}]", {"student", "control", "evaluate"}),
    ("student.variants=[{name: a}, {name: b, objective: {classification: {alpha: 0.8}}}]", {"student", "evaluate"}),
]


def _keys(recipe_path: Path, overrides=()) -> dict[str, set]:
    """Every unit's key, per stage; each unit's output digest stands in as a function of its key."""
    from mtkd.progress import NullProgress
    from mtkd.recipe import load_recipe
    from mtkd.stages.context import RunContext, load_tasks
    from mtkd.stages.graph import plan_all, unit_key
    from mtkd.stages.store import RunStore

    recipe = load_recipe(recipe_path, overrides)
    ctx = RunContext(recipe, RunStore(Path("unused")), load_tasks(recipe), NullProgress())
    digests: dict = {}
    out: dict[str, set] = {}
    for stage, units in plan_all(ctx).items():
        for u in units:
            key = unit_key(u, digests)
            digests[u.id] = key
            out.setdefault(stage, set()).add(key)
    return out


def test_each_recipe_field_invalidates_exactly_the_stages_that_consume_it(tmp_path):
    from mtkd.stages.graph import STAGE_NAMES

    recipe = write(tmp_path, student={"seeds": [1], "control": True},
                   teachers={"members": [{"seed": 1}, {"seed": 2}]})
    base = _keys(recipe)
    assert set(base) == set(STAGE_NAMES) - {"student-search", "control-search"}  # no search: tests/test_search.py
    wrong = {}
    for assignment, expected in FIELD_EFFECTS:
        changed = _keys(recipe, [assignment])
        found = {s for s in STAGE_NAMES if s != "report" and changed.get(s) != base.get(s)}
        if found != expected:
            wrong[assignment] = (sorted(found), sorted(expected))
    assert not wrong, "\n".join(f"{k}: found {v[0]}, expected {v[1]}" for k, v in wrong.items())
    # Every section of the recipe is classified above: a new one must say what it invalidates.
    from mtkd.recipe import RecipeModel

    covered = {a.split("=")[0].split(".")[0].split("[")[0] for a, _ in FIELD_EFFECTS}
    unclassified = set(RecipeModel.model_fields) - covered - {"name", "plugins"}
    assert not unclassified


# ---------------------------------------------------------------- end to end on tiny models

def run(recipe: Path, *args, code: int = 0):
    result = run_cli("recipe", "run", recipe, *args, "--quiet")
    assert result.exit_code == code, result.output
    return result


def results(run_dir: Path, stage: str) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in (run_dir / stage).glob("*/result.json")}


def redone(before: dict, after: dict) -> bool:
    """A new unit, or one rewritten in place."""
    return any(k not in before or before[k] != v for k, v in after.items())


@pytest.fixture
def tiny(tmp_path):
    recipe = pipeline_recipe(tmp_path, student={"seeds": [1], "control": True})
    run(recipe)
    return recipe, tmp_path / "runs" / "tiny"


@requires_minilm
def test_force_teachers_retrains_students_and_controls_and_settings_outside_keys_retrain_nothing(tiny, tmp_path):
    recipe, run_dir = tiny
    snap = {s: results(run_dir, s) for s in ("teachers", "students", "controls")}
    run(recipe, "--set", "training.num_threads=2", "--set", f"data.cache_dir={tmp_path / 'cache2'}")
    assert {s: results(run_dir, s) for s in snap} == snap  # nothing retrained

    run(recipe, "--force", "teachers")
    for stage in ("teachers", "students", "controls"):
        assert redone(snap[stage], results(run_dir, stage)), stage
    assert (run_dir / "metrics.json").exists()


@requires_minilm
def test_the_report_gives_each_stages_compute_and_keeps_it_when_everything_is_reused(tiny):
    recipe, run_dir = tiny
    compute = json.loads((run_dir / "metrics.json").read_text())["compute"]
    assert list(compute) == ["teachers", "logits", "soft-targets", "student", "control", "evaluate"]
    for stage, c in compute.items():
        assert c["units"] >= 1 and c["unknown"] == 0 and 0 < c["min"] <= c["max"] <= c["seconds"], stage
    # a training stage's figure is its jobs' own train_seconds (summed over resumes), not the run's wall time
    (student,) = (run_dir / "students").glob("*/result.json")
    assert compute["student"]["seconds"] == pytest.approx(json.loads(student.read_text())["train_seconds"])
    assert "## Compute per stage" in (run_dir / "report.md").read_text()
    run(recipe)  # every stage reused: the same figures, not the zeros of this invocation's wall time
    assert json.loads((run_dir / "metrics.json").read_text())["compute"] == compute


@requires_minilm
def test_a_deleted_output_is_recomputed(tiny):
    recipe, run_dir = tiny
    (soft,) = run_dir.glob("soft_targets/*/rte.safetensors")
    weights = sorted(run_dir.glob("students/*/*/model.safetensors"))[0]
    weights.unlink()
    result = run_cli("recipe", "run", recipe)  # not quiet: the one-line messages are shown
    assert result.exit_code == 0, result.output
    assert "model.safetensors is missing; recomputing it" in result.output
    assert weights.exists()
    soft.unlink()
    result = run_cli("recipe", "run", recipe)
    assert result.exit_code == 0, result.output
    assert "rte.safetensors is missing; recomputing it" in result.output
    assert soft.exists()


@requires_minilm
def test_a_copied_run_folder_run_from_a_third_folder_reuses_every_stage(tiny, tmp_path, monkeypatch):
    recipe, run_dir = tiny
    copy = tmp_path / "moved" / "copy"
    shutil.copytree(run_dir, copy, copy_function=shutil.copy)  # as `cp -r`: new times, the content is checked
    shutil.rmtree(run_dir)  # the original is gone: nothing may point into it
    third = tmp_path / "third"
    third.mkdir()
    monkeypatch.chdir(third)
    before = {s: results(copy, s) for s in ("teachers", "students", "controls")}
    report = (copy / "report.md").read_text()
    run(recipe, "--output", os.path.relpath(copy, third))
    assert {s: results(copy, s) for s in before} == before
    assert (copy / "report.md").read_text() == report
    assert not run_dir.exists()
    assert not list(copy.rglob("*.staging"))
    for marker in copy.rglob("mtkd-stage.json"):  # nothing absolute stored in a marker
        assert str(tmp_path) not in marker.read_text()
        outputs = json.loads(marker.read_text())["outputs"]  # and the checked times are recorded
        assert all((marker.parent / n).stat().st_mtime_ns == o["mtime_ns"] for n, o in outputs.items())


@requires_minilm
def test_a_replaced_user_soft_target_file_retrains_the_student(tmp_path):
    from safetensors.numpy import load_file, save_file

    teachers = pipeline_recipe(tmp_path, student=None)
    run(teachers)
    run_dir = tmp_path / "runs" / "tiny"
    tensors, fps = {}, {}
    for path in run_dir.glob("soft_targets/*/*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), "np") as fh:
            meta = fh.metadata()
        tensors[meta["task"]] = load_file(str(path))["targets"]
        fps[meta["task"]] = meta["fingerprint"]
    user = tmp_path / "mine.safetensors"
    save_file(tensors, str(user), metadata={"fingerprints": json.dumps(fps)})

    student = pipeline_recipe(tmp_path, name="own", teachers=None,
                              student={"seeds": [1], "soft_targets": str(user)})
    run(student)
    own = tmp_path / "runs" / "own"
    first = results(own, "students")
    run(student)
    assert results(own, "students") == first  # same content: reused

    flipped = {t: np.ascontiguousarray(v[:, ::-1]) for t, v in tensors.items()}
    save_file(flipped, str(user), metadata={"fingerprints": json.dumps(fps)})  # same path, new content
    run(student)
    assert redone(first, results(own, "students"))


@requires_minilm
def test_a_second_run_into_the_same_folder_exits_cleanly_and_a_stale_lock_is_taken_over(tmp_path):
    recipe = pipeline_recipe(tmp_path, student={"seeds": [1]})
    run_dir = tmp_path / "runs" / "tiny"
    first = subprocess.Popen([sys.executable, "-m", "mtkd", "recipe", "run", str(recipe), "-q"],
                             env=mtkd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = run_dir / ".mtkd.lock"
    deadline = time.time() + 60
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()
    second = run_cli("recipe", "run", recipe, "--quiet")
    assert second.exit_code == 2
    assert "another mtkd run is using this run folder" in second.output
    assert f"pid {first.pid}" in second.output
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (run_dir / "metrics.json").exists() and not lock.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}))
    run(recipe)  # a killed run's lock: taken over
    assert not lock.exists()


# ---------------------------------------------------------------- versions and models by role


@requires_minilm
def test_runs_list_and_compare_two_versions_and_models_by_role(tmp_path):
    glue = glue_sample_with_test(tmp_path / "glue", ("RTE",), test_rows=8)
    recipe = pipeline_recipe(tmp_path, data={"glue": str(glue), "max_length": 32, "cache_dir": str(tmp_path / "c")},
                             tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 16}],
                             student={"seeds": [1, 2]})
    run(recipe)
    run(recipe, "--set", "student.objective.classification.alpha=0.8")
    run_dir = tmp_path / "runs" / "tiny"
    versions = sorted(p.name for p in (run_dir / "reports").iterdir())
    assert len(versions) == 2

    listed = run_cli("runs", "list", run_dir, "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted(r["hash"] for r in rows) == versions
    assert all(r["differs"] == {"student.objective.classification.alpha": a} for r, a in zip(rows, (0.5, 0.8)))
    assert [r["latest"] for r in rows] == [False, True]
    table = run_cli("runs", "list", run_dir)
    assert table.exit_code == 0 and all(h[:8] in table.output for h in versions)

    old, new = (r["hash"] for r in rows)
    compared = run_cli("runs", "compare", f"{run_dir}@{old[:6]}", f"{run_dir}@{new[:6]}", "--json")
    assert compared.exit_code == 0, compared.output
    c = json.loads(compared.output)
    m_old = json.loads((run_dir / "reports" / old / "metrics.json").read_text())
    m_new = json.loads((run_dir / "reports" / new / "metrics.json").read_text())
    assert c["scores"]["GLUE-style"] == [m_old["score"]["student"], m_new["score"]["student"]]
    assert c["deltas"]["rte"][1] == pytest.approx(c["scores"]["rte"][1] - c["scores"]["rte"][0])
    assert "(+" in run_cli("runs", "compare", f"{run_dir}@{old[:6]}", run_dir).output or \
        "(-" in run_cli("runs", "compare", f"{run_dir}@{old[:6]}", run_dir).output

    # evaluate addresses the seed asked for: its dev figures are that seed's in the report
    for i, seed in enumerate((1, 2)):
        ev = run_cli("evaluate", recipe, "--model", "student", "--seed", seed, "--json")
        assert ev.exit_code == 0, ev.output
        assert json.loads(ev.output)["rte"] == pytest.approx(m_old["tasks"]["rte"]["students"][i], abs=1e-6)
    # ... from the run folder too (its latest version: alpha 0.8)
    ev = run_cli("evaluate", run_dir, "--model", "student", "--seed", 2, "--json")
    assert json.loads(ev.output)["rte"] == pytest.approx(m_new["tasks"]["rte"]["students"][1], abs=1e-6)

    # a version never trained: refused with the stage to run, by predict, evaluate and export
    for args in (("predict", recipe), ("evaluate", recipe), ("export", recipe, tmp_path / "hf", "--task", "rte")):
        result = run_cli(*args, "--set", "student.objective.classification.alpha=0.3")
        assert result.exit_code == 2, result.output
        assert "has not been trained" in result.output and "--stage student" in result.output
    assert run_cli("predict", recipe, "--seed", 9).exit_code == 2
    predicted = run_cli("predict", recipe, "--seed", 2)
    assert predicted.exit_code == 0, predicted.output
    assert (run_dir / "submission-student-s2" / "RTE.tsv").exists()

    # a test row skipped as bad (on_bad_rows: skip) would be missing from the submission: refused, unless asked
    with open(glue / "RTE" / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("8\tone column short\n")
    skip = ("--set", "data.on_bad_rows=skip")
    refused = run_cli("predict", recipe, *skip)
    assert refused.exit_code == 2, refused.output
    assert "1 test row(s) were skipped" in refused.output and "--allow-incomplete" in refused.output
    allowed = run_cli("predict", recipe, *skip, "--allow-incomplete", "--out", tmp_path / "partial")
    assert allowed.exit_code == 0, allowed.output
    assert len((tmp_path / "partial" / "RTE.tsv").read_text().splitlines()) == 1 + 8


@requires_minilm
def test_evaluate_scores_a_labelled_test_split(tmp_path):
    from helpers import synthetic_sentiment

    task = {"name": "senti", "type": "table", "text_columns": ["sentence"],
            "train": str(synthetic_sentiment(tmp_path / "train.csv", 32, seed=0)),
            "validation": str(synthetic_sentiment(tmp_path / "dev.csv", 12, seed=1)),
            "test": str(synthetic_sentiment(tmp_path / "test.csv", 10, seed=2))}
    recipe = pipeline_recipe(tmp_path, tasks=[task], teachers={"members": [{"seed": 1}]})
    run(recipe)
    result = run_cli("evaluate", recipe, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["senti"]) == {"accuracy"}
    ens = run_cli("evaluate", recipe, "--model", "ensemble", "--split", "test", "--json")
    assert ens.exit_code == 0 and "senti" in json.loads(ens.output)


@requires_minilm
def test_non_finite_teacher_outputs_stop_before_any_student(tmp_path):
    """A teacher whose weights hold NaN (a diverged run): the logits stage stops the run."""
    from safetensors.torch import load_file, save_file

    first = pipeline_recipe(tmp_path, name="first", teachers={"members": [{"seed": 1}]}, student=None)
    run(first, "--stage", "teachers")
    (result,) = (tmp_path / "runs" / "first").glob("teachers/*/result.json")
    model = result.parent / json.loads(result.read_text())["model"]
    diverged = shutil.copytree(model, tmp_path / "diverged")
    weights = diverged / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("weight") and "head" in k)
    tensors[name][:] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    recipe = pipeline_recipe(tmp_path, teachers={"members": [{"seed": 1}, {"checkpoint": str(diverged)}]})
    run_dir = tmp_path / "runs" / "tiny"
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 2, result.output
    assert "not finite" in result.output
    assert not (run_dir / "students").exists()


@requires_minilm
def test_a_failed_run_leaves_the_latest_recipe_json(tiny):
    recipe, run_dir = tiny
    before = (run_dir / "recipe.json").read_text()
    result = run_cli("recipe", "run", recipe, "--quiet", "--set", "teachers.members[0].checkpoint=/nowhere")
    assert result.exit_code == 2
    assert (run_dir / "recipe.json").read_text() == before


def test_the_cli_choices_come_from_the_graph():
    from mtkd.cli import recipe_run
    from mtkd.stages.graph import STAGE_NAMES

    choices = {p.name: list(p.type.choices) for p in recipe_run.params if p.name in ("stage", "force")}
    assert choices == {"stage": list(STAGE_NAMES), "force": list(STAGE_NAMES)}


def test_a_store_path_cannot_leave_the_run_folder(tmp_path):
    from mtkd.errors import CheckpointError
    from mtkd.stages.store import RunStore

    store = RunStore(tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    for bad in ("../x", "/etc/passwd", "a/../../x", "link/x"):
        with pytest.raises(CheckpointError):
            store.path(bad)
    assert store.path("teachers", "abc") == tmp_path / "run" / "teachers" / "abc"


def test_yaml_string_lr_reaches_training_as_a_float(tmp_path):
    """YAML 1.1 reads `3e-5` as a string: the member's override must reach the trainer as a number."""
    from mtkd.recipe import load_recipe, variation_config

    path = tmp_path / "r.yaml"
    data = yaml.safe_load(pipeline_recipe(tmp_path).read_text())
    text = yaml.safe_dump(data) + ""
    path.write_text(text.replace("members:\n  - seed: 1\n  - seed: 2\n",
                                 "members:\n  - seed: 1\n  - seed: 2\n    training: {lr: 3e-5}\n"))
    assert yaml.safe_load(path.read_text())["teachers"]["members"][1]["training"]["lr"] == "3e-5"
    assert variation_config(load_recipe(path), 1)["training"]["lr"] == 3e-5


def test_a_unit_without_a_finite_time_is_counted_as_not_recorded(tmp_path):
    from types import SimpleNamespace

    from mtkd.stages.graph import Unit
    from mtkd.stages.store import RunStore
    from mtkd.stages.units import stage_compute

    store = RunStore(tmp_path)
    units = []
    for i, (result, marker) in enumerate([({"train_seconds": 12.5}, {}), ({"train_seconds": float("nan")}, {}),
                                          (None, {"seconds": 3.0}), (None, {})]):
        folder = f"s/{i}"
        store.path(folder).mkdir(parents=True)
        if result is not None:
            (store.path(folder) / "result.json").write_text(json.dumps(result))
        units.append(Unit(f"u{i}", "student" if result is not None else "logits", {}, folder=folder, marker=marker))
    units.append(Unit("again", "student", {}, folder="s/0", marker={}))  # a shared folder counts once
    out = stage_compute(SimpleNamespace(store=store), units)
    assert out == {"student": {"units": 2, "seconds": 12.5, "min": 12.5, "max": 12.5, "unknown": 1},
                   "logits": {"units": 2, "seconds": 3.0, "min": 3.0, "max": 3.0, "unknown": 1}}
