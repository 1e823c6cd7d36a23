"""Peak memory of training: mtkd's trainer against Hugging Face ``Trainer`` at its best, in fresh processes.

Each measurement is one fresh Python process that runs exactly one training run of
``train_throughput.py`` (same examples, steps, batch size, precision, threads and hyper-parameters;
Trainer with dynamic padding and ``group_by_length``) and reports

- ``baseline_rss``: resident memory after imports and data preparation, before the model is built;
- ``peak_rss``: the process's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
  which includes the baseline; ``training_rss`` = peak - baseline is what the training run added
  (model, gradients, optimizer state, activations, the trainer's own data copies).

Processes alternate (mtkd, Trainer, mtkd, Trainer, ...); medians are reported.

Run: .venv/bin/python benchmarks/memory.py [--quick] [--precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common

SIDES = ("mtkd", "hf-best")
MARK = "MEMORY-RESULT "


def child(variant: str, steps: int, batch_size: int, precision: str, threads: int) -> None:
    """One training run in this (fresh) process; prints its memory figures on one marked line."""
    import resource

    import psutil
    import train_throughput as tt

    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        setup = tt.prepare(steps=steps, batch_size=batch_size, precision=precision, threads=threads,
                           workdir=Path(tmp), hf_variants=[variant] if variant != "mtkd" else [])
        baseline = psutil.Process().memory_info().rss
        res = tt.run_variant(setup, variant, "mem")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(MARK + json.dumps({"variant": variant, "baseline_rss": baseline, "peak_rss": peak,
                             "training_rss": peak - baseline, "train_seconds": res["seconds"]}))


def run_child(variant: str, args, steps: int, batch_size: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--steps", str(steps),
           "--batch-size", str(batch_size), "--precision", args.precision, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"the {variant} measurement process failed (exit code {proc.returncode})")
    return json.loads(lines[-1][len(MARK):])


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 60; quick 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)  # one measurement process
    args = p.parse_args()
    steps = args.steps or (3 if args.quick else 60)
    batch_size = 8 if args.quick and args.batch_size == 32 else args.batch_size
    if args.child:
        child(args.child, steps, batch_size, args.precision, args.threads)
        return
    repeats = args.repeats or (1 if args.quick else 3)
    common.setup_torch(args.threads)
    print(f"peak RSS of {steps} steps x batch {batch_size}, {args.precision}, {args.threads} thread(s), "
          f"{repeats} round(s) of {list(SIDES)}, one fresh process each")
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    for r in range(repeats):
        for side in SIDES:  # A B A B ...
            res = run_child(side, args, steps, batch_size)
            runs[side].append(res)
            print(f"  round {r + 1}/{repeats} {side:8s} peak {res['peak_rss'] / 2**20:7.0f} MiB "
                  f"(baseline {res['baseline_rss'] / 2**20:.0f} MiB, training +{res['training_rss'] / 2**20:.0f} MiB)")

    results = {side: {key: common.stats([float(x[key]) for x in v])
                      for key in ("peak_rss", "baseline_rss", "training_rss", "train_seconds")}
               for side, v in runs.items()}
    med = {side: {k: results[side][k]["median"] for k in results[side]} for side in SIDES}
    payload = {"benchmark": "memory", "steps": steps, "batch_size": batch_size, "repeats": repeats,
               "environment": common.environment(args), "results": results,
               "ratio_peak_mtkd_vs_hf-best": common.ratio(med["mtkd"]["peak_rss"], med["hf-best"]["peak_rss"]),
               "ratio_training_mtkd_vs_hf-best": common.ratio(med["mtkd"]["training_rss"],
                                                              med["hf-best"]["training_rss"]),
               "units": "bytes"}
    print(f"\n{'side':8s} {'peak MiB':>9s} {'baseline MiB':>13s} {'training MiB':>13s}")
    for side in SIDES:
        m = med[side]
        print(f"{side:8s} {m['peak_rss'] / 2**20:9.0f} {m['baseline_rss'] / 2**20:13.0f} "
              f"{m['training_rss'] / 2**20:13.0f}")
    print(f"peak mtkd / Trainer: {common.fmt(payload['ratio_peak_mtkd_vs_hf-best'])}; training part: "
          f"{common.fmt(payload['ratio_training_mtkd_vs_hf-best'])}")
    common.write_json("memory", payload, args.out)


if __name__ == "__main__":
    main()
