"""Grouping examples into batches, and padding a batch into tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mtkd.errors import RecipeError

#: Length grouping sorts examples by length inside shuffled chunks of this many batches: enough
#: to make neighbours similar in length, few enough that batches still mix the data.
GROUP_CHUNK_BATCHES = 50


def _cut(order: np.ndarray, lengths: np.ndarray, batch_size: int | None, token_budget: int | None,
         shards: int) -> list[list[int]]:
    """Cut ``order`` into consecutive batches that respect the size and token limits."""
    if token_budget is None:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches, current, longest = [], [], 0
    for i in order.tolist():
        new_longest = max(longest, int(lengths[i]))
        n = len(current) + 1
        # Each of `shards` processes holds ceil(n / shards) rows padded to the batch's longest.
        too_big = math.ceil(n / shards) * new_longest > token_budget
        if current and (too_big or (batch_size is not None and n > batch_size)):
            batches.append(current)
            current, new_longest = [], int(lengths[i])
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def make_batches(lengths: Sequence[int], *, batch_size: int | None = None, token_budget: int | None = None,
                 group_by_length: bool = True, rng: np.random.Generator, shards: int = 1) -> list[list[int]]:
    """Row indices of ``lengths`` grouped into batches; every row appears in exactly one batch.

    ``batch_size`` caps the examples per batch; ``token_budget`` caps the padded tokens
    (rows × longest row) that each of ``shards`` processes holds when the batch is split across
    them (``shards=1``: the whole batch). Give either or both. With ``group_by_length`` rows are
    shuffled, sorted by length inside chunks of ``GROUP_CHUNK_BATCHES`` batches' worth, cut
    into batches, and the batch order shuffled; without it, rows are shuffled and cut in order.
    The result depends only on ``lengths``, the options and the state of ``rng``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_size is None and token_budget is None:
        raise ValueError("make_batches needs batch_size, token_budget or both")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if token_budget is not None and len(lengths) and lengths.max() > token_budget:
        raise RecipeError("the token budget is smaller than the longest example", path="training.token_budget",
                          expected=f">= {int(lengths.max())} (the longest tokenised example)", found=token_budget,
                          hint="raise training.token_budget or lower data.max_length")
    if len(lengths) == 0:
        return []
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return _cut(order, lengths, batch_size, token_budget, shards)

    if batch_size is not None:
        per_batch = batch_size
    else:  # roughly how many average rows fit the budget
        per_batch = max(1, token_budget * shards // max(1, int(lengths.mean())))
    chunk = GROUP_CHUNK_BATCHES * per_batch
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(_cut(part, lengths, batch_size, token_budget, shards))
    return [batches[i] for i in rng.permutation(len(batches))]


def _column(rows, name: str) -> list | None:
    if isinstance(rows, dict):
        return rows.get(name)
    if rows and name in rows[0]:
        return [row[name] for row in rows]
    return None


def collate(rows, pad_token_id: int, *, task_type: str | None = None,
            pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest sequence and turn it into tensors.

    ``rows`` is a list of examples (dicts) or a dict of columns (what ``dataset[indices]``
    returns), with ``input_ids`` and optionally ``token_type_ids``, ``label``, ``idx``, ``soft``.
    Returns ``input_ids`` (padded with ``pad_token_id``), ``attention_mask``, ``token_type_ids``
    (when present, padded with 0), ``labels`` (long for classification, float for regression;
    inferred from the label values when ``task_type`` is None), ``idx`` (long) and ``soft``
    (float [B, C]; [B, 1] for scalar targets) when present. ``pad_to_multiple_of`` rounds the
    padded length up (8 suits tensor cores).
    """
    ids = _column(rows, "input_ids")
    if not ids:
        raise ValueError("collate got an empty batch")
    width = max(len(seq) for seq in ids)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of

    def pad(seqs, value):
        out = np.full((len(seqs), width), value, dtype=np.int64)
        for i, seq in enumerate(seqs):
            out[i, :len(seq)] = seq
        return torch.from_numpy(out)

    batch = {"input_ids": pad(ids, pad_token_id)}
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, seq in enumerate(ids):
        mask[i, :len(seq)] = 1
    batch["attention_mask"] = torch.from_numpy(mask)
    types = _column(rows, "token_type_ids")
    if types is not None:
        batch["token_type_ids"] = pad(types, 0)

    labels = _column(rows, "label")
    if labels is not None:
        regression = (task_type == "regression" if task_type is not None
                      else any(isinstance(v, float) for v in labels))
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
    idx = _column(rows, "idx")
    if idx is not None:
        batch["idx"] = torch.tensor(idx, dtype=torch.long)
    soft = _column(rows, "soft")
    if soft is not None:
        soft = torch.tensor(np.asarray(soft, dtype=np.float32))
        batch["soft"] = soft.reshape(len(ids), -1)
    return batch
