"""Pipeline features end to end on a tiny encoder: W&B offline logging, learning a synthetic task,
regression distillation, submission files, export, and re-running single stages."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    GLUE_SAMPLE,
    glue_sample_with_test,
    pipeline_recipe,
    requires_minilm,
    run_cli,
    synthetic_sentiment,
)

pytestmark = requires_minilm


def run(recipe: Path, *args):
    result = run_cli("recipe", "run", recipe, *args, "--quiet")
    assert result.exit_code == 0, result.output
    return result


def mtimes(folder: Path, pattern: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob(pattern)}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------- W&B


def test_wandb_offline_run_holds_the_resolved_recipe_and_the_loss_history(tmp_path, monkeypatch):
    from mtkd_loggers.offline_reader import find_wandb_runs, read_wandb_offline

    from mtkd.recipe import load_recipe

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import mtkd
    from mtkd.plugins import register_plugin

    class ReadsCredentials:  # a task plugin that takes credentials from `data:` declares those keys
        @mtkd.hookimpl
        def register_tasks(self, register):
            register("reads-credentials", lambda params, context: None, data_sources=("api_key", "hf_token"))

    register_plugin(ReadsCredentials(), "reads-credentials")
    recipe = pipeline_recipe(
        tmp_path, tasks=[{"name": "rte", "max_train_examples": 40, "max_eval_examples": 8}],
        teachers={"members": [{"seed": 1}]}, student=None,
        # `data:` takes free keys (data sources): a credential there must never reach W&B
        data={"glue": str(GLUE_SAMPLE), "max_length": 32, "cache_dir": str(tmp_path / "cache"),
              "api_key": "FAKE-SECRET-1", "hf_token": "FAKE-SECRET-2"},
        logging={"trackers": [{"type": "wandb", "project": "p", "mode": "offline"}]})
    run(recipe, "--stage", "teachers")

    (run_file,) = find_wandb_runs(tmp_path / "wandb")  # one job, one W&B run
    logged = read_wandb_offline(run_file)
    resolved = load_recipe(recipe)
    assert logged["run"]["project"] == "p" and logged["run"]["group"] == "tiny"
    assert logged["run"]["name"] == "teacher-0" and logged["run"]["job_type"] == "teacher"
    config = logged["config"]
    assert config["recipe"]["name"] == "tiny"
    assert config["recipe_hash"] == resolved.hash
    assert config["recipe"]["encoder"] == resolved.resolved["encoder"]
    assert config["recipe"]["encoder"]["config_overrides"]["hidden_size"] == 32
    assert config["recipe"]["teachers"]["members"] == resolved.resolved["teachers"]["members"]
    assert "FAKE-SECRET" not in json.dumps(logged) and b"FAKE-SECRET" not in run_file.read_bytes()
    assert config["recipe"]["data"]["max_length"] == 32  # the rest of `data:` is kept

    # 40 rows in batches of 16: 3 optimizer steps, each logged (log_every: 1), the same values as metrics.jsonl
    loss = {row["_step"]: row["train/loss"] for row in logged["history"] if "train/loss" in row}
    assert sorted(loss) == [1, 2, 3]
    (jsonl,) = (tmp_path / "runs" / "tiny").glob("teachers/*/metrics.jsonl")
    local = {r["step"]: r["train/loss"] for r in map(json.loads, jsonl.read_text().splitlines())
             if "train/loss" in r}
    assert loss == pytest.approx(local)
    assert any(key.endswith("dev/rte/accuracy") for row in logged["history"] for key in row)
    assert logged["exit_code"] == 0


# ---------------------------------------------------------------- learning


def test_a_tiny_model_learns_a_synthetic_table_task(tmp_path):
    train = synthetic_sentiment(tmp_path / "train.csv", 300, seed=0)
    dev = synthetic_sentiment(tmp_path / "dev.csv", 100, seed=1)
    task = {"name": "sentiment", "type": "table", "train": str(train), "validation": str(dev),
            "text_columns": ["sentence"]}
    # lr and epochs tuned so that every seed tried (1-8) reaches 100 % by the last epoch
    recipe = pipeline_recipe(tmp_path, tasks=[task], teachers={"members": [{"seed": 3}]}, student=None,
                             training={"epochs": 5, "batch_size": 16, "lr": 2.0e-3, "log_every": 5,
                                       "num_threads": 1})
    run(recipe, "--stage", "teachers")
    (result,) = (tmp_path / "runs" / "tiny").glob("teachers/*/result.json")
    history = [h["metrics"]["sentiment"]["accuracy"] for h in json.loads(result.read_text())["history"]]
    assert len(history) == 5
    assert history[0] <= 60  # chance after one epoch ...
    assert history[-1] >= 80  # ... well above it at the end (chance: 50)


# ---------------------------------------------------------------- regression distillation


def test_regression_task_is_distilled_from_the_members_mean(tmp_path):
    from safetensors.numpy import load_file

    train = synthetic_sentiment(tmp_path / "train.csv", 40, seed=0, score=True)
    dev = synthetic_sentiment(tmp_path / "dev.csv", 16, seed=1, score=True)
    task = {"name": "score", "type": "table", "train": str(train), "validation": str(dev),
            "text_columns": ["sentence"], "task_type": "regression"}
    recipe = pipeline_recipe(tmp_path, tasks=[task],
                             teachers={"members": [{"seed": 1}, {"seed": 2}],
                                       "regression_aggregation": {"type": "mean"}})
    run(recipe)
    run_dir = tmp_path / "runs" / "tiny"
    logits = [load_file(str(p))["logits"] for p in sorted(run_dir.glob("logits/*/score.train.safetensors"))]
    assert len(logits) == 2 and logits[0].shape == (40, 1)
    assert not np.allclose(logits[0], logits[1])  # two different members
    (soft,) = run_dir.glob("soft_targets/*/score.safetensors")
    targets = load_file(str(soft))["targets"]
    assert targets.shape == (40, 1)
    np.testing.assert_allclose(targets, (logits[0] + logits[1]) / 2, atol=1e-6)

    recipe_json = json.loads((run_dir / "recipe.json").read_text())["recipe"]
    assert recipe_json["student"]["objective"]["regression"]["soft"]["type"] == "mse-soft"
    metrics = json.loads((run_dir / "metrics.json").read_text())["tasks"]["score"]
    for who in ("student", "ensemble"):
        assert set(metrics[who]) == {"pearson", "spearman"}
        assert all(-100 <= v <= 100 for v in metrics[who].values())
    assert all(set(t) == {"pearson", "spearman"} for t in metrics["teachers"])


# ---------------------------------------------------------------- one finished GLUE run, shared


@pytest.fixture(scope="module")
def glue_run(tmp_path_factory):
    """A finished tiny run on CoLA + RTE samples that have test files (module-wide: it takes a while)."""
    from mtkd import plugins

    tmp = tmp_path_factory.mktemp("glue-run")
    glue = glue_sample_with_test(tmp / "glue", ("CoLA", "RTE"), test_rows=10)
    recipe = pipeline_recipe(
        tmp, data={"glue": str(glue), "max_length": 32, "cache_dir": str(tmp / "cache")},
        tasks=[{"name": "cola", "max_train_examples": 24, "max_eval_examples": 16},
               {"name": "rte", "max_train_examples": 24, "max_eval_examples": 16}],
        evaluation={"serving": True, "serving_examples": 8, "serving_batch_sizes": [8]})
    with pytest.MonkeyPatch.context() as mp:  # the first-party plugins only, as conftest does per test
        mp.setenv("MTKD_LOAD_PLUGINS", "glue,hf,distill,samplers,loggers")
        plugins.reset()
        run(recipe)
        plugins.reset()
    return recipe, tmp / "runs" / "tiny"


def read_submission(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("which", ["student", "ensemble"])
def test_predict_writes_glue_submission_files(glue_run, which):
    recipe, run_dir = glue_run
    result = run_cli("predict", recipe, "--model", which)
    assert result.exit_code == 0, result.output
    folder = run_dir / f"submission-{which}"
    assert sorted(p.name for p in folder.iterdir()) == ["CoLA.tsv", "RTE.tsv"]
    for name, allowed in (("CoLA.tsv", {"0", "1"}), ("RTE.tsv", {"entailment", "not_entailment"})):
        rows = read_submission(folder / name)
        assert rows[0] == ["index", "prediction"]
        assert [r[0] for r in rows[1:]] == [str(i) for i in range(10)]  # every test row, once, in order
        assert {r[1] for r in rows[1:]} <= allowed
    with zipfile.ZipFile(run_dir / f"submission-{which}.zip") as zf:
        assert sorted(zf.namelist()) == ["CoLA.tsv", "RTE.tsv"]
        assert zf.read("RTE.tsv").decode() == (folder / "RTE.tsv").read_text(encoding="utf-8")


def test_ensemble_predictions_are_the_argmax_of_the_mean_probabilities(glue_run):
    """RTE's ensemble file against the members' own logits on the test rows, computed here."""
    from mtkd.data import tokenize_split
    from mtkd.inference import predict_logits
    from mtkd.model import load_model
    from mtkd.recipe import load_recipe
    from mtkd.stages.context import job_model_dir, load_tasks

    recipe_path, run_dir = glue_run
    assert run_cli("predict", recipe_path, "--model", "ensemble").exit_code == 0
    recipe = load_recipe(recipe_path)
    task = load_tasks(recipe)["rte"].task
    test = task.load_split("test")
    probs = []
    for result in sorted(run_dir.glob("teachers/*/result.json")):
        model = load_model(job_model_dir(result.parent, json.loads(result.read_text())))
        tok = tokenize_split(task, "test", model.encoder.tokenizer, max_length=32, dataset=test)
        probs.append(softmax(predict_logits(model, "rte", tok, batch_size=8, pad_token_id=0)))
    assert len(probs) == 2
    expected = [task.labels[i] for i in ((probs[0] + probs[1]) / 2).argmax(1)]
    rows = read_submission(run_dir / "submission-ensemble" / "RTE.tsv")[1:]
    assert [r[1] for r in rows] == expected


def test_exported_student_reproduces_its_logits_in_transformers(glue_run, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mtkd.model import load_model

    recipe, run_dir = glue_run
    (student,) = [p.parent / json.loads(p.read_text())["model"].split("/")[-1]
                  for p in run_dir.glob("students/*/result.json")]
    out = tmp_path / "rte-hf"
    result = run_cli("export", recipe, out, "--task", "rte", "--model", "student")
    assert result.exit_code == 0, result.output

    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"}
    first = ["A man plays the guitar on stage.", "Prices rose.", "The committee met on Tuesday to vote."]
    second = ["Someone makes music.", "Inflation went up sharply in March.", "There was a vote."]
    batch = tokenizer(first, second, padding=True, return_tensors="pt")
    ours = load_model(student).eval()
    with torch.no_grad():
        expected = ours("rte", batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        got = hf(**batch).logits
    assert got.shape == (3, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- re-running single stages


def test_force_soft_targets_recomputes_only_the_soft_targets(glue_run):
    from safetensors.numpy import load_file

    recipe, run_dir = glue_run
    teachers = mtimes(run_dir / "teachers", "result.json")
    students = mtimes(run_dir / "students", "result.json")
    (soft,) = run_dir.glob("soft_targets/*/rte.safetensors")
    before_mtime, before = soft.stat().st_mtime_ns, load_file(str(soft))["targets"]

    run(recipe, "--force", "soft-targets")
    assert mtimes(run_dir / "teachers", "result.json") == teachers  # upstream: reused
    assert soft.exists() and soft.stat().st_mtime_ns != before_mtime  # rewritten ...
    np.testing.assert_allclose(load_file(str(soft))["targets"], before, atol=1e-6)  # ... to the same values
    after = mtimes(run_dir / "students", "result.json")
    # downstream: redone (in place when the new targets are byte-identical, else beside the old student)
    assert any(k not in students or after[k] != students[k] for k in after)


def evaluation_file(run_dir: Path) -> Path:
    """The latest version's evaluation (the run folder's recipe.json names its folder, relative to the run)."""
    return run_dir / json.loads((run_dir / "recipe.json").read_text())["evaluation"] / "evaluation.json"


def test_stage_report_only_rerenders(glue_run):
    recipe, run_dir = glue_run
    trained = mtimes(run_dir, "result.json")
    evaluation = evaluation_file(run_dir).stat().st_mtime_ns
    logits = mtimes(run_dir, "*.safetensors")
    score = json.loads((run_dir / "metrics.json").read_text())["score"]
    (run_dir / "report.md").unlink()

    result = run(recipe, "--stage", "report")
    assert "GLUE-style" in result.output
    assert (run_dir / "report.md").read_text().startswith("# mtkd report: tiny")
    assert json.loads((run_dir / "metrics.json").read_text())["score"] == score
    assert mtimes(run_dir, "result.json") == trained
    assert mtimes(run_dir, "*.safetensors") == logits
    assert evaluation_file(run_dir).stat().st_mtime_ns == evaluation


def test_rerun_reuses_the_evaluation_and_report_refuses_another_version(glue_run):
    recipe, run_dir = glue_run
    evaluation = evaluation_file(run_dir).read_text()
    run(recipe)  # nothing changed: the figures (serving cost included) are not measured again
    assert evaluation_file(run_dir).read_text() == evaluation
    assert json.loads((run_dir / "metrics.json").read_text())["score"] == build_score(json.loads(evaluation))

    other = run_cli("recipe", "run", recipe, "--stage", "report", "--quiet",
                    "--set", "student.objective.classification.alpha=0.9")
    assert other.exit_code == 2
    assert "has not run for this version of the recipe" in other.output


def build_score(evaluation: dict) -> dict:
    from mtkd.stages.evaluate import build_metrics

    return build_metrics(evaluation)["score"]


def test_ensemble_predictions_weighted_by_member_dev_scores(tmp_path):
    """`weighted` without recipe weights uses each member's dev score, in predict as in the soft targets."""
    from mtkd.data import tokenize_split
    from mtkd.inference import predict_logits
    from mtkd.model import load_model
    from mtkd.recipe import load_recipe
    from mtkd.stages.context import job_model_dir, load_tasks

    glue = glue_sample_with_test(tmp_path / "glue", ("RTE",), test_rows=12)
    recipe_path = pipeline_recipe(
        tmp_path, data={"glue": str(glue), "max_length": 32, "cache_dir": str(tmp_path / "cache")},
        tasks=[{"name": "rte", "max_train_examples": 32, "max_eval_examples": 24}], student=None,
        teachers={"members": [{"seed": 1}, {"seed": 2, "training": {"lr": 1.0e-3}}],
                  "aggregation": {"type": "weighted"}})
    run(recipe_path)
    result = run_cli("predict", recipe_path, "--model", "ensemble")
    assert result.exit_code == 0, result.output

    run_dir = tmp_path / "runs" / "tiny"
    task = load_tasks(load_recipe(recipe_path))["rte"].task
    test = task.load_split("test")
    weighted = 0
    for path in sorted(run_dir.glob("teachers/*/result.json")):
        member = json.loads(path.read_text())
        weight = member["metrics"]["rte"]["accuracy"]  # the dev score of the model it kept
        model = load_model(job_model_dir(path.parent, member))
        tok = tokenize_split(task, "test", model.encoder.tokenizer, max_length=32, dataset=test)
        weighted = weighted + weight * softmax(predict_logits(model, "rte", tok, batch_size=8, pad_token_id=0))
    rows = read_submission(run_dir / "submission-ensemble" / "RTE.tsv")[1:]
    assert [r[1] for r in rows] == [task.labels[i] for i in weighted.argmax(1)]


