"""The same job under 1, 2 and 3 processes and under two torchrun "nodes" on localhost ends with the same weights.

A global batch of 7 rows (not divisible by 2 or 3: ranks hold 4+3 or 3+2+2 rows) with gradient
accumulation 2 and an evaluation every 2 steps (an integer ``eval_every``: the run that crashed at
its final evaluation before every rank kept the dev history). Each rank's mean loss is weighted by
its share of the global batch, so every process count computes the mean gradient of the same rows;
only the order of float additions differs. Measured on CPU: the largest difference of any final
weight to the 1-process run is 8e-9 (2 processes) and 2e-8 (3); WEIGHT_TOL leaves room for other
CPUs' kernels. The logged loss is the mean over the step's rows on all ranks, equal to LOSS_TOL.
(tests/test_distributed.py covers ``eval_every: epoch`` without accumulation, SIGTERM and resume.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_ENCODER, job_losses, job_result, job_weights, mtkd_env, requires_minilm, run_mtkd
from test_pipeline import tiny_recipe

pytestmark = requires_minilm

WEIGHT_TOL = 1e-4  # absolute, on weights of order 0.1-1
LOSS_TOL = 1e-5
STEPS = 8  # 24 + 24 rows in global batches of 7, 7, 7, 3 (8 batches an epoch), 2 micro-batches a step, 2 epochs
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _recipe(folder: Path) -> Path:
    return tiny_recipe(
        folder, teachers={"members": [{"seed": 1}]}, student=None,
        tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 11},
               {"name": "sst2", "max_train_examples": 24, "max_eval_examples": 10}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        training={"epochs": 2, "batch_size": 7, "grad_accum": 2, "eval_every": 2, "eval_batch_size": 4,
                  "log_every": 1, "keep": "final", "num_threads": 1})


def _args(recipe: Path, out: Path, *extra) -> list[str]:
    return ["recipe", "run", str(recipe), "--stage", "teachers", "--output", str(out), "-q", *extra]


def _assert_close(weights: dict, expected: dict) -> None:
    assert weights.keys() == expected.keys()
    worst = max(float((weights[k] - expected[k]).abs().max()) for k in expected)
    assert worst < WEIGHT_TOL, f"largest weight difference to 1 process: {worst:.2e}"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    recipe = _recipe(folder)
    done = run_mtkd(_args(recipe, folder / "one"), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = job_result(folder / "one")
    assert result["steps"] == STEPS and [h["step"] for h in result["history"]] == [2, 4, 6, 8]
    return recipe, folder / "one"


@pytest.mark.parametrize("nproc", [2, 3])
def test_nproc_with_uneven_shards_accumulation_and_integer_eval_every_matches_one_process(single, tmp_path, nproc):
    recipe, one = single
    done = run_mtkd(_args(recipe, tmp_path / "run", "--nproc", str(nproc)), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result, reference = job_result(tmp_path / "run"), job_result(one)
    assert result["world_size"] == nproc and result["steps"] == STEPS
    assert len(set(result["rank_checksums"])) == 1  # the replicas never drifted apart
    assert [h["step"] for h in result["history"]] == [2, 4, 6, 8]
    for mine, theirs in zip(result["history"], reference["history"], strict=True):
        assert mine["metrics"] == theirs["metrics"]  # every dev example counted once, on some rank
    losses, expected = job_losses(tmp_path / "run"), job_losses(one)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert max(abs(losses[s] - expected[s]) for s in expected) < LOSS_TOL
    _assert_close(job_weights(tmp_path / "run"), job_weights(one))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_torchrun_nodes_on_localhost_match_one_process(single, tmp_path):
    """``torchrun --nnodes 2 --node_rank 0/1`` with a rendezvous on 127.0.0.1: each node has its own local
    rank 0, but only the global main process writes the run folder (the caches are written atomically by
    whoever gets there first)."""
    recipe, one = single
    out = tmp_path / "nodes"
    port = _free_port()
    launcher = [str(TORCHRUN)] if TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]
    procs = []
    for node in (0, 1):
        cmd = [*launcher, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
               "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "mtkd", *_args(recipe, out)]
        procs.append(subprocess.Popen(cmd, env=mtkd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    result = job_result(out)
    assert result["world_size"] == 2 and result["steps"] == STEPS
    assert len(set(result["rank_checksums"])) == 1
    _assert_close(job_weights(out), job_weights(one))


def _student_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    (job,) = [p for p in (run_dir / "students").iterdir() if p.is_dir()]
    result = json.loads((job / "result.json").read_text())
    return result, load_file(str(job / result["model"] / "model.safetensors"))


def test_a_student_with_a_transfer_set_under_two_processes_matches_one_process(tmp_path):
    """Transfer rows (no label) mixed into uneven global batches of 7 with accumulation 2 and an integer
    eval_every: a rank's share can hold only unlabelled rows (the mixture's hard part is then 0), and the
    averaged gradient must still be the 1-process one. The student starts from the teacher with its word
    embeddings frozen (the quickstart's student): DDP leaves them out, and they stay the teacher's."""
    import shutil

    recipe = tiny_recipe(
        tmp_path, teachers={"members": [{"seed": 1}]},
        student={"seeds": [1], "control": False, "init_from_teacher": 0, "encoder": {"freeze_word_embeddings": True}},
        tasks=[{"name": "rte", "max_train_examples": 12, "max_eval_examples": 11},
               {"name": "sst2", "max_train_examples": 12, "max_eval_examples": 10, "transfer_split": "train",
                "max_transfer_examples": 12}],
        encoder={**TINY_ENCODER, "dropout": 0.0}, heads={"default": {"type": "linear", "dropout": 0.0}},
        evaluation={"serving": False},
        training={"epochs": 2, "batch_size": 7, "grad_accum": 2, "eval_every": 2, "eval_batch_size": 4,
                  "log_every": 1, "keep": "final", "num_threads": 1})
    one = tmp_path / "one"
    done = run_mtkd(["recipe", "run", str(recipe), "--output", str(one), "-q"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two"
    shutil.copytree(one, two)
    shutil.rmtree(two / "students")  # teachers, logits and soft targets reused; the student trains again
    done = run_mtkd(["recipe", "run", str(recipe), "--output", str(two), "-q", "--nproc", "2"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result, weights), (reference, expected) = _student_weights(two), _student_weights(one)
    assert result["world_size"] == 2 and result["train_rows"] == {"rte": 12, "sst2": 24} == reference["train_rows"]
    assert result["steps"] == reference["steps"] and len(set(result["rank_checksums"])) == 1
    _assert_close(weights, expected)
    teacher = job_weights(one)
    (words,) = [k for k in weights if k.endswith("word_embeddings.weight")]
    assert torch.equal(weights[words], teacher[words])  # frozen: still the teacher's, on both ranks
    (query,) = [k for k in weights if k.endswith("layer.0.attention.self.query.weight")]
    assert not torch.equal(weights[query], teacher[query])  # the rest trained
