"""Multi-task samplers (plugins/mtkd_samplers): plan contents, proportions, determinism, validation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mtkd.components import TaskSampler
from mtkd.errors import RecipeError

SIZES = {"mnli": 60, "rte": 5, "sst2": 30, "empty": 0}


def plan(sampler, num_batches=SIZES, *, seed=0, epoch=0, progress=0.0):
    return sampler.epoch_plan(num_batches, generator=np.random.default_rng(seed), epoch=epoch, progress=progress)


def many_epochs(sampler, num_batches, epochs, *, progress=0.0):
    """Counts over several epochs, each with its own generator as the core seeds it."""
    counts = Counter()
    for epoch in range(epochs):
        counts.update(plan(sampler, num_batches, seed=1000 + epoch, epoch=epoch, progress=progress))
    return counts


@pytest.mark.parametrize("name", ["proportional", "uniform", "temperature", "annealed"])
def test_registered_and_follow_the_contract(registries, name):
    sampler = registries.samplers.create(name, {})
    assert isinstance(sampler, TaskSampler)
    p = plan(sampler)
    assert all(type(t) is str for t in p)
    assert "empty" not in p  # tasks with 0 batches never appear
    assert set(p) <= {"mnli", "rte", "sst2"}
    # Pure function: same arguments, same plan; a different seed gives a different plan.
    assert plan(sampler) == p
    assert plan(sampler, seed=1) != p
    assert plan(sampler, {"a": 0, "b": 0}) == []
    assert plan(sampler, {}) == []


@pytest.mark.parametrize("name", ["proportional", "uniform", "temperature", "annealed"])
def test_plan_does_not_depend_on_dict_order(registries, name):
    sampler = registries.samplers.create(name, {})
    reordered = dict(reversed(list(SIZES.items())))
    assert plan(sampler, reordered, seed=7) == plan(sampler, SIZES, seed=7)


def test_proportional_visits_every_batch_exactly_once(registries):
    sampler = registries.samplers.create("proportional", {})
    epochs = [plan(sampler, seed=s, epoch=s) for s in range(3)]
    for p in epochs:
        assert Counter(p) == {"mnli": 60, "rte": 5, "sst2": 30}
    # Shuffled (not task by task), and each epoch in another order.
    assert epochs[0] != sorted(epochs[0])
    assert epochs[0] != epochs[1] != epochs[2]
    # The first 30 batches are not all from one task: the shuffle mixes tasks throughout.
    assert len(set(epochs[0][:30])) > 1


def test_uniform_draws_tasks_equally_often(registries):
    sampler = registries.samplers.create("uniform", {})
    sizes = {"big": 900, "mid": 90, "small": 10}
    p = plan(sampler, sizes)
    assert len(p) == 1000  # default epoch length: total batches
    counts = many_epochs(sampler, sizes, 30)
    total = sum(counts.values())
    assert total == 30_000
    for task in sizes:  # 1/3 each; binomial sd = sqrt(30000 * 1/3 * 2/3) ~ 82, tolerance ~ 5 sd
        assert abs(counts[task] - total / 3) < 400
    fixed = registries.samplers.create("uniform", {"batches_per_epoch": 17})
    assert len(plan(fixed, sizes)) == 17


def test_temperature_probabilities_hand_computed(registries):
    sizes = {"a": 100, "b": 25, "c": 0}
    # T = 2: weights sqrt(100) = 10 and sqrt(25) = 5 -> 2/3 and 1/3.
    t2 = registries.samplers.create("temperature", {"temperature": 2.0})
    assert t2.probabilities(sizes) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # T = 1: proportional to size -> 0.8 and 0.2.
    t1 = registries.samplers.create("temperature", {"temperature": 1.0})
    assert t1.probabilities(sizes) == pytest.approx({"a": 0.8, "b": 0.2})
    # Very large T: uniform. Very small T: all mass on the largest task, without overflow.
    big = registries.samplers.create("temperature", {"temperature": 1e9})
    assert big.probabilities(sizes) == pytest.approx({"a": 0.5, "b": 0.5})
    tiny = registries.samplers.create("temperature", {"temperature": 1e-3})
    assert tiny.probabilities(sizes) == pytest.approx({"a": 1.0, "b": 0.0})


def test_temperature_empirical_proportions(registries):
    sizes = {"a": 100, "b": 25}
    t2 = registries.samplers.create("temperature", {"temperature": 2.0})
    counts = many_epochs(t2, sizes, 80)  # 80 epochs x 125 batches = 10000 draws
    total = sum(counts.values())
    assert total == 10_000
    # Expected 2/3 of draws for `a`; sd = sqrt(10000 * 2/9) ~ 47.
    assert abs(counts["a"] / total - 2 / 3) < 0.025
    # T = 1 is proportional in expectation: 0.8.
    t1 = registries.samplers.create("temperature", {"temperature": 1.0})
    counts = many_epochs(t1, sizes, 80)
    assert abs(counts["a"] / sum(counts.values()) - 0.8) < 0.025


def test_annealed_probabilities_move_with_progress(registries):
    sizes = {"a": 100, "b": 25}
    ann = registries.samplers.create("annealed", {"start": 1.0, "end": 2.0})
    # T = 1 at the start (0.8), T = 1.5 half way (100^(2/3) : 25^(2/3) = 4^(2/3) : 1), T = 2 at the end (2/3).
    assert ann.probabilities(sizes, progress=0.0)["a"] == pytest.approx(0.8)
    ratio = 4 ** (2 / 3)
    assert ann.probabilities(sizes, progress=0.5)["a"] == pytest.approx(ratio / (ratio + 1))
    assert ann.probabilities(sizes, progress=1.0)["a"] == pytest.approx(2 / 3)
    assert ann.temperature_at(0.25) == pytest.approx(1.25)
    # Defaults: T from 1 to 5; the small task gains weight as training goes on.
    default = registries.samplers.create("annealed", {})
    small = [default.probabilities(sizes, progress=p)["b"] for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert small == sorted(small) and small[0] == pytest.approx(0.2) and small[-1] > 0.4
    # And the plans follow: many more `b` batches late than early.
    early = many_epochs(default, sizes, 20, progress=0.0)
    late = many_epochs(default, sizes, 20, progress=1.0)
    assert abs(early["b"] / 2500 - 0.2) < 0.04
    p_late = default.probabilities(sizes, progress=1.0)["b"]
    assert abs(late["b"] / 2500 - p_late) < 0.04


def test_progress_changes_annealed_plan_but_not_temperature_plan(registries):
    temp = registries.samplers.create("temperature", {})
    ann = registries.samplers.create("annealed", {})
    assert plan(temp, progress=0.0) == plan(temp, progress=0.9)
    assert plan(ann, progress=0.0) != plan(ann, progress=0.9)


@pytest.mark.parametrize(("name", "params", "key"), [
    ("temperature", {"temperature": 0}, "temperature"),
    ("temperature", {"temperature": -1.0}, "temperature"),
    ("annealed", {"start": 0.0}, "start"),
    ("annealed", {"end": -2}, "end"),
    ("uniform", {"batches_per_epoch": 0}, "batches_per_epoch"),
    ("proportional", {"temperature": 2.0}, "temperature"),  # unknown key
])
def test_invalid_params_are_recipe_errors(registries, name, params, key):
    with pytest.raises(RecipeError) as info:
        registries.samplers.create(name, params, path="training.sampling")
    assert info.value.path == f"training.sampling.{key}"


def test_bad_batch_counts_are_rejected(registries):
    sampler = registries.samplers.create("proportional", {})
    with pytest.raises(ValueError, match="non-negative"):
        plan(sampler, {"a": -1})
