"""Tracking per job (mtkd.tracking) with real W&B offline runs read back from disk: the same metric keys
in every job, a resumed job continuing its own W&B run, a finished run backfilled once, the report run."""

from __future__ import annotations

import json

import pytest
from helpers import pipeline_recipe, requires_minilm, run_cli
from mtkd_loggers.offline_reader import find_wandb_runs, read_wandb_offline

from mtkd.tracking import Tracker, backfill, infer_job_type, job_run_id


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "wandb"


def test_job_types_come_from_the_job_folder(tmp_path):
    assert infer_job_type(tmp_path / "teachers" / "ab12", "big-one") == "teacher"
    assert infer_job_type(tmp_path / "students" / "ab12" / "seed-3", "student-s3") == "student"
    assert infer_job_type(tmp_path / "controls" / "ab12" / "seed-3", "x") == "control"
    assert infer_job_type(tmp_path / "students-search" / "ab12", "student-trial0-s101") == "student-trial"
    assert infer_job_type(tmp_path / "elsewhere", "report") == "report"


def test_a_resumed_job_continues_its_own_wandb_run(registries, tmp_path, offline_wandb):
    job_dir = tmp_path / "run" / "teachers" / "abc"
    for attempt, steps in enumerate(([1, 2], [2, 3, 4])):  # stopped after step 2, resumed from step 1
        tracker = Tracker(run_dir=job_dir, job="teacher-x", group="g", config={"attempt": attempt},
                          loggers=[registries.loggers.create("wandb", {"project": "p"})])
        tracker.forget_after(steps[0] - 1)
        for step in steps:
            tracker.log({"train/loss": 1.0 / step}, step=step)
        tracker.finish()
    runs = [read_wandb_offline(f) for f in find_wandb_runs(offline_wandb)]
    assert len(runs) == 2  # two offline folders (one per process), one W&B run id
    assert runs[0]["run"]["id"] == runs[1]["run"]["id"] == job_run_id(job_dir)
    assert all(r["run"]["job_type"] == "teacher" for r in runs)
    assert [row["_step"] for row in runs[1]["history"]] == [2, 3, 4]
    # metrics.jsonl keeps every step once, without the job's name in the keys
    lines = [json.loads(x) for x in (job_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], sorted(k for k in r if k not in ("time", "step"))) for r in lines] == \
        [(1, ["train/loss"]), (2, ["train/loss"]), (3, ["train/loss"]), (4, ["train/loss"])]
    # A deleted and re-made job folder is a new job: a new id
    (job_dir / "tracking.json").unlink()
    assert job_run_id(job_dir) != runs[0]["run"]["id"]


def test_backfill_translates_old_keys_and_runs_once(registries, tmp_path, offline_wandb):
    job_dir = tmp_path / "run" / "students" / "h" / "seed-1"
    job_dir.mkdir(parents=True)
    rows = [{"time": 1.0, "step": 5, "student-s1/train/loss": 0.5},
            {"time": 2.0, "step": 5, "student-s1/rte/accuracy": 60.0, "student-s1/dev/score": 60.0},
            {"time": 3.0, "step": 10, "train/loss": 0.25}]
    (job_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job_dir / "result.json").write_text(json.dumps({"best": 60.0, "train_seconds": 3.5}))
    logger = registries.loggers.create("wandb", {"project": "p"})
    assert backfill(job_dir, job="student-s1", loggers=[logger], group="g", config={}) == ["wandb:/p"]
    assert backfill(job_dir, job="student-s1", loggers=[logger], group="g", config={}) == []  # once
    (run,) = [read_wandb_offline(f) for f in find_wandb_runs(offline_wandb)]
    assert run["run"]["job_type"] == "student" and run["run"]["id"] == job_run_id(job_dir)
    assert run["history"] == [{"_step": 5, "train/loss": 0.5, "dev/rte/accuracy": 60.0, "dev/score": 60.0},
                              {"_step": 10, "train/loss": 0.25}]
    assert run["summary"]["best"] == 60.0
    # Another project has not seen the job: it gets it too.
    other = registries.loggers.create("wandb", {"project": "q"})
    assert backfill(job_dir, job="student-s1", loggers=[logger, other], group="g", config={}) == ["wandb:/q"]


