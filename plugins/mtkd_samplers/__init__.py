"""mtkd first-party plugin: multi-task batch samplers.

A sampler decides which task each batch of an epoch comes from (``mtkd.components.TaskSampler``).
``epoch_plan`` is a pure function of its arguments: the core re-runs it on resume and slices the
plan by position, and it handles the batch order within each task and the sharding across ranks.

- ``proportional``: MT-DNN's Algorithm 1 (Liu et al. 2019) -- every task's batches exactly once
  per epoch, merged and shuffled, so tasks are visited in proportion to their size.
- ``uniform``: each batch's task drawn uniformly at random.
- ``temperature``: task probability proportional to ``size ** (1 / T)``; T = 1 is proportional
  (in expectation), T -> infinity is uniform.
- ``annealed``: temperature sampling whose T moves linearly with training progress, by default
  from 1 (proportional) to 5, i.e. exponents 1 -> 0.2 as in Stickland & Murray (2019, "BERT and
  PALs"): large tasks dominate early, small tasks get more weight late in training.

Tasks with 0 batches never appear in a plan.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

import mtkd
from mtkd.params import Params


def _active_tasks(num_batches: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """The tasks that have batches, sorted by name so that the plan does not depend on dict order."""
    for name, n in num_batches.items():
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"num_batches[{name!r}] must be a non-negative integer, got {n!r}")
    names = sorted(name for name, n in num_batches.items() if n > 0)
    return names, np.array([int(num_batches[name]) for name in names], dtype=np.float64)


def temperature_probabilities(sizes: np.ndarray, temperature: float) -> np.ndarray:
    """``p_i ∝ sizes_i ** (1 / temperature)``, computed in log space so that a small T cannot overflow."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if len(sizes) == 0:
        return np.zeros(0)
    if math.isinf(temperature):
        return np.full(len(sizes), 1.0 / len(sizes))
    logits = np.log(sizes) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _draw(names: list[str], probs: np.ndarray | None, length: int, generator: np.random.Generator) -> list[str]:
    """``length`` independent draws of a task name (uniform when ``probs`` is None)."""
    if not names or length == 0:
        return []
    idx = generator.choice(len(names), size=length, p=probs)
    return [names[i] for i in idx]


class ProportionalParams(Params):
    pass


class ProportionalSampler:
    """Every task's batches exactly once per epoch, merged and shuffled (MT-DNN Algorithm 1)."""

    def __init__(self, params: ProportionalParams | None = None):
        self.params = params or ProportionalParams()

    def epoch_plan(self, num_batches: dict[str, int], *, generator: np.random.Generator, epoch: int,
                   progress: float) -> list[str]:
        names, sizes = _active_tasks(num_batches)
        plan = np.repeat(np.arange(len(names)), sizes.astype(np.int64))
        return [names[i] for i in generator.permutation(plan)]


class DrawParams(Params):
    batches_per_epoch: int | None = Field(
        None, gt=0, description="batches in one epoch; default: the sum of all tasks' batches")


class UniformParams(DrawParams):
    pass


class UniformSampler:
    """Each batch's task drawn uniformly at random, whatever the task's size."""

    def __init__(self, params: UniformParams | None = None):
        self.params = params or UniformParams()

    def probabilities(self, num_batches: dict[str, int], *, progress: float = 0.0) -> dict[str, float]:
        names, _ = _active_tasks(num_batches)
        return {name: 1.0 / len(names) for name in names}

    def epoch_plan(self, num_batches: dict[str, int], *, generator: np.random.Generator, epoch: int,
                   progress: float) -> list[str]:
        names, sizes = _active_tasks(num_batches)
        length = self.params.batches_per_epoch or int(sizes.sum())
        return _draw(names, None, length, generator)


class TemperatureParams(DrawParams):
    temperature: float = Field(2.0, gt=0, description="T: 1 = proportional, large = uniform")


class TemperatureSampler:
    """Each batch's task drawn with probability ∝ size ** (1 / temperature)."""

    def __init__(self, params: TemperatureParams | None = None):
        self.params = params or TemperatureParams()

    def temperature_at(self, progress: float) -> float:
        return self.params.temperature

    def probabilities(self, num_batches: dict[str, int], *, progress: float = 0.0) -> dict[str, float]:
        """Task -> probability of drawing it for a batch at this point of training."""
        names, sizes = _active_tasks(num_batches)
        probs = temperature_probabilities(sizes, self.temperature_at(progress))
        return dict(zip(names, probs.tolist()))

    def epoch_plan(self, num_batches: dict[str, int], *, generator: np.random.Generator, epoch: int,
                   progress: float) -> list[str]:
        names, sizes = _active_tasks(num_batches)
        probs = temperature_probabilities(sizes, self.temperature_at(progress))
        length = self.params.batches_per_epoch or int(sizes.sum())
        return _draw(names, probs, length, generator)


class AnnealedParams(DrawParams):
    start: float = Field(1.0, gt=0, description="temperature at the start of training (1 = proportional)")
    end: float = Field(5.0, gt=0, description="temperature at the end of training (5 = exponent 0.2)")

    @model_validator(mode="after")
    def _finite(self):
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError("start and end must be finite temperatures")
        return self


class AnnealedSampler(TemperatureSampler):
    """Temperature sampling with T = start + (end - start) * progress (progress = epoch / epochs)."""

    def __init__(self, params: AnnealedParams | None = None):
        self.params = params or AnnealedParams()

    def temperature_at(self, progress: float) -> float:
        progress = min(max(float(progress), 0.0), 1.0)
        return self.params.start + (self.params.end - self.params.start) * progress


@mtkd.hookimpl
def register_samplers(register):
    register("proportional", ProportionalSampler, params=ProportionalParams)
    register("uniform", UniformSampler, params=UniformParams)
    register("temperature", TemperatureSampler, params=TemperatureParams)
    register("annealed", AnnealedSampler, params=AnnealedParams)
