"""The two components. They follow ``mtkd.components.Objective`` and ``mtkd.components.Aggregator``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from mtkd.params import Params

CLASSIFICATION = frozenset({"classification"})


class FocalParams(Params):
    gamma: float = Field(2.0, ge=0, description="focusing parameter; 0 gives plain cross-entropy")


class FocalLoss:
    """Focal loss on the gold labels (Lin et al., 2017): down-weights examples the model already gets right.

    ``-(1 - p_t) ** gamma * log p_t`` averaged over the batch, where ``p_t`` is the predicted
    probability of the gold class. Examples labelled -1 (no label) are left out. A hard-label
    loss: the teachers' soft targets are not used.
    """

    task_types = CLASSIFICATION
    uses_soft_targets = False

    def __init__(self, params: FocalParams | None = None):
        self.params = params or FocalParams()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0):
        if logits.dim() != 2:
            raise ValueError(f"loss 'focal': logits must be [batch, classes], got shape {tuple(logits.shape)}")
        logits = logits.float()  # in fp32 even under bf16/fp16 autocast
        labels = labels.long()
        keep = labels >= 0
        if not bool(keep.any()):
            return logits.sum() * 0.0  # keeps the graph, so backward() still works
        log_p = F.log_softmax(logits[keep], dim=-1)
        log_p_t = log_p.gather(1, labels[keep].unsqueeze(1)).squeeze(1)
        p_t = log_p_t.exp()
        return (-((1.0 - p_t) ** self.params.gamma) * log_p_t).mean()


class TrimmedMeanParams(Params):
    temperature: float = Field(1.0, gt=0, description="members' logits are divided by this before softmax")


class TrimmedMeanProbs:
    """Mean of the members' class probabilities after dropping, per example and class, the most extreme member.

    With K >= 3 members, for every example and class the member whose probability lies farthest
    from the members' median is left out (ties: the lowest member index) and the other K - 1 are
    averaged; the rows are then renormalised to sum to 1. With K < 3 there is no outlier to
    drop, and the result is the plain mean of the probabilities. Unweighted.
    """

    task_types = CLASSIFICATION

    def __init__(self, params: TrimmedMeanParams | None = None):
        self.params = params or TrimmedMeanParams()

    def __call__(self, outputs, *, weights=None):
        outputs = torch.as_tensor(outputs)
        if outputs.dim() != 3 or outputs.shape[0] < 1 or outputs.shape[2] < 2:
            raise ValueError("aggregator 'trimmed-mean-probs': outputs must be logits [members, examples, classes>=2],"
                             f" got shape {tuple(outputs.shape)}")
        if weights is not None:
            raise ValueError("aggregator 'trimmed-mean-probs' is unweighted; it does not take member weights")
        probs = F.softmax(outputs.float() / self.params.temperature, dim=-1)  # [K, N, C]
        k = probs.shape[0]
        if k < 3:
            return probs.mean(dim=0)
        distance = (probs - probs.quantile(0.5, dim=0, keepdim=True)).abs()
        drop = F.one_hot(distance.argmax(dim=0), k).permute(2, 0, 1).bool()  # [K, N, C]: the member left out
        trimmed = probs.masked_fill(drop, 0.0).sum(dim=0) / (k - 1)
        return trimmed / trimmed.sum(dim=-1, keepdim=True)
