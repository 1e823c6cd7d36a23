"""Serving an exported student outside mtkd: ONNX Runtime sessions, and timing several model formats.

``OnnxClassifier(folder)`` runs a folder written by ``mtkd export --format onnx`` (fp32 or int8) on
already tokenised batches. ``measure_formats`` times a list of formats of one checkpoint on the same
request batches (throughput, p50/p95 latency, size on disk): the benchmark script calls it. The
serving formats ``onnx`` and ``int8`` (``OnnxFormat``, hook ``register_serving_formats``) give the
report's serving section its ONNX Runtime rows (``evaluation.serving_formats``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mtkd.errors import MtkdError
from mtkd.extras import MissingExtraError

#: the optional dependencies of the ONNX formats: ``pip install 'mtkd[serve]'``
SERVE_EXTRA = "serve"
ONNX_NAME = "model.onnx"
RECORD_NAME = "mtkd_export.json"


def require_serve():
    """``(onnx, onnxruntime)``, or a clean error naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError(f"the ONNX formats need the optional dependency {exc.name!r}",
                                expected=f"mtkd installed with its {SERVE_EXTRA!r} extra (onnx, onnxruntime)",
                                hint=f"pip install 'mtkd[{SERVE_EXTRA}]'") from None
    return onnx, onnxruntime


