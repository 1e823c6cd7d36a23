"""The evidence in a real run: holdout selection without leakage, the comparison block, the plots and the report,
and the hidden-state objective through the stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import pipeline_recipe, requires_minilm, run_cli
from PIL import Image
from safetensors import safe_open

from mtkd.data import fingerprint_dataset, tokenize_split
from mtkd.inference import predict_logits
from mtkd.model import load_model
from mtkd.recipe import load_recipe
from mtkd.stages.context import HOLDOUT, RunContext, load_tasks, make_job
from mtkd.stages.store import RunStore

pytestmark = requires_minilm


def _texts(ds) -> set:
    return {(r["text_a"], r.get("text_b")) for r in ds}


def test_holdout_selection_leaks_nothing_and_the_report_carries_the_evidence(tmp_path):
    recipe_path = pipeline_recipe(tmp_path, student={"seeds": [1, 2], "control": True},
                                  teachers={"members": [{"seed": 1}],
                                            "aggregation": {"type": "weighted", "temperature": 1.0}})
    result = run_cli("recipe", "run", recipe_path, "--quiet", "--set", "evaluation.selection=holdout:0.2")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    recipe = load_recipe(recipe_path, ["evaluation.selection=holdout:0.2"])
    tasks = load_tasks(recipe)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["selection"]["split"] == HOLDOUT
    soft_files = list((run_dir / "soft_targets").glob("*/*.safetensors"))
    assert {f.stem for f in soft_files} == {"rte", "sst2"}
    for name, tb in tasks.items():
        # no holdout text among the rows any model trains on ...
        assert tb.holdout is not None and len(tb.holdout) > 0
        assert not _texts(tb.holdout) & _texts(tb.train)
        assert metrics["selection"]["tasks"][name]["holdout_fingerprint"] == fingerprint_dataset(tb.holdout)
        # ... nor among the rows soft targets were computed for (they are aligned with the training rows)
        with safe_open(str(next(f for f in soft_files if f.stem == name)), "np") as fh:
            meta = fh.metadata()
            assert meta["fingerprint"] == fingerprint_dataset(tb.train)
            assert fh.get_tensor("targets").shape[0] == len(tb.train)
    # every job chose its checkpoint on the holdout, and logged it as such (never as dev figures)
    keys = {k for line in (next((run_dir / "students").glob("*/metrics.jsonl"))).read_text().splitlines()
            for k in json.loads(line)}
    # (metric keys carry no job name since the job is the tracker run: `holdout/score`, `holdout/rte/accuracy`)
    assert "holdout/score" in keys and not any(k.startswith("dev/") or "/dev/" in k for k in keys)
    # the kept student's recorded metrics are its holdout metrics
    folder = next((run_dir / "students").glob("*/result.json")).parent
    student = json.loads((folder / "result.json").read_text())
    model = load_model(folder / student["model"])
    for name, tb in tasks.items():
        split = tb.task.eval_splits[0]
        tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=32, dataset=tb.holdout)
        logits = predict_logits(model, name, tok, batch_size=32, pad_token_id=model.encoder.tokenizer.pad_token_id)
        on_holdout = tb.task.compute_metrics({split: logits.argmax(-1)}, {split: tb.holdout["label"]})
        assert student["metrics"][name] == on_holdout
    comp = metrics["comparison"]
    sc = comp["student_vs_control"]
    assert set(sc["tasks"]) == {"rte", "sst2"} and {"delta", "low", "high"} <= set(sc["score"])
    assert sc["score"]["low"] <= sc["score"]["delta"] <= sc["score"]["high"]
    assert comp["sentence"].startswith("Distillation changed the GLUE-style score by")
    assert set(comp["calibration"]) == {"student", "control", "ensemble", "teacher-0"}
    for other in ("control", "ensemble"):  # the calibration change, with its interval, per task
        for name in ("rte", "sst2"):
            for m in ("ece", "brier"):
                d = comp["calibration_deltas"][f"student_vs_{other}"][name][m]
                assert d["low"] <= d["high"] and len(d["per_seed"]) == 2
                cal = comp["calibration"]
                assert d["delta"] == pytest.approx(cal["student"][name][m] - cal[other][name][m])
    # dev figures of students and controls come from the dev outputs of their kept models
    assert len(metrics["tasks"]["rte"]["students"]) == 2
    report = (run_dir / "report.md").read_text()
    assert comp["sentence"] in report and "Which split chose what" in report and "## Calibration" in report
    d = comp["calibration_deltas"]["student_vs_control"]["rte"]["ece"]
    assert f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" in report
    rows = metrics["selection"]["tasks"]["rte"]["holdout_rows"]
    assert f"rte: {rows} holdout rows" in report and f"one holdout example moves an accuracy by {100 / rows:.2f} points" in report
    assert "| task | teacher-0 | teachers |" in report  # teachers by their names
    for name in metrics["plots"]:
        assert f"]({name})" in report
        with Image.open(run_dir / name) as img:
            img.verify()
    assert set(metrics["plots"]) == {"scores.png", "deltas.png", "learning_curves.png"}  # no serving: no cost plot
    assert "Distillation changed the GLUE-style score" in " ".join(result.output.split())


def test_dev_selection_is_said_and_the_holdout_changes_the_teachers(tmp_path):
    recipe_path = pipeline_recipe(tmp_path, student=None, teachers={"members": [{"seed": 1}]})
    dev = load_tasks(load_recipe(recipe_path))
    held = load_tasks(load_recipe(recipe_path, ["evaluation.selection=holdout:0.2"]))
    for name in dev:
        assert dev[name].holdout is None and dev[name].selection() is dev[name].evals
        assert held[name].train_fingerprint != dev[name].train_fingerprint  # teachers are retrained, not reused
        assert list(held[name].selection()) == list(held[name].task.eval_splits[:1])
    # a training job evaluates (and so chooses its checkpoint on) the holdout, scored as the first eval split
    recipe = load_recipe(recipe_path, ["evaluation.selection=holdout:0.2"])
    ctx = RunContext(recipe, RunStore(tmp_path / "run"), held)
    job = make_job(ctx, "teacher-0", tmp_path / "job", ctx.members()[0].config, 1, {n: None for n in held})
    for name, td in job.tasks.items():
        (split, ds), = td.evals.items()
        assert fingerprint_dataset(ds) == fingerprint_dataset(held[name].holdout) != fingerprint_dataset(
            held[name].evals[split])
        assert fingerprint_dataset(td.train) == held[name].train_fingerprint


def test_hidden_state_student_through_the_stages(tmp_path):
    objective = {"type": "hidden-states", "base": {"type": "mixture", "alpha": 0.5}, "layers": [[1, 2]]}
    recipe_path = pipeline_recipe(
        tmp_path, teachers={"members": [{"seed": 1}]},
        student={"seeds": [1], "control": False, "encoder": {"config_overrides": {"num_hidden_layers": 1}},
                 "objective": {"classification": objective,
                               "regression": {"type": "mixture", "hard": {"type": "mse"},
                                              "soft": {"type": "mse-soft"}}}})
    result = run_cli("recipe", "run", recipe_path, "--quiet")
    assert result.exit_code == 0, result.output
    # without the run's teachers handed to the job, the objective refuses to train (see test_hidden_states)
    student = json.loads(next((Path(tmp_path) / "runs" / "tiny" / "students").glob("*/result.json")).read_text())
    assert student["steps"] > 0
