"""Where a training step's time goes: mtkd's trainer and Hugging Face ``Trainer`` (at its best) under torch.profiler.

The same set-up as ``train_throughput.py`` (MiniLM-L6, SST-2 or another GLUE task, the same examples,
hyper-parameters, precision and threads). Each side runs once unprofiled as a warm-up, then once under
``torch.profiler`` (CPU activities). The self time of every torch operator is summed into categories
(matmuls, attention, layer norm, activations and dropout, dtype casts, optimizer, ...); ``outside torch ops``
is the profiled wall time of the whole call minus the operators' self time: Python, data loading and
batching, the framework's own bookkeeping, and model loading (both sides load the same folder).

Reported per side: milliseconds per step in each category and its share. Run:
    .venv/bin/python benchmarks/profile_training.py [--precision bf16] [--steps 20] [--task sst2]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import common
import train_throughput as tt

#: category -> operator-name fragments (the first category that matches wins; order matters)
CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::baddbmm", "mkldnn", "onednn"),
    "attention": ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax"),
    "layer norm": ("layer_norm",),
    "activations + dropout": ("gelu", "dropout", "bernoulli", "tanh", "relu"),
    "dtype casts + copies": ("aten::_to_copy", "aten::copy_", "aten::to", "aten::clone", "aten::contiguous"),
    "optimizer": ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt"),
    "grad clipping": ("norm", "clamp"),
    "embeddings": ("embedding", "index_select", "gather", "scatter"),
    "loss": ("cross_entropy", "nll_loss", "log_softmax"),
    "elementwise": ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::where", "aten::fill_",
                    "aten::zero_", "aten::sum", "aten::mean", "aten::pow", "aten::neg", "aten::rsub"),
}


def categorise(name: str) -> str:
    lowered = name.lower()
    for category, fragments in CATEGORIES.items():
        if any(f in lowered for f in fragments):
            return category
    return "other torch ops"


def profile_side(setup: tt.Setup, variant: str) -> dict:
    from torch.profiler import ProfilerActivity, profile

    out_dir = Path(tempfile.mkdtemp(prefix=f"profile-{variant}-", dir=setup.workdir))
    try:
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            result = tt.run_mtkd(setup, out_dir) if variant == "mtkd" else tt.run_trainer(setup, variant, out_dir)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    totals: dict[str, float] = {}
    ops: dict[str, float] = {}
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if seconds <= 0:
            continue
        totals[categorise(event.key)] = totals.get(categorise(event.key), 0.0) + seconds
        ops[event.key] = seconds
    in_ops = sum(totals.values())
    totals["outside torch ops"] = max(wall - in_ops, 0.0)
    steps = result["steps"]
    return {"wall_seconds": wall, "train_seconds": result["seconds"], "steps": steps,
            "ms_per_step": {k: 1000 * v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
            "top_ops_ms_per_step": {k: 1000 * v / steps for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:15]}}


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 20; quick 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--task", default="sst2")
    p.add_argument("--hf-optim", choices=["adamw_torch", "adamw_torch_fused"], default="adamw_torch_fused")
    args = p.parse_args()
    steps = args.steps or (3 if args.quick else 20)
    batch_size = 8 if args.quick and args.batch_size == 32 else args.batch_size
    variants = ("mtkd", "hf-best")
    with tempfile.TemporaryDirectory(prefix="mtkd-profile-") as tmp:
        setup = tt.prepare(steps=steps, batch_size=batch_size, precision=args.precision, threads=args.threads,
                           workdir=Path(tmp), task_name=args.task, hf_variants=variants[1:])
        setup.hf_optim = args.hf_optim
        print(f"{args.task}: {setup.steps} steps x batch {setup.batch_size}, {args.precision}, "
              f"{args.threads} thread(s)")
        for v in variants:  # warm-up, not profiled
            tt.run_variant(setup, v, "warmup")
        sides = {v: profile_side(setup, v) for v in variants}

    categories = list(dict.fromkeys(k for s in sides.values() for k in s["ms_per_step"]))
    print(f"\n{'ms per step':24s}" + "".join(f"{v:>18s}" for v in variants))
    for c in categories:
        cells = []
        for v in variants:
            ms = sides[v]["ms_per_step"].get(c, 0.0)
            total = sum(sides[v]["ms_per_step"].values())
            cells.append(f"{ms:9.1f} ({ms / total:5.1%})")
        print(f"{c:24s}" + "".join(f"{x:>18s}" for x in cells))
    print(f"{'total (profiled wall)':24s}" + "".join(
        f"{1000 * sides[v]['wall_seconds'] / sides[v]['steps']:18.1f}" for v in variants))
    print(f"{'unprofiled train time':24s}" + "".join(
        f"{1000 * sides[v]['train_seconds'] / sides[v]['steps']:18.1f}" for v in variants))
    for v in variants:
        print(f"\ntop operators, {v} (self ms per step):")
        for name, ms in list(sides[v]["top_ops_ms_per_step"].items())[:10]:
            print(f"  {ms:8.1f}  {name}")
    common.write_json("profile_training", {"benchmark": "profile_training", "task": args.task,
                                           "precision": args.precision, "steps": setup.steps,
                                           "batch_size": setup.batch_size, "environment": common.environment(args),
                                           "sides": sides}, args.out)


if __name__ == "__main__":
    main()
