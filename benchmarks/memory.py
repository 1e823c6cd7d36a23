"""Peak memory of training and of soft-target generation: mtkd against Hugging Face ``Trainer``, in fresh processes.

Training: each measurement is one fresh Python process that runs exactly one training run of
``train_throughput.py`` (same examples, steps, batch size, precision, threads and hyper-parameters;
Trainer with dynamic padding and ``group_by_length``).

Soft targets (``--what soft-targets``): K = 3 MiniLM-L6 teachers score ``--rows`` SST-2 training rows.
``mtkd-soft-targets`` does what the pipeline's ``member_logits`` does (per member, loaded from its mtkd
checkpoint one at a time: cached tokenisation, ``predict_logits``, the logits stored; then the mean-probs
aggregator); ``hf-predict`` is what a Trainer user writes: per teacher
``AutoModelForSequenceClassification`` + ``Trainer.predict`` with ``DataCollatorWithPadding``, softmax, mean.

Each process reports

- ``baseline_rss``: resident memory after imports and data preparation, before the model is built
  (soft targets: before the first teacher is loaded; the teacher checkpoints are written by the parent);
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
SOFT_SIDES = ("mtkd-soft-targets", "hf-predict")
TEACHERS = 3
MARK = "MEMORY-RESULT "


def save_teachers(folder: Path) -> Path:
    """K MiniLM-L6 teacher checkpoints (heads from different seeds), written by the parent process so that
    building them does not count in the measured process's peak."""
    import soft_targets as st
    import torch

    from mtkd.model import build_model, save_model

    task = common.glue_task(st.TASK, common.glue_source())
    spec = {"encoder": {"type": "hf", "model": common.MODEL_ID}, "heads": {"default": {"type": "linear"}}}
    for i in range(TEACHERS):
        torch.manual_seed(1000 + i)
        save_model(build_model(spec, {st.TASK: task}), folder / f"teacher-{i}")
    return folder


def soft_targets_child(variant: str, rows: int, batch_size: int, precision: str, threads: int, workdir: Path,
                       teachers_dir: Path):
    """K teachers' soft targets for ``rows`` SST-2 rows; returns (baseline RSS, seconds)."""
    import time

    import psutil
    import soft_targets as st

    common.setup_torch(threads)
    task = common.glue_task(st.TASK, common.glue_source())
    data = common.take(task.load_split(task.train_split), rows, seed=0, what="training rows")
    if variant == "mtkd-soft-targets":
        folders = [teachers_dir / f"teacher-{i}" for i in range(TEACHERS)]
        import numpy as np
        import torch
        from safetensors.numpy import save_file

        from mtkd.data import tokenize_split
        from mtkd.inference import predict_logits
        from mtkd.model import load_model
        from mtkd.plugins import get_registries

        baseline = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        outputs = []
        for i, folder in enumerate(folders):  # one member at a time, as the pipeline's member_logits loads them
            model = load_model(folder).eval()
            tok = model.encoder.tokenizer
            ds = tokenize_split(task, task.train_split, tok, max_length=st.MAX_LENGTH, cache_dir=workdir / "cache",
                                dataset=data)
            logits = predict_logits(model, st.TASK, ds, batch_size=batch_size, pad_token_id=tok.pad_token_id or 0,
                                    precision=precision)
            save_file({"logits": logits.astype(np.float32)}, str(workdir / f"teacher-{i}.safetensors"))
            outputs.append(logits)
            del model
        agg = get_registries().aggregators.create("mean-probs", {"temperature": 1.0})
        agg(torch.from_numpy(np.stack(outputs)), weights=None)
        return baseline, time.perf_counter() - t0
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = common.model_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = data.map(lambda b: tok(b["text_a"], truncation=True, max_length=st.MAX_LENGTH), batched=True,
                   keep_in_memory=True).remove_columns(["text_a", "idx", "label"])
    baseline = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    probs = []
    for i in range(TEACHERS):
        torch.manual_seed(1000 + i)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=task.num_outputs)
        args = TrainingArguments(output_dir=str(workdir / f"hf-{i}"), per_device_eval_batch_size=batch_size,
                                 bf16=precision == "bf16", use_cpu=True, report_to="none", disable_tqdm=True,
                                 dataloader_num_workers=0)
        out = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok),
                      processing_class=tok).predict(enc)
        probs.append(torch.softmax(torch.from_numpy(np.asarray(out.predictions, dtype=np.float32)), -1).numpy())
    np.mean(probs, axis=0)
    return baseline, time.perf_counter() - t0


