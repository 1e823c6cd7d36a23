"""Metric tracking for one job: an always-on JSON-lines file plus the recipe's logger plugins.

Only the main process tracks; on other ranks a Tracker is a no-op. Metric names carry the
stage and the task (``teacher-0/train/loss``, ``student-s1/rte/accuracy``), keyed by the job's
global optimizer step.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


class Tracker:
    def __init__(self, *, run_dir: Path, job: str, group: str | None, config: dict, loggers=(), enabled=True):
        self.job = job
        self.enabled = enabled
        self.loggers = list(loggers) if enabled else []
        self.path = Path(run_dir) / "metrics.jsonl"
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for lg in self.loggers:
                lg.start(run_dir=run_dir, name=job, group=group, job_type=job.split("-")[0], config=config)

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
        named = {f"{self.job}/{k}": _clean(v) for k, v in metrics.items()}
        # Appending one flushed line per call: a killed run keeps everything logged so far.
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": round(time.time(), 3), "step": step, **named}) + "\n")
        for lg in self.loggers:
            lg.log(named, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.enabled:
            for lg in self.loggers:
                lg.summary({f"{self.job}/{k}": _clean(v) for k, v in values.items()})

    def finish(self) -> None:
        for lg in self.loggers:
            lg.finish()
        self.loggers = []
