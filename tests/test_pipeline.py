"""End to end: teachers -> soft targets -> student (+ control) -> evaluation -> report, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import TINY_ENCODER, only_job, pipeline_recipe, requires_minilm

from mtkd.cli import cli

pytestmark = requires_minilm


def tiny_recipe(tmp_path: Path, **changes) -> Path:
    """helpers.pipeline_recipe with a SAN-head member, a control and the serving benchmark switched on."""
    defaults = {"teachers": {"members": [{"seed": 1}, {"seed": 2, "heads": {"rte": {"type": "san"}}}]},
                "student": {"seeds": [1], "control": True},
                "evaluation": {"serving_examples": 8, "serving_batch_sizes": [1, 8]}}
    return pipeline_recipe(tmp_path, **{**defaults, **changes})


def run(*args):
    result = CliRunner().invoke(cli, ["recipe", "run", *map(str, args), "--quiet"], catch_exceptions=False)
    return result


def result_mtimes(run_dir: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("result.json")}


def test_whole_pipeline_then_everything_is_reused(tmp_path):
    recipe = tiny_recipe(tmp_path)
    result = run(recipe)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for task in ("rte", "sst2"):
        entry = metrics["tasks"][task]
        assert len(entry["teachers"]) == 2 and "accuracy" in entry["teachers"][0]
        assert set(entry) >= {"teachers", "ensemble", "student", "students", "control", "controls"}
        assert 0 <= entry["student"]["accuracy"] <= 100
    score = metrics["score"]
    assert set(score) >= {"teachers_mean", "ensemble", "student", "control"}
    assert metrics["serving"]["ensemble"]["parameters"] > metrics["serving"]["student"]["parameters"]
    assert (run_dir / "report.md").read_text().startswith("# mtkd report: tiny")
    assert len(list((run_dir / "soft_targets").glob("*/rte.safetensors"))) == 1
    assert "GLUE-style" in result.output

    before = result_mtimes(run_dir)
    again = run(recipe)
    assert again.exit_code == 0, again.output
    assert result_mtimes(run_dir) == before  # nothing retrained
    assert json.loads((run_dir / "metrics.json").read_text())["score"] == score


def test_soft_targets_are_the_mean_of_member_probabilities(tmp_path):
    from safetensors.numpy import load_file

    recipe = tiny_recipe(tmp_path, student=None)  # `student: null` switches off the base recipe's student
    assert run(recipe, "--stage", "teachers").exit_code == 0
    assert run(recipe, "--stage", "soft-targets").exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    logits = sorted(run_dir.glob("logits/*/rte.train.safetensors"))
    assert len(logits) == 2
    probs = [np.exp(x - x.max(1, keepdims=True)) for x in (load_file(str(p))["logits"] for p in logits)]
    probs = [p / p.sum(1, keepdims=True) for p in probs]
    (targets,) = [load_file(str(p))["targets"] for p in run_dir.glob("soft_targets/*/rte.safetensors")]
    np.testing.assert_allclose(targets, (probs[0] + probs[1]) / 2, atol=1e-5)


def test_changing_the_student_objective_reuses_teachers_and_soft_targets(tmp_path):
    recipe = tiny_recipe(tmp_path, student={"seeds": [1]})
    assert run(recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    teachers = {p: t for p, t in result_mtimes(run_dir).items() if "/teachers/" in p}
    soft = sorted(run_dir.glob("soft_targets/*"))
    result = run(recipe, "--set", "student.objective.classification.alpha=0.9")
    assert result.exit_code == 0, result.output
    assert {p: t for p, t in result_mtimes(run_dir).items() if "/teachers/" in p} == teachers
    assert sorted(run_dir.glob("soft_targets/*")) == soft
    assert len(list(run_dir.glob("students/*/result.json"))) == 2


def test_soft_targets_for_other_data_are_refused(tmp_path):
    recipe = tiny_recipe(tmp_path, student={"seeds": [1]})
    assert run(recipe, "--stage", "teachers").exit_code == 0
    assert run(recipe, "--stage", "soft-targets").exit_code == 0
    (soft_file,) = (tmp_path / "runs" / "tiny").glob("soft_targets/*/rte.safetensors")
    other = tiny_recipe(tmp_path, student={"seeds": [1], "soft_targets": str(soft_file)},
                        tasks=[{"name": "rte", "max_train_examples": 30}], teachers=None)
    result = run(other, "--output", tmp_path / "other")
    assert result.exit_code == 2
    assert "belong to other data" in result.output
    assert not (tmp_path / "other" / "students").exists()


def test_aggregation_rule_for_the_wrong_task_type_fails_before_training(tmp_path):
    recipe = tiny_recipe(tmp_path)
    result = run(recipe, "--set", "teachers.aggregation={type: mean}")
    assert result.exit_code == 2
    assert "teachers.aggregation" in result.output and "classification" in result.output
    assert not (tmp_path / "runs" / "tiny" / "teachers").exists()


def test_teacher_checkpoint_trained_on_other_tasks_is_refused(tmp_path):
    first = tiny_recipe(tmp_path, tasks=[{"name": "sst2", "max_train_examples": 16}], student=None,
                        teachers={"members": [{"seed": 1}]})
    assert run(first, "--stage", "teachers").exit_code == 0
    job = only_job(tmp_path / "runs" / "tiny")
    model_dir = job / json.loads((job / "result.json").read_text())["model"]  # the kept model (best)
    second = tiny_recipe(tmp_path, teachers={"members": [{"checkpoint": str(model_dir)}]})
    result = run(second, "--output", tmp_path / "second")
    assert result.exit_code == 2
    assert "no head for task 'rte'" in result.output


@pytest.mark.parametrize("stage", ["student", "evaluate"])
def test_a_later_stage_alone_needs_the_earlier_ones(tmp_path, stage):
    recipe = tiny_recipe(tmp_path)
    result = run(recipe, "--stage", stage)
    assert result.exit_code == 2
    assert "has not been trained" in result.output or "has not run" in result.output


@requires_minilm
def test_a_relative_encoder_folder_is_found_from_the_recipes_folder(tmp_path, monkeypatch):
    """`encoder.model: models/tiny` next to the recipe works from any working directory, and the hash keeps
    the path as written (moving the checkout does not invalidate runs)."""
    import shutil

    from mtkd.recipe import load_recipe
    from plugins.mtkd_hf.encoder import mirror_path

    project = tmp_path / "project"
    model_dir = project / "models" / "tiny"
    model_dir.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(mirror_path(TINY_ENCODER["model"])) / name, model_dir / name)
    recipe = pipeline_recipe(project, encoder={**TINY_ENCODER, "model": "models/tiny"},
                             teachers={"members": [{"seed": 1}]}, student=None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run(recipe, "--stage", "teachers")
    assert result.exit_code == 0, result.output
    job = only_job(project / "runs" / "tiny")
    kept = job / json.loads((job / "result.json").read_text())["model"]
    spec = json.loads((kept / "mtkd_model.json").read_text())["spec"]
    assert spec["encoder"]["model"] == str(model_dir)
    assert load_recipe(recipe).resolved["encoder"]["model"] == "models/tiny"
