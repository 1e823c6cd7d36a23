"""A design copy of the quickstart's sample: the same training, unlabelled and test files, and in place of
dev.tsv DESIGN_ROWS other SST-2 training sentences, so that settings of the quickstart can be compared without
looking at the dev split it reports.

    python recipes/data/sst2-2k/make_design_set.py ../shared/data/glue_tsv /tmp/sst2-design
    mtkd recipe run recipes/quickstart.yaml --set data.glue=/tmp/sst2-design --output /tmp/design-run

The design sentences are training rows of glue_data/SST-2/train.tsv of at least MIN_WORDS words (dev holds
whole sentences; most training rows are short phrases), in none of train.tsv, unlabelled.tsv and dev.tsv,
each sentence once, DESIGN_ROWS of them drawn with numpy default_rng(DESIGN_SEED) and kept in file order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DESIGN_ROWS, DESIGN_SEED, MIN_WORDS = 2000, 2, 12


def _sentences(path: Path, text_column: int) -> set[bytes]:
    rows = path.read_bytes().splitlines()[1:]
    return {row.split(b"\t")[text_column] for row in rows}


def main(src: str, dst: str) -> None:
    glue, sample, out = Path(src) / "SST-2", Path(__file__).parent / "SST-2", Path(dst) / "SST-2"
    taken = _sentences(sample / "train.tsv", 0) | _sentences(sample / "unlabelled.tsv", 1)
    taken |= _sentences(glue / "dev.tsv", 0)
    lines = (glue / "train.tsv").read_bytes().splitlines(keepends=True)
    candidates, seen = [], set()
    for line in lines[1:]:
        sentence = line.split(b"\t")[0]
        if sentence in taken or sentence in seen or len(sentence.split()) < MIN_WORDS:
            continue
        seen.add(sentence)
        candidates.append(line)
    pick = sorted(np.random.default_rng(DESIGN_SEED).choice(len(candidates), size=DESIGN_ROWS, replace=False))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "unlabelled.tsv", "test.tsv"):
        (out / name).write_bytes((sample / name).read_bytes())
    (out / "dev.tsv").write_bytes(b"".join([lines[0], *(candidates[i] for i in pick)]))
    print(f"{out / 'dev.tsv'}: {DESIGN_ROWS} of {len(candidates)} candidate training sentences")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
