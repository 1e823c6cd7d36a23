"""The linear and SAN heads, on hand-made encoder outputs (no encoder needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtkd.errors import RecipeError

H, C = 8, 3
# Three rows: a padded pair, a single segment (no type-1 tokens), a pair with padding in the middle of types.
TOKEN_TYPES = torch.tensor([[0, 0, 0, 1, 1, 1, 0],
                            [0, 0, 0, 0, 0, 0, 0],
                            [0, 0, 1, 1, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 0],
                     [1, 1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0, 0, 0]])


def encoder_outputs(seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    sequence = torch.randn(3, 7, H, generator=g, requires_grad=requires_grad)
    pooled = torch.randn(3, H, generator=g)
    return pooled, sequence


def san(registries, seed: int = 0, **params):
    torch.manual_seed(seed)
    return registries.heads.create("san", params, H, C)


def reference_san_probs(head, sequence, mask, types):
    """SAN's averaged probabilities, one example at a time, written from the paper's equations."""
    out = []
    for i in range(sequence.size(0)):
        valid = mask[i].bool()
        premise, hypothesis = valid & (types[i] == 0), valid & (types[i] == 1)
        if not hypothesis.any():
            premise = hypothesis = valid
        m, h = sequence[i, premise], sequence[i, hypothesis]
        w = F.softmax(h @ head.query_attention.weight[0] + head.query_attention.bias, dim=0)
        s = w @ h  # s_0: self-attentive summary of the hypothesis
        probs = []
        for _ in range(head.steps):
            alpha = F.softmax(m @ (head.bilinear.weight @ s + head.bilinear.bias), dim=0)
            x = alpha @ m
            feats = torch.cat([x, s, (x - s).abs(), x * s])
            probs.append(F.softmax(head.classifier.weight @ feats + head.classifier.bias, dim=0))
            s = head.gru(x.unsqueeze(0), s.unsqueeze(0))[0]
        out.append(torch.stack(probs).mean(0))
    return torch.stack(out)


def test_linear_head(registries):
    head = registries.heads.create("linear", {"dropout": 0.2}, H, C)
    assert head.dropout.p == 0.2
    pooled, sequence = encoder_outputs()
    head.eval()
    logits = head(pooled, sequence, MASK, TOKEN_TYPES)
    torch.testing.assert_close(logits, pooled @ head.linear.weight.T + head.linear.bias)
    assert logits.shape == (3, C)
    regression = registries.heads.create("linear", {}, H, 1)
    assert regression(pooled, sequence, MASK, None).shape == (3, 1)
    assert regression.dropout.p == 0.1
    head.train()
    torch.manual_seed(0)
    assert not torch.equal(head(pooled, sequence, MASK, TOKEN_TYPES), logits)  # dropout is active in training


def test_san_defaults_and_validation(registries):
    head = san(registries)
    assert (head.steps, head.step_dropout, head.memory_dropout, head.dropout.p) == (5, 0.1, 0.1, 0.1)
    with pytest.raises(RecipeError, match="at least 2 classes"):
        registries.heads.create("san", {}, H, 1)
    with pytest.raises(RecipeError, match="unknown key"):
        registries.heads.create("san", {"num_turns": 5}, H, C)


def test_san_shapes_and_gradients(registries):
    head = san(registries).train()
    pooled, sequence = encoder_outputs(requires_grad=True)
    logits = head(pooled, sequence, MASK, TOKEN_TYPES)
    assert logits.shape == (3, C)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert sequence.grad[0, :6].abs().sum() > 0
    assert sequence.grad[0, 6].abs().sum() == 0 and sequence.grad[2, 4:].abs().sum() == 0  # padding gets none


def test_san_eval_is_deterministic_and_averages_the_steps(registries):
    head = san(registries, steps=4).eval()
    pooled, sequence = encoder_outputs()
    with torch.no_grad():
        logits = head(pooled, sequence, MASK, TOKEN_TYPES)
        again = head(pooled, sequence, MASK, TOKEN_TYPES)
        steps = head.step_logits(pooled, sequence, MASK, TOKEN_TYPES)
    assert torch.equal(logits, again)
    assert steps.shape == (3, 4, C)
    # softmax of the logits is the mean of the steps' probabilities (the logits are its log).
    torch.testing.assert_close(logits.exp(), F.softmax(steps, -1).mean(1))
    torch.testing.assert_close(F.softmax(logits, -1), logits.exp())
    # The steps really differ: averaging is not the same as taking any one step.
    assert not torch.allclose(F.softmax(steps[:, 0], -1), F.softmax(steps[:, -1], -1), atol=1e-4)


def test_san_matches_the_reference_equations(registries):
    head = san(registries, seed=3, steps=3).eval()
    # Larger weights than the 0.02 initialisation, so attention is far from uniform and mistakes show.
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    pooled, sequence = encoder_outputs(seed=4)
    with torch.no_grad():
        got = head(pooled, sequence, MASK, TOKEN_TYPES).exp()
        expected = reference_san_probs(head, sequence, MASK, TOKEN_TYPES)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_san_memories_come_from_token_types(registries):
    head = san(registries, seed=5).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    pooled, sequence = encoder_outputs(seed=6)
    base = head(pooled, sequence, MASK, TOKEN_TYPES)
    changed = sequence.clone()
    changed[0, 6] += 10.0  # a padded position
    changed[2, 5] -= 10.0
    torch.testing.assert_close(head(pooled, changed, MASK, TOKEN_TYPES), base)
    changed[0, 4] += 1.0  # a hypothesis token
    assert not torch.allclose(head(pooled, changed, MASK, TOKEN_TYPES)[0], base[0])
    # Without type ids both memories are the whole sequence, as for a row with a single segment.
    torch.testing.assert_close(head(pooled, sequence, MASK, None),
                               head(pooled, sequence, MASK, torch.zeros_like(MASK)))
    torch.testing.assert_close(head(pooled, sequence, MASK, None)[1], base[1])


def test_san_training_drops_whole_steps(registries):
    pooled, sequence = encoder_outputs(seed=7)
    # Only step dropout: with probability 1 every step but one (kept at random) leaves the average.
    head = san(registries, seed=8, dropout=0.0, memory_dropout=0.0, step_dropout=1.0)
    with torch.no_grad():
        step_probs = F.softmax(head.eval().step_logits(pooled, sequence, MASK, TOKEN_TYPES), -1)
        head.train()
        chosen = set()
        for seed in range(6):
            torch.manual_seed(seed)
            probs = head(pooled, sequence, MASK, TOKEN_TYPES).exp()
            for row in range(3):
                match = [k for k in range(head.steps)
                         if torch.allclose(probs[row], step_probs[row, k], atol=1e-6)]
                assert len(match) == 1
                chosen.add(match[0])
    assert len(chosen) > 1  # the kept step is random
    # Without step dropout (and no other dropout) training and eval give the same average.
    head = san(registries, seed=8, dropout=0.0, memory_dropout=0.0, step_dropout=0.0)
    with torch.no_grad():
        torch.testing.assert_close(head.train()(pooled, sequence, MASK, TOKEN_TYPES),
                                   head.eval()(pooled, sequence, MASK, TOKEN_TYPES))


def test_san_step_dropout_keeps_a_proper_distribution(registries):
    head = san(registries, seed=9).train()  # all dropouts on, MT-DNN defaults
    pooled, sequence = encoder_outputs(seed=10)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = head(pooled, sequence, MASK, TOKEN_TYPES)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(3))


def test_san_under_bf16_autocast(registries):
    head = san(registries, seed=11).train()
    pooled, sequence = encoder_outputs(seed=12, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(pooled, sequence, MASK, TOKEN_TYPES)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(sequence.grad).all()
