"""The example third-party plugin (examples/mtkd-example-plugin), installed as a distribution.

Install it with ``pip install --no-deps -e examples/mtkd-example-plugin`` (``.ci/run`` does);
without it these tests are skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import FIRST_PARTY
from test_recipe import base_recipe, write_toy_plugin, write_yaml

from mtkd import plugins
from mtkd.cli import cli
from mtkd.components import Aggregator, Objective
from mtkd.plugins import get_registries
from mtkd.recipe import load_recipe

DIST, ENTRY_POINT, MODULE = "mtkd-example-plugin", "example", "mtkd_example_plugin"


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec(MODULE) is not None


pytestmark = pytest.mark.skipif(
    not _installed(), reason=f"{DIST} is not installed (pip install --no-deps -e examples/mtkd-example-plugin)")


@pytest.fixture
def example_only(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", ENTRY_POINT)
    plugins.reset()


def test_declares_its_entry_point():
    [ep] = [ep for ep in importlib.metadata.entry_points(group="mtkd") if ep.name == ENTRY_POINT]
    assert ep.value == MODULE
    assert importlib.metadata.version(DIST) == "0.1.0"


def test_listed_beside_the_first_party_plugins(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", f"{FIRST_PARTY},{ENTRY_POINT}")
    plugins.reset()
    result = CliRunner().invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.stdout) if r["plugin"] == MODULE]
    assert sorted((r["kind"], r["name"]) for r in rows) == [("aggregators", "trimmed-mean-probs"),
                                                             ("losses", "focal")]
    for row in rows:
        assert row["distribution"] in (DIST, MODULE) and row["version"] == "0.1.0"
        assert row["description"]


def test_not_loaded_when_left_out_or_disabled(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "")
    assert "focal" not in get_registries().losses
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", ENTRY_POINT)
    monkeypatch.setenv("MTKD_DISABLE_PLUGINS", DIST)
    plugins.reset()
    assert "focal" not in get_registries().losses


def test_a_recipe_uses_focal_and_the_loss_computes(tmp_path, example_only):
    write_toy_plugin(tmp_path)  # the other components the recipe needs
    data = base_recipe()
    data["objective"]["classification"] = {"type": "focal", "gamma": 1.5}
    data["teachers"]["aggregation"] = {"type": "trimmed-mean-probs"}
    recipe = load_recipe(write_yaml(tmp_path / "focal.yaml", data))
    spec = dict(recipe.resolved["objective"]["classification"])
    assert spec == {"type": "focal", "gamma": 1.5}
    assert recipe.resolved["teachers"]["aggregation"] == {"type": "trimmed-mean-probs", "temperature": 1.0}

    loss = get_registries().losses.create(spec.pop("type"), spec)
    assert isinstance(loss, Objective) and loss.task_types == {"classification"} and not loss.uses_soft_targets
    # Two examples with gold-class probabilities 0.8 and 0.5 (logits are log-probabilities):
    # mean of -(1 - p)^1.5 * log p.
    logits = torch.tensor([[0.8, 0.2], [0.5, 0.5]]).log()
    labels = torch.tensor([0, 1])
    expected = (-(0.2 ** 1.5) * math.log(0.8) - (0.5 ** 1.5) * math.log(0.5)) / 2
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_0_is_cross_entropy_and_skips_unlabelled(example_only):
    loss = get_registries().losses.create("focal", {"gamma": 0})
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([0, 2, 1, -1, 2, 0])
    value = loss(logits, labels)
    keep = labels >= 0
    assert value.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item(), rel=1e-6)
    value.backward()
    assert logits.grad[3].abs().sum() == 0  # the unlabelled row gets no gradient
    assert loss(logits, torch.full((6,), -1)).item() == 0.0


def test_trimmed_mean_drops_the_outlier_per_class(example_only):
    agg = get_registries().aggregators.create("trimmed-mean-probs", {})
    assert isinstance(agg, Aggregator)
    probs = torch.tensor([[[0.2, 0.1, 0.7]], [[0.5, 0.2, 0.3]], [[0.6, 0.1, 0.3]]])  # [K=3, N=1, C=3]
    # Per class, the member farthest from the median is dropped: class 0 drops 0.2 (-> 0.55),
    # class 1 drops 0.2 (-> 0.1), class 2 drops 0.7 (-> 0.3); 0.95 in all, renormalised.
    expected = torch.tensor([[0.55, 0.1, 0.3]]) / 0.95
    assert torch.allclose(agg(probs.log()), expected, atol=1e-6)
    # Two members: nothing is an outlier, the plain mean.
    assert torch.allclose(agg(probs[:2].log()), torch.tensor([[0.35, 0.15, 0.5]]), atol=1e-6)
    with pytest.raises(ValueError, match="unweighted"):
        agg(probs.log(), weights=torch.ones(3))


def test_bad_params_exit_2_through_the_cli(tmp_path, example_only):
    write_toy_plugin(tmp_path)
    data = base_recipe()
    data["objective"]["classification"] = {"type": "focal", "gamma": -1}
    f = write_yaml(tmp_path / "bad.yaml", data)
    result = CliRunner().invoke(cli, ["recipe", "validate", str(f)])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("mtkd: ")]  # not the plugin notice
    assert errors[0] == f"Error in {f}: objective.classification.gamma: invalid value"
