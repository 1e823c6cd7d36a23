"""The run's displays (mtkd.progress): plain lines for files and pipes, live bars on a terminal, silence with -q.

The displays are driven directly through the RunProgress calls the trainer and the stages make, with a
clock the test advances, and read back from a real rich Console writing to a string.
"""

from __future__ import annotations

import io
import os

from helpers import mtkd_env, pipeline_recipe, requires_minilm, run_mtkd
from rich.console import Console

from mtkd.progress import NullProgress, PlainProgress, RichProgress, make_progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def plain_console(width: int = 200) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=width), buf


def drive_job(p, clock, job="teacher-0", total=100, start=0, losses_every=10, seconds_per_step=0.5, batch=16):
    p.job_started(job, total_steps=total, start_step=start)
    for step in range(start + 1, total + 1):
        clock.now += seconds_per_step
        p.job_step(job, step=step, loss=(1.0 / step) if step % losses_every == 0 else None, samples=batch)
    p.job_finished(job, step=total)


def test_factory_picks_the_display(monkeypatch):
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    monkeypatch.delenv("MTKD_QUIET", raising=False)
    console, _ = plain_console()
    assert isinstance(make_progress(console), PlainProgress)
    tty = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(make_progress(tty), RichProgress)
    assert isinstance(make_progress(tty, main_process=False), NullProgress)
    assert "WANDB_SILENT" not in os.environ
    assert isinstance(make_progress(tty, quiet=True), NullProgress)
    assert os.environ["WANDB_SILENT"] == "true"  # -q silences wandb's banner as well
    assert os.environ["MTKD_QUIET"] == "1"
    import logging

    assert logging.getLogger("DeepSpeed").isEnabledFor(logging.ERROR)  # errors still show
    assert not logging.getLogger("DeepSpeed").isEnabledFor(logging.WARNING)
    paced = make_progress(console, every_steps=7, every_seconds=3)
    assert (paced.every_steps, paced.every_seconds) == (7, 3)


def test_plain_lines_every_n_steps_with_rate_eta_and_job_numbers():
    console, buf = plain_console()
    clock = Clock()
    p = PlainProgress(console, every_steps=25, every_seconds=None, clock=clock, timestamps=False)
    p.stage("teachers", cached=["teacher-a"], to_run=["teacher-b", "teacher-c"])
    drive_job(p, clock, "teacher-b", total=100)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "== teachers: 1 cached (teacher-a); 2 to run (teacher-b, teacher-c)"
    assert lines[1] == "teacher-b (job 1 of 2): starting, 100 steps"
    progress_lines = [line for line in lines if ": step " in line]
    assert [line.split(": step ")[1].split(" ")[0] for line in progress_lines] == ["25/100", "50/100", "75/100"]
    # At step 25: 12.5 s elapsed, 25 x 16 samples -> 32 samples/s, 75 steps left at 0.5 s -> 37.5 s.
    assert progress_lines[0] == ("teacher-b (job 1 of 2): step 25/100 (25%) loss 0.0500 32.0 samples/s "
                                 "elapsed 0:12 ETA 0:38")
    assert lines[-1] == "teacher-b (job 1 of 2): done at step 100/100 in 0:50, loss 0.0100"
    # The next stage's heading has an overall ETA from the jobs that ran (50 s each).
    p.stage("logits", cached=[], to_run=["teacher-b"])  # inference: no job-based estimate
    assert buf.getvalue().splitlines()[-1] == "== logits: 1 to run (teacher-b)"
    p.stage("student", cached=[], to_run=["student-s1", "student-s2"])
    assert buf.getvalue().splitlines()[-1] == "== student: 2 to run (student-s1, student-s2); ETA ~1:40"


def test_plain_lines_every_n_seconds_and_no_loss_before_the_first_one():
    console, buf = plain_console()
    clock = Clock()
    p = PlainProgress(console, every_steps=None, every_seconds=10, clock=clock, timestamps=False, total_jobs=7)
    drive_job(p, clock, "student-s3", total=60, losses_every=1000, seconds_per_step=1.0)
    lines = buf.getvalue().splitlines()
    steps = [line for line in lines if ": step " in line]
    assert len(steps) == 5  # at 10, 20, ..., 50 s (the 60th step is the "done" line)
    assert all("job 1 of 7" in line for line in lines)
    assert not any("nan" in line or "loss" in line for line in lines)  # no loss logged: none shown


def test_plain_resume_and_inference_lines():
    console, buf = plain_console()
    clock = Clock()
    p = PlainProgress(console, every_steps=None, every_seconds=5, clock=clock, timestamps=False)
    p.message("3 teachers cached")
    p.job_started("teacher-0", total_steps=90, start_step=18)
    for step in range(19, 31):
        clock.now += 1
        p.job_step("teacher-0", step=step, loss=0.5, samples=8)
    p.job_finished("teacher-0", step=30)  # stopped early (interrupted)
    p.work_started("soft targets: cola train", total=240, unit="examples")
    for _ in range(12):
        clock.now += 1
        p.work_advanced("soft targets: cola train", done=20)
    p.work_finished("soft targets: cola train")
    p.work_started("teacher-0 rte dev", total=80, unit="examples")  # only a start and an end
    clock.now += 4
    p.work_finished("teacher-0 rte dev")
    lines = buf.getvalue().splitlines()
    assert lines[-1] == "teacher-0 rte dev: done, 80 examples in 0:04 (20.0 examples/s)"
    lines = lines[:-2]
    assert lines[0] == "3 teachers cached"
    assert lines[1] == "teacher-0 (job 1): from step 18 of 90"
    # ETA after resuming counts only the steps run since (5 steps in 5 s; 67 left).
    assert "step 23/90 (26%) loss 0.5000 8.0 samples/s elapsed 0:05 ETA 1:07" in lines[2]
    assert "teacher-0 (job 1): stopped at step 30/90 in 0:12, loss 0.5000" in lines
    assert "soft targets: cola train: 240 examples" in lines
    assert "soft targets: cola train: 100/240 examples (20.0 examples/s)" in lines
    assert lines[-1] == "soft targets: cola train: done, 240 examples in 0:12 (20.0 examples/s)"


