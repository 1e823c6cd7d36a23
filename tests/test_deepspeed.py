"""DeepSpeed ZeRO-2 on CPU with 2 processes (gloo): trains, saves full weights, stops and resumes exactly.

Marked slow (run with ``-m slow``); DeepSpeed's first run on a machine compiles its shared-memory
communication op (~30-60 s), later runs reuse it.

One task on purpose: ZeRO-1/2 keep the fp32 weights as flat partitions and give a parameter
without a gradient a zero gradient, so in a multi-task model AdamW still moves the heads of
tasks absent from the batch (momentum, weight decay), where DDP and a single process skip them.
With one task every parameter gets a gradient in every step, and ZeRO-2 with gradient
accumulation matches DDP's loss curve to LOSS_TOL (float rounding of the reductions only).
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    TINY_ENCODER,
    job_losses,
    job_result,
    job_weights,
    mtkd_env,
    only_job,
    requires_minilm,
    run_mtkd,
)
from test_pipeline import tiny_recipe

pytestmark = [
    pytest.mark.slow,
    requires_minilm,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="needs deepspeed (pip install deepspeed)"),
]

LOSS_TOL = 1e-5
STEPS = 12  # 32 rows, batch 4 (2 per rank), 2 micro-batches per optimizer step, 3 epochs
SAVE_EVERY = 2
DEEPSPEED = ("--set", "scaling.strategy=deepspeed", "--set", "scaling.zero_stage=2")


def _recipe(folder: Path) -> Path:
    return tiny_recipe(
        folder, teachers={"members": [{"seed": 1}]}, student=None,
        tasks=[{"name": "rte", "max_train_examples": 32, "max_eval_examples": 23}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        training={"epochs": 3, "batch_size": 4, "grad_accum": 2, "eval_batch_size": 4, "log_every": 1,
                  "save_every": SAVE_EVERY})


def _args(recipe: Path, out: Path, *extra, nproc: int = 2) -> list[str]:
    return ["recipe", "run", str(recipe), "--stage", "teachers", "--output", str(out), "-q", "--nproc", str(nproc),
            *extra]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The recipe trained by 2 processes with DDP and with DeepSpeed ZeRO-2."""
    folder = tmp_path_factory.mktemp("deepspeed")
    recipe = _recipe(folder)
    for out, extra in (("ddp", ()), ("zero2", DEEPSPEED)):
        done = run_mtkd(_args(recipe, folder / out, *extra), timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
    return recipe, folder / "ddp", folder / "zero2"


def test_zero2_trains_like_ddp_and_saves_the_fulljob_weights(runs):
    import torch

    _, ddp, zero2 = runs
    result = job_result(zero2)
    assert result["world_size"] == 2 and result["steps"] == STEPS
    assert result["rank_checksums"][0] == result["rank_checksums"][1]
    expected, losses = job_losses(ddp), job_losses(zero2)
    assert sorted(losses) == list(range(1, STEPS + 1))
    worst = max(abs(losses[s] - expected[s]) for s in expected)
    assert worst < LOSS_TOL, f"largest loss difference to DDP {worst:.2e}"
    for mine, theirs in zip(result["history"], job_result(ddp)["history"], strict=True):
        assert mine["metrics"]["rte"] == pytest.approx(theirs["metrics"]["rte"])
    # The saved model is whole (not a shard) and is the DDP model up to rounding.
    weights, ddp_weights = job_weights(zero2), job_weights(ddp)
    assert weights.keys() == ddp_weights.keys()
    for name, value in ddp_weights.items():
        assert weights[name].shape == value.shape
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-4)
    assert (only_job(zero2) / "final" / "mtkd_model.json").exists()


def test_zero2_stops_on_sigterm_and_resumes_to_the_samejob_weights(runs, tmp_path):
    import torch

    recipe, _, zero2 = runs
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", *_args(recipe, out, *DEEPSPEED)], env=mtkd_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (list((out / "teachers").glob("*/checkpoint/trainer_state.json")) if out.exists() else []):
            assert proc.poll() is None, "the run ended before its first checkpoint:\n" + proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Re-run the same command to resume" in " ".join(err.split())
    state = json.loads((only_job(out) / "checkpoint" / "trainer_state.json").read_text())
    assert SAVE_EVERY <= state["step"] < STEPS
    assert not (only_job(out) / "result.json").exists()

    done = run_mtkd(_args(recipe, out, *DEEPSPEED), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    # Resumed, not restarted: the stopped run logged steps 1..k, the re-run k+1..end, none twice.
    logged = [json.loads(line)["step"] for line in (only_job(out) / "metrics.jsonl").read_text().splitlines()
              if "train/loss\"" in line]
    assert logged == list(range(1, STEPS + 1))
    assert job_result(out)["rank_checksums"] == job_result(zero2)["rank_checksums"]
    expected, weights = job_weights(zero2), job_weights(out)
    assert [k for k in expected if not torch.equal(expected[k], weights[k])] == []


def test_zero2_in_one_process_needs_no_launcher(runs, tmp_path):
    """Without --nproc or a launcher, mtkd gives DeepSpeed a world of one (else it would look for MPI)."""
    recipe, ddp, _ = runs
    out = tmp_path / "one"
    done = run_mtkd(_args(recipe, out, *DEEPSPEED, nproc=1), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_result(out)["world_size"] == 1
    expected, losses = job_losses(ddp), job_losses(out)
    assert max(abs(losses[s] - expected[s]) for s in expected) < LOSS_TOL
