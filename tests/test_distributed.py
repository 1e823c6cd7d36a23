"""Real multi-process training with torch.distributed (gloo on CPU): ``--nproc 2`` and torchrun.

The same teacher is trained by 1 process and by 2 processes with the same global batch
(8 rows: 4 per rank), dropout off, so both compute the same mean gradient each step. They
differ only in float rounding: DDP sums the two ranks' gradients in another order than one
process's backward does. The 24 logged losses agree to LOSS_TOL; the dev metrics (odd-sized dev
sets, so the ranks' shares differ) are equal, each example counted exactly once.
"""

from __future__ import annotations

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

pytestmark = requires_minilm

LOSS_TOL = 1e-5  # absolute, on losses near 0.69; measured differences are below 1e-6
STEPS = 24  # 32 + 32 training rows, global batch 8, 3 epochs
SAVE_EVERY = 3
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _recipe(folder: Path) -> Path:
    return tiny_recipe(
        folder, teachers={"members": [{"seed": 1}]}, student=None,
        tasks=[{"name": "rte", "max_train_examples": 32, "max_eval_examples": 23},
               {"name": "sst2", "max_train_examples": 32, "max_eval_examples": 21}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        training={"epochs": 3, "batch_size": 8, "eval_batch_size": 4, "log_every": 1, "save_every": SAVE_EVERY})


def _args(recipe: Path, out: Path, *extra) -> list[str]:
    return ["recipe", "run", str(recipe), "--stage", "teachers", "--output", str(out), "-q", *extra]



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The recipe, trained once by 1 process and once by ``--nproc 2``."""
    folder = tmp_path_factory.mktemp("distributed")
    recipe = _recipe(folder)
    for out, extra in (("one", ()), ("two", ("--nproc", "2"))):
        done = run_mtkd(_args(recipe, folder / out, *extra), timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    return recipe, folder / "one", folder / "two"


def test_nproc_2_starts_two_processes_that_stay_identical(runs):
    _, one, two = runs
    result = job_result(two)
    assert result["world_size"] == 2 and job_result(one)["world_size"] == 1
    assert result["steps"] == STEPS
    checksums = result["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_loss_curve_matches_one_process_with_the_same_global_batch(runs):
    _, one, two = runs
    single, double = job_losses(one), job_losses(two)
    assert sorted(single) == sorted(double) == list(range(1, STEPS + 1))
    worst = max(abs(single[s] - double[s]) for s in single)
    assert worst < LOSS_TOL, f"largest loss difference {worst:.2e}"
    # Not trivially equal: training moved the loss.
    assert max(single.values()) - min(single.values()) > 1e-3


def test_dev_metrics_count_every_example_once(runs):
    _, one, two = runs
    single, double = job_result(one), job_result(two)
    assert [h["step"] for h in double["history"]] == [8, 16, 24]
    for a, b in zip(single["history"], double["history"]):
        assert b["metrics"].keys() == a["metrics"].keys() == {"rte", "sst2"}
        for task in a["metrics"]:
            assert b["metrics"][task] == pytest.approx(a["metrics"][task], abs=1e-9)
    # 23 and 21 dev rows: accuracy is a multiple of 100/23 (100/21); a row seen twice or missed breaks that.
    for h in double["history"]:
        for task, n in (("rte", 23), ("sst2", 21)):
            correct = h["metrics"][task]["accuracy"] * n / 100
            assert correct == pytest.approx(round(correct), abs=1e-6)


def test_torchrun_directly_gives_the_same_run(runs, tmp_path):
    """Under torchrun (LOCAL_RANK set) mtkd joins the launcher's world; the recipe's ``scaling.nproc``
    does not start more processes. (``--nproc`` itself cannot follow torchrun's ``-m mtkd``: torchrun's
    parser takes it for an abbreviation of its ``--nproc-per-node``.)"""
    recipe, _, two = runs
    out = tmp_path / "torchrun"
    command = [str(TORCHRUN)] if TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]
    done = run_mtkd(["--standalone", "--nproc_per_node", "2", "-m", "mtkd", *_args(recipe, out, "--set", "scaling.nproc=2")],
                    command=command, timeout=240, env=mtkd_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = job_result(out)
    assert result["world_size"] == 2
    assert result["rank_checksums"] == job_result(two)["rank_checksums"]


def test_sigterm_stops_both_ranks_at_a_checkpoint_and_the_rerun_resumes_exactly(runs, tmp_path):
    """SIGTERM to the ``--nproc`` launcher: forwarded once, every rank finishes its step, one checkpoint
    is written, the launcher exits 130; the same command then finishes with the uninterrupted weights."""
    import torch

    recipe, _, two = runs
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "mtkd", *_args(recipe, out, "--nproc", "2")], env=mtkd_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        state = None
        while state is None:
            assert proc.poll() is None, "the run ended before its first checkpoint:\n" + proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            found = list((out / "teachers").glob("*/checkpoint/trainer_state.json")) if out.exists() else []
            state = found[0] if found else None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Re-run the same command to resume" in " ".join(err.split())
    stopped_at = json.loads(state.read_text())["step"]
    assert SAVE_EVERY <= stopped_at < STEPS
    assert not (only_job(out) / "result.json").exists()

    done = run_mtkd(_args(recipe, out, "--nproc", "2"), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # Resumed, not restarted: the stopped run logged steps 1..k, the re-run k+1..end, none twice.
    logged = [json.loads(line)["step"] for line in (only_job(out) / "metrics.jsonl").read_text().splitlines()
              if "train/loss\"" in line]
    assert logged == list(range(1, STEPS + 1))
    assert job_result(out)["rank_checksums"] == job_result(two)["rank_checksums"]
    expected, weights = job_weights(two), job_weights(out)
    assert [k for k in expected if not torch.equal(expected[k], weights[k])] == []
