"""Training throughput: mtkd's trainer against Hugging Face ``Trainer`` on the same SST-2 examples.

Both sides fine-tune MiniLM-L6 (the same local folder) on exactly ``steps x batch_size`` SST-2 training rows,
i.e. one epoch of ``steps`` full batches, so both consume the very same examples once. Variants:

- ``mtkd``: ``mtkd.training.train`` on a one-task Job (length-grouped dynamic batches, its default).
- ``hf-best``: ``Trainer`` with ``DataCollatorWithPadding`` (dynamic padding) and
  ``train_sampling_strategy="group_by_length"``.
- ``hf-padded``: ``Trainer`` as ``run_glue.py`` runs by default: every example padded to max_length 128
  (``default_data_collator``), random order.
- ``mtkd-compile``: ``mtkd`` with the recipe switch ``training.compile: true`` (the encoder under
  ``torch.compile``, inductor, dynamic shapes).
- ``hf-best-compile``: ``hf-best`` with ``TrainingArguments(torch_compile=True)`` (Trainer's own switch).

Compiled variants also report ``compile_seconds`` (torch.compile's own timers: dynamo and inductor,
forward and backward graphs, recompiles included), all of which falls inside the timed run, and
``samples_per_s_after_compile`` = examples / (train seconds - compile seconds).

Same on all sides: lr 5e-5 with linear decay after 10 % warm-up, torch AdamW (``optim="adamw_torch"``),
weight decay 0.01, gradient clipping 1.0, dropout 0.1, seed 42, no evaluation, no checkpoints, no loggers.

What is timed: mtkd's ``result.json`` ``train_seconds`` (from just before the first batch to just after the
last optimizer step: loading and padding batches, forward, loss, backward, clipping, optimizer and scheduler
steps); Trainer's ``train_runtime`` (from just before the first batch to the end of the loop, the same
work). Model loading, tokenisation, the optimizer's creation and saving are outside both.

Tokens: non-padding tokens are the sum of the examples' token counts (identical on both sides and checked);
padded tokens are what the model actually ran (mtkd: from the same loader's batches; Trainer: counted
in its collator). FLOP/s = 6 x per-token parameters (the transformer layers) x tokens/s, against the
median of 2048x2048 matmuls in the same precision and thread count.

Run: .venv/bin/python benchmarks/train_throughput.py [--quick] [--precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common

VARIANTS = ("mtkd", "hf-best", "hf-padded", "mtkd-compile", "hf-best-compile")
SEED = 42
LR, WEIGHT_DECAY, WARMUP, CLIP, DROPOUT, MAX_LENGTH = 5e-5, 0.01, 0.1, 1.0, 0.1, 128


@dataclass
class Setup:
    task: object  # the mtkd GLUE task
    train: object  # raw rows (datasets.Dataset), exactly steps * batch_size of them
    steps: int
    batch_size: int
    precision: str
    threads: int
    folder: str  # the MiniLM-L6 folder
    workdir: Path
    hf_data: dict  # variant -> tokenised data set for Trainer
    hf_optim: str = "adamw_torch"  # the same torch.optim.AdamW as mtkd; Trainer's own default is the fused one


def prepare(*, steps: int, batch_size: int, precision: str, threads: int, workdir: Path,
            task_name: str = "sst2", seed: int = 0, hf_variants=VARIANTS[1:]) -> Setup:
    """The task, the training rows and the Trainer-side tokenised copies (tokenisation is never timed)."""
    common.setup_torch(threads)
    task = common.glue_task(task_name, common.glue_source())
    full = task.load_split(task.train_split)
    train = common.take(full, steps * batch_size, seed=seed, what="training rows")
    steps = len(train) // batch_size
    train = train.select(range(steps * batch_size))  # whole batches only: both sides see every row once
    folder = common.model_folder()
    hf_data = {v: _hf_tokenise(train, task, folder, padded=(v == "hf-padded")) for v in hf_variants
               if v.startswith("hf")}
    return Setup(task, train, steps, batch_size, precision, threads, folder, workdir, hf_data)


def _hf_tokenise(train, task, folder: str, *, padded: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    fields = list(task.text_fields)

    def encode(batch):
        enc = tok(*[batch[f] for f in fields], truncation=True, max_length=MAX_LENGTH,
                  padding="max_length" if padded else False)
        enc["length"] = [sum(m) for m in enc["attention_mask"]]
        return enc

    ds = train.map(encode, batched=True, keep_in_memory=True, desc="tokenising (HF)")
    return ds.remove_columns([c for c in ds.column_names if c in ("text_a", "text_b", "idx")])


# ---------------------------------------------------------------- mtkd


def mtkd_job(setup: Setup, out_dir: Path):
    from mtkd.plugins import get_registries
    from mtkd.recipe import Training
    from mtkd.training import Job, TaskData

    training = Training(sampling={"type": "proportional"}).model_dump(mode="json")
    training.update(batch_size=setup.batch_size, max_steps=setup.steps, epochs=1, lr=LR, weight_decay=WEIGHT_DECAY,
                    warmup=WARMUP, grad_clip=CLIP, optimizer="adamw", precision=setup.precision,
                    num_threads=setup.threads, save_every=10**9, group_by_length=True)
    objective = get_registries().losses.create("ce", {})
    spec = {"encoder": {"type": "hf", "model": common.MODEL_ID},
            "heads": {"default": {"type": "linear", "dropout": DROPOUT}}}
    name = setup.task.name
    return Job(name="bench", out_dir=out_dir, spec=spec, training=training, seed=SEED,
               tasks={name: TaskData(setup.task, setup.train, {}, objective)}, max_length=MAX_LENGTH,
               cache_dir=str(setup.workdir / "mtkd-cache"))


def run_mtkd(setup: Setup, out_dir: Path, *, compile: bool = False) -> dict:
    import torch

    from mtkd.training import train

    torch.set_num_threads(setup.threads)
    job = mtkd_job(setup, out_dir)
    if compile:
        job.training["compile"] = True
    result = train(job, scaling={"strategy": "auto"})
    if result["steps"] != setup.steps:
        raise RuntimeError(f"mtkd ran {result['steps']} steps, expected {setup.steps}")
    return {"seconds": float(result["train_seconds"]), "steps": result["steps"]}


def mtkd_tokens(setup: Setup) -> dict:
    """Non-padding and padded tokens of the batches mtkd's loader gives the job (same seed, same rows)."""
    import numpy as np
    from transformers import AutoTokenizer

    from mtkd.data import MultiTaskLoader, tokenize_split
    from mtkd.plugins import get_registries

    job = mtkd_job(setup, setup.workdir / "unused")
    t = job.training
    tok = AutoTokenizer.from_pretrained(setup.folder)
    ds = tokenize_split(setup.task, setup.task.train_split, tok, max_length=MAX_LENGTH, cache_dir=job.cache_dir,
                        dataset=setup.train)
    sampler = get_registries().samplers.create("proportional", {})
    name = setup.task.name
    loader = MultiTaskLoader({name: ds}, sampler, batch_size=t["batch_size"], token_budget=t["token_budget"],
                             group_by_length=t["group_by_length"], seed=job.seed, pad_token_id=0,
                             task_types={name: setup.task.task_type}, epochs_hint=t["epochs"])
    loader.set_epoch(0)
    lengths = np.asarray(ds["length"])
    batches = loader.global_batches()[: setup.steps]
    padded = sum(len(rows) * int(lengths[rows].max()) for _, rows in batches)
    real = sum(int(lengths[rows].sum()) for _, rows in batches)
    return {"tokens": real, "padded_tokens": padded, "examples": sum(len(r) for _, r in batches)}


