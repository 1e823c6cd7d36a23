"""A transfer set: inputs without labels that the teachers label for the student (a task's ``transfer_split``).

Distillation's largest gains come from inputs nobody labelled: the teachers' outputs on them are
training signal the hard-label control cannot use. The transfer rows

- have their labels removed (``-1`` for classification, NaN for regression), whatever the split held,
  so the student learns only the teachers' outputs on them;
- never repeat an input the run holds elsewhere: a row whose text(s) appear in the rows trained on,
  the holdout or any dev split is dropped (counted in :class:`Transfer`), so neither checkpoint
  choice nor the reported score sees an input the student was taught on;
- are sub-sampled with a fixed seed to ``max_transfer_examples`` after that;
- are never trained on by a teacher or the control; only the logits, soft-targets and student stages
  read them (their fingerprint is in those units' keys only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .holdout import TEXT_COLUMNS
from .tokenize import fingerprint_dataset, subsample

#: the label of a row without one, by task type (``Task.load_split``'s convention for test splits)
UNLABELLED_CLASS = -1


def labelled(labels):
    """A boolean mask of the rows that carry a gold label (a torch tensor or a numpy array)."""
    dtype = labels.dtype
    floating = dtype.is_floating_point if hasattr(dtype, "is_floating_point") else np.issubdtype(dtype, np.floating)
    return labels == labels if floating else labels >= 0  # NaN != NaN


@dataclass
class Transfer:
    """A task's transfer set and what became of the split it came from."""

    rows: Any  # datasets.Dataset, labels removed
    split: str
    read: int  # rows in the split
    overlap: int  # dropped: their text is trained on, in the holdout or in a dev split
    fingerprint: str

    def describe(self) -> dict:
        return {"split": self.split, "rows": len(self.rows), "read": self.read, "dropped_overlap": self.overlap,
                "fingerprint": self.fingerprint}


def _texts(ds) -> list[str]:
    columns = [c for c in TEXT_COLUMNS if c in ds.column_names]
    view = ds.select_columns(columns)
    return [json.dumps([row[c] for c in columns], ensure_ascii=False) for row in view]


def build_transfer(ds, *, split: str, task_type: str, exclude, max_examples: int | None, seed: int) -> Transfer:
    """The transfer set from a loaded split ``ds``: labels removed, rows whose text is in any of the
    datasets in ``exclude`` dropped, then sub-sampled to ``max_examples`` (fixed seed)."""
    import datasets

    seen: set[str] = set()
    for other in exclude:
        if other is not None:
            seen.update(_texts(other))
    keep = [i for i, text in enumerate(_texts(ds)) if text not in seen]
    read = len(ds)
    rows = ds.select(keep)
    if max_examples:
        rows = subsample(rows, max_examples, seed)
    regression = task_type == "regression"
    label = [float("nan")] * len(rows) if regression else [UNLABELLED_CLASS] * len(rows)
    feature = datasets.Value("float32" if regression else "int64")
    rows = rows.remove_columns([c for c in ("label",) if c in rows.column_names])
    rows = rows.add_column("label", label, feature=feature)
    return Transfer(rows, split, read, read - len(keep), fingerprint_dataset(rows))


def with_transfer(train, transfer):
    """The student's training rows: the labelled split, then the transfer rows (same columns and types)."""
    import datasets

    if transfer is None:
        return train
    rows = transfer.select_columns(train.column_names)
    if rows.features != train.features:  # e.g. the label a ClassLabel in the training split
        rows = rows.cast(train.features)
    return datasets.concatenate_datasets([train, rows])
