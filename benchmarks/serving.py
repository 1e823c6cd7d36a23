"""Serving cost: the distilled student against the K-member teacher ensemble it replaces.

Models (same precision and thread count): the ensemble is K MiniLM-L6 multi-task models (the teachers'
architecture); the student is one MiniLM-L6 and, with ``--student-layers 3``, also a 3-layer MiniLM
(its first 3 layers). Weights do not matter for speed: encoders are the pretrained MiniLM, heads random.

Data: the SST-2 validation split (872 sentences) in arrival order (not sorted by length: a server sees
requests as they come), tokenised once beforehand, each batch padded to its longest row (mtkd's
``eval_batches``). One request = one batch; its latency is the time for every member's forward pass and
the ensemble's probability average (the student: one forward and a softmax). Throughput = examples /
summed latencies. The sides alternate batch by batch round after round (student, ensemble, student,
...), p50/p95 latencies over all batches of all rounds.

Run: .venv/bin/python benchmarks/serving.py [--quick] [--precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import tempfile
import time

import common

TASK = "sst2"
MAX_LENGTH = 128


def build(task, *, layers: int | None, seed: int):
    import torch

    from mtkd.model import build_model

    encoder = {"type": "hf", "model": common.MODEL_ID}
    if layers is not None:
        encoder["num_layers"] = layers
    torch.manual_seed(seed)
    return build_model({"encoder": encoder, "heads": {"default": {"type": "linear"}}}, {TASK: task}).eval()


def predict(models, batch, precision: str):
    """Class probabilities of one request batch: the members' average (one member: its own)."""
    import torch

    from mtkd.inference import MODEL_INPUTS, autocast

    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        probs = [torch.softmax(m(TASK, **inputs).float(), dim=-1) for m in models]
    return torch.stack(probs).mean(0)


def main() -> None:
    import numpy as np

    from mtkd.data import eval_batches, tokenize_split
    from mtkd.model import count_parameters

    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=None, help="validation rows (default all 872; quick 48)")
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--student-layers", type=int, default=None, help="also measure a student with this many layers")
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    common.setup_torch(args.threads)

    task = common.glue_task(TASK, common.glue_source())
    split = task.eval_splits[0]
    dev = task.load_split(split)
    n = args.examples or (48 if args.quick else len(dev))
    if n > len(dev):
        print(f"NOTICE: asked for {n} rows but {split} has {len(dev)}; using {len(dev)}")
    dev = dev.select(range(min(n, len(dev))))

    systems = {"student": [build(task, layers=None, seed=0)]}
    if args.student_layers:
        systems[f"student-{args.student_layers}l"] = [build(task, layers=args.student_layers, seed=0)]
    systems["ensemble"] = [build(task, layers=None, seed=1 + i) for i in range(args.teachers)]
    tokenizer = systems["student"][0].encoder.tokenizer
    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        data = tokenize_split(task, split, tokenizer, max_length=MAX_LENGTH, cache_dir=tmp, dataset=dev)
        batches = {bs: list(eval_batches(data, batch_size=bs, pad_token_id=tokenizer.pad_token_id or 0,
                                         sort_by_length=False)) for bs in batch_sizes}
    print(f"{TASK} {split}: {len(dev)} examples, batch sizes {batch_sizes}, {args.precision}, {args.threads} "
          f"thread(s), {repeats} round(s) of {list(systems)}")

    for bs in batch_sizes:  # warm-up (not counted)
        for models in systems.values():
            for b in batches[bs][:2]:
                predict(models, b, args.precision)

    latencies: dict = {name: {bs: [] for bs in batch_sizes} for name in systems}
    for r in range(repeats):
        for bs in batch_sizes:
            for b in batches[bs]:
                for name, models in systems.items():  # alternate per request
                    start = time.perf_counter()
                    predict(models, b, args.precision)
                    latencies[name][bs].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{repeats} done")

    results = {}
    for name, models in systems.items():
        res = {"members": len(models), "parameters": int(sum(count_parameters(m) for m in models))}
        for bs in batch_sizes:
            t = np.array(latencies[name][bs])
            res[f"batch_{bs}"] = {"examples_per_s": len(dev) * repeats / t.sum(),
                                  "p50_ms": float(np.percentile(t, 50) * 1000),
                                  "p95_ms": float(np.percentile(t, 95) * 1000), "requests": len(t)}
        results[name] = res
    speedup = {f"{name}_vs_ensemble": {f"batch_{bs}": common.ratio(results[name][f"batch_{bs}"]["examples_per_s"],
                                                                   results["ensemble"][f"batch_{bs}"]["examples_per_s"])
                                       for bs in batch_sizes}
               for name in systems if name != "ensemble"}
    payload = {"benchmark": "serving", "task": TASK, "split": split, "examples": len(dev), "repeats": repeats,
               "environment": common.environment(args), "results": results, "speedup": speedup,
               "timed": "per request: every member's forward + probability average; tokenisation and padding before"}

    print(f"\n{'system':12s} {'params':>11s} " + " ".join(
        f"{'b' + str(bs) + ' ex/s':>10s} {'p50 ms':>8s} {'p95 ms':>8s}" for bs in batch_sizes))
    for name, res in results.items():
        cells = " ".join(f"{res[f'batch_{bs}']['examples_per_s']:10.1f} {res[f'batch_{bs}']['p50_ms']:8.2f} "
                         f"{res[f'batch_{bs}']['p95_ms']:8.2f}" for bs in batch_sizes)
        print(f"{name:12s} {res['parameters']:11,d} {cells}")
    for name, by_bs in speedup.items():
        print(f"{name} throughput: " + ", ".join(f"{k} {common.fmt(v)}x" for k, v in by_bs.items()))
    common.write_json("serving", payload, args.out)


if __name__ == "__main__":
    main()
