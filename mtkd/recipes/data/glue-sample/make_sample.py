"""Rebuild this quickstart sample from a full glue_data folder.

    python recipes/data/glue-sample/make_sample.py ../shared/data/glue_tsv

For CoLA, SST-2 and RTE: 240 train and 80 dev rows, half of each label, drawn with a fixed seed
(numpy default_rng(0)) and kept in file order. Lines (and headers) are copied byte for byte, so the
files keep GLUE's exact formats (CoLA train/dev have no header).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TASKS = {"CoLA": (False, 1), "SST-2": (True, 1), "RTE": (True, 3)}  # has header, label column
SIZES = {"train.tsv": 240, "dev.tsv": 80}
SEED = 0


def sample_lines(lines: list[bytes], label_col: int, n: int, rng) -> list[bytes]:
    labels = [line.rstrip(b"\r\n").split(b"\t")[label_col] for line in lines]
    keep: list[int] = []
    classes = sorted(set(labels))
    for k, value in enumerate(classes):
        rows = [i for i, lab in enumerate(labels) if lab == value]
        share = n // len(classes) + (1 if k < n % len(classes) else 0)
        keep += rng.choice(rows, size=share, replace=False).tolist()
    return [lines[i] if lines[i].endswith(b"\n") else lines[i] + b"\n" for i in sorted(keep)]


def main(src: str, dst: str) -> None:
    rng = np.random.default_rng(SEED)
    for task, (header, label_col) in TASKS.items():
        for name, n in SIZES.items():
            lines = (Path(src) / task / name).read_bytes().splitlines(keepends=True)
            head, body = (lines[:1], lines[1:]) if header else ([], lines)
            out = Path(dst) / task / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b"".join(head + sample_lines(body, label_col, n, rng)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent))
