"""Teacher-ensemble rules (the ``register_aggregators`` hook).

Every aggregator follows ``mtkd.components.Aggregator``::

    target = aggregator(outputs, weights=None)

``outputs`` are the K members' raw outputs [K, N, C]: logits for classification, values
[K, N, 1] for regression. The result is [N, C] class probabilities (rows sum to 1) or [N, 1]
values, in fp32. ``temperature`` softens the members' logits: ``softmax(logits / T)``.

Only ``weighted`` takes per-member weights; the others are unweighted by definition and refuse
weights instead of silently ignoring them. ``uses_member_scores`` tells the core whether to
compute the members' dev scores and pass them as ``weights=`` (``weighted`` without recipe weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator

from mtkd.errors import RecipeError
from mtkd.params import Params

from ._common import CLASSIFICATION, REGRESSION


class TemperatureParams(Params):
    temperature: float = Field(1.0, gt=0, description="members' logits are divided by this before softmax")


class _Aggregator:
    """Shape checks and the fp32 cast shared by all rules; subclasses implement ``_aggregate``."""

    name = ""
    task_types: frozenset[str] = CLASSIFICATION
    accepts_weights = False
    uses_member_scores = False

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else TemperatureParams()

    def __call__(self, outputs, *, weights=None):
        outputs = torch.as_tensor(outputs)
        if outputs.dim() != 3 or outputs.shape[0] < 1:
            raise ValueError(f"aggregator {self.name!r}: outputs must be [members, examples, outputs], "
                             f"got shape {tuple(outputs.shape)}")
        regression = "regression" in self.task_types
        if regression and outputs.shape[2] != 1:
            raise ValueError(f"aggregator {self.name!r} is for regression: outputs must be [K, N, 1], "
                             f"got {tuple(outputs.shape)}")
        if not regression and outputs.shape[2] < 2:
            raise ValueError(f"aggregator {self.name!r} is for classification: outputs must have >= 2 classes, "
                             f"got {tuple(outputs.shape)}")
        if weights is not None and not self.accepts_weights:
            raise ValueError(f"aggregator {self.name!r} is unweighted; use `weighted` to weight the members")
        return self._aggregate(outputs.float(), weights)

    def _probs(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.softmax(outputs / self.params.temperature, dim=-1)

    def _aggregate(self, outputs: torch.Tensor, weights) -> torch.Tensor:
        raise NotImplementedError


class MeanProbs(_Aggregator):
    """Average of the members' class probabilities (the paper's soft targets)."""

    name = "mean-probs"

    def _aggregate(self, outputs, weights):
        return self._probs(outputs).mean(dim=0)


class MeanLogits(_Aggregator):
    """Softmax of the members' mean logits."""

    name = "mean-logits"

    def _aggregate(self, outputs, weights):
        return F.softmax(outputs.mean(dim=0) / self.params.temperature, dim=-1)


class GeometricMean(_Aggregator):
    """Normalised geometric mean of the members' class probabilities.

    ``prod_k p_k[c] ** (1/K)``, rescaled to sum to 1. Computed in log space; note it equals
    ``mean-logits`` at the same temperature (the members' log-normalisers cancel).
    """

    name = "geometric-mean"

    def _aggregate(self, outputs, weights):
        mean_log = F.log_softmax(outputs / self.params.temperature, dim=-1).mean(dim=0)
        return F.softmax(mean_log, dim=-1)  # exp, then divide by the row sum


class WeightedParams(TemperatureParams):
    weights: list[float] | None = Field(
        None, description="one weight per teacher member (normalised to sum 1); none: the member scores the core passes")

    @field_validator("weights")
    @classmethod
    def _check(cls, value, info: ValidationInfo):
        if value is not None:
            if not value:
                raise ValueError("give one weight per teacher member")
            members = (info.context or {}).get("teacher_members")  # known when a recipe is validated
            if members is not None and len(value) != members:
                raise ValueError(f"give one weight per teacher member: {members} weight(s), not {len(value)}")
            if any(w < 0 for w in value):
                raise ValueError("weights must not be negative")
            if sum(value) <= 0:
                raise ValueError("weights must not all be zero")
        return value


class Weighted(_Aggregator):
    """Weighted average of the members' class probabilities (weights from the recipe or member dev scores).

    Weights written in the recipe win over the ones the core passes at call time.
    """

    name = "weighted"
    accepts_weights = True

    def __init__(self, params: WeightedParams | None = None):
        super().__init__(params or WeightedParams())

    @property
    def uses_member_scores(self) -> bool:
        return self.params.weights is None

    def _aggregate(self, outputs, weights):
        from_recipe = self.params.weights is not None
        if from_recipe:
            weights = self.params.weights
        if weights is None:
            raise RecipeError("aggregator 'weighted' has no weights", path="weights",
                              expected="one weight per teacher member, or member scores passed by the core")
        where = "the recipe's weights" if from_recipe else "the member weights"
        w = torch.as_tensor(weights, dtype=torch.float32, device=outputs.device).reshape(-1)
        k = outputs.shape[0]
        if w.numel() != k:
            raise RecipeError(f"{where} do not match the teacher members", path="weights",
                              expected=f"{k} weights (one per member)", found=w.tolist())
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise RecipeError(f"{where} are not usable", path="weights",
                              expected="finite, non-negative weights, not all zero", found=w.tolist(),
                              hint="member dev scores can be negative (Matthews, Pearson): give weights explicitly")
        w = w / w.sum()
        return (w[:, None, None] * self._probs(outputs)).sum(dim=0)


class MajorityVote(_Aggregator):
    """One-hot target of the class most members predict; ties go to the higher mean probability."""

    name = "majority-vote"

    def _aggregate(self, outputs, weights):
        k, n, c = outputs.shape
        votes = F.one_hot(outputs.argmax(dim=-1), c).sum(dim=0)  # [N, C] vote counts
        tied = votes == votes.max(dim=-1, keepdim=True).values
        mean_probs = F.softmax(outputs, dim=-1).mean(dim=0)
        # Among the top-voted classes pick the most probable; -1 keeps the others out.
        winner = torch.where(tied, mean_probs, torch.full_like(mean_probs, -1.0)).argmax(dim=-1)
        return F.one_hot(winner, c).float()


class Mean(_Aggregator):
    """Mean of the members' predicted values (regression)."""

    name = "mean"
    task_types = REGRESSION

    def _aggregate(self, outputs, weights):
        return outputs.mean(dim=0)


class Median(_Aggregator):
    """Median of the members' predicted values (regression; the mean of the middle two for even K)."""

    name = "median"
    task_types = REGRESSION

    def _aggregate(self, outputs, weights):
        # torch.median returns the lower middle value for even K; quantile interpolates.
        return torch.quantile(outputs, 0.5, dim=0)


#: name -> (factory, params model)
AGGREGATORS = {
    "mean-probs": (MeanProbs, TemperatureParams),
    "mean-logits": (MeanLogits, TemperatureParams),
    "geometric-mean": (GeometricMean, TemperatureParams),
    "weighted": (Weighted, WeightedParams),
    "majority-vote": (MajorityVote, None),
    "mean": (Mean, None),
    "median": (Median, None),
}
