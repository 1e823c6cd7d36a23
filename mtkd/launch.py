"""``--nproc N``: start N worker processes the way torchrun does (gloo on CPU, NCCL on GPUs).

``accelerate launch --cpu --num_processes N`` silently runs a single process on some machines,
so mtkd starts workers through ``torch.distributed.run`` itself and every worker checks that
the world size it joined is the one asked for. Under an external launcher (torchrun,
``accelerate launch``, ``deepspeed``), LOCAL_RANK is set and nothing is re-launched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .errors import MtkdError

EXPECTED = "MTKD_EXPECTED_WORLD_SIZE"
#: a folder where each worker of ``--nproc`` leaves its error message (``<rank>.txt``) for the launcher to show once
WORKER_ERRORS = "MTKD_WORKER_ERRORS"
SHUTDOWN_TIMEOUT = 600  # seconds torchrun waits for stopped workers before killing them


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
    """Start ``nproc`` workers running this same command and wait for them; False if not needed.

    Inside a worker (LOCAL_RANK set) it joins the process group instead, and returns False.
    SIGINT/SIGTERM are passed on once: every worker finishes its step, saves a checkpoint and the
    launcher exits 130; a second signal kills the workers at once.
    """
    if "LOCAL_RANK" in os.environ:
        join_process_group()
        return False
    if nproc <= 1:
        return False
    import tempfile

    # mtkd.torchrun: torchrun without its traceback when the workers stopped on an mtkd error
    cmd = [sys.executable, "-m", "mtkd.torchrun", "--standalone", f"--nproc_per_node={nproc}",
           # torchrun's default 30 s before SIGKILL is too short to finish a step and write a checkpoint.
           f"--shutdown-timeout={SHUTDOWN_TIMEOUT}", "-m", "mtkd", *_strip_nproc(sys.argv[1:])]
    errors = tempfile.TemporaryDirectory(prefix="mtkd-errors-")
    env = {**os.environ, EXPECTED: str(nproc), WORKER_ERRORS: errors.name}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # Its own session: a terminal's Ctrl-C reaches torchrun once (from here), not twice.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    signals = []

    def forward(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            proc.send_signal(signum)
        else:
            _kill_tree(proc.pid)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    with errors:
        show_worker_errors(errors.name)
    if signals:
        sys.exit(130)
    if code:
        sys.exit(code)
    return True


def record_worker_error(text: str) -> bool:
    """In a worker of ``--nproc``: leave the rendered error for the launcher (which shows each distinct one
    once) instead of printing it N times; False outside such a worker."""
    folder = os.environ.get(WORKER_ERRORS)
    if not folder or "LOCAL_RANK" not in os.environ or not os.path.isdir(folder):
        return False
    path = os.path.join(folder, f"{int(os.environ.get('RANK', '0')):05d}.txt")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return True


def show_worker_errors(folder: str) -> None:
    """The workers' error messages, each distinct one once, in rank order, on stderr."""
    shown: list[str] = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".txt"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                text = f.read()
            if text not in shown:
                shown.append(text)
                sys.stderr.write(text)
    sys.stderr.flush()


def _die_with_parent() -> None:
    """In the child: get SIGTERM (a graceful stop) if the launcher itself is killed (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun puts each worker in its own session)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def join_process_group() -> None:
    """Set up Accelerate's process state for this worker before anything asks who is the main process.

    A bare ``PartialState()`` on a machine without GPUs ignores LOCAL_RANK and makes every worker
    a world of one (all "main"); with ``cpu=True`` it joins the launcher's world over gloo.
    """
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def world_of_one() -> None:
    """Describe a world of one process in the environment, unless a launcher already did.

    DeepSpeed always wants a process group; without a launcher it would go looking for MPI.
    """
    import socket

    import torch

    if "LOCAL_RANK" in os.environ or torch.distributed.is_initialized():
        return
    with socket.socket() as sock:  # a free port for the group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def check_world_size(actual: int) -> None:
    expected = os.environ.get(EXPECTED)
    if expected and int(expected) != actual:
        raise MtkdError(f"started {expected} processes but the run joined a world of {actual}",
                        hint="check the launcher; on CPU use `mtkd recipe run --nproc N` or torchrun with gloo")
