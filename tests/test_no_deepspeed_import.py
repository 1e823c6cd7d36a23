"""A run that does not use DeepSpeed never imports it: no "Setting accelerator to CPU" warning in every
quickstart run, and 1.3 s less start-up per process where DeepSpeed is installed."""

from __future__ import annotations

import subprocess
import sys

from helpers import mtkd_env, pipeline_recipe, requires_minilm

pytestmark = requires_minilm


def test_a_run_that_saves_checkpoints_never_imports_deepspeed(tmp_path):
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student=None,
                             training={"epochs": 2, "batch_size": 8, "num_threads": 1, "save_every": 1})
    code = ("import sys\n"
            "from mtkd.cli import cli\n"
            "try:\n"
            f"    cli(['recipe', 'run', {str(recipe)!r}])\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n"
            "print('DEEPSPEED IMPORTED' if 'deepspeed' in sys.modules else 'NO DEEPSPEED')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mtkd_env(), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "NO DEEPSPEED" in proc.stdout and "Setting accelerator" not in out, out


def test_the_unwrapped_model_is_the_one_inside_ddp():
    import torch
    from accelerate import Accelerator

    from mtkd.strategies import unwrap

    acc = Accelerator(cpu=True)
    inner = torch.nn.Linear(2, 2)
    assert unwrap(acc, inner) is inner
    assert unwrap(acc, torch.nn.DataParallel(inner)) is inner  # the wrapper DDP shares with it: `.module`
