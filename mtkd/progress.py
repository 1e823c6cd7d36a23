"""What a run tells its user while it works: the contract between the stages, the trainer and the display.

The trainer and the stages call these methods on the main process only; a display (a rich bar on a
terminal, plain log lines when stderr is a file) implements them. ``NullProgress`` is the silent default.
"""

from __future__ import annotations

import os
import time
from typing import Protocol


class RunProgress(Protocol):
    def stage(self, name: str, *, cached: list[str], to_run: list[str]) -> None:
        """A stage begins: which of its units are reused and which will run."""

    def message(self, text: str) -> None:
        """One line for the user (e.g. "resuming teacher-0 from step 18")."""

    def job_started(self, job: str, *, total_steps: int, start_step: int) -> None:
        """A training job starts (``start_step`` > 0 when it resumes)."""

    def job_step(self, job: str, *, step: int, loss: float | None, samples: int) -> None:
        """An optimizer step finished; ``loss`` is set on logging steps, ``samples`` counts this step's examples."""

    def job_finished(self, job: str, *, step: int) -> None:
        """The job ended (done, or stopped at ``step``)."""

    def work_started(self, name: str, *, total: int, unit: str) -> None:
        """A long non-training task starts (inference over ``total`` ``unit``s)."""

    def work_advanced(self, name: str, *, done: int) -> None:
        """``done`` more units of the named task are finished."""

    def work_finished(self, name: str) -> None:
        """The named task ended."""


class NullProgress:
    """Says nothing (non-main ranks, library use, tests)."""

    def stage(self, name, *, cached, to_run):
        pass

    def message(self, text):
        pass

    def job_started(self, job, *, total_steps, start_step):
        pass

    def job_step(self, job, *, step, loss, samples):
        pass

    def job_finished(self, job, *, step):
        pass

    def work_started(self, name, *, total, unit):
        pass

    def work_advanced(self, name, *, done):
        pass

    def work_finished(self, name):
        pass

    def close(self):
        pass


