"""Soft targets: K teachers' averaged probabilities over a training split, mtkd's path against a plain loop.

K MiniLM-L6 teachers (pretrained encoder, randomly initialised heads with different seeds: what matters
here is the inference cost) score the same SST-2 training subsample. Both sides use the very same model
objects, loaded before the clock starts, the same batch size, precision and thread count.

- ``mtkd``: what the pipeline's soft-target stage does per member (the logits stage, ``mtkd.stages.units.run_logits``):
  ``tokenize_split`` with its on-disk cache (a fresh cache folder each round; the cache key includes the
  tokenizer's folder, so each teacher loaded from its own checkpoint tokenises once, as in the pipeline),
  ``predict_logits`` (length-sorted, dynamically padded batches), each member's logits stored as
  safetensors; then the ``mean-probs`` aggregator.
- ``plain``: one teacher at a time, re-tokenising the texts for each teacher, batches in data order
  padded to max_length 128, softmax, mean over teachers.
- ``mtkd-cached``: a re-run of the stage once the members' logits are stored: loading the K stored
  logits files and aggregating (what ``member_logits`` does when its file exists).

The two fresh paths must agree: the maximum absolute difference of their soft targets is reported
(padding is masked, so it is only floating-point noise).

Run: .venv/bin/python benchmarks/soft_targets.py [--quick] [--precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import common

MAX_LENGTH = 128
TASK = "sst2"


def build_teachers(task, k: int, folder: Path) -> list:
    """K MiniLM-L6 models with heads initialised from different seeds, saved (as a trained member would be)."""
    import torch

    from mtkd.model import build_model, load_model, save_model

    spec = {"encoder": {"type": "hf", "model": common.MODEL_ID}, "heads": {"default": {"type": "linear"}}}
    models = []
    for i in range(k):
        torch.manual_seed(1000 + i)
        path = save_model(build_model(spec, {TASK: task}), folder / f"teacher-{i}")
        models.append(load_model(path).eval())
    return models


def run_mtkd(task, rows, models, *, batch_size: int, precision: str, workdir: Path):
    """Tokenise once (cached), predict with length-sorted batches, store each member's logits, aggregate."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from mtkd.data import tokenize_split
    from mtkd.inference import predict_logits
    from mtkd.plugins import get_registries

    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
    logits_dir = Path(tempfile.mkdtemp(prefix="logits-", dir=workdir))
    outputs = []
    for i, model in enumerate(models):
        tok = model.encoder.tokenizer
        ds = tokenize_split(task, task.train_split, tok, max_length=MAX_LENGTH, cache_dir=cache, dataset=rows)
        logits = predict_logits(model, TASK, ds, batch_size=batch_size, pad_token_id=tok.pad_token_id or 0,
                                precision=precision)
        save_file({"logits": logits.astype(np.float32)}, str(logits_dir / f"teacher-{i}.safetensors"))
        outputs.append(logits)
    agg = get_registries().aggregators.create("mean-probs", {"temperature": 1.0})
    targets = agg(torch.from_numpy(np.stack(outputs)), weights=None).numpy()
    shutil.rmtree(cache, ignore_errors=True)
    return targets, logits_dir


def run_cached(logits_dir: Path, k: int):
    """A re-run: the members' stored logits loaded and aggregated, no inference."""
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    from mtkd.plugins import get_registries

    outputs = [load_file(str(logits_dir / f"teacher-{i}.safetensors"))["logits"] for i in range(k)]
    agg = get_registries().aggregators.create("mean-probs", {"temperature": 1.0})
    return agg(torch.from_numpy(np.stack(outputs)), weights=None).numpy()


