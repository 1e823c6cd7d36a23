"""The example plugin's own tests, written as a third-party author would: only the fixtures of mtkd's
pytest plugin (``mtkd.testing``: ``mtkd_plugins``, ``mtkd_tiny_encoder``, ``mtkd_run_recipe``), no mtkd test
code. Run them from this folder with ``pytest`` once mtkd and this package are installed."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mtkd.components import Aggregator, Objective
from mtkd.errors import RecipeError

pytest.importorskip("mtkd_example_plugin", reason="install this package first: pip install -e .")


@pytest.fixture
def example(mtkd_plugins):
    return mtkd_plugins.use("example")  # this package's entry point


def test_registered_and_listed_with_the_distribution(example):
    assert "focal" in example.registries.losses
    assert "trimmed-mean-probs" in example.registries.aggregators
    result = example.cli("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout) if r["plugin"] == "mtkd_example_plugin"}
    assert set(rows) == {"focal", "trimmed-mean-probs"}
    assert rows["focal"]["distribution"] == "mtkd-example-plugin"


def test_not_there_unless_asked_for(mtkd_plugins):
    assert "focal" not in mtkd_plugins.registries.losses


def test_focal_with_gamma_zero_is_cross_entropy(example):
    focal = example.registries.losses.create("focal", {"gamma": 0.0})
    assert isinstance(focal, Objective)
    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([0, 1])
    assert math.isclose(float(focal(logits, labels)), float(F.cross_entropy(logits, labels)), rel_tol=1e-6)
    with pytest.raises(RecipeError):
        example.registries.losses.create("focal", {"gamma": -1})


def test_trimmed_mean_drops_the_outlier(example):
    agg = example.registries.aggregators.create("trimmed-mean-probs", {})
    assert isinstance(agg, Aggregator)
    members = torch.log(torch.tensor([[[0.9, 0.1]], [[0.8, 0.2]], [[0.1, 0.9]]]))  # [members, rows, classes]
    probs = agg(members)
    assert probs.shape == (1, 2) and probs[0, 0] > 0.5


def test_a_whole_run_with_focal_and_trimmed_mean(example, mtkd_run_recipe):
    run = mtkd_run_recipe({"objective": {"classification": {"type": "focal", "gamma": 2.0}},
                           "teachers": {"members": [{"seed": 1}, {"seed": 2}, {"seed": 3}],
                                        "aggregation": {"type": "trimmed-mean-probs"}}})
    assert (run.run_dir / "report.md").exists()
    assert run.metrics["recipe_hash"]
    spec = run.recipe.read_text()
    assert "focal" in spec and "trimmed-mean-probs" in spec
