"""The multi-task training loader and sharded evaluation batches."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import torch

from mtkd.data.batching import collate, make_batches
from mtkd.errors import CheckpointError, DataError

# Columns a batch needs; text columns stay in the data set (for fingerprints) but not in batches.
BATCH_COLUMNS = ("input_ids", "token_type_ids", "label", "idx", "soft", "length")


def _batch_view(ds):
    if "input_ids" not in ds.column_names:
        raise DataError("the data set is not tokenised (no input_ids column)", expected="tokenize_split output",
                        found=ds.column_names)
    return ds.select_columns([c for c in BATCH_COLUMNS if c in ds.column_names])


def _lengths(ds) -> np.ndarray:
    # One Arrow read of the column (indexing ``ds["length"]`` row by row is slow on large splits).
    return np.asarray(ds.select_columns(["length"])[:]["length"], dtype=np.int64)


def _task_key(name: str) -> int:
    # A stable number per task name (Python's hash() changes between processes).
    return zlib.crc32(name.encode())


class MultiTaskLoader:
    """One epoch of single-task batches at a time, in the order a sampler plans, sharded over processes.

    ``MultiTaskLoader(datasets, sampler, *, batch_size, token_budget=None, group_by_length=True, seed,
    pad_token_id, task_types, rank=0, world_size=1, epochs_hint=1.0, pad_to_multiple_of=None)``

    - ``datasets``: task name -> tokenised ``datasets.Dataset`` (``tokenize_split`` output, with a
      ``soft`` column where soft targets are attached); ``task_types``: task name ->
      ``"classification"`` | ``"regression"`` (decides the labels' dtype).
    - ``batch_size`` is the GLOBAL batch: each global batch's rows are split so rank ``r`` takes
      positions ``r::world_size`` (no overlap; the union is the global batch). ``token_budget``,
      when set, caps the padded tokens each PROCESS holds (its rows × the batch's longest row).
    - Each epoch, every task's rows are batched by ``make_batches`` with
      ``np.random.default_rng([seed, epoch, crc32(task)])``; the order of tasks is
      ``sampler.epoch_plan(num_batches, generator=np.random.default_rng([seed, epoch]), epoch=epoch,
      progress=epoch / epochs_hint)`` where ``num_batches[task]`` is the task's batches in one pass.
      When the plan asks for more batches of a task than one pass has, further passes are drawn
      with ``default_rng([seed, epoch, crc32(task), pass])``, so each pass covers every row once.
    - A batch with fewer rows than ``world_size`` (at most one per pass with ``batch_size`` alone)
      is dropped, so every rank gets a non-empty share and all ranks run the same number of
      steps: up to ``world_size - 1`` rows of a task sit out an epoch, different rows each epoch.
    - Iterating yields ``(task_name, batch)`` with ``batch`` as ``collate`` makes it.
      ``len(loader)`` is the number of batches (steps) in the current epoch, equal on all ranks.

    Resume: ``state_dict() -> {"epoch", "position"}`` (position = batches yielded so far in the
    epoch); ``load_state_dict(state)`` continues with exactly the remaining batches. A trainer loop::

        loader.load_state_dict(saved)            # only when resuming
        for epoch in range(loader.epoch, epochs):
            loader.set_epoch(epoch)              # keeps a just-loaded position for that epoch
            for task, batch in loader: ...
    """

    def __init__(self, datasets: dict, sampler, *, batch_size: int, token_budget: int | None = None,
                 group_by_length: bool = True, seed: int, pad_token_id: int, task_types: dict[str, str],
                 rank: int = 0, world_size: int = 1, epochs_hint: float = 1.0,
                 pad_to_multiple_of: int | None = None):
        if not datasets:
            raise ValueError("MultiTaskLoader needs at least one data set")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        missing = sorted(set(datasets) - set(task_types))
        if missing:
            raise ValueError(f"task_types lacks {missing}")
        self.views = {name: _batch_view(ds) for name, ds in datasets.items()}
        self.lengths = {name: _lengths(ds) for name, ds in self.views.items()}
        self.sampler = sampler
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.group_by_length = group_by_length
        self.seed = seed
        self.pad_token_id = pad_token_id
        self.task_types = dict(task_types)
        self.rank, self.world_size = rank, world_size
        self.epochs_hint = epochs_hint
        self.pad_to_multiple_of = pad_to_multiple_of
        self.epoch, self.position = 0, 0
        self.global_rows = 0
        self._resumed = False
        self._cache: tuple[int, list[str], dict] | None = None  # (epoch, plan, task -> passes)

    # -- the epoch's plan -------------------------------------------------------------------------

    def _pass(self, task: str, epoch: int, k: int) -> list[list[int]]:
        """Pass ``k`` over ``task``'s rows in ``epoch``: batches of row indices, tiny ones dropped."""
        rng = np.random.default_rng([self.seed, epoch, _task_key(task), k])
        batches = make_batches(self.lengths[task], batch_size=self.batch_size, token_budget=self.token_budget,
                               group_by_length=self.group_by_length, rng=rng, shards=self.world_size)
        return [b for b in batches if len(b) >= self.world_size]

    def _epoch(self) -> tuple[list[str], dict]:
        if self._cache is None or self._cache[0] != self.epoch:
            passes = {task: [self._pass(task, self.epoch, 0)] for task in self.views}
            num_batches = {task: len(p[0]) for task, p in passes.items()}
            empty = [t for t, n in num_batches.items() if n == 0]
            if empty:
                raise DataError(f"no full batch for task(s) {empty}", expected=f">= {self.world_size} examples",
                                found={t: len(self.lengths[t]) for t in empty})
            plan = list(self.sampler.epoch_plan(num_batches, generator=np.random.default_rng([self.seed, self.epoch]),
                                                epoch=self.epoch, progress=self.epoch / self.epochs_hint))
            unknown = sorted(set(plan) - set(self.views))
            if unknown:
                raise DataError(f"the sampler planned batches for unknown task(s) {unknown}",
                                expected=sorted(self.views))
            self._cache = (self.epoch, plan, passes)
        return self._cache[1], self._cache[2]

    def _global_batch(self, task: str, occurrence: int, passes: dict) -> list[int]:
        """The ``occurrence``-th batch of ``task`` this epoch, drawing further passes as needed."""
        task_passes = passes[task]
        k = 0
        while True:
            if k == len(task_passes):
                task_passes.append(self._pass(task, self.epoch, k))
            if occurrence < len(task_passes[k]):
                return task_passes[k][occurrence]
            occurrence -= len(task_passes[k])
            k += 1

    def plan(self) -> list[str]:
        """The task of every batch in the current epoch (the sampler's plan)."""
        return list(self._epoch()[0])

    def global_batches(self) -> list[tuple[str, list[int]]]:
        """Every ``(task, row indices)`` global batch of the current epoch, before the rank split."""
        plan, passes = self._epoch()
        seen: dict[str, int] = {}
        out = []
        for task in plan:
            out.append((task, self._global_batch(task, seen.get(task, 0), passes)))
            seen[task] = seen.get(task, 0) + 1
        return out

    # -- iteration and state ------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch, unless a loaded state points inside this very epoch."""
        if not (self._resumed and epoch == self.epoch):
            self.position = 0
        self.epoch = epoch
        self._resumed = False

    def __len__(self) -> int:
        return len(self._epoch()[0])

    def __iter__(self) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        self._resumed = False
        for step, (task, rows) in enumerate(self.global_batches()):
            if step < self.position:
                continue
            share = rows[self.rank::self.world_size]
            batch = collate(self.views[task][share], self.pad_token_id, task_type=self.task_types[task],
                            pad_to_multiple_of=self.pad_to_multiple_of)
            self.position = step + 1  # counted before yielding: a checkpoint after this step skips it
            self.global_rows = len(rows)  # the whole batch's examples, over all ranks
            yield task, batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError("bad data-loader state in the checkpoint", expected="{'epoch': int, 'position': int}",
                                  found=state) from exc
        self.epoch, self.position, self._resumed = epoch, position, True


def eval_batches(dataset, *, batch_size: int, pad_token_id: int, rank: int = 0, world_size: int = 1,
                 sort_by_length: bool = True, task_type: str | None = None,
                 pad_to_multiple_of: int | None = None, equal_shards: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's share of ``dataset`` in padded batches, each example on exactly one rank.

    ``eval_batches(dataset, *, batch_size, pad_token_id, rank=0, world_size=1, sort_by_length=True,
    task_type=None, pad_to_multiple_of=None) -> Iterator[dict]``

    Rows are ordered longest first (less padding, and a memory problem shows up on the first
    batch) and dealt round-robin: rank ``r`` takes rows ``r::world_size`` of that order, then cuts
    them into batches of ``batch_size``. Nothing is padded or repeated, so ranks may run a
    different number of batches: gather once at the end (``accelerate.utils.gather_object`` or
    ``torch.distributed.all_gather_object``), not per batch. Each batch is ``collate``'s dict
    plus ``positions`` (long [B]: row positions in ``dataset``) for ``gather_predictions``.

    ``equal_shards=True`` pads every rank's share to ``ceil(N / world_size)`` rows by repeating one
    of its rows with position -1 (``gather_predictions`` drops those), so every rank runs the same
    number of forward passes: a sharded model (FSDP, ZeRO-3) gathers weights in every one of them.
    """
    view = _batch_view(dataset)
    n = len(view)
    if sort_by_length:
        order = np.argsort(-_lengths(view), kind="stable")
    else:
        order = np.arange(n)
    mine = order[rank::world_size]
    positions_of = mine
    if equal_shards and n:
        per_rank = -(-n // world_size)
        filler = mine[-1] if len(mine) else order[0]
        mine = np.concatenate([mine, np.full(per_rank - len(mine), filler, dtype=mine.dtype)])
        positions_of = np.concatenate([positions_of, np.full(len(mine) - len(positions_of), -1, dtype=mine.dtype)])
    for start in range(0, len(mine), batch_size):
        rows = mine[start:start + batch_size].tolist()
        batch = collate(view[rows], pad_token_id, task_type=task_type, pad_to_multiple_of=pad_to_multiple_of)
        batch["positions"] = torch.tensor(positions_of[start:start + batch_size].tolist(), dtype=torch.long)
        yield batch


def gather_predictions(parts, *, num_examples: int | None = None):
    """Put outputs from all batches of all ranks back in data-set order.

    ``parts`` is a list of ``(positions, outputs)`` pairs (tensors, arrays or lists; outputs with
    a leading dimension matching positions; position -1 marks padding, dropped). Returns the outputs stacked in position order, as a
    tensor when the outputs were tensors, else a numpy array. Raises ``ValueError`` when a
    position is repeated or missing (checked against ``range(num_examples)`` when given).
    """
    if not parts:
        raise ValueError("gather_predictions got no parts")
    positions = np.concatenate([np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p, dtype=np.int64).reshape(-1)
                                for p, _ in parts])
    if isinstance(parts[0][1], torch.Tensor):  # keep tensors (any dtype, e.g. bf16) as tensors
        outputs = torch.cat([o.detach().cpu() for _, o in parts])
    else:
        outputs = np.concatenate([np.asarray(o) for _, o in parts])
    if len(positions) != len(outputs):
        raise ValueError(f"{len(positions)} positions but {len(outputs)} outputs")
    real = positions >= 0
    if not real.all():  # the padding of equal shards
        positions, outputs = positions[real], outputs[torch.from_numpy(real) if isinstance(outputs, torch.Tensor)
                                                      else real]
    order = np.argsort(positions, kind="stable")
    ordered = positions[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated):
        raise ValueError(f"position {int(ordered[repeated[0]])} appears more than once")
    expected = num_examples if num_examples is not None else len(ordered)
    if not np.array_equal(ordered, np.arange(expected)):
        raise ValueError(f"positions do not cover 0..{expected - 1} exactly once")
    if isinstance(outputs, torch.Tensor):
        return outputs[torch.from_numpy(order)]
    return outputs[order]