# ---------------------------------------------------------------- set-ups this machine cannot run


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusals are for CPU-only machines")
@pytest.mark.parametrize("changes, path, found", [
    ({"teachers": {"members": [{"seed": 1}, {"seed": 2, "training": {"precision": "fp16"}}]}},
     "teachers.members[1].training.precision", "fp16"),
    ({"scaling": {"strategy": "fsdp"}}, "scaling.strategy", "fsdp"),
])
def test_cpu_refuses_fp16_and_fsdp_before_training_starts(tmp_path, changes, path, found):
    recipe = pipeline_recipe(tmp_path, **changes)
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert str(recipe.name) in flat and path in flat and found in flat
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "teachers").exists()  # nothing trained


@pytest.mark.parametrize("sharding", ["full", "shard_grad_op", "no_shard"])
def test_every_fsdp_sharding_a_recipe_accepts_builds_accelerates_plugin(sharding):
    from mtkd.recipe import Scaling
    from mtkd.training import fsdp_plugin

    plugin = fsdp_plugin(Scaling(strategy="fsdp", fsdp_sharding=sharding).model_dump())
    assert plugin.sharding_strategy.name == {"full": "FULL_SHARD"}.get(sharding, sharding.upper())
    assert plugin.use_orig_params  # single-parameter optimizer groups and frozen weights need it


