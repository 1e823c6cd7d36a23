"""Task heads: ``linear`` (dropout + linear on the pooled vector) and ``san`` (MT-DNN's stochastic answer
network).

A head is called as ``head(pooled, sequence, attention_mask, token_type_ids)`` and returns logits [B, C].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtkd.errors import RecipeError

from .params import LinearHeadParams, SANHeadParams

#: BERT's initialiser range: new heads start like the rest of a BERT model.
INIT_STD = 0.02


def _init_linear(layer: nn.Linear) -> nn.Linear:
    nn.init.normal_(layer.weight, std=INIT_STD)
    nn.init.zeros_(layer.bias)
    return layer


def _masked_softmax(scores, mask):
    """Softmax over tokens where ``mask`` is true (the fill value fits the scores' dtype, bf16 included)."""
    return F.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=1)


class LinearHead(nn.Module):
    """Dropout and a linear layer on the pooled vector (MT-DNN's head for single sentences and regression)."""

    def __init__(self, params: LinearHeadParams, hidden_size: int, num_outputs: int):
        super().__init__()
        self.dropout = nn.Dropout(params.dropout)
        self.linear = _init_linear(nn.Linear(hidden_size, num_outputs))

    def forward(self, pooled, sequence=None, attention_mask=None, token_type_ids=None):
        return self.linear(self.dropout(pooled))


class SANHead(nn.Module):
    """Stochastic answer network for pair classification (Liu et al. 2018, as used by MT-DNN).

    The premise tokens (token type 0) are the memory M; the initial state s_0 is a self-attentive
    summary of the hypothesis tokens (type 1). Each step k attends over M with the state
    (bilinear: alpha = softmax(M W s_k)), reads x_k = alpha M, scores [x_k, s_k, |x_k - s_k|, x_k * s_k]
    with a linear layer, and updates s_{k+1} = GRU(x_k, s_k). The answer is the average of the
    steps' probabilities; the head returns its log, so softmax of the logits gives the average.
    In training whole steps are dropped from the average at random (at least one kept per
    example); in eval all steps count. Without token type ids (or a second segment) both memories
    are the whole sequence.
    """

    def __init__(self, params: SANHeadParams, hidden_size: int, num_outputs: int):
        super().__init__()
        if num_outputs < 2:
            raise RecipeError("the san head averages class probabilities and needs at least 2 classes",
                              path="heads", expected="a classification task",
                              found=f"{num_outputs} output(s)", hint="use the linear head for regression")
        self.steps = params.steps
        self.step_dropout = params.step_dropout
        self.dropout = nn.Dropout(params.dropout)
        self.memory_dropout = params.memory_dropout
        self.query_attention = _init_linear(nn.Linear(hidden_size, 1))
        self.bilinear = _init_linear(nn.Linear(hidden_size, hidden_size))
        self.gru = nn.GRUCell(hidden_size, hidden_size)
        self.classifier = _init_linear(nn.Linear(4 * hidden_size, num_outputs))

    def _memories(self, sequence, attention_mask, token_type_ids):
        valid = attention_mask.bool()
        if token_type_ids is None:
            return valid, valid
        premise = valid & (token_type_ids == 0)
        hypothesis = valid & (token_type_ids == 1)
        # A row without a second segment (or without a first) falls back to the whole sequence.
        premise = torch.where(premise.any(1, keepdim=True), premise, valid)
        hypothesis = torch.where(hypothesis.any(1, keepdim=True), hypothesis, valid)
        return premise, hypothesis

    def step_logits(self, pooled, sequence, attention_mask, token_type_ids=None):
        """Each step's class scores, [B, K, C]."""
        premise_mask, hypothesis_mask = self._memories(sequence, attention_mask, token_type_ids)
        memory = sequence
        if self.training and self.memory_dropout > 0:
            # Variational dropout (as MT-DNN): one mask per example, shared by all tokens.
            keep = 1.0 - self.memory_dropout
            mask = torch.bernoulli(sequence.new_full((sequence.size(0), 1, sequence.size(2)), keep)) / keep
            memory = sequence * mask
        weights = _masked_softmax(self.query_attention(memory).squeeze(-1), hypothesis_mask)
        state = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)

        scores = []
        for _ in range(self.steps):
            scores_k = torch.bmm(memory, self.bilinear(state).unsqueeze(2)).squeeze(2)  # x_i' W s
            attention = _masked_softmax(scores_k, premise_mask)
            read = torch.bmm(attention.unsqueeze(1), memory).squeeze(1)
            features = torch.cat([read, state, (read - state).abs(), read * state], dim=1)
            scores.append(self.classifier(self.dropout(features)))
            state = self.gru(read, self.dropout(state))
        return torch.stack(scores, dim=1)

    def forward(self, pooled, sequence, attention_mask, token_type_ids=None):
        steps = self.step_logits(pooled, sequence, attention_mask, token_type_ids)
        log_probs = F.log_softmax(steps.float(), dim=-1)  # [B, K, C]
        batch, k = log_probs.shape[:2]
        if self.training and self.step_dropout > 0:
            keep = torch.rand(batch, k, device=log_probs.device) >= self.step_dropout
            forced = torch.randint(k, (batch,), device=keep.device)
            keep[torch.arange(batch, device=keep.device), forced] = True
        else:
            keep = torch.ones(batch, k, dtype=torch.bool, device=log_probs.device)
        # log(mean of the kept steps' probabilities), in log space for stability.
        masked = log_probs.masked_fill(~keep.unsqueeze(-1), -math.inf)
        return torch.logsumexp(masked, dim=1) - keep.sum(1, keepdim=True).float().log()