# ---------------------------------------------------------------- displays


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: The stages whose units are training jobs (mtkd.stages' names): their headings get an ETA.
TRAINING_STAGES = frozenset({"teachers", "student", "control", "student-search", "control-search"})


class _Job:
    def __init__(self, name: str, total: int, start: int, now: float, index: int | None, of: int | None):
        self.name, self.total, self.start, self.step = name, total, start, start
        self.loss: float | None = None
        self.samples = 0
        self.t0 = now
        self.index, self.of = index, of
        self.last_line_step, self.last_line_time = start, now

    def elapsed(self, now: float) -> float:
        return now - self.t0

    def samples_per_s(self, now: float) -> float | None:
        dt = now - self.t0
        return self.samples / dt if dt > 0 and self.samples else None

    def eta(self, now: float) -> float | None:
        done = self.step - self.start
        if done <= 0:
            return None
        return (self.total - self.step) * (now - self.t0) / done

    def label(self) -> str:
        if self.index is None:
            return self.name
        return f"{self.name} (job {self.index} of {self.of})" if self.of else f"{self.name} (job {self.index})"


class _Work:
    def __init__(self, name: str, total: int, unit: str, now: float):
        self.name, self.total, self.unit, self.done = name, total, unit, 0
        self.t0 = self.last_line_time = now


class _Bookkeeping:
    """What both displays track: the jobs so far (for "job 2 of 7"), their speed (for ETAs)."""

    def __init__(self, *, total_jobs: int | None = None, clock=time.monotonic):
        self.total_jobs = total_jobs
        self.clock = clock
        self.jobs: dict[str, _Job] = {}
        self.works: dict[str, _Work] = {}
        self.started: list[str] = []  # job names in the order they first started (a resumed job keeps its number)
        self.stage_to_run: list[str] = []
        self.stage_started: list[str] = []  # jobs started since the last stage heading
        self.job_seconds: list[float] = []  # wall time of each job that ran to its end here

    def _new_job(self, job: str, total_steps: int, start_step: int) -> _Job:
        if job not in self.started:
            self.started.append(job)
        if job not in self.stage_started:
            self.stage_started.append(job)
        if self.total_jobs:
            index, of = self.started.index(job) + 1, self.total_jobs
        elif self.stage_to_run:  # no plan for the whole run: count within the stage (its units may be labelled
            # otherwise than its jobs are named, e.g. "student seed 3" for student-s3)
            index, of = self.stage_started.index(job) + 1, max(len(self.stage_to_run), len(self.stage_started))
        else:
            index, of = self.started.index(job) + 1, None
        js = _Job(job, total_steps, start_step, self.clock(), index, of)
        self.jobs[job] = js
        return js

    def _stage_eta(self, name: str, to_run: list[str]) -> float | None:
        """A rough ETA for a training stage: its jobs times the mean wall time of the jobs finished so far."""
        if name not in TRAINING_STAGES or not to_run or not self.job_seconds:
            return None
        return len(to_run) * sum(self.job_seconds) / len(self.job_seconds)

    def _heading(self, name: str, cached: list[str], to_run: list[str]) -> str:
        self.stage_to_run, self.stage_started = list(to_run), []
        parts = []
        if cached:
            parts.append(f"{len(cached)} cached ({', '.join(cached)})")
        if to_run:
            parts.append(f"{len(to_run)} to run ({', '.join(to_run)})")
        if not parts:
            parts.append("nothing to do")
        eta = self._stage_eta(name, to_run)
        tail = f"; ETA ~{_duration(eta)}" if eta is not None else ""
        return f"{name}: " + "; ".join(parts) + tail

    @staticmethod
    def _loss_text(js: _Job) -> str:
        # Never "loss nan" before the first logged loss: say nothing until there is one.
        return f"loss {js.loss:.4f}" if js.loss is not None else ""

    def _finish_job(self, job: str, step: int) -> _Job | None:
        js = self.jobs.pop(job, None)
        if js is not None:
            js.step = step
            if js.start == 0 and step >= js.total:
                self.job_seconds.append(js.elapsed(self.clock()))
        return js


class PlainProgress(_Bookkeeping):
    """Plain log lines for a file, a pipe or CI: headings, one line per ``every_steps`` steps or
    ``every_seconds`` seconds (whichever comes first) per job, and a line when each job or task ends."""

    def __init__(self, console, *, every_steps: int | None = 50, every_seconds: float | None = 30.0,
                 total_jobs: int | None = None, clock=time.monotonic, timestamps: bool = True):
        super().__init__(total_jobs=total_jobs, clock=clock)
        self.console = console
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.timestamps = timestamps

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S ") if self.timestamps else ""
        self.console.print(stamp + text, markup=False, highlight=False, soft_wrap=True)

    def _due(self, step_or_done: int, last_step: int, last_time: float, now: float) -> bool:
        if self.every_steps and step_or_done - last_step >= self.every_steps:
            return True
        return bool(self.every_seconds) and now - last_time >= self.every_seconds

    def stage(self, name, *, cached, to_run):
        self._line("== " + self._heading(name, list(cached), list(to_run)))

    def message(self, text):
        self._line(text)

    def job_started(self, job, *, total_steps, start_step):
        js = self._new_job(job, total_steps, start_step)
        how = f"from step {start_step} of {total_steps}" if start_step else f"starting, {total_steps} steps"
        self._line(f"{js.label()}: {how}")

    def job_step(self, job, *, step, loss, samples):
        js = self.jobs.get(job)
        if js is None:
            return
        js.step = step
        js.samples += samples
        if loss is not None and loss == loss:
            js.loss = float(loss)
        now = self.clock()
        if step < js.total and self._due(step, js.last_line_step, js.last_line_time, now):
            js.last_line_step, js.last_line_time = step, now
            self._line(self._status(js, now))

    def _status(self, js: _Job, now: float) -> str:
        pct = 100.0 * js.step / js.total if js.total else 100.0
        parts = [f"{js.label()}: step {js.step}/{js.total} ({pct:.0f}%)", self._loss_text(js)]
        rate = js.samples_per_s(now)
        if rate is not None:
            parts.append(f"{rate:.1f} samples/s")
        parts.append(f"elapsed {_duration(js.elapsed(now))}")
        parts.append(f"ETA {_duration(js.eta(now))}")
        return " ".join(p for p in parts if p)

    def job_finished(self, job, *, step):
        js = self.jobs.get(job)
        if js is None:
            return
        now = self.clock()
        js.step = step
        done = "done" if step >= js.total else "stopped"
        loss = f", {self._loss_text(js)}" if js.loss is not None else ""
        self._line(f"{js.label()}: {done} at step {step}/{js.total} in {_duration(js.elapsed(now))}{loss}")
        self._finish_job(job, step)

    def work_started(self, name, *, total, unit):
        self.works[name] = _Work(name, total, unit, self.clock())
        self._line(f"{name}: {total} {unit}")

    def work_advanced(self, name, *, done):
        w = self.works.get(name)
        if w is None:
            return
        w.done += done
        now = self.clock()
        if w.done < w.total and self.every_seconds and now - w.last_line_time >= self.every_seconds:
            w.last_line_time = now
            rate = w.done / (now - w.t0) if now > w.t0 else 0.0
            self._line(f"{name}: {w.done}/{w.total} {w.unit} ({rate:.1f} {w.unit}/s)")

    def close(self):
        pass

    def work_finished(self, name):
        w = self.works.pop(name, None)
        if w is None:
            return
        dt = self.clock() - w.t0
        done = w.done or w.total  # a caller that reports only the start and the end
        rate = f" ({done / dt:.1f} {w.unit}/s)" if dt > 0 and done else ""
        self._line(f"{name}: done, {done} {w.unit} in {_duration(dt)}{rate}")


class RichProgress(_Bookkeeping):
    """Live bars on a terminal: one per training job (step, loss, samples/s, elapsed, ETA, "job 2 of 7")
    and one per inference task (examples/s); headings and messages print above them."""

    def __init__(self, console, *, total_jobs: int | None = None, clock=time.monotonic):
        super().__init__(total_jobs=total_jobs, clock=clock)
        self.console = console
        self._progress = None
        self._ids: dict[str, int] = {}

    def _bars(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
                TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False)
            self._progress.start()
        return self._progress

    def _maybe_stop(self):
        # No bar left: stop the live display so the finished bars stay as plain lines and later output
        # (the report table, errors) is not redrawn over.
        if self._progress is not None and not self._ids:
            self._progress.stop()
            self._progress = None

    def close(self):
        self._ids.clear()
        self._maybe_stop()

    def stage(self, name, *, cached, to_run):
        self.console.print(f"[bold]{escape(self._heading(name, list(cached), list(to_run)))}[/]", highlight=False)

    def message(self, text):
        self.console.print(escape(text), highlight=False)

    def job_started(self, job, *, total_steps, start_step):
        js = self._new_job(job, total_steps, start_step)  # (the trainer says "resuming JOB from step N")
        self._ids[job] = self._bars().add_task(escape(js.label()), total=total_steps, completed=start_step,
                                               unit="steps", loss="", rate="")

    def job_step(self, job, *, step, loss, samples):
        js = self.jobs.get(job)
        if js is None or job not in self._ids:
            return
        js.step = step
        js.samples += samples
        if loss is not None and loss == loss:
            js.loss = float(loss)
        rate = js.samples_per_s(self.clock())
        self._bars().update(self._ids[job], completed=step, loss=self._loss_text(js),
                            rate=f"{rate:.1f} samples/s" if rate is not None else "")

    def job_finished(self, job, *, step):
        self._finish_job(job, step)
        task_id = self._ids.pop(job, None)
        if task_id is not None and self._progress is not None:
            self._progress.update(task_id, completed=step)
        self._maybe_stop()

    def work_started(self, name, *, total, unit):
        self.works[name] = _Work(name, total, unit, self.clock())
        self._ids[name] = self._bars().add_task(escape(name), total=total, unit=unit, loss="", rate="")

    def work_advanced(self, name, *, done):
        w = self.works.get(name)
        if w is None or name not in self._ids:
            return
        w.done += done
        dt = self.clock() - w.t0
        rate = f"{w.done / dt:.1f} {w.unit}/s" if dt > 0 else ""
        self._bars().update(self._ids[name], completed=w.done, rate=rate)

    def work_finished(self, name):
        work = self.works.pop(name, None)
        task_id = self._ids.pop(name, None)
        if task_id is not None and self._progress is not None:
            w = self._progress.tasks[task_id]
            dt = self.clock() - (work.t0 if work else self.clock())
            rate = f"{w.total / dt:.1f} {work.unit}/s" if work and dt > 0 and not work.done else None
            self._progress.update(task_id, completed=w.total, **({"rate": rate} if rate else {}))
        self._maybe_stop()


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def silence_libraries() -> None:
    """``-q``: wandb's banner and sync lines go too (its own switch, read by wandb and its service), mtkd's
    own notes from plugins (``MTKD_QUIET``; both reach the worker processes of a launch) and the libraries'
    log records below errors (DeepSpeed's "Setting accelerator to CPU", transformers' notices)."""
    import logging

    os.environ["WANDB_SILENT"] = "true"
    os.environ["MTKD_QUIET"] = "1"
    logging.disable(logging.WARNING)


def make_progress(console=None, quiet: bool = False, *, every_steps: int | None = None,
                  every_seconds: float | None = None, total_jobs: int | None = None,
                  main_process: bool = True) -> RunProgress:
    """The display for a run: silent with ``quiet`` (and on ranks other than the main one), live bars
    when ``console`` writes to a terminal, plain lines otherwise.

    ``every_steps`` / ``every_seconds`` (the recipe's ``logging.progress_every_steps`` /
    ``progress_every_seconds``) pace the plain lines; ``None`` keeps the defaults (50 steps, 30 s).
    ``total_jobs``, when the caller knows it, numbers jobs across the run ("job 2 of 7").
    """
    if quiet:
        silence_libraries()
    if quiet or not main_process:
        return NullProgress()
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console, total_jobs=total_jobs)
    return PlainProgress(console, every_steps=50 if every_steps is None else every_steps,
                         every_seconds=30.0 if every_seconds is None else every_seconds, total_jobs=total_jobs)