# ---------------------------------------------------------------- which dev checkpoint a job keeps


def test_select_metric_over_chosen_tasks():
    from mtkd.errors import RecipeError
    from mtkd.training import select_metric

    metrics = {"cola": {"mcc": 10.0}, "mrpc": {"f1": 80.0, "accuracy": 70.0}, "wnli": {"accuracy": 30.0}}
    assert select_metric(metrics, "score") == pytest.approx((10 + 75 + 30) / 3)
    assert select_metric(metrics, "score", ["cola", "mrpc"]) == pytest.approx((10 + 75) / 2)
    assert select_metric(metrics, "mrpc") == pytest.approx(75.0)
    assert select_metric(metrics, "mrpc.f1") == 80.0
    with pytest.raises(RecipeError, match="best_tasks"):
        select_metric(metrics, "score", ["rte"])


@pytest.mark.parametrize("training, path, found", [
    ({"best_metric": "cola.mcc"}, "student.training.best_metric", "cola.mcc"),
    ({"best_metric": "rte.f1"}, "student.training.best_metric", "rte.f1"),
    ({"best_tasks": ["rte", "wnli"]}, "student.training.best_tasks", "wnli"),
])
def test_checkpoint_selection_naming_other_tasks_is_refused_before_training(tmp_path, training, path, found):
    recipe = pipeline_recipe(tmp_path, student={"seeds": [1], "training": training})
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert path in flat and found in flat and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "teachers").exists()


