"""`evaluation.serving_formats`: the report's serving rows for the student in ONNX Runtime (fp32, int8)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import TINY_ENCODER, mtkd_env, pipeline_recipe, requires_minilm, run_cli

pytestmark = requires_minilm
onnxruntime = pytest.importorskip("onnxruntime", reason="the `serve` extra (onnx, onnxruntime) is not installed")


def recipe_with(tmp_path, formats, **changes):
    return pipeline_recipe(
        tmp_path, teachers={"members": [{"seed": 1}]}, student={"seeds": [1], "control": False},
        training={"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "num_threads": 1, "precision": "fp32"},
        evaluation={"serving_examples": 8, "serving_batch_sizes": [1, 4], "serving_formats": formats}, **changes)


def test_report_has_a_row_per_format(tmp_path):
    result = run_cli("recipe", "run", recipe_with(tmp_path, ["eager", "onnx", "int8", "hf-pipeline"]), "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    serving = json.loads((run_dir / "metrics.json").read_text())["serving"]
    assert set(serving["formats"]) == {"onnx", "int8", "hf-pipeline"}
    for who in ("ensemble", "student", "onnx", "int8", "hf-pipeline"):
        row = serving["formats"].get(who) or serving[who]
        assert set(row) >= {"parameters", "size_bytes", "batch_1", "batch_4"}, who
        for bs in ("batch_1", "batch_4"):
            assert row[bs]["examples_per_s"] > 0 and row[bs]["p95_ms"] >= row[bs]["p50_ms"] > 0
    onnx, int8 = serving["formats"]["onnx"], serving["formats"]["int8"]
    # fp32 ONNX predicts like the checkpoint: the same dev score as the eager student, change 0.
    assert onnx["dev"]["changed_predictions"] == 0 and onnx["dev"]["score_change"] == 0
    assert onnx["dev_score"] == pytest.approx(serving["dev_scores"]["student"])
    assert int8["dev"]["score_change"] == pytest.approx(int8["dev_score"] - int8["dev"]["checkpoint_score"])
    assert int8["dev"]["examples"] == 16  # the whole dev split (max_eval_examples), not the timed requests
    assert 0 < int8["size_bytes"] < onnx["size_bytes"]  # int8 weights are a quarter of fp32's
    report = (run_dir / "report.md").read_text()
    assert "| student (onnx) |" in report and "| student (int8) |" in report and "size MB" in report
    assert "dev_score" not in serving["formats"]["hf-pipeline"]  # the checkpoint's weights: no score of its own
    assert "| student (hf-pipeline) | " in report


def test_default_formats_keep_the_recipe_hash(tmp_path):
    from mtkd.recipe import load_recipe

    plain = pipeline_recipe(tmp_path, evaluation={"serving": False})
    r = load_recipe(plain)
    assert "serving_formats" not in r.resolved["evaluation"]  # earlier runs' hashes (and cached units) hold
    assert load_recipe(plain, ["evaluation.serving_formats=[eager]"]).hash == r.hash
    assert load_recipe(plain, ["evaluation.serving_formats=[eager,onnx]"]).hash != r.hash


def test_bad_format_names_are_refused_at_validation(tmp_path):
    result = run_cli("recipe", "validate", pipeline_recipe(tmp_path), "--set", "evaluation.serving_formats=[eager,onx]")
    assert result.exit_code == 2
    assert "evaluation.serving_formats[1]" in result.output and "did you mean 'onnx'" in result.output
    twice = run_cli("recipe", "validate", pipeline_recipe(tmp_path), "--set", "evaluation.serving_formats=[int8,int8]")
    assert twice.exit_code == 2 and "listed twice: int8" in twice.output


def test_missing_serve_extra_is_named_before_the_run(tmp_path):
    recipe = recipe_with(tmp_path, ["onnx"])
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # as if the extra were not installed
            "from mtkd.cli import cli\n"
            f"cli(['recipe', 'run', {str(recipe)!r}, '--quiet'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mtkd_env(), timeout=120)
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2, out
    assert "mtkd[serve]" in out and "evaluation.serving_formats[0]" in out and "Traceback" not in out
    assert not (tmp_path / "runs" / "tiny").exists()  # refused before anything ran


def test_a_format_that_cannot_convert_the_student_says_why_in_its_row(tmp_path):
    """A SAN head has no ONNX export: the run finishes, the row carries the reason."""
    result = run_cli("recipe", "run", recipe_with(tmp_path, ["onnx"], heads={"default": {"type": "linear"},
                                                                           "rte": {"type": "san"}},
                                                  encoder=TINY_ENCODER), "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    serving = json.loads((run_dir / "metrics.json").read_text())["serving"]
    assert serving["task"] == "rte" and "SANHead" in serving["formats"]["onnx"]["error"]
    assert "| student (onnx) | not measured: cannot export" in (run_dir / "report.md").read_text()
