"""Tokenising a task's split once, caching it on disk, and content fingerprints of data sets."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mtkd.errors import DataError, RecipeError

log = logging.getLogger(__name__)

#: Bump when the layout of a tokenised data set changes, so old cache entries are not reused.
CACHE_FORMAT = 1

# Columns that define an example's content. Soft targets are keyed by a hash of these, so the same
# raw data gives the same fingerprint before and after tokenisation (token ids are not included).
CONTENT_COLUMNS = ("idx", "text_a", "text_b", "label")


def default_cache_root() -> Path:
    """``$MTKD_CACHE``, else ``~/.cache/mtkd``."""
    return Path(os.environ.get("MTKD_CACHE") or Path.home() / ".cache" / "mtkd")


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides a tokenizer's output: class, vocabulary and rules.

    Not its path: every teacher checkpoint carries its own copy of the same tokenizer, and they must
    share one cache entry.

    Fast tokenizers are hashed through their serialised ``tokenizers`` JSON, minus the truncation
    and padding settings that each call changes; slow ones through their vocabulary and init options.
    """
    cached = getattr(tokenizer, "_mtkd_fingerprint", None)
    if cached is not None:  # serialising a fast tokenizer costs ~0.1-1 s; a tokenizer does not change
        return cached
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        h.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
    for attr in ("truncation_side", "padding_side", "model_input_names"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)}".encode())
    fingerprint = h.hexdigest()[:16]
    try:
        tokenizer._mtkd_fingerprint = fingerprint
    except AttributeError:
        pass
    return fingerprint


def _canonical(value: Any) -> Any:
    # numpy scalars and NaN labels (regression test splits) must hash the same on every load.
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def fingerprint_dataset(ds, *, batch_size: int = 10_000) -> str:
    """A stable content hash of a data set's ``idx``, ``text_a``, ``text_b`` and ``label`` columns.

    Rows are hashed in data-set order; columns that are absent are skipped (their names are part
    of the hash). Token ids and ``soft`` are not included, so a tokenised split has the same
    fingerprint as the raw split it came from. Changes when any id, text or label changes.
    """
    columns = [c for c in CONTENT_COLUMNS if c in ds.column_names]
    if not columns:
        raise DataError("cannot fingerprint a data set without content columns",
                        expected=f"some of {list(CONTENT_COLUMNS)}", found=ds.column_names)
    h = hashlib.sha256()
    h.update(json.dumps({"columns": columns, "rows": len(ds)}).encode())
    view = ds.select_columns(columns)
    for start in range(0, len(ds), batch_size):
        chunk = view[start:start + batch_size]
        rows = [[_canonical(chunk[c][i]) for c in columns] for i in range(len(chunk[columns[0]]))]
        h.update(json.dumps(rows, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def subsample(ds, n: int, seed: int):
    """``n`` rows chosen with a fixed seed, in their original order (the whole set when ``n >= len``).

    Smaller samples with the same seed are subsets of larger ones.
    """
    if n >= len(ds):
        return ds
    order = np.random.default_rng(seed).permutation(len(ds))
    return ds.select(np.sort(order[:n]).tolist())


def bootstrap(ds, seed: int):
    """A same-size resample with replacement (for teacher diversity), rows in original order."""
    picks = np.random.default_rng(seed).integers(0, len(ds), size=len(ds))
    return ds.select(np.sort(picks).tolist())


def _cache_key(task, split: str, tokenizer, max_length: int, dataset) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "task": task.fingerprint(),
        "split": split,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        # A caller-supplied data set (e.g. a subsample) is keyed by its content too.
        "data": fingerprint_dataset(dataset) if dataset is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _tokenize(ds, tokenizer, text_fields: tuple[str, ...], max_length: int, fingerprint: str):
    missing = [c for c in text_fields if c not in ds.column_names]
    if missing:
        raise DataError("the split lacks the task's text columns", expected=list(text_fields),
                        found=ds.column_names)
    first, second = text_fields[0], (text_fields[1] if len(text_fields) > 1 else None)

    def encode(batch):
        enc = tokenizer(batch[first], batch[second] if second else None, truncation="longest_first",
                        max_length=max_length, padding=False, return_attention_mask=False)
        out = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out

    # keep_in_memory: the result goes to our own cache, not to stray files in the HF cache.
    return ds.map(encode, batched=True, batch_size=1000, keep_in_memory=True,
                  load_from_cache_file=False, new_fingerprint=fingerprint, desc="tokenising")


def tokenize_split(task, split: str, tokenizer, *, max_length: int, cache_dir=None, dataset=None):
    """Tokenise one split of a task; reuse the on-disk copy when one exists.

    ``tokenize_split(task, split, tokenizer, *, max_length, cache_dir=None, dataset=None) -> datasets.Dataset``

    The result keeps the split's columns (``text_a``, ``text_b``, ``label``, ``idx``, …) and adds
    ``input_ids``, ``token_type_ids`` (when the tokenizer makes them) and ``length`` (tokens).
    Pairs are truncated ``longest_first`` to ``max_length``; nothing is padded (``collate`` pads).
    ``dataset`` replaces ``task.load_split(split)`` (e.g. a subsample); its content is then part
    of the cache key. Cache entries live in ``<cache_dir>/tokenized/<task>-<split>-<key>`` where
    ``cache_dir`` defaults to ``$MTKD_CACHE`` or ``~/.cache/mtkd`` and the key hashes the task's
    fingerprint, the split, the tokenizer's identity and ``max_length``. Entries are written to a
    temporary folder and renamed into place, so concurrent processes never read a partial one.
    """
    import datasets

    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel; a real one is the model's position table.
    if isinstance(limit, int) and limit < 1_000_000 and max_length > limit:
        raise RecipeError(f"data.max_length is longer than the encoder takes ({limit} tokens)", path="data.max_length",
                          expected=f"at most {limit}", found=max_length,
                          hint="longer inputs would index past the model's position embeddings")
    key = _cache_key(task, split, tokenizer, max_length, dataset)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root / "tokenized" / f"{task.name}-{split}-{key}"
    if target.is_dir():
        try:
            return datasets.load_from_disk(str(target))
        except Exception as exc:  # an entry damaged outside mtkd: rebuild it
            log.warning("tokenised cache entry %s unreadable (%s); rebuilding", target, exc)
            shutil.rmtree(target, ignore_errors=True)

    ds = dataset if dataset is not None else task.load_split(split)
    tokenized = _tokenize(ds, tokenizer, tuple(task.text_fields), max_length, key)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenized.save_to_disk(str(tmp / "data"))
        (tmp / "data" / "mtkd_cache.json").write_text(json.dumps({
            "task": task.name, "split": split, "max_length": max_length, "rows": len(tokenized),
            "tokenizer": str(getattr(tokenizer, "name_or_path", "")), "key": key}, indent=1))
        os.rename(tmp / "data", target)
    except OSError:
        if not target.is_dir():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Read back the saved copy: memory-mapped, and identical to what the next run will load.
    return datasets.load_from_disk(str(target))