# ---------------------------------------------------------------- Hugging Face Trainer


class CountingCollator:
    """Wraps a collator and counts what it hands the model (a few integer additions per batch)."""

    def __init__(self, inner):
        self.inner = inner
        self.batches = self.examples = self.padded = self.tokens = 0

    def __call__(self, features):
        batch = self.inner(features)
        self.batches += 1
        self.examples += batch["input_ids"].shape[0]
        self.padded += batch["input_ids"].numel()
        self.tokens += int(batch["attention_mask"].sum())
        return batch


def run_trainer(setup: Setup, variant: str, out_dir: Path, *, compile: bool = False) -> dict:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(setup.threads)
    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(setup.folder)
    model = AutoModelForSequenceClassification.from_pretrained(
        setup.folder, num_labels=setup.task.num_outputs, hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=DROPOUT)
    best = variant.startswith("hf-best")
    collator = CountingCollator(DataCollatorWithPadding(tok) if best else default_data_collator)
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=setup.batch_size, max_steps=setup.steps,
        learning_rate=LR, weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP, max_grad_norm=CLIP,
        lr_scheduler_type="linear", optim=setup.hf_optim, bf16=setup.precision == "bf16", use_cpu=True,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        seed=SEED, dataloader_num_workers=0, train_sampling_strategy="group_by_length" if best else "random",
        torch_compile=compile)
    trainer = Trainer(model=model, args=args, train_dataset=setup.hf_data[variant], data_collator=collator,
                      processing_class=tok)
    out = trainer.train()
    if trainer.state.global_step != setup.steps:
        raise RuntimeError(f"Trainer ran {trainer.state.global_step} steps, expected {setup.steps}")
    return {"seconds": float(out.metrics["train_runtime"]), "steps": trainer.state.global_step,
            "tokens": collator.tokens, "padded_tokens": collator.padded, "examples": collator.examples}