@requires_minilm
def test_turning_wandb_on_for_a_finished_run_backfills_every_job_with_shared_keys(tmp_path, offline_wandb):
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student={"seeds": [1], "control": True})
    assert run_cli("recipe", "run", recipe, "-q").exit_code == 0
    assert not offline_wandb.exists()
    tracker = "logging.trackers=[{type: wandb, project: p}]"
    result = run_cli("recipe", "run", recipe, "-q", "--set", tracker)
    assert result.exit_code == 0, result.output
    runs = {r["run"]["job_type"]: r for r in map(read_wandb_offline, find_wandb_runs(offline_wandb))}
    assert sorted(runs) == ["control", "report", "student", "teacher"]
    assert len({r["run"]["group"] for r in runs.values()}) == 1
    keys = {}
    for job_type in ("teacher", "student", "control"):
        history = runs[job_type]["history"]
        assert history, job_type
        keys[job_type] = {k for row in history for k in row if not k.startswith("_")}
        (history_file,) = (tmp_path / "runs" / "tiny").glob(f"{job_type}s/**/metrics.jsonl")
        local = [json.loads(x) for x in history_file.read_text().splitlines()]
        losses = {r["step"]: r["train/loss"] for r in local if "train/loss" in r}
        assert {row["_step"]: row["train/loss"] for row in history if "train/loss" in row} == pytest.approx(losses)
    assert keys["teacher"] == keys["student"] == keys["control"]  # charts overlay
    assert "train/loss" in keys["teacher"] and any(k.endswith("score") for k in keys["teacher"])
    report = runs["report"]
    (table,) = [v for row in report["history"] for k, v in row.items() if k == "comparison"]
    assert table["_type"] == "table-file"
    assert any(k.startswith("score/") for k in report["summary"])
    metrics = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    images = {k for row in report["history"] for k, v in row.items() if k.startswith("plots/")}
    assert images == {f"plots/{name.removesuffix('.png')}" for name in metrics["plots"]}  # every plot, as an image
    # Once: a third run with the tracker logs only a new report run, no job again.
    assert run_cli("recipe", "run", recipe, "-q", "--set", tracker).exit_code == 0
    after = [read_wandb_offline(f)["run"] for f in find_wandb_runs(offline_wandb)]
    assert sorted(r["job_type"] for r in after) == ["control", "report", "report", "student", "teacher"]
    assert len({r["id"] for r in after if r["job_type"] == "report"}) == 1  # the same recipe version's run


@requires_minilm
def test_a_stopped_and_resumed_job_is_one_wandb_run(tmp_path):
    """A real run stopped by SIGTERM after a checkpoint and run again: both processes log to one W&B run id."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import mtkd_env
    from test_pipeline import tiny_recipe

    recipe = tiny_recipe(tmp_path, teachers={"members": [{"seed": 1}]}, student=None,
                         tasks=[{"name": "rte", "max_train_examples": 64, "max_eval_examples": 8}],
                         training={"epochs": 3, "batch_size": 8, "log_every": 1, "save_every": 3},
                         logging={"trackers": [{"type": "wandb", "project": "p", "mode": "offline"}]})
    out, wandb_dir = tmp_path / "out", tmp_path / "wandb"
    env = mtkd_env(WANDB_DIR=str(wandb_dir), WANDB_SILENT="true")
    cmd = [sys.executable, "-m", "mtkd", "recipe", "run", str(recipe), "--stage", "teachers", "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("teachers/*/checkpoint/trainer_state.json")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # stopped at a checkpoint, not finished
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [read_wandb_offline(f) for f in find_wandb_runs(wandb_dir)]
    assert len(runs) == 2 and len({r["run"]["id"] for r in runs}) == 1  # two processes, one W&B run
    assert {r["run"]["job_type"] for r in runs} == {"teacher"}
    steps = sorted({row["_step"] for r in runs for row in r["history"] if "train/loss" in row})
    assert steps == list(range(1, 25))  # 64 rows / 8 = 8 steps an epoch, 3 epochs: every step in the one run


def test_the_report_run_logs_the_reports_plots_as_wandb_images(registries, tmp_path, offline_wandb):
    """The report stage hands report_run the PNGs the report wrote: each becomes a W&B image of the report
    run (read back from the offline run file), beside the scores and the comparison table."""
    import hashlib

    from test_plots import synthetic_metrics

    from mtkd.plots import plot_deltas, plot_scores
    from mtkd.report import report_rows
    from mtkd.tracking import report_run

    metrics = synthetic_metrics()
    folder = tmp_path / "run" / "reports" / "abc"
    pngs = [*plot_scores(metrics, folder), *plot_deltas(metrics, folder)]
    assert [p.name for p in pngs] == ["scores.png", "deltas.png"]
    report_run(tmp_path / "run", recipe_hash="abc", group="g", config={"recipe_hash": "abc"},
               loggers=[registries.loggers.create("wandb", {"project": "p"})], scores={"student": 64.0},
               table=report_rows(metrics), plots={p.stem: p for p in [*pngs, folder / "missing.png"]},
               tables={"frontier": (["variant", "student"], [["l3", "77.00"]])})
    (run_file,) = find_wandb_runs(offline_wandb)
    run = read_wandb_offline(run_file)
    assert run["run"]["job_type"] == "report" and run["summary"]["score/student"] == 64.0
    assert {k for row in run["history"] for k, v in row.items()
            if isinstance(v, dict) and v.get("_type") == "table-file"} == \
        {"comparison", "frontier"}
    images = {k: v for row in run["history"] for k, v in row.items() if k.startswith("plots/")}
    assert set(images) == {"plots/scores", "plots/deltas"}  # a plot file that is not there is skipped
    for name, image in images.items():
        assert image["_type"] == "image-file"
        logged = run_file.parent / "files" / image["path"]
        source = folder / f"{name.split('/')[1]}.png"
        # the logged file is the report's PNG, byte for byte
        assert hashlib.sha256(logged.read_bytes()).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
