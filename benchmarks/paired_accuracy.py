"""Accuracy of two kept models on one GLUE-style dev file, and a 95 % paired percentile bootstrap interval of
their difference over the dev examples: the report's per-seed method, for pairs the report does not hold (e.g.
a distilled student against a hard-label model from another recipe version).

    python benchmarks/paired_accuracy.py --dev recipes/data/sst2-2k/SST-2/dev.tsv --task sst2 \\
        RUN/students/<key>/final RUN/students/<other key>/final

A model folder is a job's kept model (`result.json`'s `model` inside the job folder). The dev file is a TSV
whose first column is the sentence and last the class id (SST-2's layout).
"""

from __future__ import annotations

import argparse
import csv

import numpy as np
import torch

from mtkd.model import load_model
from mtkd.stats import percentile_interval, resample_weights


def predictions(folder: str, task: str, sentences: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    model = load_model(folder).eval()
    tokenizer = model.encoder.tokenizer
    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[i:i + batch_size], max_length=max_length, truncation=True, padding=True,
                              return_tensors="pt")
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            out.append(model(task, **inputs).argmax(-1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", required=True, help="TSV with a header: sentence first, class id last")
    parser.add_argument("--task", required=True, help="the head to predict with")
    parser.add_argument("--max-length", type=int, default=64, help="the recipe's data.max_length")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("a", help="model folder A")
    parser.add_argument("b", help="model folder B")
    args = parser.parse_args()
    with open(args.dev, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    sentences, labels = [r[0] for r in rows], np.array([int(r[-1]) for r in rows])
    correct = [(predictions(m, args.task, sentences, args.max_length) == labels).astype(float) for m in (args.a, args.b)]
    diff = correct[0] - correct[1]
    weights = resample_weights(len(labels), args.resamples, np.random.default_rng(args.seed))  # [B, N] counts
    low, high = percentile_interval(100 * weights @ diff / len(labels))
    print(f"A {100 * correct[0].mean():.2f}  B {100 * correct[1].mean():.2f}  A - B {100 * diff.mean():+.2f} "
          f"[{low:+.2f}, {high:+.2f}]  ({len(labels)} examples, {args.resamples} paired resamples)")


if __name__ == "__main__":
    main()
