"""``training.compile``: the encoder under torch.compile (inductor, dynamic shapes) trains as eager does."""

from __future__ import annotations

import pytest
from helpers import TINY_ENCODER, job_losses, job_result, only_job, pipeline_recipe, requires_minilm, run_cli

pytestmark = requires_minilm


def train_once(tmp_path, compile_: bool):
    tmp_path.mkdir()
    # No dropout anywhere: inductor draws its own random masks, so only a dropout-free run can match eager.
    recipe = pipeline_recipe(
        tmp_path, teachers={"members": [{"seed": 1}]}, student=None,
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        training={"epochs": 1, "batch_size": 8, "eval_batch_size": 32, "log_every": 1, "num_threads": 1,
                  **({"compile": True} if compile_ else {})})
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "tiny"


def test_compiled_training_matches_eager(tmp_path, registries):
    from mtkd.model import compile_seconds, load_model

    eager = train_once(tmp_path / "eager", False)
    before = compile_seconds()
    compiled = train_once(tmp_path / "compiled", True)
    assert compile_seconds() > before  # the encoder really went through torch.compile

    losses, ref = job_losses(compiled), job_losses(eager)
    assert len(losses) == len(ref) == 6  # 48 rows / batch 8, batches of varying length: no shape errors
    for step, loss in ref.items():
        assert losses[step] == pytest.approx(loss, abs=1e-4)
    assert job_result(compiled)["best"] == pytest.approx(job_result(eager)["best"], abs=1e-6)
    # Checkpoints keep the eager parameter names (nn.Module.compile compiles in place).
    load_model(only_job(compiled) / job_result(compiled)["model"])
