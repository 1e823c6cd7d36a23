"""GLUE submission files (``index<TAB>prediction``) and the zip the leaderboard takes."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

#: every file of a complete GLUE submission
GLUE_FILES = ("CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
              "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv")


def format_predictions(predictions, *, task_type: str, labels=None, names: bool = False,
                       value_range=None) -> list[str]:
    """Class ids -> ``0``/``1`` or label strings; scores -> ``%.3f``, clipped to the task's range."""
    values = np.asarray(predictions)
    if task_type == "regression":
        values = values.astype(float).reshape(-1)
        if not np.isfinite(values).all():
            raise ValueError("regression predictions must be finite numbers")
        if value_range is not None:
            values = np.clip(values, *value_range)
        return [f"{v:.3f}" for v in values]
    if values.ndim == 2:  # logits or probabilities
        values = values.argmax(axis=1)
    values = values.reshape(-1)
    if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0
                        or values.max() >= len(labels)):
        raise ValueError(f"predictions must be class ids from 0 to {len(labels) - 1}")
    return [labels[v] for v in values] if names else [str(int(v)) for v in values]


def write_predictions(path, indices, values: list[str]) -> Path:
    """Write ``index\\tprediction`` rows sorted by index, atomically (a temporary file renamed into place)."""
    indices = np.asarray(indices).reshape(-1)
    if len(indices) != len(values):
        raise ValueError(f"{len(values)} predictions but {len(indices)} indices for {path}")
    if len(np.unique(indices)) != len(indices):
        raise ValueError(f"duplicate indices in the predictions for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(indices, kind="stable")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("index\tprediction\n")
            for i in order:
                f.write(f"{int(indices[i])}\t{values[i]}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def zip_submission(files, zip_path) -> Path:
    """Put submission files, flat (as GLUE's leaderboard expects), into one zip; return its path."""
    files = [Path(f) for f in files]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"two submission files share a name: {sorted(names)}")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, arcname=f.name)
    return zip_path
