"""Metric tracking for one job: an always-on JSON-lines file plus the recipe's logger plugins.

Only the main process tracks; on other ranks a Tracker is a no-op. The job is the tracker run, so
metric names are the same in every job (``train/loss``, ``dev/cola/mcc``, ``dev/score``) and the
charts of teachers, students and controls overlay. Records are keyed by the job's optimizer step.

Each job folder holds ``tracking.json``: the job's tracker run id (made once, so a resumed job
continues its own W&B run) and which loggers have seen the job (so turning a tracker on for a
finished run backfills each job's history from its ``metrics.jsonl`` exactly once).
"""

from __future__ import annotations

import inspect
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any

#: The folder a job lives in says what it is (``teachers/<hash>``, ``students/<hash>/seed-3``).
JOB_TYPES = {"teachers": "teacher", "students": "student", "controls": "control",
             "students-search": "student-trial", "controls-search": "control-trial"}  # student.search trials
STATE_FILE = "tracking.json"


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def infer_job_type(run_dir: Path, job: str) -> str:
    """teacher / student / control from the job's folder, else the job name's first word."""
    for part in Path(run_dir).parts[::-1][:3]:
        if part in JOB_TYPES:
            return JOB_TYPES[part]
    return job.split("-")[0]


def logger_key(logger) -> str:
    """Which tracker a logger writes to: ``tracking_key()`` if it has one (wandb: its project), else its class."""
    key = getattr(logger, "tracking_key", None)
    if callable(key):
        return str(key())
    return f"{type(logger).__module__}.{type(logger).__qualname__}"


def _read_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(folder: Path, data: dict) -> None:
    path = Path(folder) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def job_run_id(folder: Path, key: str = "job") -> str:
    """The tracker run id of the job (or report) ``key`` in ``folder``: made once, then read back.

    Stored rather than derived from the path, so a deleted and re-made folder starts a new W&B run
    instead of appending to the old one.
    """
    state = _read_state(folder)
    ids = state.setdefault("run_ids", {})
    if key not in ids:
        ids[key] = secrets.token_hex(6)  # W&B ids: letters and digits
        _write_state(folder, state)
    return ids[key]


def _mark_logged(folder: Path, keys: list[str]) -> None:
    state = _read_state(folder)
    logged = state.setdefault("logged", [])
    for key in keys:
        if key not in logged:
            logged.append(key)
    _write_state(folder, state)


def _start(logger, **kwargs) -> None:
    """Start a logger; ``run_id`` only for loggers whose ``start`` takes it (plugins written before it existed)."""
    params = inspect.signature(logger.start).parameters
    if "run_id" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs.pop("run_id", None)
    logger.start(**kwargs)


