"""Teacher-ensemble rules of the first-party ``distill`` plugin, against hand-computed values.

Outputs are [K members, N examples, C]; logits chosen so that probabilities are round numbers:
softmax([ln 9, 0]) = [0.9, 0.1], softmax([0, 0]) = [0.5, 0.5], softmax([ln 3, 0]) = [0.75, 0.25].
"""

from __future__ import annotations

import math

import pytest
import torch

from mtkd.components import Aggregator
from mtkd.errors import RecipeError

LN9 = math.log(9.0)
# Two members, one example, two classes: p1 = [0.9, 0.1], p2 = [0.5, 0.5].
TWO_MEMBERS = torch.tensor([[[LN9, 0.0]], [[0.0, 0.0]]])


@pytest.fixture
def aggregators(registries):
    return registries.aggregators


def test_every_aggregator_is_registered_by_the_plugin(aggregators):
    expected = {"mean-probs": "classification", "mean-logits": "classification", "geometric-mean": "classification",
                "weighted": "classification", "majority-vote": "classification",
                "mean": "regression", "median": "regression"}
    assert set(expected) <= set(aggregators.names())
    for name, task_type in expected.items():
        reg = aggregators.get(name)
        assert reg.plugin == "mtkd_distill" and reg.description
        aggregator = aggregators.create(name, {})
        assert isinstance(aggregator, Aggregator)
        assert aggregator.task_types == frozenset({task_type})
        assert aggregator.uses_member_scores == (name == "weighted")  # the core passes dev scores only then
    assert not aggregators.create("weighted", {"weights": [1.0, 2.0]}).uses_member_scores


def test_mean_probs_and_mean_logits_differ(aggregators):
    # mean of probabilities: ([0.9, 0.1] + [0.5, 0.5]) / 2 = [0.7, 0.3]
    mean_probs = aggregators.create("mean-probs", {})(TWO_MEMBERS)
    assert mean_probs.tolist() == [pytest.approx([0.7, 0.3])]
    # softmax of the mean logits: softmax([ln 9 / 2, 0]) = softmax([ln 3, 0]) = [0.75, 0.25]
    mean_logits = aggregators.create("mean-logits", {})(TWO_MEMBERS)
    assert mean_logits.tolist() == [pytest.approx([0.75, 0.25])]
    assert mean_probs.shape == mean_logits.shape == (1, 2) and mean_probs.dtype == torch.float32


def test_one_member_rules_agree(aggregators):
    logits = torch.tensor([[[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]])  # K = 1, N = 2, C = 3
    expected = torch.softmax(logits[0], -1)
    for name in ("mean-probs", "mean-logits", "geometric-mean", "weighted"):
        params = {"weights": [2.0]} if name == "weighted" else {}
        assert torch.allclose(aggregators.create(name, params)(logits), expected, atol=1e-7), name


def test_geometric_mean_is_normalised(aggregators):
    # sqrt(0.9 * 0.5) = 0.670820, sqrt(0.1 * 0.5) = 0.223607: they sum to 0.894427, not 1;
    # normalised: [0.670820, 0.223607] / 0.894427 = [0.75, 0.25] (the same as mean-logits, as it must be)
    target = aggregators.create("geometric-mean", {})(TWO_MEMBERS)
    assert target.tolist() == [pytest.approx([0.75, 0.25])]
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4)
    target = aggregators.create("geometric-mean", {"temperature": 2.0})(logits)
    assert torch.allclose(target.sum(-1), torch.ones(5))
    raw = torch.softmax(logits / 2.0, -1).prod(0) ** (1 / 3)
    assert torch.allclose(target, raw / raw.sum(-1, keepdim=True), atol=1e-6)


def test_temperature_softens_the_members(aggregators):
    # p1 at T = 2: softmax([ln 9 / 2, 0]) = [0.75, 0.25]; p2 stays [0.5, 0.5]; mean = [0.625, 0.375]
    target = aggregators.create("mean-probs", {"temperature": 2.0})(TWO_MEMBERS)
    assert target.tolist() == [pytest.approx([0.625, 0.375])]
    # mean logits [ln 3, 0] at T = 2: softmax([ln 3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1) = [0.633975, 0.366025]
    target = aggregators.create("mean-logits", {"temperature": 2.0})(TWO_MEMBERS)
    assert target.tolist() == [pytest.approx([0.633975, 0.366025], abs=1e-6)]


def test_weighted_with_recipe_weights(aggregators):
    # weights [3, 1] -> [0.75, 0.25]: 0.75 [0.9, 0.1] + 0.25 [0.5, 0.5] = [0.8, 0.2]
    target = aggregators.create("weighted", {"weights": [3.0, 1.0]})(TWO_MEMBERS)
    assert target.tolist() == [pytest.approx([0.8, 0.2])]
    # recipe weights win over the ones the core passes
    target = aggregators.create("weighted", {"weights": [3.0, 1.0]})(TWO_MEMBERS, weights=[1.0, 1.0])
    assert target.tolist() == [pytest.approx([0.8, 0.2])]


def test_weighted_with_member_scores_from_the_core(aggregators):
    # dev scores [60, 90] -> [0.4, 0.6]: 0.4 [0.9, 0.1] + 0.6 [0.5, 0.5] = [0.66, 0.34]
    target = aggregators.create("weighted", {})(TWO_MEMBERS, weights=torch.tensor([60.0, 90.0]))
    assert target.tolist() == [pytest.approx([0.66, 0.34])]


