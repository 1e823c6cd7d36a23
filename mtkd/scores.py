"""GLUE-style scores: a task's score is the mean of its metrics; the run's score the mean over tasks."""

from __future__ import annotations

import math
import statistics


def task_score(metrics: dict[str, float]) -> float:
    """The mean of a task's metrics (MRPC: F1 and accuracy; MNLI: matched and mismatched accuracy)."""
    values = [v for v in metrics.values() if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def glue_score(per_task: dict[str, dict[str, float]]) -> float:
    """The mean over tasks of each task's score, on the leaderboard's x100 scale (metrics already x100)."""
    scores = [task_score(m) for m in per_task.values() if m]
    return sum(scores) / len(scores) if scores else float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
