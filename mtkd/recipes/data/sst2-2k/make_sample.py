"""Rebuild the quickstart's SST-2 sample from a full glue_data folder.

    python recipes/data/sst2-2k/make_sample.py ../shared/data/glue_tsv

SST-2: 2,000 training rows drawn uniformly without replacement (numpy default_rng(0), kept in file order,
so the label balance is the training split's own), the whole dev split (872 rows, the figure the report's
confidence intervals are computed over) and the first 80 test rows (so `mtkd predict` has a test split).
Lines and headers are copied byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TRAIN_ROWS, TEST_ROWS, SEED = 2000, 80, 0


def main(src: str, dst: str) -> None:
    src_dir, out = Path(src) / "SST-2", Path(dst) / "SST-2"
    out.mkdir(parents=True, exist_ok=True)
    lines = (src_dir / "train.tsv").read_bytes().splitlines(keepends=True)
    keep = sorted(np.random.default_rng(SEED).choice(len(lines) - 1, size=TRAIN_ROWS, replace=False).tolist())
    (out / "train.tsv").write_bytes(b"".join([lines[0], *(lines[1 + i] for i in keep)]))
    (out / "dev.tsv").write_bytes((src_dir / "dev.tsv").read_bytes())
    test = (src_dir / "test.tsv").read_bytes().splitlines(keepends=True)
    (out / "test.tsv").write_bytes(b"".join(test[: 1 + TEST_ROWS]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent))
