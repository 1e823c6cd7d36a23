"""A selection split carved from a task's training data (``evaluation.selection: {holdout: FRACTION}``).

The dev set is then only reported: checkpoint choice, aggregator weights and teacher gates use the
holdout, which no model trains on and no soft target is computed for.

How the carve is made, and why:

- **By content, not by row position.** Each row's key is ``sha256(seed, task, text_a, text_b)``, so
  the carve does not depend on the order the rows are read in, and a row keeps its side when other
  rows are added or dropped (only rows near the cut can move).
- **Identical texts stay together.** Rows with the same text(s) (GLUE training sets hold
  duplicates, sometimes with different labels) share a key and go to the same side, so no holdout
  text is ever trained on. Labels are not part of the key for the same reason.
- **An exact size.** The holdout is the groups with the smallest keys until ``round(FRACTION * N)``
  rows are reached (at least one row, and at least one row left to train on).
- **Deterministic and recorded.** The same data, seed and task name give the same carve; its
  :class:`Carve` carries a fingerprint (fraction, seed, task, the holdout's and the rest's content
  fingerprints) for stage hashes and the report.

Carve the full training split first and sub-sample the rest afterwards (``max_train_examples``),
so the holdout does not change with the training budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError, RecipeError
from .tokenize import fingerprint_dataset

TEXT_COLUMNS = ("text_a", "text_b")


@dataclass
class Carve:
    """A task's training split cut in two: ``train`` (what models train on) and ``holdout``."""

    train: Any  # datasets.Dataset
    holdout: Any  # datasets.Dataset
    fraction: float
    fingerprint: str
    holdout_fingerprint: str
    train_fingerprint: str

    def describe(self) -> dict:
        """What the report and metrics.json record of the carve."""
        return {"fraction": self.fraction, "holdout_rows": len(self.holdout), "train_rows": len(self.train),
                "fingerprint": self.fingerprint, "holdout_fingerprint": self.holdout_fingerprint}


def content_keys(ds, seed: int, task: str, *, batch_size: int = 10_000) -> list[bytes]:
    """Every row's keyed content hash (the carve's sort key; equal texts give equal keys)."""
    columns = [c for c in TEXT_COLUMNS if c in ds.column_names]
    if not columns:
        raise DataError("cannot carve a holdout from a split without text columns",
                        expected=f"some of {list(TEXT_COLUMNS)}", found=ds.column_names)
    prefix = json.dumps({"seed": int(seed), "task": task}, sort_keys=True).encode()
    keys = []
    view = ds.select_columns(columns)
    for start in range(0, len(ds), batch_size):
        chunk = view[start:start + batch_size]
        for i in range(len(chunk[columns[0]])):
            texts = json.dumps([chunk[c][i] for c in columns], ensure_ascii=False).encode()
            keys.append(hashlib.sha256(prefix + b"\0" + texts).digest())
    return keys


def check_fraction(fraction: float, *, file=None, path: str = "evaluation.selection.holdout") -> float:
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise RecipeError("the holdout fraction must be between 0 and 1", file=file, path=path,
                          expected="a fraction such as 0.1", found=fraction)
    return float(fraction)


def carve_holdout(ds, fraction: float, *, seed: int, task: str) -> Carve:
    """Split ``ds`` (a task's full training split) into the rows to train on and a holdout.

    Both keep the original row order. Raises ``DataError`` when the split is too small to leave
    a row on each side.
    """
    fraction = check_fraction(fraction)
    n = len(ds)
    keys = content_keys(ds, seed, task)
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if len(groups) < 2:
        raise DataError(f"task {task!r}: the training split has {n} row(s) but fewer than 2 distinct texts; "
                        "a holdout cannot be carved from it", expected="at least 2 distinct training texts",
                        found=n)
    target = min(max(1, round(fraction * n)), n - 1)
    chosen: list[int] = []
    for key in sorted(groups):
        if len(chosen) >= target:
            break
        if len(chosen) + len(groups[key]) >= n:  # always leave something to train on
            break
        chosen.extend(groups[key])
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    holdout = ds.select(np.flatnonzero(mask).tolist())
    train = ds.select(np.flatnonzero(~mask).tolist())
    hold_fp, train_fp = fingerprint_dataset(holdout), fingerprint_dataset(train)
    fp = hashlib.sha256(json.dumps({"fraction": fraction, "seed": int(seed), "task": task, "holdout": hold_fp,
                                    "train": train_fp}, sort_keys=True).encode()).hexdigest()[:16]
    return Carve(train, holdout, fraction, fp, hold_fp, train_fp)


def holdout_fraction(selection) -> float | None:
    """The holdout fraction of a resolved ``evaluation.selection`` (``None`` for ``dev``)."""
    if selection in (None, "dev"):
        return None
    if isinstance(selection, dict) and "holdout" in selection:
        return float(selection["holdout"])
    raise RecipeError("unknown evaluation.selection", path="evaluation.selection",
                      expected="dev, or {holdout: FRACTION}", found=selection)