def test_rich_bars_show_step_loss_rate_and_job_number():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160, color_system=None)
    clock = Clock()
    p = RichProgress(console, total_jobs=7, clock=clock)
    p.stage("student", cached=["student-s1"], to_run=["control-s1"])
    p.job_started("control-s1", total_steps=40, start_step=0)
    bars = p._progress
    task = bars.tasks[0]
    assert task.fields["loss"] == ""  # never "loss nan" before the first logged loss
    for step in range(1, 21):
        clock.now += 0.25
        p.job_step("control-s1", step=step, loss=0.75 if step == 10 else None, samples=4)
    task = bars.tasks[0]
    assert task.description == "control-s1 (job 1 of 7)"
    assert task.completed == 20 and task.total == 40
    assert task.fields["loss"] == "loss 0.7500" and task.fields["rate"] == "16.0 samples/s"
    p.job_finished("control-s1", step=40)
    assert p._progress is None  # no bar left: the live display stopped
    p.work_started("evaluate: student-s1 rte dev", total=80, unit="examples")
    clock.now += 2
    p.work_advanced("evaluate: student-s1 rte dev", done=80)
    assert p._progress.tasks[0].fields["rate"] == "40.0 examples/s"
    p.work_finished("evaluate: student-s1 rte dev")
    p.message("resuming teacher-0 from step 4")  # the trainer's line, above the bars
    p.job_started("teacher-0", total_steps=10, start_step=4)
    assert p._progress.tasks[-1].completed == 4
    p.close()
    out = buf.getvalue()
    assert "student: 1 cached (student-s1); 1 to run (control-s1)" in out
    assert "resuming teacher-0 from step 4" in out
    assert "control-s1 (job 1 of 7)" in out and "nan" not in out


def test_quiet_says_nothing(capsys):
    p = make_progress(Console(file=io.StringIO()), quiet=True)
    p.stage("teachers", cached=[], to_run=["t"])
    p.message("hello")
    p.job_started("t", total_steps=3, start_step=0)
    p.job_step("t", step=1, loss=1.0, samples=1)
    p.job_finished("t", step=3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@requires_minilm
def test_a_run_piped_to_a_file_writes_progress_lines(tmp_path):
    """stderr is a pipe (SLURM, nohup, CI): plain lines per N steps, none of rich's bars, and -q silences them."""
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 48, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student={"seeds": [2], "control": True},
                             training={"epochs": 1, "batch_size": 8, "log_every": 2, "num_threads": 1},
                             logging={"progress_every_steps": 2})
    done = run_mtkd(["recipe", "run", recipe], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    for job in ("teacher-0", "student-s2", "control-s2"):
        mine = [line for line in lines if f" {job} (job " in line]
        assert any("starting, 6 steps" in line for line in mine), job
        assert [line.split(": step ")[1].split()[0] for line in mine if ": step " in line] == ["2/6", "4/6"], job
        assert "loss " in mine[-2]  # a logged loss by step 4 (log_every 2)
        assert "done at step 6/6" in mine[-1], job
    assert not any("nan" in line.lower() for line in lines)
    assert "\x1b[" not in done.stderr  # no terminal control codes in a file
    headings = [line.split("== ", 1)[1] for line in lines if " == " in line]
    assert headings[0] == "teachers: 1 to run (teacher-0)"
    assert any(h.startswith("student: 1 to run") and "ETA ~" in h for h in headings)  # after a job finished
    assert any(": done, " in line and "examples/s" in line for line in lines)  # the teachers' inference
    cached = run_mtkd(["recipe", "run", recipe], timeout=300)
    assert cached.returncode == 0, cached.stderr[-3000:]
    again = [line.split("== ", 1)[1] for line in cached.stderr.splitlines() if " == " in line]
    assert "teachers: 1 cached (teacher-0)" in again and any(h.startswith("control: 1 cached") for h in again)
    assert not any(": step " in line for line in cached.stderr.splitlines())  # nothing trained again
    # -q with a W&B tracker turned on (the finished jobs are sent to it): not a line on stderr, wandb's included
    tracker = "logging.trackers=[{type: wandb, project: p, mode: offline}]"
    env = mtkd_env(WANDB_DIR=str(tmp_path / "wandb"))
    quiet = run_mtkd(["recipe", "run", recipe, "-q", "--set", tracker], timeout=300, env=env)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr[-2000:]
    assert len(list((tmp_path / "wandb").rglob("*.wandb"))) == 4  # three jobs and the report were logged
