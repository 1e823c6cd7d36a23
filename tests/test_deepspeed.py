"""DeepSpeed ZeRO stages 1, 2 and 3 on CPU with 2 processes (gloo): each trains like DDP, keeps whole best and
final models, stops on SIGTERM and resumes to bitwise the same weights, and never unpickles anything but tensors.

Marked slow (run with ``-m slow``); DeepSpeed's first run on a machine compiles its shared-memory
communication op (~1-5 min), later runs reuse it.

ZeRO keeps the fp32 weights as flat partitions and gives a parameter without a gradient a zero gradient,
so in a multi-task model AdamW would still move the heads of tasks absent from a step (momentum, weight
decay), where DDP and a single process skip them. mtkd gives each head its own parameter groups and puts
back what a step did to absent heads (``mtkd.strategies.AbsentHeads``): a two-task run under ZeRO-1 and
ZeRO-2 then ends with DDP's weights (measured: identical, and within 4e-9). ZeRO-3 is refused for multi-task
jobs (a two-task run still drifted by 5e-5). The single-task runs match DDP's loss curve to LOSS_TOL and
its weights to WEIGHT_TOL (float rounding of the reductions only; measured: equal).
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
WEIGHT_TOL = 1e-5  # absolute (rtol 1e-4), weights after 12 AdamW steps
STEPS = 12  # 32 rows, batch 4 (2 per rank), 2 micro-batches per optimizer step, 3 epochs
SAVE_EVERY = 2
STAGES = (1, 2, 3)


def _zero(stage: int) -> tuple[str, ...]:
    return ("--set", "scaling.strategy=deepspeed", "--set", f"scaling.zero_stage={stage}")


def _recipe(folder: Path) -> Path:
    return tiny_recipe(
        folder, teachers={"members": [{"seed": 1}]}, student=None,
        tasks=[{"name": "rte", "max_train_examples": 32, "max_eval_examples": 23}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        training={"epochs": 3, "batch_size": 4, "grad_accum": 2, "eval_batch_size": 4, "log_every": 1,
                  "save_every": SAVE_EVERY, "keep": "both"})


def _args(recipe: Path, out: Path, *extra, nproc: int = 2) -> list[str]:
    return ["recipe", "run", str(recipe), "--stage", "teachers", "--output", str(out), "-q", "--nproc", str(nproc),
            *extra]


def _weights(out: Path, folder: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(only_job(out) / folder / "model.safetensors"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("deepspeed")


@pytest.fixture(scope="module")
def ddp(folder):
    recipe = _recipe(folder)
    done = run_mtkd(_args(recipe, folder / "ddp"), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return recipe, folder / "ddp"


@pytest.fixture(scope="module", params=STAGES, ids=[f"zero{s}" for s in STAGES])
def zero(request, ddp, folder):
    recipe, _ = ddp
    out = folder / f"zero{request.param}"
    done = run_mtkd(_args(recipe, out, *_zero(request.param)), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, out


def test_zero_trains_like_ddp_and_keeps_whole_best_and_final_models(ddp, zero):
    import torch

    (_, reference), (stage, out) = ddp, zero
    result, expected = job_result(out), job_result(reference)
    assert result["world_size"] == 2 and result["steps"] == STEPS
    assert result["rank_checksums"][0] == result["rank_checksums"][1]
    losses, ddp_losses = job_losses(out), job_losses(reference)
    assert sorted(losses) == list(range(1, STEPS + 1))
    worst = max(abs(losses[s] - ddp_losses[s]) for s in ddp_losses)
    assert worst < LOSS_TOL, f"ZeRO-{stage}: largest loss difference to DDP {worst:.2e}"
    for mine, theirs in zip(result["history"], expected["history"], strict=True):
        assert mine["metrics"]["rte"] == pytest.approx(theirs["metrics"]["rte"])
    assert result["model"] == "best" and result["best_step"] == expected["best_step"]
    # The saved models are whole (not shards; ZeRO-3 gathers them) and are DDP's up to rounding.
    for kept in ("best", "final"):
        weights, ddp_weights = _weights(out, kept), _weights(reference, kept)
        assert weights.keys() == ddp_weights.keys()
        for name, value in ddp_weights.items():
            assert weights[name].shape == value.shape, (kept, name)
            torch.testing.assert_close(weights[name], value, atol=WEIGHT_TOL, rtol=1e-4)


def _stop_after_first_checkpoint(recipe: Path, out: Path, stage: int) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", *_args(recipe, out, *_zero(stage))], env=mtkd_env(),
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
    return state["step"]


def test_zero_stops_on_sigterm_and_resumes_to_the_same_weights(ddp, zero, tmp_path):
    import torch

    (recipe, _), (stage, uninterrupted) = ddp, zero
    out = tmp_path / "stopped"
    _stop_after_first_checkpoint(recipe, out, stage)
    done = run_mtkd(_args(recipe, out, *_zero(stage)), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    # Resumed, not restarted: the stopped run logged steps 1..k, the re-run k+1..end, none twice.
    logged = [json.loads(line)["step"] for line in (only_job(out) / "metrics.jsonl").read_text().splitlines()
              if "train/loss\"" in line]
    assert logged == list(range(1, STEPS + 1))
    assert job_result(out)["rank_checksums"] == job_result(uninterrupted)["rank_checksums"]
    for kept in ("best", "final"):
        expected, weights = _weights(uninterrupted, kept), _weights(out, kept)
        assert [k for k in expected if not torch.equal(expected[k], weights[k])] == [], (stage, kept)


def test_a_pickle_planted_in_deepspeeds_files_is_refused_not_run(ddp, tmp_path):
    """DeepSpeed writes its engine state with torch.save; mtkd reads it back with weights_only=True."""
    import pickle

    recipe, _ = ddp
    out = tmp_path / "planted"
    _stop_after_first_checkpoint(recipe, out, 2)
    marker = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    (target,) = (only_job(out) / "checkpoint" / "deepspeed").rglob("mp_rank_00_model_states.pt")
    target.write_bytes(pickle.dumps(Payload()))
    done = run_mtkd(_args(recipe, out, *_zero(2)), timeout=400)
    assert done.returncode != 0, done.stderr[-3000:]  # the workers exit 2; torchrun reports a failure as 1
    flat = " ".join(done.stderr.split())
    assert "the resumable checkpoint is damaged or incomplete" in flat and "Weights only load failed" in flat
    assert not marker.exists()


def test_zero2_in_one_process_needs_no_launcher(ddp, tmp_path):
    """Without --nproc or a launcher, mtkd gives DeepSpeed a world of one (else it would look for MPI)."""
    recipe, reference = ddp
    out = tmp_path / "one"
    done = run_mtkd(_args(recipe, out, *_zero(2), nproc=1), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert job_result(out)["world_size"] == 1
    expected, losses = job_losses(reference), job_losses(out)
    assert max(abs(losses[s] - expected[s]) for s in expected) < LOSS_TOL


# ---------------------------------------------------------------- two tasks: absent heads stay where they are


def _two_task_recipe(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    return tiny_recipe(
        folder, teachers={"members": [{"seed": 1}]}, student=None,
        tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8},
               {"name": "sst2", "max_train_examples": 16, "max_eval_examples": 8}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        # Batches of 4 rows, one task each, 2 per step: some steps hold one task only, so the other's head
        # gets no gradient (ZeRO alone would still move it through momentum and weight decay).
        training={"epochs": 2, "batch_size": 4, "grad_accum": 2, "eval_batch_size": 8, "log_every": 1,
                  "weight_decay": 0.1, "keep": "final"})


@pytest.fixture(scope="module")
def two_task_ddp(folder):
    recipe = _two_task_recipe(folder / "two-task")
    done = run_mtkd(_args(recipe, folder / "two-task" / "ddp"), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return recipe, folder / "two-task" / "ddp"


@pytest.mark.parametrize("stage", [1, 2])  # ZeRO-3 is refused for multi-task jobs (tests/test_training_guards.py)
def test_two_task_zero_leaves_absent_heads_alone_like_ddp(two_task_ddp, tmp_path, stage):
    import torch

    recipe, reference = two_task_ddp
    out = tmp_path / f"zero{stage}"
    done = run_mtkd(_args(recipe, out, *_zero(stage)), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    losses, expected = job_losses(out), job_losses(reference)
    worst = max(abs(losses[s] - expected[s]) for s in expected)
    assert worst < LOSS_TOL, f"ZeRO-{stage}: largest loss difference to DDP {worst:.2e}"
    weights, ddp_weights = _weights(out, "final"), _weights(reference, "final")
    different = [n for n, v in ddp_weights.items() if not torch.allclose(weights[n], v, atol=WEIGHT_TOL, rtol=1e-4)]
    assert different == [], f"ZeRO-{stage} differs from DDP in {different}"
