"""Rebuild the quickstart's SST-2 sample from a full glue_data folder.

    python recipes/data/sst2-2k/make_sample.py ../shared/data/glue_tsv

SST-2: 2,000 training rows drawn uniformly without replacement (numpy default_rng(0), kept in file order,
so the label balance is the training split's own), the whole dev split (872 rows, the figure the report's
confidence intervals are computed over) and the first 80 test rows (so `mtkd predict` has a test split).
Lines and headers are copied byte for byte. `unlabelled.tsv`: UNLABELLED_ROWS more training sentences, drawn
the same way (default_rng(1)) from the rows not in train.tsv, with their labels removed, in the test split's
format (`index<TAB>sentence`): the quickstart's transfer set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TRAIN_ROWS, TEST_ROWS, SEED = 2000, 80, 0
UNLABELLED_ROWS, UNLABELLED_SEED = 8000, 1


def main(src: str, dst: str) -> None:
    src_dir, out = Path(src) / "SST-2", Path(dst) / "SST-2"
    out.mkdir(parents=True, exist_ok=True)
    lines = (src_dir / "train.tsv").read_bytes().splitlines(keepends=True)
    keep = sorted(np.random.default_rng(SEED).choice(len(lines) - 1, size=TRAIN_ROWS, replace=False).tolist())
    (out / "train.tsv").write_bytes(b"".join([lines[0], *(lines[1 + i] for i in keep)]))
    (out / "dev.tsv").write_bytes((src_dir / "dev.tsv").read_bytes())
    test = (src_dir / "test.tsv").read_bytes().splitlines(keepends=True)
    (out / "test.tsv").write_bytes(b"".join(test[: 1 + TEST_ROWS]))
    rest = sorted(set(range(len(lines) - 1)) - set(keep))
    pick = sorted(np.random.default_rng(UNLABELLED_SEED).choice(rest, size=UNLABELLED_ROWS, replace=False).tolist())
    sentences = [lines[1 + i].rstrip(b"\r\n").rsplit(b"\t", 1)[0] for i in pick]
    (out / "unlabelled.tsv").write_bytes(b"index\tsentence\n" + b"".join(
        b"%d\t%s\n" % (n, sentence) for n, sentence in enumerate(sentences)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent))