def test_best_metric_final_keeps_the_last_weights_and_best_tasks_choose_the_checkpoint(tmp_path):
    from helpers import only_job

    training = {"epochs": 2, "batch_size": 16, "eval_batch_size": 32, "log_every": 1, "num_threads": 1}
    for sub in ("final", "rte"):
        (tmp_path / sub).mkdir()
    final = pipeline_recipe(tmp_path / "final", teachers={"members": [{"seed": 1}]}, student=None,
                            training={**training, "best_metric": "final"})
    run(final, "--stage", "teachers")
    result = json.loads((only_job(tmp_path / "final" / "runs" / "tiny") / "result.json").read_text())
    assert result["model"].endswith("final") and result["best"] is None
    assert len(result["history"]) == 2 and result["metrics"] == result["history"][-1]["metrics"]

    chosen = pipeline_recipe(tmp_path / "rte", teachers={"members": [{"seed": 1}]}, student=None,
                             training={**training, "best_tasks": ["rte"]})
    run(chosen, "--stage", "teachers")
    result = json.loads((only_job(tmp_path / "rte" / "runs" / "tiny") / "result.json").read_text())
    assert result["best"] == max(h["metrics"]["rte"]["accuracy"] for h in result["history"])


def test_training_keys_added_later_stay_out_of_the_hash_until_set(tmp_path):
    """Runs made before `training.best_tasks` existed keep their stage hashes (and are reused)."""
    from mtkd.recipe import load_recipe

    path = pipeline_recipe(tmp_path)
    plain = load_recipe(path)
    assert "best_tasks" not in plain.resolved["training"]
    chosen = load_recipe(path, ["training.best_tasks=[rte]"])
    assert chosen.resolved["training"]["best_tasks"] == ["rte"] and chosen.hash != plain.hash