def session_options(threads: int | None = None):
    """ONNX Runtime options: every graph optimisation (fuses attention, GELU, layer norm), ``threads``."""
    _, ort = require_serve()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: the CPU provider's notes are not the user's problem
    # No spin-waiting after a call: mtkd times ONNX Runtime alternating with PyTorch models, and spinning
    # intra-op threads would hold the cores while the next model runs (measured: an eager model right after
    # an ONNX call ran 3.5-6x slower at batch 1 on 2 cores). A server running only this session may turn it on.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxClassifier:
    """Logits from an exported ONNX folder, on batches shaped like mtkd's (``input_ids``, ``attention_mask``,
    optionally ``token_type_ids``; torch tensors or numpy arrays)."""

    def __init__(self, folder, *, threads: int | None = None):
        _, ort = require_serve()
        self.folder = Path(folder)
        path = self.folder / ONNX_NAME
        if not path.is_file():
            raise MtkdError("not an ONNX export: model.onnx is missing", file=self.folder,
                            hint="write one with `mtkd export ... --format onnx`")
        self.session = ort.InferenceSession(str(path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch):
        import numpy as np

        feed = {}
        for name in self.inputs:
            value = batch[name]
            value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            feed[name] = value.astype(np.int64, copy=False)
        return self.session.run(None, feed)[0]


def folder_bytes(folder) -> int:
    """Bytes on disk of the files a server loads from ``folder`` (a model folder)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def read_record(folder) -> dict | None:
    """The export record (format, checks, dev scores) ``mtkd export`` wrote into ``folder``, if any."""
    path = Path(folder) / RECORD_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ---------------------------------------------------------------- timing several formats

#: formats ``measure_formats`` knows: eager PyTorch in fp32/bf16, ONNX Runtime fp32/int8
FORMATS = ("eager-fp32", "eager-bf16", "onnx", "onnx-int8")


def _percentiles(times: list[float], examples: int) -> dict:
    import numpy as np

    t = np.asarray(times)
    return {"examples_per_s": float(examples / max(t.sum(), 1e-12)), "p50_ms": float(np.percentile(t, 50) * 1e3),
            "p95_ms": float(np.percentile(t, 95) * 1e3), "requests": len(times)}


def time_requests(systems: dict, batches: dict[int, list], *, rounds: int = 1, warmup: int = 2,
                  outputs: dict | None = None) -> dict:
    """Latency of every request batch for every system, the systems alternating request by request.

    ``systems`` maps a name to a callable taking one batch; ``batches`` maps a batch size to its request
    batches. Returns ``{name: {"batch_<bs>": {examples_per_s, p50_ms, p95_ms, requests}}}``. Given a dict
    ``outputs``, the first round's results are kept there: ``outputs[name][bs]`` = one per request batch.
    """
    for group in batches.values():  # warm-up: thread pools, kernel selection, lazy init
        for fn in systems.values():
            for b in group[:warmup]:
                fn(b)
    lat = {name: {bs: [] for bs in batches} for name in systems}
    examples = {bs: sum(len(b["input_ids"]) for b in group) for bs, group in batches.items()}
    if outputs is not None:
        outputs.update({name: {bs: [] for bs in batches} for name in systems})
    for r in range(rounds):
        for bs, group in batches.items():
            for b in group:
                for name, fn in systems.items():
                    start = time.perf_counter()
                    result = fn(b)
                    lat[name][bs].append(time.perf_counter() - start)
                    if outputs is not None and r == 0:
                        outputs[name][bs].append(result)
    return {name: {f"batch_{bs}": _percentiles(lat[name][bs], examples[bs] * rounds) for bs in batches}
            for name in systems}


def format_runner(fmt: str, *, model=None, folder=None, task: str | None = None, threads: int | None = None):
    """A callable batch -> logits for one format: ``model`` (an mtkd model) serves the eager formats,
    ``folder`` (an ONNX export) the ONNX ones."""
    import torch

    from mtkd.inference import MODEL_INPUTS, autocast

    if fmt in ("eager-fp32", "eager-bf16"):
        if model is None:
            raise ValueError(f"{fmt} needs the mtkd model")
        precision = fmt.split("-")[1]
        head = task

        def run(batch):
            with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                return model(head, **{k: batch[k] for k in MODEL_INPUTS if k in batch}).float()
        return run
    if fmt in ("onnx", "onnx-int8"):
        if folder is None:
            raise ValueError(f"{fmt} needs an exported folder")
        return OnnxClassifier(folder, threads=threads)
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def measure_formats(checkpoint, task: str, formats, dataset, *, batch_sizes=(1, 32), pad_token_id: int = 0,
                    threads: int | None = None, workdir=None, rounds: int = 1, dev=None) -> dict:
    """Throughput and latency of ``formats`` of one checkpoint on ``dataset`` (tokenised, arrival order).

    ``formats`` is a subset of :data:`FORMATS`. The ONNX formats are exported from ``checkpoint`` into
    ``workdir`` first (checked as ``mtkd export`` checks them; ``dev``, a :class:`mtkd_hf.export.DevSet`,
    adds the dev-score check of int8). Returns ``{format: {"batch_<bs>": {...}, "size_bytes": ...,
    "export": record or None}}``; eager sizes are the checkpoint folder's.
    """
    import tempfile

    from mtkd.data import eval_batches
    from mtkd.model import load_model

    from .export import export_model

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
    model = load_model(checkpoint).eval()
    batches = {bs: list(eval_batches(dataset, batch_size=bs, pad_token_id=pad_token_id, sort_by_length=False))
               for bs in batch_sizes}
    with tempfile.TemporaryDirectory(prefix="mtkd-serving-", dir=workdir) as tmp:
        systems, sizes, records = {}, {}, {}
        for fmt in formats:
            folder = None
            if fmt.startswith("onnx"):
                folder = Path(tmp) / fmt
                records[fmt] = export_model(checkpoint, task, folder, format="onnx",
                                            quantize="int8" if fmt == "onnx-int8" else None, dev=dev,
                                            threads=threads)
            systems[fmt] = format_runner(fmt, model=model, folder=folder, task=task, threads=threads)
            sizes[fmt] = folder_bytes(folder if folder is not None else checkpoint)
        timed = time_requests(systems, batches, rounds=rounds)
    return {fmt: {**timed[fmt], "size_bytes": sizes[fmt], "export": records.get(fmt)} for fmt in formats}


# ---------------------------------------------------------------- the report's serving formats


class OnnxFormat:
    """The student exported to ONNX and run with ONNX Runtime (fp32, or int8 with ``quantize``)."""

    def __init__(self, params=None, *, quantize: str | None = None):
        self.quantize = quantize

    def check(self) -> None:
        from mtkd.extras import require

        for module in ("onnx", "onnxruntime"):
            require(module, extra=SERVE_EXTRA, feature=f"the {'int8' if self.quantize else 'onnx'} serving format")

    def prepare(self, model_dir, task: str, workdir, *, dev, requests=None, threads: int | None = None):
        """Export (checked as ``mtkd export`` checks: fp32 equal to the checkpoint; int8 scored on ``dev``,
        its change reported, not refused: the report shows it) and an ONNX Runtime session on it."""
        from mtkd.components import PreparedFormat

        from .encoder import _quiet_transformers
        from .export import DevSet, export_model

        folder = Path(workdir) / ("int8" if self.quantize else "onnx")
        with _quiet_transformers():  # no load reports or progress bars inside the evaluate stage's output
            record = export_model(model_dir, task, folder, format="onnx", quantize=self.quantize,
                                  dev=DevSet(dev.task, dev.split, dev.rows, max_length=dev.max_length,
                                             cache_dir=dev.cache_dir),
                                  allow_score_drop=True, threads=threads)
        d = record.get("dev") or {}
        scores = {"split": d.get("split"), "examples": d.get("examples"), "checkpoint_score": d.get("checkpoint_score"),
                  "score": d.get("export_score"), "score_change": d.get("score_change"),
                  "changed_predictions": d.get("changed_predictions"), "max_abs_diff": d.get("max_abs_diff")}
        return PreparedFormat(run=OnnxClassifier(folder, threads=threads), size_bytes=folder_bytes(folder), dev=scores)


class PipelineFormat:
    """``transformers.pipeline("text-classification")`` on the student exported as a Hugging Face folder, fed the
    raw texts (it tokenises inside each request): the baseline a user would otherwise deploy. Its weights are
    the checkpoint's (the export is checked within 1e-5), so it has no dev score of its own."""

    def __init__(self, params=None):
        pass

    def check(self) -> None:
        pass  # transformers is one of mtkd's own dependencies

    def prepare(self, model_dir, task: str, workdir, *, dev, requests=None, threads: int | None = None):
        import torch
        from transformers import pipeline

        from mtkd.components import PreparedFormat

        from .export import export_model

        if requests is None:
            raise MtkdError("the hf-pipeline format needs the raw texts of the timed requests")
        from .encoder import _quiet_transformers

        folder = Path(workdir) / "hf"
        with _quiet_transformers():  # no load reports or progress bars inside the evaluate stage's output
            export_model(model_dir, task, folder, format="hf", threads=threads)
            pipe = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
        first = list(requests["text_a"])
        second = list(requests["text_b"]) if "text_b" in requests.column_names else None

        def run(batch):
            rows = batch["positions"].tolist()
            texts = [{"text": first[i], "text_pair": second[i]} if second else first[i] for i in rows]
            with torch.inference_mode():
                return pipe(texts, batch_size=len(texts), top_k=None, truncation=True, max_length=dev.max_length)
        return PreparedFormat(run=run, size_bytes=folder_bytes(folder), dev=None)


def pipeline_format(params):
    """The Hugging Face pipeline() on the student's exported folder, tokenising raw texts: the usual baseline."""
    return PipelineFormat(params)


def onnx_format(params):
    """The student in ONNX Runtime, fp32 (the same predictions as the checkpoint)."""
    return OnnxFormat(params)


def int8_format(params):
    """The student in ONNX Runtime with int8 dynamic quantization of the linear layers (dev-score change shown)."""
    return OnnxFormat(params, quantize="int8")
