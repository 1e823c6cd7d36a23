"""Training and distillation objectives (the ``register_losses`` hook).

Every objective follows ``mtkd.components.Objective``::

    loss = objective(logits, labels, soft=None, *, progress=0.0)   # a scalar fp32 tensor

``logits`` are the student's outputs [B, C] ([B, 1] for regression); ``labels`` are class ids
[B] (int64) or gold values [B] (float); ``soft`` is the aggregated teacher target: class
probabilities [B, C] for classification, values [B, 1] for regression. Losses are always
computed in fp32 (``logits.float()``), so bf16/fp16 autocast changes the forward pass only.

Temperatures are explicit and one-sided: an objective's ``temperature`` softens the *student*
logits only. The teacher side is already a probability distribution (made by the aggregator,
with the aggregator's own ``temperature``) and is never passed through softmax again.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from mtkd.data.transfer import labelled
from mtkd.errors import RecipeError, UnknownComponentError
from mtkd.params import Params
from mtkd.plugins import get_registries

from ._common import CLASSIFICATION, REGRESSION, linear, name_only, params_error

# ----------------------------------------------------------------------------- shape checks


def _class_logits(name: str, logits) -> torch.Tensor:
    if logits.dim() != 2:
        raise ValueError(f"loss {name!r}: logits must be [batch, classes], got shape {tuple(logits.shape)}")
    return logits.float()


def _values(name: str, what: str, tensor, batch: int) -> torch.Tensor:
    """Regression predictions or targets, [B] or [B, 1], as a flat fp32 [B]."""
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 1 or tensor.shape[0] != batch:
        raise ValueError(f"loss {name!r}: {what} must be [{batch}] or [{batch}, 1], got shape {tuple(tensor.shape)}")
    return tensor.float()


def _require_soft(name: str, soft, logits: torch.Tensor) -> torch.Tensor:
    if soft is None:
        raise RecipeError(
            f"loss {name!r} needs teacher soft targets, but this task has none",
            expected="a task listed under teachers.tasks (or a soft-targets file that covers it)",
            hint="for tasks without teachers use a hard-label loss (ce, mse) or a `mixture`, "
                 "which falls back to its hard part",
        )
    if soft.shape != logits.shape:
        raise ValueError(f"loss {name!r}: soft targets have shape {tuple(soft.shape)}, "
                         f"the student's logits {tuple(logits.shape)}")
    return soft.float()


class _TemperatureParams(Params):
    temperature: float = Field(1.0, gt=0, description="divides the student's logits (not the teacher's targets)")
    temperature_end: float | None = Field(
        None, gt=0, description="if set, the temperature moves linearly to this value as training progresses")


class _Temperature:
    params: _TemperatureParams

    def temperature_at(self, progress: float) -> float:
        return linear(self.params.temperature, self.params.temperature_end, progress)


# ----------------------------------------------------------------------------- classification


class CEParams(Params):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class CrossEntropy:
    """Cross-entropy against the gold class ids (hard labels)."""

    task_types = CLASSIFICATION
    uses_soft_targets = False

    def __init__(self, params: CEParams | None = None):
        self.params = params or CEParams()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        logits = _class_logits("ce", logits)
        return F.cross_entropy(logits, labels.long(), label_smoothing=self.params.label_smoothing)


class SoftCEParams(_TemperatureParams):
    pass


class SoftCrossEntropy(_Temperature):
    """Cross-entropy against the teacher's class probabilities (the paper's distillation loss).

    ``-sum_c p_teacher[c] * log softmax(logits / T)[c]``, averaged over the batch. No T² factor.
    """

    task_types = CLASSIFICATION
    uses_soft_targets = True
    handles_unlabelled = True  # the labels are not read

    def __init__(self, params: SoftCEParams | None = None):
        self.params = params or SoftCEParams()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        logits = _class_logits("soft-ce", logits)
        target = _require_soft("soft-ce", soft, logits)
        log_q = F.log_softmax(logits / self.temperature_at(progress), dim=-1)
        return -(target * log_q).sum(dim=-1).mean()


class KLParams(_TemperatureParams):
    scale_by_t2: bool = Field(True, description="multiply by T² so gradients keep their size as T grows (Hinton)")


class KLDivergence(_Temperature):
    """Hinton's KL(teacher || student) with the student at temperature T, times T² by default.

    ``sum_c p[c] * (log p[c] - log softmax(logits / T)[c])``, averaged over the batch. ``soft``
    is used as given: it already is a distribution (soften the teacher with the aggregator's
    ``temperature``, usually set to the same T).
    """

    task_types = CLASSIFICATION
    uses_soft_targets = True
    handles_unlabelled = True  # the labels are not read

    def __init__(self, params: KLParams | None = None):
        self.params = params or KLParams()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        logits = _class_logits("kl", logits)
        p = _require_soft("kl", soft, logits)
        t = self.temperature_at(progress)
        log_q = F.log_softmax(logits / t, dim=-1)
        # xlogy: 0 * log 0 = 0, so one-hot or majority-vote targets are fine.
        kl = (torch.xlogy(p, p) - p * log_q).sum(dim=-1).mean()
        return kl * (t * t) if self.params.scale_by_t2 else kl


class MSELogitsParams(Params):
    min_prob: float = Field(1e-6, gt=0, lt=1, description="teacher probabilities are clamped here before the log")


class MSELogits:
    """MSE between the student's and the teacher's centred logits (the reference code's default).

    The aggregator hands over probabilities, not logits, so the teacher's logits are recovered
    up to the shift that softmax ignores: ``log p - mean_c log p``. The student's logits are
    centred the same way, and the loss is the mean squared difference over batch and classes.
    With ``mean-logits`` (or ``geometric-mean``) at temperature 1 this is exactly the MSE against
    the teacher's centred mean logits; zero probabilities (``majority-vote``) are clamped to
    ``min_prob``.
    """

    task_types = CLASSIFICATION
    uses_soft_targets = True
    handles_unlabelled = True  # the labels are not read

    def __init__(self, params: MSELogitsParams | None = None):
        self.params = params or MSELogitsParams()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        logits = _class_logits("mse-logits", logits)
        p = _require_soft("mse-logits", soft, logits)
        teacher = p.clamp_min(self.params.min_prob).log()
        teacher = teacher - teacher.mean(dim=-1, keepdim=True)
        student = logits - logits.mean(dim=-1, keepdim=True)
        return F.mse_loss(student, teacher)


# ----------------------------------------------------------------------------- regression


class MSE:
    """Mean squared error against the gold values (regression, e.g. STS-B)."""

    task_types = REGRESSION
    uses_soft_targets = False

    def __init__(self, params: Params | None = None):
        self.params = params

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        pred = _values("mse", "logits", logits, logits.shape[0])
        return F.mse_loss(pred, _values("mse", "labels", labels, pred.shape[0]))


class MSESoft:
    """Mean squared error against the teacher ensemble's values (regression distillation)."""

    task_types = REGRESSION
    uses_soft_targets = True
    handles_unlabelled = True  # the labels are not read

    def __init__(self, params: Params | None = None):
        self.params = params

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        pred = _values("mse-soft", "logits", logits, logits.shape[0])
        if soft is None:
            _require_soft("mse-soft", soft, logits)
        return F.mse_loss(pred, _values("mse-soft", "soft targets", soft, pred.shape[0]))


# ----------------------------------------------------------------------------- mixture


def _split(spec: dict) -> tuple[str, dict]:
    spec = dict(spec)
    return spec.pop("type"), spec


def _validate_part(spec: Any, role: str) -> dict:
    """Check one part against the registered loss's own params; return it with defaults filled in."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise params_error((), f"the {role} part must be a loss name or a mapping with `type:`", found=spec)
    name = spec.get("type")
    if not isinstance(name, str) or not name:
        raise params_error(("type",), f"the {role} part needs `type:` naming a registered loss", found=name)
    losses = get_registries().losses
    try:
        reg = losses.get(name)
    except UnknownComponentError as exc:
        raise params_error(("type",), f"{exc.message} ({exc.expected})", found=name) from None
    if getattr(reg.factory, "uses_hidden_states", False):
        raise params_error(("type",), f"{name!r} matches hidden states and cannot be the {role} part of a loss; "
                                      "make it the objective and put this loss in its `base`", found=name)
    # A ValidationError raised here is re-rooted by pydantic under `hard` / `soft`.
    params = reg.params.model_validate({k: v for k, v in spec.items() if k != "type"})
    return {"type": name, **params.model_dump(mode="json")}


def _parts_problem(hard: tuple[str, Any, Any], soft: tuple[str, Any, Any]) -> tuple[tuple, str] | None:
    """Why two parts cannot be mixed, as (loc, message); each part is (name, task_types, uses_soft_targets).

    ``None`` attributes are unknown (checked again once the parts are built)."""
    (hard_name, hard_types, hard_soft), (soft_name, soft_types, soft_soft) = hard, soft
    if hard_soft is True:
        return ("hard", "type"), (f"the hard part {hard_name!r} uses teacher soft targets; it must be a "
                                  "hard-label loss (e.g. ce, mse), used alone for tasks without teachers")
    if soft_soft is False:
        return ("soft", "type"), (f"the soft part {soft_name!r} does not use teacher soft targets; "
                                  "use a distillation loss (e.g. soft-ce, kl, mse-soft)")
    if hard_types is not None and soft_types is not None and not set(hard_types) & set(soft_types):
        return ("soft", "type"), (f"the parts suit different task types: {hard_name!r} is for "
                                  f"{', '.join(sorted(hard_types))}, {soft_name!r} for {', '.join(sorted(soft_types))}")
    return None


class MixtureParams(Params):
    hard: dict[str, Any] = Field(default_factory=lambda: {"type": "ce"}, validate_default=True,
                                 description="the hard-label loss, e.g. {type: ce} or {type: mse}")
    soft: dict[str, Any] = Field(default_factory=lambda: {"type": "soft-ce"}, validate_default=True,
                                 description="the distillation loss, e.g. {type: soft-ce} or {type: mse-soft}")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft part: alpha*soft + (1-alpha)*hard")
    alpha_schedule: Literal["constant", "linear"] = "constant"
    alpha_end: float | None = Field(None, ge=0, le=1, description="with alpha_schedule: linear, alpha at the end")

    _name_only = field_validator("hard", "soft", mode="before")(name_only)

    @field_validator("hard")
    @classmethod
    def _check_hard(cls, value):
        return _validate_part(value, "hard")

    @field_validator("soft")
    @classmethod
    def _check_soft(cls, value):
        return _validate_part(value, "soft")

    @model_validator(mode="after")
    def _check_combination(self):
        if self.alpha_schedule == "linear" and self.alpha_end is None:
            raise params_error(("alpha_end",), "alpha_schedule: linear needs alpha_end (alpha at the end of training)")
        if self.alpha_schedule == "constant" and self.alpha_end is not None:
            raise params_error(("alpha_end",), "alpha_end is only used with alpha_schedule: linear",
                               found=self.alpha_end)
        losses = get_registries().losses
        # Class attributes decide most cases here, at recipe validation; nested mixtures are checked when built.
        infos = []
        for spec in (self.hard, self.soft):
            factory = losses.get(spec["type"]).factory
            infos.append((spec["type"], getattr(factory, "task_types", None), getattr(factory, "uses_soft_targets", None)))
        problem = _parts_problem(*infos)
        if problem:
            loc, message = problem
            raise params_error(loc, message, found=infos[0 if loc[0] == "hard" else 1][0])
        return self


class Mixture:
    """``alpha * soft + (1 - alpha) * hard``: distillation plus gold labels; the hard part alone without teachers.

    The paper's student: ``{type: mixture, hard: {type: ce}, soft: {type: soft-ce}, alpha: 0.5}``.
    ``alpha_schedule: linear`` moves alpha from ``alpha`` to ``alpha_end`` as progress goes 0 -> 1.
    """

    uses_soft_targets = True
    handles_unlabelled = True  # rows without a label (a transfer set) get the soft part only, per row

    def __init__(self, params: MixtureParams | None = None):
        self.params = params or MixtureParams()
        losses = get_registries().losses
        self.hard = losses.create(*_split(self.params.hard), path="hard")
        self.soft = losses.create(*_split(self.params.soft), path="soft")
        problem = _parts_problem(
            (self.params.hard["type"], self.hard.task_types, self.hard.uses_soft_targets),
            (self.params.soft["type"], self.soft.task_types, self.soft.uses_soft_targets))
        if problem:
            loc, message = problem
            raise RecipeError("these losses cannot be mixed", path=".".join(loc), expected=message,
                              found=self.params.model_dump(mode="json")[loc[0]])
        self.task_types = frozenset(self.hard.task_types) & frozenset(self.soft.task_types)

    def alpha_at(self, progress: float) -> float:
        end = self.params.alpha_end if self.params.alpha_schedule == "linear" else None
        return linear(self.params.alpha, end, progress)

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        if soft is None:  # a task without teachers trains on its gold labels only
            return self.hard(logits, labels, None, progress=progress)
        # Transfer-set rows have no label: their loss is the soft part alone. The value stays a mean over the
        # batch's rows of a per-row loss (the hard mean over the k labelled rows, times k / batch), which is what
        # the trainer's weighting of each rank's share assumes: 2 processes then match 1.
        keep = labelled(labels)
        k = int(keep.sum())
        if k == len(labels):
            hard = self.hard(logits, labels, None, progress=progress)
        elif k:
            hard = self.hard(logits[keep], labels[keep], None, progress=progress) * (k / len(labels))
        else:
            hard = logits.float().sum() * 0.0  # keeps the graph (and DDP's every-parameter reduction) intact
        alpha = self.alpha_at(progress)
        return alpha * self.soft(logits, labels, soft, progress=progress) + (1.0 - alpha) * hard


#: name -> (factory, params model)
OBJECTIVES = {
    "ce": (CrossEntropy, CEParams),
    "soft-ce": (SoftCrossEntropy, SoftCEParams),
    "kl": (KLDivergence, KLParams),
    "mse-logits": (MSELogits, MSELogitsParams),
    "mse": (MSE, None),
    "mse-soft": (MSESoft, None),
    "mixture": (Mixture, MixtureParams),
}
