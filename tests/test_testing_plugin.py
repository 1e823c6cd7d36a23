"""mtkd's pytest plugin (mtkd.testing) as a plugin author meets it: the sandbox forgets what a test
registered, the tiny encoder builds and encodes offline."""

from __future__ import annotations

import torch

import mtkd
from mtkd.params import Params


class Inline:
    class MyParams(Params):
        scale: float = 1.0

    class Doubler:
        """Twice the mean of the members."""

        task_types = frozenset({"regression"})

        def __init__(self, params):
            self.scale = params.scale

        def __call__(self, outputs, weights=None):
            return 2 * self.scale * outputs.mean(0)

    @staticmethod
    @mtkd.hookimpl
    def register_aggregators(register):
        register("doubler", Inline.Doubler, params=Inline.MyParams)


def test_a_plugin_registered_in_one_test(mtkd_plugins):
    mtkd_plugins.register(Inline, "inline")
    agg = mtkd_plugins.registries.aggregators.create("doubler", {"scale": 0.5})
    assert torch.equal(agg(torch.ones(3, 2, 1)), torch.ones(2, 1))
    listed = mtkd_plugins.cli("plugins", "list", "--json")
    assert '"doubler"' in listed.stdout


def test_is_gone_in_the_next(mtkd_plugins):
    assert "doubler" not in mtkd_plugins.registries.aggregators
    assert "mean-probs" in mtkd_plugins.registries.aggregators  # first-party plugins are there


def test_the_tiny_encoder_builds_offline(mtkd_plugins, mtkd_tiny_encoder):
    enc = mtkd_plugins.registries.encoders.create("hf", {k: v for k, v in mtkd_tiny_encoder.items() if k != "type"})
    batch = enc.tokenizer(["the good movie", "a bad plot"], return_tensors="pt", padding=True)
    out = enc(batch["input_ids"], batch["attention_mask"])
    assert out.pooled.shape == (2, 32) and enc.num_layers == 2