def run_plain(task, rows, models, *, batch_size: int, precision: str):
    """The loop people write first: per teacher, tokenise each batch padded to 128, forward, softmax; average."""
    import numpy as np
    import torch

    from mtkd.inference import autocast

    fields = list(task.text_fields)
    columns = {f: list(rows[f]) for f in fields}
    probs = []
    for model in models:
        tok = model.encoder.tokenizer
        parts = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                texts = [columns[f][start:start + batch_size] for f in fields]
                enc = tok(*texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                with autocast(precision, torch.device("cpu")):
                    logits = model(TASK, enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                parts.append(torch.softmax(logits.float(), dim=-1).numpy())
        probs.append(np.concatenate(parts))
    return np.mean(probs, axis=0)


def main() -> None:
    import numpy as np

    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=None, help="SST-2 training rows (default 4000; quick 64)")
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="both sides (the pipeline's default is 64)")
    args = p.parse_args()
    n_rows = args.rows or (64 if args.quick else 4000)
    repeats = args.repeats or (1 if args.quick else 3)
    common.setup_torch(args.threads)

    task = common.glue_task(TASK, common.glue_source())
    rows = common.take(task.load_split(task.train_split), n_rows, seed=0, what="training rows")
    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        workdir = Path(tmp)
        models = build_teachers(task, args.teachers, workdir)
        kw = {"batch_size": args.batch_size, "precision": args.precision}
        print(f"{TASK}: {len(rows)} rows x {args.teachers} teachers, batch {args.batch_size}, {args.precision}, "
              f"{args.threads} thread(s), {repeats} round(s)")
        # Warm-up (not counted) on a few rows: lazy imports, oneDNN kernels.
        warm = rows.select(range(min(len(rows), args.batch_size)))
        run_mtkd(task, warm, models, workdir=workdir, **kw)
        run_plain(task, warm, models, **kw)

        times: dict[str, list[float]] = {"mtkd": [], "plain": [], "mtkd-cached": []}
        for r in range(repeats):  # A B A B ...
            t0 = time.perf_counter()
            mtkd_targets, logits_dir = run_mtkd(task, rows, models, workdir=workdir, **kw)
            times["mtkd"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_targets = run_plain(task, rows, models, **kw)
            times["plain"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cached_targets = run_cached(logits_dir, args.teachers)
            times["mtkd-cached"].append(time.perf_counter() - t0)
            shutil.rmtree(logits_dir, ignore_errors=True)
            print(f"  round {r + 1}/{repeats}: mtkd {times['mtkd'][-1]:.2f} s, plain {times['plain'][-1]:.2f} s, "
                  f"cached re-run {times['mtkd-cached'][-1]:.3f} s")
        diff = float(np.abs(mtkd_targets - plain_targets).max())
        if not np.array_equal(cached_targets, mtkd_targets):
            raise RuntimeError("the cached re-run gave other soft targets than the fresh run")

    results = {name: {"seconds": common.stats(v), "rows_per_s": len(rows) / common.stats(v)["median"]}
               for name, v in times.items()}
    med = {name: results[name]["seconds"]["median"] for name in results}
    speedup = {"mtkd_vs_plain": common.ratio(med["plain"], med["mtkd"]),
               "cached_vs_plain": common.ratio(med["plain"], med["mtkd-cached"])}
    payload = {"benchmark": "soft_targets", "task": TASK, "rows": len(rows), "teachers": args.teachers,
               "batch_size": args.batch_size, "max_length": MAX_LENGTH, "repeats": repeats,
               "environment": common.environment(args), "results": results, "speedup": speedup,
               "max_abs_diff_mtkd_vs_plain": diff, "targets": {"mtkd_vs_plain": 3.0},
               "timed": "tokenisation + K teachers' inference + storing logits + aggregation; models loaded before"}
    print(f"\n{'path':12s} {'median s':>9s} {'rows/s':>9s}")
    for name, res in results.items():
        print(f"{name:12s} {res['seconds']['median']:9.3f} {res['rows_per_s']:9.1f}")
    print(f"mtkd vs plain: {common.fmt(speedup['mtkd_vs_plain'])}x; cached re-run vs plain: "
          f"{common.fmt(speedup['cached_vs_plain'], 0)}x; max |soft target difference| {diff:.2e}")
    common.write_json("soft_targets", payload, args.out)


if __name__ == "__main__":
    main()