def child(variant: str, steps: int, batch_size: int, precision: str, threads: int, rows: int = 0,
          teachers_dir: Path | None = None) -> None:
    """One training or soft-target run in this (fresh) process; prints its memory figures on one marked line."""
    import resource

    import psutil
    import train_throughput as tt

    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        if variant in SOFT_SIDES:
            baseline, seconds = soft_targets_child(variant, rows, batch_size, precision, threads, Path(tmp),
                                                   teachers_dir)
            res = {"seconds": seconds}
        else:
            setup = tt.prepare(steps=steps, batch_size=batch_size, precision=precision, threads=threads,
                               workdir=Path(tmp), hf_variants=[variant] if variant != "mtkd" else [])
            baseline = psutil.Process().memory_info().rss
            res = tt.run_variant(setup, variant, "mem")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(MARK + json.dumps({"variant": variant, "baseline_rss": baseline, "peak_rss": peak,
                             "training_rss": peak - baseline, "train_seconds": res["seconds"]}))


def run_child(variant: str, args, steps: int, batch_size: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--steps", str(steps),
           "--batch-size", str(batch_size), "--precision", args.precision, "--threads", str(args.threads),
           "--rows", str(args.rows), "--teachers-dir", str(args.teachers_dir)]
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
    p.add_argument("--rows", type=int, default=None, help="soft targets: SST-2 rows (default 2000; quick 64)")
    p.add_argument("--what", choices=["training", "soft-targets", "both"], default="both")
    p.add_argument("--child", choices=SIDES + SOFT_SIDES, help=argparse.SUPPRESS)  # one measurement process
    p.add_argument("--teachers-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    steps = args.steps or (3 if args.quick else 60)
    args.rows = args.rows or (64 if args.quick else 2000)
    batch_size = 8 if args.quick and args.batch_size == 32 else args.batch_size
    if args.child:
        child(args.child, steps, batch_size, args.precision, args.threads, args.rows, args.teachers_dir)
        return
    repeats = args.repeats or (1 if args.quick else 3)
    common.setup_torch(args.threads)
    pairs = {"training": SIDES, "soft-targets": SOFT_SIDES}
    if args.what != "both":
        pairs = {args.what: pairs[args.what]}
    print(f"peak RSS, {args.precision}, {args.threads} thread(s), {repeats} round(s), one fresh process each: "
          f"training {steps} steps x batch {batch_size}; soft targets {TEACHERS} teachers x {args.rows} rows")
    payload = {"benchmark": "memory", "steps": steps, "batch_size": batch_size, "rows": args.rows,
               "teachers": TEACHERS, "repeats": repeats, "environment": common.environment(args), "units": "bytes"}
    tmp = tempfile.TemporaryDirectory(prefix="mtkd-bench-")
    args.teachers_dir = save_teachers(Path(tmp.name)) if "soft-targets" in pairs else None
    for what, sides in pairs.items():
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for r in range(repeats):
            for side in sides:  # A B A B ...
                res = run_child(side, args, steps, batch_size)
                runs[side].append(res)
                print(f"  round {r + 1}/{repeats} {side:17s} peak {res['peak_rss'] / 2**20:7.0f} MiB "
                      f"(baseline {res['baseline_rss'] / 2**20:.0f} MiB, run +{res['training_rss'] / 2**20:.0f} MiB, "
                      f"{res['train_seconds']:.1f} s)")
        results = {side: {key: common.stats([float(x[key]) for x in v])
                          for key in ("peak_rss", "baseline_rss", "training_rss", "train_seconds")}
                   for side, v in runs.items()}
        med = {side: {k: results[side][k]["median"] for k in results[side]} for side in sides}
        ours, theirs = sides
        payload[what] = {"results": results,
                         "ratio_peak": common.ratio(med[ours]["peak_rss"], med[theirs]["peak_rss"]),
                         "ratio_added": common.ratio(med[ours]["training_rss"], med[theirs]["training_rss"])}
        print(f"\n{what}: {'side':17s} {'peak MiB':>9s} {'baseline MiB':>13s} {'added MiB':>10s} {'seconds':>8s}")
        for side in sides:
            m = med[side]
            print(f"{'':{len(what) + 2}s}{side:17s} {m['peak_rss'] / 2**20:9.0f} {m['baseline_rss'] / 2**20:13.0f} "
                  f"{m['training_rss'] / 2**20:10.0f} {m['train_seconds']:8.1f}")
        print(f"peak {ours} / {theirs}: {common.fmt(payload[what]['ratio_peak'])}; added by the run: "
              f"{common.fmt(payload[what]['ratio_added'])}\n")
    tmp.cleanup()
    common.write_json("memory", payload, args.out)


if __name__ == "__main__":
    main()
