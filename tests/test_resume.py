"""Exact resume: a teacher killed (SIGKILL) or stopped (SIGTERM) mid-run and re-run with the same command
ends with weights bitwise equal to an uninterrupted run's (CPU, fixed seed, dropout on).

What makes it exact: the checkpoint holds the model, optimizer, scheduler and every RNG state
(Python, NumPy, torch; accelerate's save_state), and the loader's (epoch, position), so the
resumed run draws the same batches and the same dropout masks from the next step on.
Each run is a real ``python -m mtkd recipe run`` subprocess.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mtkd_env, only_job, requires_minilm, run_mtkd
from test_pipeline import tiny_recipe

pytestmark = requires_minilm

SAVE_EVERY = 3
# 32 + 32 training rows in batches of 8: 8 steps an epoch, 24 in all; an eval at each epoch's end.
TRAINING = {"epochs": 3, "batch_size": 8, "eval_batch_size": 16, "log_every": 1, "save_every": SAVE_EVERY,
            "keep": "both"}  # final/ (compared bitwise) beside best/


TASKS = [{"name": "rte", "max_train_examples": 32, "max_eval_examples": 16},
         {"name": "sst2", "max_train_examples": 32, "max_eval_examples": 16}]


def _recipe(folder: Path) -> Path:
    return tiny_recipe(folder, teachers={"members": [{"seed": 1}]}, student=None, training=TRAINING, tasks=TASKS)


def _command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mtkd", "recipe", "run", str(recipe), "--stage", "teachers",
            "--output", str(out), "-q"]


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(only_job(run_dir) / "final" / "model.safetensors"))


def _checkpoint_step(run_dir: Path) -> int:
    """The step of the job's saved checkpoint, or -1 while there is none (or it is half written)."""
    teachers = run_dir / "teachers"
    for state in teachers.glob("*/checkpoint/trainer_state.json") if teachers.exists() else ():
        try:
            return json.loads(state.read_text())["step"]
        except (OSError, ValueError, KeyError):  # being swapped into place right now
            return -1
    return -1


def _start_and_stop(recipe: Path, out: Path, sig: int, *, after_step: int, timeout: float = 60) -> tuple[int, str]:
    """Start the run, send ``sig`` once a checkpoint at ``after_step`` or later exists; its exit code and stderr."""
    proc = subprocess.Popen(_command(recipe, out), env=mtkd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while _checkpoint_step(out) < after_step:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before a checkpoint at step {after_step}:\n"
                            + proc.stderr.read())
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint at step >= {after_step} within {timeout} s")
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _logged_steps(run_dir: Path) -> list[int]:
    lines = (only_job(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [row["step"] for row in map(json.loads, lines) if "train/loss" in row or "teacher-0/train/loss" in row]


def _finish(recipe: Path, out: Path) -> dict:
    done = run_mtkd(_command(recipe, out)[3:], timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads((only_job(out) / "result.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: recipe, its result and final weights."""
    folder = tmp_path_factory.mktemp("resume")
    recipe = _recipe(folder)
    result = _finish(recipe, folder / "uninterrupted")
    assert result["steps"] == 24
    return recipe, result, _weights(folder / "uninterrupted")


def _assert_bitwise_equal(weights: dict, expected: dict) -> None:
    import torch

    assert weights.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(weights[k], expected[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"


def test_sigkill_then_rerun_gives_bitwise_equal_weights(reference, tmp_path):
    recipe, expected_result, expected = reference
    out = tmp_path / "killed"
    # Step 9 is the first step of the second epoch: the resume crosses an epoch boundary and an eval.
    code, _ = _start_and_stop(recipe, out, signal.SIGKILL, after_step=3 * SAVE_EVERY)
    assert code == -signal.SIGKILL
    assert not (only_job(out) / "result.json").exists()
    killed_at = _checkpoint_step(out)
    assert SAVE_EVERY * 3 <= killed_at < 24 and killed_at % SAVE_EVERY == 0

    result = _finish(recipe, out)
    _assert_bitwise_equal(_weights(out), expected)
    assert result["steps"] == 24
    assert result["history"] == expected_result["history"]  # the same dev metrics at every epoch
    # It resumed rather than started over, and the records of steps the kill lost (retrained after the
    # checkpoint) were dropped from metrics.jsonl: every step is logged exactly once.
    assert _logged_steps(out) == list(range(1, 25))
    assert not (only_job(out) / "checkpoint").exists()  # a finished job drops its resumable state


def test_sigterm_saves_a_checkpoint_and_exits_130_then_resumes_exactly(reference, tmp_path):
    recipe, expected_result, expected = reference
    out = tmp_path / "stopped"
    code, err = _start_and_stop(recipe, out, signal.SIGTERM, after_step=SAVE_EVERY)
    assert code == 130, err
    assert "Re-run the same command to resume" in " ".join(err.split())
    stopped_at = _checkpoint_step(out)
    assert SAVE_EVERY <= stopped_at < 24  # the step it was on when told to stop, saved on the way out
    assert f"stopped at step {stopped_at}" in " ".join(err.split())

    result = _finish(recipe, out)
    _assert_bitwise_equal(_weights(out), expected)
    assert result["steps"] == 24
    assert result["history"] == expected_result["history"]
    assert _logged_steps(out) == list(range(1, 25))  # stopped exactly at its checkpoint: no step ran twice