class Tracker:
    def __init__(self, *, run_dir: Path, job: str, group: str | None, config: dict, loggers=(), enabled=True,
                 job_type: str | None = None, run_id: str | None = None):
        self.job = job
        self.enabled = enabled
        self.loggers = list(loggers) if enabled else []
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.job_type = job_type or infer_job_type(self.run_dir, job)
        self.run_id = run_id
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.loggers:
                self.run_id = run_id or job_run_id(self.run_dir)
                for lg in self.loggers:
                    _start(lg, run_dir=run_dir, name=job, group=group, job_type=self.job_type, config=config,
                           run_id=self.run_id)
                # These loggers see this job live: a later run never backfills it to them.
                _mark_logged(self.run_dir, [logger_key(lg) for lg in self.loggers])

    def forget_after(self, step: int) -> None:
        """Drop JSON-lines records after ``step``: a resumed run logs those steps again."""
        if not self.enabled or not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(self.path)

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        if not self.enabled or not metrics:
            return
        named = {k: _clean(v) for k, v in metrics.items()}
        # Appending one flushed line per call: a killed run keeps everything logged so far.
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": round(time.time(), 3), "step": step, **named}) + "\n")
        for lg in self.loggers:
            lg.log(named, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.enabled:
            for lg in self.loggers:
                lg.summary({k: _clean(v) for k, v in values.items()})

    def table(self, key: str, columns: list[str], rows: list[list], *, step: int | None = None) -> None:
        """A table, for loggers that can show one (``log_table``); the others skip it."""
        if self.enabled:
            for lg in self.loggers:
                if hasattr(lg, "log_table"):
                    lg.log_table(key, list(columns), [list(r) for r in rows], step=step)

    def images(self, images: dict[str, Path], *, step: int | None = None) -> None:
        """Image files (plots), for loggers that can show them (``log_images``)."""
        if self.enabled and images:
            for lg in self.loggers:
                if hasattr(lg, "log_images"):
                    lg.log_images({k: Path(v) for k, v in images.items()}, step=step)

    def finish(self) -> None:
        for lg in self.loggers:
            lg.finish()
        self.loggers = []


def _history_keys(record: dict, job: str) -> dict:
    """One metrics.jsonl record as metric keys: names from before 0.2 (``JOB/train/loss``,
    ``JOB/cola/mcc``) become today's (``train/loss``, ``dev/cola/mcc``) so old runs overlay too."""
    out = {}
    for key, value in record.items():
        if key in ("time", "step"):
            continue
        if key.startswith(job + "/"):
            key = key[len(job) + 1:]
            if not key.startswith(("train/", "dev/")):
                key = "dev/" + key
        out[key] = value
    return out


def backfill(job_dir: Path, *, job: str, loggers, group: str | None, config: dict,
             job_type: str | None = None) -> list[str]:
    """Log a finished job's history (its ``metrics.jsonl``) and summary to the loggers that have not
    seen it yet -- once: the job folder remembers which have. Returns the keys of the loggers it logged to.

    Call it for a job the pipeline reuses (``result.json`` exists) when the recipe has trackers; the
    run continues the job's own tracker run id, so a job logged live is never logged twice.
    """
    job_dir = Path(job_dir)
    history = job_dir / "metrics.jsonl"
    if not history.exists():
        return []
    seen = set(_read_state(job_dir).get("logged", []))
    todo = [lg for lg in loggers if logger_key(lg) not in seen]
    if not todo:
        return []
    records = [json.loads(line) for line in history.read_text(encoding="utf-8").splitlines() if line.strip()]
    result_path = job_dir / "result.json"
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.exists() else {}
    tracker = Tracker(run_dir=job_dir, job=job, group=group, config=config, loggers=todo, job_type=job_type)
    try:
        by_step: dict[int, dict] = {}
        for record in records:  # one call per step: W&B wants increasing steps
            by_step.setdefault(int(record.get("step", 0)), {}).update(_history_keys(record, job))
        for step in sorted(by_step):
            for lg in tracker.loggers:
                lg.log({k: _clean(v) for k, v in by_step[step].items()}, step=step)
        summary = {k: result[k] for k in ("best", "train_seconds") if k in result}
        if summary:
            tracker.summary(summary)
    finally:
        tracker.finish()
    return [logger_key(lg) for lg in todo]


def report_run(run_dir: Path, *, recipe_hash: str, group: str | None, config: dict, loggers,
               scores: dict[str, float], table: tuple[list[str], list[list]] | None = None,
               plots: dict[str, Path] | None = None,
               tables: dict[str, tuple[list[str], list[list]]] | None = None) -> None:
    """The report as one tracker run per recipe version (``job_type`` report): the scores as its summary,
    the comparison as a table (and ``tables``, e.g. the variants' frontier), the report's plots as images."""
    if not loggers:
        return
    tracker = Tracker(run_dir=run_dir, job=f"report-{recipe_hash[:8]}", group=group, config=config,
                      loggers=loggers, job_type="report",
                      run_id=job_run_id(run_dir, f"report-{recipe_hash}"))
    try:
        tracker.summary({f"score/{k}": v for k, v in scores.items() if isinstance(v, (int, float))})
        if table is not None:
            tracker.table("comparison", table[0], table[1])
        for key, (columns, rows) in (tables or {}).items():
            tracker.table(key, columns, rows)
        tracker.images({name: path for name, path in (plots or {}).items() if Path(path).is_file()})
    finally:
        tracker.finish()
