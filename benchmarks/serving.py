"""Serving cost: the distilled student in every deployable format against the K-member ensemble it replaces.

Systems (the same thread count; requests alternate between them, request by request):

- ``ensemble``: K MiniLM-L6 multi-task models (the teachers' architecture), eager PyTorch fp32, the
  members' probabilities averaged. Its heads are untrained (speed only: the weights do not change it).
- ``student eager fp32`` / ``student eager bf16``: one MiniLM-L6 in PyTorch (bf16: CPU autocast).
- ``student onnx`` / ``student onnx-int8``: ``mtkd export --format onnx [--quantize int8]`` of the same
  checkpoint, run with ONNX Runtime (all graph optimisations; int8: dynamic quantization of the linear
  layers), each export checked against the checkpoint on the dev split first.
- ``student-3l eager fp32`` / ``student-3l onnx-int8``: the compressed student, MiniLM's first 3 layers.
- ``hf pipeline``: ``transformers.pipeline("text-classification")`` on ``mtkd export --format hf`` of the
  student, fed the raw sentences: the baseline a user would otherwise deploy. It tokenises inside the
  timed call; the ``tokenise only`` row times the fast tokenizer on the same requests, so that part can
  be told apart.

The students are trained SST-2 checkpoints (``trained_student.py``: cached under
``benchmarks/out/students/``), so the dev scores are real; with ``--quick`` they are untrained.

Data: the SST-2 validation split in arrival order (not sorted by length: a server sees requests as
they come), tokenised once beforehand, each request batch padded to its longest row (mtkd's
``eval_batches``). Throughput = examples / summed latencies; p50/p95 over all requests of all rounds;
size on disk = the files a server loads (mtkd checkpoint folder, ONNX folder, HF folder); dev score =
accuracy on the requests, from the first round's outputs.

Run: .venv/bin/python benchmarks/serving.py [--quick] [--threads N] [--train-steps N]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

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


def ensemble_runner(models):
    import torch

    from mtkd.inference import MODEL_INPUTS

    def run(batch):
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        with torch.inference_mode():
            return torch.stack([torch.softmax(m(TASK, **inputs).float(), -1) for m in models]).mean(0)
    return run


def pipeline_runner(folder: Path, texts: list[str], threads: int):
    """The HF pipeline on the rows a request batch holds (by position), returning [B, C] scores."""
    import numpy as np
    import torch
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
    label2id = pipe.model.config.label2id
    torch.set_num_threads(threads)

    def run(batch):
        rows = [texts[i] for i in batch["positions"].tolist()]
        with torch.inference_mode():
            out = pipe(rows, batch_size=len(rows), top_k=None, truncation=True, max_length=MAX_LENGTH)
        scores = np.zeros((len(rows), len(label2id)), dtype=np.float32)
        for i, labels in enumerate(out):
            for item in labels:
                scores[i, label2id[item["label"]]] = item["score"]
        return scores
    return run


def tokenise_runner(tokenizer, texts: list[str]):
    def run(batch):
        rows = [texts[i] for i in batch["positions"].tolist()]
        return tokenizer(rows, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    return run


def accuracy(outputs: list, batches: list, labels) -> float:
    import numpy as np

    preds = np.concatenate([np.asarray(o.float() if hasattr(o, "float") else o).argmax(-1) for o in outputs])
    positions = np.concatenate([b["positions"].numpy() for b in batches])
    return float(100 * (preds == np.asarray(labels)[positions]).mean())


def main() -> None:
    import onnxruntime  # noqa: F401  (the `serve` extra; fail before the long set-up)
    from mtkd_hf.export import DevSet, export_model
    from mtkd_hf.serving import folder_bytes, format_runner, time_requests

    from mtkd.data import eval_batches, tokenize_split
    from mtkd.model import count_parameters, load_model, save_model

    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=None, help="validation rows (default all 872; quick 48)")
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--student-layers", type=int, default=3, help="layers of the compressed student (0: none)")
    p.add_argument("--train-steps", type=int, default=40,
                   help="SST-2 training steps of the students (trained_student.py; cached)")
    p.add_argument("--student", type=Path, default=None, help="an mtkd checkpoint to serve instead")
    p.add_argument("--compressed", type=Path, default=None, help="the compressed student's checkpoint")
    p.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto",
                   help="serve the eager bf16 student too (auto: only on CPUs with native bf16, where it can be fast)")
    args = p.parse_args()
    from mtkd.strategies import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    with_bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and native is not False)
    if not with_bf16:
        print("eager-bf16 left out: this CPU has no native bf16 (no avx512_bf16 / amx_bf16), where a bf16 matmul "
              "runs ~80x slower than fp32; --bf16 yes serves it anyway")
    repeats = args.repeats or (1 if args.quick else 2)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    common.setup_torch(args.threads)

    task = common.glue_task(TASK, common.glue_source())
    split = task.eval_splits[0]
    full_dev = task.load_split(split)
    n = min(args.examples or (48 if args.quick else len(full_dev)), len(full_dev))
    dev = full_dev.select(range(n))

    with tempfile.TemporaryDirectory(prefix="mtkd-bench-") as tmp:
        tmp = Path(tmp)
        students = {}
        for name, given, layers in (("student", args.student, None),
                                    (f"student-{args.student_layers}l", args.compressed, args.student_layers)):
            if layers == 0:
                continue
            if given is not None:
                students[name] = given
            elif args.quick:
                students[name] = save_model(build(task, layers=layers, seed=0), tmp / name)
            else:
                import trained_student

                students[name] = trained_student.train_student(task=TASK, steps=args.train_steps, layers=layers,
                                                               threads=args.threads)
        members = [build(task, layers=None, seed=1 + i) for i in range(args.teachers)]
        ensemble_bytes = sum(folder_bytes(save_model(m, tmp / f"member-{i}")) for i, m in enumerate(members))

        model = load_model(students["student"]).eval()
        tokenizer = model.encoder.tokenizer
        data = tokenize_split(task, split, tokenizer, max_length=MAX_LENGTH, cache_dir=str(tmp / "cache"), dataset=dev)
        batches = {bs: list(eval_batches(data, batch_size=bs, pad_token_id=tokenizer.pad_token_id or 0,
                                         sort_by_length=False)) for bs in batch_sizes}
        texts, labels = list(dev["text_a"]), list(dev["label"])
        check = DevSet(task, split, dev, max_length=MAX_LENGTH, cache_dir=str(tmp / "cache"))

        systems, info = {}, {}
        systems["ensemble"] = ensemble_runner(members)
        info["ensemble"] = {"parameters": sum(count_parameters(m) for m in members), "size_bytes": ensemble_bytes,
                            "format": f"{len(members)} x eager fp32", "trained": False}
        exports = {}
        for name, ckpt in students.items():
            m = model if name == "student" else load_model(ckpt).eval()
            fmts = (["eager-fp32", *(["eager-bf16"] if with_bf16 else []), "onnx", "onnx-int8"] if name == "student"
                    else ["eager-fp32", "onnx-int8"])
            for fmt in fmts:
                folder = None
                if fmt.startswith("onnx"):
                    folder = tmp / f"{name}-{fmt}"
                    exports[f"{name} {fmt}"] = export_model(
                        ckpt, TASK, folder, format="onnx", quantize="int8" if fmt == "onnx-int8" else None,
                        dev=check, max_score_drop=100.0, threads=args.threads)
                systems[f"{name} {fmt}"] = format_runner(fmt, model=m, folder=folder, task=TASK, threads=args.threads)
                info[f"{name} {fmt}"] = {"parameters": count_parameters(m), "format": fmt, "trained": not args.quick,
                                         "size_bytes": folder_bytes(folder if folder is not None else ckpt)}
        hf_folder = tmp / "student-hf"
        export_model(students["student"], TASK, hf_folder, format="hf")
        systems["hf pipeline"] = pipeline_runner(hf_folder, texts, args.threads)
        info["hf pipeline"] = {"parameters": count_parameters(model), "size_bytes": folder_bytes(hf_folder),
                               "format": "transformers pipeline() on the hf export, fp32, tokenising",
                               "trained": not args.quick}
        systems["tokenise only"] = tokenise_runner(tokenizer, texts)
        info["tokenise only"] = {"format": "the fast tokenizer on the request's sentences"}

        print(f"{TASK} {split}: {n} examples, batch sizes {batch_sizes}, {args.threads} thread(s), "
              f"{repeats} round(s) of {len(systems)} systems")
        outputs: dict = {}
        timed = time_requests(systems, batches, rounds=repeats, outputs=outputs)

    results = {}
    for name in systems:
        res = {**info[name], **timed[name]}
        if name != "tokenise only":
            bs = max(batch_sizes)
            res["dev_accuracy"] = accuracy(outputs[name][bs], batches[bs], labels)
        if name in exports:
            res["export_check"] = exports[name].get("dev")
        results[name] = res
    ens = results["ensemble"]
    eager = results["student eager-fp32"]
    speedup = {name: {f"batch_{bs}": {
        "vs_ensemble": common.ratio(r[f"batch_{bs}"]["examples_per_s"], ens[f"batch_{bs}"]["examples_per_s"]),
        "vs_eager_student": common.ratio(r[f"batch_{bs}"]["examples_per_s"], eager[f"batch_{bs}"]["examples_per_s"])}
        for bs in batch_sizes} for name, r in results.items() if name not in ("tokenise only",)}
    peak = {prec: common.matmul_peak(prec) for prec in ("fp32", "bf16")}
    payload = {"benchmark": "serving", "task": TASK, "split": split, "examples": n, "repeats": repeats,
               "environment": common.environment(args), "matmul_peak_flop_per_s": peak, "results": results,
               "speedup": speedup,
               "timed": "per request: the system's call on the pre-tokenised batch (hf pipeline: on the raw "
                        "sentences, tokenising inside); outputs kept from the first round for the dev accuracy"}

    head = f"{'system':26s} {'size MiB':>9s} {'dev acc':>8s} " + " ".join(
        f"{'b' + str(bs) + ' ex/s':>10s} {'p50 ms':>8s} {'p95 ms':>8s} {'x ens':>6s} {'x eager':>7s}"
        for bs in batch_sizes)
    print("\n" + head)
    for name, res in results.items():
        size = f"{res['size_bytes'] / 2**20:9.1f}" if "size_bytes" in res else f"{'':9s}"
        acc = f"{res['dev_accuracy']:8.2f}" if "dev_accuracy" in res else f"{'':8s}"
        cells = []
        for bs in batch_sizes:
            r, s = res[f"batch_{bs}"], speedup.get(name, {}).get(f"batch_{bs}", {})
            cells.append(f"{r['examples_per_s']:10.1f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
                         f"{common.fmt(s.get('vs_ensemble')):>6s} {common.fmt(s.get('vs_eager_student')):>7s}")
        print(f"{name:26s} {size} {acc} " + " ".join(cells))
    print(f"matmul peak ({args.threads} threads): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")
    if not args.quick:
        print("ensemble dev accuracy: untrained heads (speed only)")
    common.write_json("serving", payload, args.out)


if __name__ == "__main__":
    main()