@pytest.mark.parametrize(("params", "weights", "message"), [
    ({}, None, "has no weights"),
    ({"weights": [1.0, 2.0, 3.0]}, None, "do not match the teacher members"),
    ({}, [1.0], "do not match the teacher members"),
    ({}, [0.7, -0.1], "not usable"),
    ({}, [0.0, 0.0], "not usable"),
])
def test_weighted_rejects_unusable_weights(aggregators, params, weights, message):
    with pytest.raises(RecipeError, match=message):
        aggregators.create("weighted", params)(TWO_MEMBERS, weights=weights)


@pytest.mark.parametrize("params", [{"weights": [1.0, -1.0]}, {"weights": [0.0, 0.0]}, {"weights": []},
                                    {"temperature": 0}, {"weigths": [1, 1]}])
def test_weighted_rejects_bad_params(aggregators, params):
    with pytest.raises(RecipeError):
        aggregators.create("weighted", params)


def test_unweighted_rules_refuse_weights(aggregators):
    with pytest.raises(ValueError, match="use `weighted`"):
        aggregators.create("mean-probs", {})(TWO_MEMBERS, weights=[1.0, 2.0])


def test_majority_vote(aggregators):
    # Three members, example 0: votes 0, 0, 1 -> class 0, although member 3 is so sure of class 1
    # that the mean probability of class 1 is higher: p = [.5, .25, .25], [.5, .25, .25], [.01, .98, .01]
    # -> mean [0.3367, 0.4933, 0.09]. Example 1: votes 2, 2, 2 -> class 2.
    ln2, ln98 = math.log(2.0), math.log(98.0)
    outputs = torch.tensor([
        [[ln2, 0.0, 0.0], [0.0, 0.0, 5.0]],
        [[ln2, 0.0, 0.0], [0.0, 1.0, 3.0]],
        [[0.0, ln98, 0.0], [1.0, 0.0, 2.0]],
    ])
    target = aggregators.create("majority-vote", {})(outputs)
    assert target.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert target.dtype == torch.float32


def test_majority_vote_tie_goes_to_the_higher_mean_probability(aggregators):
    ln4 = math.log(4.0)
    # Example 0: member 1 votes 0 with p = [9/11, 1/11, 1/11], member 2 votes 1 with p = [1/6, 4/6, 1/6]:
    #   mean class 0 = (0.8182 + 0.1667) / 2 = 0.4924 > mean class 1 = (0.0909 + 0.6667) / 2 = 0.3788 -> 0
    # Example 1: the same numbers swapped between classes 0 and 1 -> 1 (not simply the first tied index)
    outputs = torch.tensor([
        [[LN9, 0.0, 0.0], [ln4, 0.0, 0.0]],
        [[0.0, ln4, 0.0], [0.0, LN9, 0.0]],
    ])
    target = aggregators.create("majority-vote", {})(outputs)
    assert target.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_regression_mean_and_median(aggregators):
    # Four members, two examples: [1, 3, 2, 10] and [0, -1, 4, 4]
    outputs = torch.tensor([[1.0, 0.0], [3.0, -1.0], [2.0, 4.0], [10.0, 4.0]]).unsqueeze(-1)  # [4, 2, 1]
    mean = aggregators.create("mean", {})(outputs)
    assert mean.shape == (2, 1)
    assert mean.flatten().tolist() == pytest.approx([4.0, 1.75])  # 16 / 4, 7 / 4
    median = aggregators.create("median", {})(outputs)
    assert median.shape == (2, 1)
    assert median.flatten().tolist() == pytest.approx([2.5, 2.0])  # (2 + 3) / 2, (0 + 4) / 2: even K averages
    odd = aggregators.create("median", {})(outputs[:3])  # [1, 3, 2] -> 2, [0, -1, 4] -> 0
    assert odd.flatten().tolist() == pytest.approx([2.0, 0.0])


def test_shapes_are_checked_against_the_task_type(aggregators):
    with pytest.raises(ValueError, match="regression"):
        aggregators.create("mean", {})(TWO_MEMBERS)  # C = 2
    with pytest.raises(ValueError, match="classification"):
        aggregators.create("mean-probs", {})(torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"\[members, examples, outputs\]"):
        aggregators.create("mean-probs", {})(torch.zeros(3, 2))


def test_bf16_outputs_give_fp32_targets(aggregators):
    outputs = TWO_MEMBERS.to(torch.bfloat16)
    for name in ("mean-probs", "mean-logits", "geometric-mean", "majority-vote"):
        target = aggregators.create(name, {})(outputs)
        assert target.dtype == torch.float32
        assert torch.allclose(target.sum(-1), torch.ones(1))


@pytest.mark.parametrize(("name", "params"), [
    ("mean-probs", {"temperature": 0}),
    ("mean-logits", {"temperature": -2}),
    ("geometric-mean", {"T": 2}),
    ("majority-vote", {"temperature": 2}),
    ("median", {"q": 0.5}),
])
def test_bad_params_are_recipe_errors(aggregators, name, params):
    with pytest.raises(RecipeError):
        aggregators.create(name, params)
