"""Distillation objectives of the first-party ``distill`` plugin, against hand-computed values.

Objectives are built the way the core builds them: ``get_registries().losses.create(name, params)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtkd.components import Objective
from mtkd.errors import RecipeError

LN2, LN3 = math.log(2.0), math.log(3.0)


@pytest.fixture
def losses(registries):
    return registries.losses


def test_every_objective_is_registered_by_the_plugin(losses):
    expected = {"ce": "classification", "soft-ce": "classification", "kl": "classification",
                "mse-logits": "classification", "mse": "regression", "mse-soft": "regression"}
    for name, task_type in expected.items():
        reg = losses.get(name)
        assert reg.plugin == "mtkd_distill" and reg.description
        objective = losses.create(name, {})
        assert isinstance(objective, Objective)
        assert objective.task_types == frozenset({task_type})
    assert not losses.create("ce").uses_soft_targets and not losses.create("mse").uses_soft_targets
    assert all(losses.create(n).uses_soft_targets for n in ("soft-ce", "kl", "mse-logits", "mse-soft", "mixture"))
    assert losses.create("mixture").task_types == frozenset({"classification"})
    assert isinstance(losses.create("mixture"), Objective)


# ----------------------------------------------------------------------------- cross-entropies


def test_ce_hand_computed(losses):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    # row 1: log(e^2 + 1 + e^-1) - 2 = log(8.756935) - 2 = 0.169846
    # row 2: log(2 e^0.5 + 1) - 0  = log(4.297443)     = 1.458020;  mean = 0.813933
    loss = losses.create("ce", {})(logits, labels)
    assert loss.item() == pytest.approx(0.813933, abs=1e-5)
    # label smoothing 0.2 over 3 classes: target = 0.8 one-hot + 0.2/3 everywhere
    smoothed = losses.create("ce", {"label_smoothing": 0.2})(logits, labels)
    target = torch.full((2, 3), 0.2 / 3) + 0.8 * F.one_hot(labels, 3)
    assert smoothed.item() == pytest.approx(-(target * F.log_softmax(logits, -1)).sum(-1).mean().item(), abs=1e-6)


def test_soft_ce_with_one_hot_targets_equals_hard_ce(losses):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    one_hot = F.one_hot(labels, 3).float()
    soft_ce = losses.create("soft-ce", {})(logits, labels, one_hot)
    assert soft_ce.item() == pytest.approx(0.813933, abs=1e-5)
    assert soft_ce.item() == pytest.approx(losses.create("ce", {})(logits, labels).item(), abs=1e-7)


def test_soft_ce_temperature_and_its_schedule(losses):
    logits, soft = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.8, 0.2]])
    labels = torch.tensor([0])
    # T = 2: q = softmax([0.5, 0]) = [0.622459, 0.377541]
    # loss = -(0.8 ln 0.622459 + 0.2 ln 0.377541) = 0.379262 + 0.194815 = 0.574077  (no T² factor)
    at_two = losses.create("soft-ce", {"temperature": 2.0})
    assert at_two(logits, labels, soft).item() == pytest.approx(0.574077, abs=1e-5)
    # temperature 1 -> 3: T = 1 at progress 0, T = 2 halfway (same value as above), T = 3 at the end
    scheduled = losses.create("soft-ce", {"temperature": 1.0, "temperature_end": 3.0})
    at_one = losses.create("soft-ce", {})(logits, labels, soft)
    assert scheduled(logits, labels, soft, progress=0.0).item() == pytest.approx(at_one.item(), abs=1e-7)
    assert scheduled(logits, labels, soft, progress=0.5).item() == pytest.approx(0.574077, abs=1e-5)
    at_three = losses.create("soft-ce", {"temperature": 3.0})(logits, labels, soft)
    assert scheduled(logits, labels, soft, progress=1.0).item() == pytest.approx(at_three.item(), abs=1e-7)


def test_soft_loss_without_soft_targets_is_a_clear_error(losses):
    with pytest.raises(RecipeError, match="needs teacher soft targets"):
        losses.create("soft-ce", {})(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(RecipeError, match="needs teacher soft targets"):
        losses.create("mse-soft", {})(torch.zeros(2, 1), torch.zeros(2))


# ----------------------------------------------------------------------------- KL


def test_kl_at_temperature_with_t2_scaling(losses):
    logits, p, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.8, 0.2]]), torch.tensor([0])
    # q = softmax([1, 0] / 2) = [0.622459, 0.377541]
    # KL(p || q) = 0.8 ln(0.8 / 0.622459) + 0.2 ln(0.2 / 0.377541)
    #            = 0.8 * 0.250933 + 0.2 * (-0.635361) = 0.073675;  times T² = 4 -> 0.294698
    scaled = losses.create("kl", {"temperature": 2.0})(logits, labels, p)
    assert scaled.item() == pytest.approx(0.294698, abs=1e-5)
    unscaled = losses.create("kl", {"temperature": 2.0, "scale_by_t2": False})(logits, labels, p)
    assert unscaled.item() == pytest.approx(0.073675, abs=1e-5)
    assert scaled.item() == pytest.approx(4.0 * unscaled.item(), rel=1e-6)


def test_kl_does_not_soften_the_teacher_again(losses):
    # Softmax applied to [0.8, 0.2] would give [0.645, 0.355]; the target must stay [0.8, 0.2],
    # so a student that predicts exactly [0.8, 0.2] has zero loss.
    p = torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    labels = torch.tensor([0, 1])
    assert losses.create("kl", {})(p.log(), labels, p).item() == pytest.approx(0.0, abs=1e-6)
    # At T = 2 the student matches when logits / 2 = log p.
    assert losses.create("kl", {"temperature": 2.0})(2 * p.log(), labels, p).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_accepts_zero_probabilities(losses):
    # One-hot target: KL = -log q[0] = log 2 at logits [0, 0] (0 log 0 counts as 0, not NaN).
    loss = losses.create("kl", {})(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(LN2, abs=1e-6)


# ----------------------------------------------------------------------------- MSE losses


def test_mse_logits_compares_centred_logits(losses):
    # Teacher p = [0.75, 0.25]: log p centred = [ln3 / 2, -ln3 / 2]; student [0, 0] centred = [0, 0]
    # loss = mean((ln3 / 2)², (ln3 / 2)²) = 0.301737
    mse_logits = losses.create("mse-logits", {})
    loss = mse_logits(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[0.75, 0.25]]))
    assert loss.item() == pytest.approx((LN3 / 2) ** 2, abs=1e-6)
    # A student whose logits are the teacher's shifted by a constant has zero loss.
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert mse_logits(z + 5.0, torch.tensor([2]), F.softmax(z, -1)).item() == pytest.approx(0.0, abs=1e-10)


def test_regression_mse_against_gold_and_teacher_values(losses):
    logits = torch.tensor([[1.0], [2.0]])
    # gold [0, 4]: ((1 - 0)² + (2 - 4)²) / 2 = 2.5
    assert losses.create("mse", {})(logits, torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    # teacher [1.5, 2]: (0.5² + 0²) / 2 = 0.125; the gold labels are not used
    soft = torch.tensor([[1.5], [2.0]])
    assert losses.create("mse-soft", {})(logits, torch.tensor([0.0, 4.0]), soft).item() == pytest.approx(0.125)


# ----------------------------------------------------------------------------- mixture


def test_mixture_weights_soft_by_alpha(losses):
    # logits [ln3, 0] -> q = [0.75, 0.25]; gold class 0: ce = -ln 0.75 = 0.287682;
    # teacher [0, 1]: soft-ce = -ln 0.25 = 1.386294
    logits, labels, soft = torch.tensor([[LN3, 0.0]]), torch.tensor([0]), torch.tensor([[0.0, 1.0]])
    mixture = losses.create("mixture", {"hard": {"type": "ce"}, "soft": {"type": "soft-ce"}, "alpha": 0.2})
    # 0.2 * 1.386294 + 0.8 * 0.287682 = 0.507405, at every progress (constant schedule)
    for progress in (0.0, 0.7, 1.0):
        assert mixture(logits, labels, soft, progress=progress).item() == pytest.approx(0.507405, abs=1e-5)


def test_mixture_linear_alpha_schedule(losses):
    logits, labels, soft = torch.tensor([[LN3, 0.0]]), torch.tensor([0]), torch.tensor([[0.0, 1.0]])
    mixture = losses.create("mixture", {"alpha": 0.2, "alpha_schedule": "linear", "alpha_end": 0.8})
    assert [mixture.alpha_at(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.2, 0.5, 0.8])
    # progress 0:   0.2 * 1.386294 + 0.8 * 0.287682 = 0.507405
    # progress 0.5: 0.5 * 1.386294 + 0.5 * 0.287682 = 0.836988
    # progress 1:   0.8 * 1.386294 + 0.2 * 0.287682 = 1.166572
    expected = {0.0: 0.507405, 0.5: 0.836988, 1.0: 1.166572}
    for progress, value in expected.items():
        assert mixture(logits, labels, soft, progress=progress).item() == pytest.approx(value, abs=1e-5)


def test_mixture_without_soft_targets_is_the_hard_loss(losses):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    mixture = losses.create("mixture", {"alpha": 0.9})
    assert mixture(logits, labels, None).item() == pytest.approx(0.813933, abs=1e-5)  # not 0.1 * ce
    regression = losses.create("mixture", {"hard": "mse", "soft": "mse-soft"})
    assert regression.task_types == frozenset({"regression"})
    assert regression(torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    # with teacher values [1.5, 2]: 0.5 * 0.125 + 0.5 * 2.5 = 1.3125
    soft = torch.tensor([[1.5], [2.0]])
    assert regression(torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 4.0]), soft).item() == pytest.approx(1.3125)


def test_mixture_fills_in_its_parts_defaults(registries):
    params = registries.losses.validate_params("mixture", {"soft": {"type": "kl", "temperature": 2}})
    dumped = params.model_dump(mode="json")
    assert dumped["hard"] == {"type": "ce", "label_smoothing": 0.0}
    assert dumped["soft"] == {"type": "kl", "temperature": 2.0, "temperature_end": None, "scale_by_t2": True}


@pytest.mark.parametrize(("params", "path", "message"), [
    ({"alpha": 1.5}, "objective.alpha", "less than or equal to 1"),
    ({"alpha": -0.1}, "objective.alpha", "greater than or equal to 0"),
    ({"alpha_schedule": "linear"}, "objective.alpha_end", "needs alpha_end"),
    ({"alpha_end": 0.3}, "objective.alpha_end", "only used with alpha_schedule: linear"),
    ({"alpha_schedule": "cosine", "alpha_end": 0.3}, "objective.alpha_schedule", "invalid value"),
    ({"hard": {"type": "cee"}}, "objective.hard.type", "did you mean 'ce'"),
    ({"hard": {"label_smoothing": 0.1}}, "objective.hard.type", "needs `type:`"),
    ({"soft": {"type": "soft-ce", "temprature": 2}}, "objective.soft.temprature", "unknown key"),
    ({"soft": {"type": "kl", "temperature": 0}}, "objective.soft.temperature", "greater than 0"),
    ({"soft": {"type": "ce"}}, "objective.soft.type", "does not use teacher soft targets"),
    ({"hard": {"type": "soft-ce"}}, "objective.hard.type", "uses teacher soft targets"),
    ({"hard": "ce", "soft": "mse-soft"}, "objective.soft.type", "different task types"),
    ({"beta": 0.5}, "objective.beta", "unknown key"),
])
def test_bad_mixture_params_are_recipe_errors(losses, params, path, message):
    with pytest.raises(RecipeError, match=message) as info:
        losses.create("mixture", params, path="objective")
    assert info.value.path == path


def test_nested_mixture_with_mismatched_parts_is_rejected_when_built(losses):
    # A mixture's task types are known only once built, so this one is caught by the constructor.
    params = {"hard": "ce", "soft": {"type": "mixture", "hard": "mse", "soft": "mse-soft"}}
    with pytest.raises(RecipeError, match="cannot be mixed") as info:
        losses.create("mixture", params)
    assert info.value.path == "soft.type"


@pytest.mark.parametrize(("name", "params"), [
    ("ce", {"label_smoothing": 1.0}),
    ("ce", {"smoothing": 0.1}),
    ("soft-ce", {"temperature": -1}),
    ("soft-ce", {"temperature_end": 0}),
    ("kl", {"scale_by_t2": "maybe"}),
    ("mse-logits", {"min_prob": 0}),
    ("mse", {"weight": 2}),
])
def test_bad_params_are_recipe_errors(losses, name, params):
    with pytest.raises(RecipeError):
        losses.create(name, params)


# ----------------------------------------------------------------------------- precision and gradients


CLASSIFICATION = ["ce", "soft-ce", "kl", "mse-logits", "mixture"]


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_bf16_logits_give_an_fp32_loss_and_gradients(losses, name):
    torch.manual_seed(0)
    logits = torch.randn(4, 3).to(torch.bfloat16).requires_grad_()
    labels = torch.tensor([0, 1, 2, 1])
    soft = F.softmax(torch.randn(4, 3), -1)
    objective = losses.create(name, {"temperature": 2.0} if name in ("soft-ce", "kl") else {})
    loss = objective(logits, labels, soft)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    # The same bf16 values, promoted before the loss, give the same number.
    reference = objective(logits.detach().float(), labels, soft)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
    assert logits.grad.float().abs().sum() > 0


@pytest.mark.parametrize("name", ["mse", "mse-soft"])
def test_regression_losses_in_bf16_and_gradients(losses, name):
    logits = torch.tensor([[1.0], [2.0]], dtype=torch.bfloat16, requires_grad=True)
    loss = losses.create(name, {})(logits, torch.tensor([0.0, 4.0]), torch.tensor([[1.5], [2.0]]))
    assert loss.dtype == torch.float32
    loss.backward()
    # d/dlogit of mean squared error: 2 (pred - target) / B
    expected = [1.0, -2.0] if name == "mse" else [-0.5, 0.0]
    assert logits.grad.float().flatten().tolist() == pytest.approx(expected)


def test_soft_ce_gradient_is_student_minus_teacher(losses):
    # d/dz of -sum p log softmax(z) is softmax(z) - p (per example; divided by B for the mean)
    logits = torch.tensor([[LN3, 0.0]], requires_grad=True)
    losses.create("soft-ce", {})(logits, torch.tensor([0]), torch.tensor([[0.5, 0.5]])).backward()
    assert logits.grad.flatten().tolist() == pytest.approx([0.25, -0.25], abs=1e-6)


def test_shape_mismatch_is_reported(losses):
    with pytest.raises(ValueError, match="soft targets have shape"):
        losses.create("soft-ce", {})(torch.zeros(2, 3), torch.tensor([0, 1]), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="logits must be"):
        losses.create("mse", {})(torch.zeros(2, 3), torch.zeros(2))