def per_token_parameters(folder: str) -> int:
    """Parameters that every token passes through: the transformer layers (no embeddings, pooler or head)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder)
    return sum(p.numel() for n, p in model.named_parameters() if ".layer." in f".{n}")


def run_variant(setup: Setup, variant: str, tag: str) -> dict:
    out_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-{tag}-", dir=setup.workdir))
    compiled = variant.endswith("-compile")
    from mtkd.model import compile_seconds

    before = compile_seconds()
    try:
        if variant.startswith("mtkd"):
            res = run_mtkd(setup, out_dir, compile=compiled)
        else:
            res = run_trainer(setup, variant, out_dir, compile=compiled)
        if compiled:
            res["compile_seconds"] = compile_seconds() - before
        return res
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        gc.collect()


# ---------------------------------------------------------------- main


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 60; quick 4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--task", default="sst2", help="a single-sentence or pair GLUE task with a train split")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    p.add_argument("--hf-optim", choices=["adamw_torch", "adamw_torch_fused"], default="adamw_torch",
                   help="Trainer's optimizer: adamw_torch is mtkd's torch.optim.AdamW (the default, same optimizer); "
                        "adamw_torch_fused is Trainer's own default in transformers 5")
    args = p.parse_args()
    steps = args.steps or (4 if args.quick else 60)
    batch_size = 8 if args.quick and args.batch_size == 32 else args.batch_size
    repeats = args.repeats or (1 if args.quick else 3)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or "mtkd" not in variants:
        p.error(f"--variants must include mtkd and name only {VARIANTS}")

    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        workdir = Path(tmp)
        setup = prepare(steps=steps, batch_size=batch_size, precision=args.precision, threads=args.threads,
                        workdir=workdir, task_name=args.task, hf_variants=variants)
        setup.hf_optim = args.hf_optim
        print(f"{args.task}: {setup.steps} steps x batch {setup.batch_size} = {len(setup.train)} examples, "
              f"{args.precision}, {args.threads} thread(s), {repeats} round(s) of {variants}")
        tokens = {"mtkd": mtkd_tokens(setup)}
        # Warm-up (not counted): one-off costs such as lazy imports and oneDNN kernel creation.
        warm = prepare(steps=min(2, setup.steps), batch_size=batch_size, precision=args.precision,
                       threads=args.threads, workdir=workdir, task_name=args.task, seed=1,
                       hf_variants=variants)
        warm.hf_optim = args.hf_optim
        first_compile = {}  # the first compile in this process; later runs reuse its graphs (guards permitting)
        for v in variants:
            res = run_variant(warm, v, "warmup")
            if "compile_seconds" in res:
                first_compile[v] = res["compile_seconds"]
                print(f"  warm-up {v}: compile {res['compile_seconds']:.1f} s of {res['seconds']:.1f} s")

        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(repeats):
            for v in variants:  # A B C A B C ...: load changes hit every side alike
                t0 = time.perf_counter()
                res = run_variant(setup, v, str(r))
                runs[v].append(res)
                print(f"  round {r + 1}/{repeats} {v:9s} train {res['seconds']:.2f} s "
                      f"(run incl. set-up {time.perf_counter() - t0:.1f} s)")

        tokens["mtkd-compile"] = tokens["mtkd"]
        for v in [v for v in variants if v.startswith("hf")]:
            tokens[v] = {k: runs[v][0][k] for k in ("tokens", "padded_tokens", "examples")}
            if tokens[v]["tokens"] != tokens["mtkd"]["tokens"] or tokens[v]["examples"] != tokens["mtkd"]["examples"]:
                raise RuntimeError(f"{v} consumed other data than mtkd: {tokens[v]} vs {tokens['mtkd']}")

        n_params = per_token_parameters(setup.folder)
        peak = {prec: common.matmul_peak(prec) for prec in ("fp32", "bf16")}
        results = {}
        for v in variants:
            secs = common.stats([x["seconds"] for x in runs[v]])
            med = secs["median"]
            tok = tokens[v]
            flops = 6 * n_params * tok["tokens"] / med
            results[v] = {
                "train_seconds": secs, "steps": setup.steps, "examples": tok["examples"],
                "tokens": tok["tokens"], "padded_tokens": tok["padded_tokens"],
                "padding_fraction": 1 - tok["tokens"] / tok["padded_tokens"],
                "samples_per_s": tok["examples"] / med, "tokens_per_s": tok["tokens"] / med,
                "padded_tokens_per_s": tok["padded_tokens"] / med,
                "flop_per_s": flops, "executed_flop_per_s": 6 * n_params * tok["padded_tokens"] / med,
                "fraction_of_matmul_peak": flops / peak[args.precision],
            }
            if "compile_seconds" in runs[v][0]:
                comp = common.stats([x["compile_seconds"] for x in runs[v]])
                results[v]["compile_seconds"] = comp
                results[v]["samples_per_s_after_compile"] = tok["examples"] / max(med - comp["median"], 1e-9)
        mtkd_rate = results["mtkd"]["samples_per_s"]
        speedup = {f"mtkd_vs_{v}": common.ratio(mtkd_rate, results[v]["samples_per_s"]) for v in variants[1:]}
        best = {side: max((v for v in variants if v.startswith(side)), key=lambda v: results[v]["samples_per_s"])
                for side in ("mtkd", "hf-best") if any(v.startswith(side) for v in variants)}
        if "hf-best" in best:
            speedup["best_mtkd_vs_best_trainer"] = {
                "mtkd": best["mtkd"], "trainer": best["hf-best"],
                "ratio": common.ratio(results[best["mtkd"]]["samples_per_s"], results[best["hf-best"]]["samples_per_s"])}
        payload = {
            "benchmark": "train_throughput", "task": args.task, "model": common.MODEL_ID,
            "batch_size": setup.batch_size, "steps": setup.steps, "hf_optim": args.hf_optim, "max_length": MAX_LENGTH, "repeats": repeats,
            "environment": common.environment(args), "per_token_parameters": n_params,
            "matmul_peak_flop_per_s": peak, "results": results, "speedup": speedup,
            "first_compile_seconds": first_compile,
            "targets": {"mtkd_vs_hf-best": 1.2, "fraction_of_matmul_peak": 0.8},
            "timed": "mtkd: result.json train_seconds; Trainer: train_runtime (both: first batch to last step)",
        }

    print(f"\n{'variant':16s} {'samples/s':>10s} {'tokens/s':>10s} {'padding':>8s} {'GFLOP/s':>8s} "
          f"{'% peak':>7s} {'median s':>9s} {'compile s':>9s} {'after compile':>13s}")
    for v, res in results.items():
        comp = res.get("compile_seconds")
        extra = (f" {comp['median']:9.1f} {res['samples_per_s_after_compile']:13.1f}" if comp else "")
        print(f"{v:16s} {res['samples_per_s']:10.1f} {res['tokens_per_s']:10.0f} {res['padding_fraction']:8.1%} "
              f"{res['flop_per_s'] / 1e9:8.2f} {res['fraction_of_matmul_peak']:7.1%} "
              f"{res['train_seconds']['median']:9.2f}{extra}")
    print(f"matmul peak ({args.threads} threads): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s; per-token parameters {n_params:,}")
    for k, s in speedup.items():
        print(f"{k}: {common.fmt(s['ratio'])}x ({s['mtkd']} vs {s['trainer']})" if isinstance(s, dict)
              else f"{k}: {common.fmt(s)}x")
    common.write_json("train_throughput", payload, args.out)


if __name__ == "__main__":
    main()
