"""``--nproc N``: start N worker processes the way torchrun does (gloo on CPU, NCCL on GPUs).

``accelerate launch --cpu --num_processes N`` silently runs a single process on some machines,
so mtkd starts workers through ``torch.distributed.run`` itself and every worker checks that
the world size it joined is the one asked for. Under an external launcher (torchrun,
``accelerate launch``, ``deepspeed``), LOCAL_RANK is set and nothing is re-launched.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import MtkdError

EXPECTED = "MTKD_EXPECTED_WORLD_SIZE"


def _strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out


def maybe_relaunch(nproc: int) -> bool:
    """Start ``nproc`` workers running this same command and wait for them; False if not needed."""
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return False
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "mtkd", *_strip_nproc(sys.argv[1:])]
    env = {**os.environ, EXPECTED: str(nproc)}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        sys.exit(proc.returncode)
    return True


def check_world_size(actual: int) -> None:
    expected = os.environ.get(EXPECTED)
    if expected and int(expected) != actual:
        raise MtkdError(f"started {expected} processes but the run joined a world of {actual}",
                        hint="check the launcher; on CPU use `mtkd recipe run --nproc N` or torchrun with gloo")
