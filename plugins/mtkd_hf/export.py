"""``mtkd export``: one task of a checkpoint as a folder to serve outside mtkd.

Formats: ``hf`` (a Hugging Face ``AutoModelForSequenceClassification`` folder), ``onnx`` (``model.onnx``
for ONNX Runtime, with the config and tokenizer beside it) and ``onnx`` with ``quantize="int8"``
(dynamic int8 quantization of the linear layers' matmuls, ONNX Runtime: on the 2-core CPU it served
1.7x faster than torch's dynamic quantization and 1.6x faster than fp32 ONNX at batch 1).

Only combinations that the standard classes reproduce exactly are exported: an ``hf`` encoder
with pooler pooling (BERT-family: pooled [CLS] -> dropout -> ``classifier``) and a ``linear``
head. Anything else (a SAN head, cls/mean pooling, a RoBERTa-style classification head) is an
error rather than a model that predicts differently. The export is checked numerically before
it is written.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mtkd.errors import CheckpointError, MtkdError

from .serving import ONNX_NAME, RECORD_NAME, OnnxClassifier, folder_bytes, require_serve

#: Largest difference tolerated between the checkpoint's and the exported model's logits.
TOLERANCE = 1e-5
#: The same for the fp32 ONNX graph (its fused kernels sum in another order).
ONNX_TOLERANCE = 1e-4
#: Default largest dev-score loss (points on the x100 scale) that an int8 export may cost.
MAX_SCORE_DROP = 0.5
FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)
OPSET = 17

_PROBE = (["The quick brown fox jumps over the lazy dog.", "An export check."],
          ["A fox jumps.", "It should give the same predictions, with padding."])


def _fail(message: str, checkpoint, hint: str | None = None) -> CheckpointError:
    return CheckpointError(f"cannot export: {message}", file=checkpoint, hint=hint)


def build_sequence_classifier(model, task: str, checkpoint=None):
    """A ``transformers`` sequence-classification model equal to ``model`` on ``task`` (weights copied)."""
    import torch
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    from .encoder import HFEncoder
    from .heads import LinearHead

    if task not in model.task_info:
        raise CheckpointError(f"task {task!r} is not in the checkpoint", file=checkpoint,
                              expected=f"one of: {', '.join(model.task_info)}", found=task)
    info = model.task_info[task]
    head = model.heads[model.head_name(task)]
    encoder = model.encoder
    if not isinstance(encoder, HFEncoder):
        raise _fail(f"the encoder is a {type(encoder).__name__}, not an hf encoder", checkpoint)
    if not isinstance(head, LinearHead):
        raise _fail(f"task {task!r} has a {type(head).__name__}, which no Hugging Face "
                    "sequence-classification model reproduces", checkpoint,
                    hint="only linear heads export; serve SAN heads with mtkd")
    if encoder.pooling != "pooler":
        raise _fail(f"the encoder pools with {encoder.pooling!r}; Hugging Face sequence-classification "
                    "models classify the pooler output", checkpoint,
                    hint="only pooling: pooler (BERT-family) exports")

    config = copy.deepcopy(encoder.model.config)
    num_outputs = info["num_outputs"]
    config.num_labels = num_outputs
    if info["task_type"] == "regression":
        config.problem_type = "regression"
    else:
        config.problem_type = "single_label_classification"
        labels = info.get("labels") or [f"LABEL_{i}" for i in range(num_outputs)]
        config.id2label = {i: str(label) for i, label in enumerate(labels)}
        config.label2id = {str(label): i for i, label in enumerate(labels)}
    config.classifier_dropout = head.dropout.p
    config.architectures = None
    try:
        hf_model = AutoModelForSequenceClassification.from_config(config)
    except ValueError as exc:
        raise _fail(f"{config.model_type} has no AutoModelForSequenceClassification: {exc}",
                    checkpoint) from None

    base = hf_model.base_model
    classifier = getattr(hf_model, "classifier", None)
    if base is hf_model or not isinstance(classifier, nn.Linear) or getattr(base, "pooler", None) is None:
        raise _fail(f"{type(hf_model).__name__} does not classify the pooled vector with one linear layer",
                    checkpoint, hint="export works for BERT-family encoders, pooler pooling, linear heads")
    result = base.load_state_dict(encoder.model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise _fail(f"the encoder's weights do not fit {type(hf_model).__name__} (missing "
                    f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})", checkpoint)
    with torch.no_grad():
        classifier.weight.copy_(head.linear.weight)
        classifier.bias.copy_(head.linear.bias)
    hf_model.eval()
    _verify(model, task, hf_model, encoder.tokenizer, checkpoint)
    return hf_model


def _verify(model, task: str, hf_model, tokenizer, checkpoint) -> None:
    """Both models must give the same logits on a probe batch (with padding and two segments)."""
    import torch

    batch = tokenizer(*_PROBE, padding=True, return_tensors="pt")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ours = model(task, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        theirs = hf_model(**batch).logits
    model.train(was_training)
    diff = (ours.float() - theirs.float()).abs().max().item()
    if not diff <= TOLERANCE:
        raise _fail(f"the exported model's logits differ from the checkpoint's by {diff:.2e}", checkpoint,
                    hint="this encoder family's classification model is not pooled-[CLS] + linear")


# ---------------------------------------------------------------- dev-score check


@dataclass
class DevSet:
    """A labelled dev split that an export is scored on: the task object (``mtkd.components.Task``), the
    split's name and its raw rows (``task.load_split(split)`` or a subsample)."""

    task: Any
    split: str
    rows: Any
    max_length: int = 128
    batch_size: int = 64
    cache_dir: str | None = None


def dev_set_from_recipe(recipe, task: str) -> DevSet:
    """The first dev split of ``task`` as the recipe loads it (its subsampling and max_length)."""
    from mtkd.stages.context import load_tasks

    tasks = load_tasks(recipe)
    if task not in tasks or not tasks[task].evals:
        raise MtkdError(f"the recipe has no dev split for task {task!r} to score the export on", file=recipe.file,
                        path="tasks", expected=f"one of: {', '.join(n for n, t in tasks.items() if t.evals)}",
                        found=task)
    bundle = tasks[task]
    split, rows = next(iter(bundle.evals.items()))
    data = recipe.resolved["data"]
    return DevSet(bundle.task, split, rows, max_length=data["max_length"], cache_dir=data["cache_dir"])


def _predictions(logits, task_type: str):
    return logits[:, 0] if task_type == "regression" else logits.argmax(-1)


def _dev_logits(dev: DevSet, tokenizer, runners: dict) -> tuple[dict, Any]:
    """Every runner's logits [N, C] on the dev split (numpy, dataset order), and the labels."""
    import numpy as np

    from mtkd.data import eval_batches, tokenize_split

    data = tokenize_split(dev.task, dev.split, tokenizer, max_length=dev.max_length, cache_dir=dev.cache_dir,
                          dataset=dev.rows)
    parts: dict = {name: [] for name in runners}
    positions = []
    for batch in eval_batches(data, batch_size=dev.batch_size, pad_token_id=tokenizer.pad_token_id or 0):
        positions.append(batch["positions"].numpy())
        for name, run in runners.items():
            out = run(batch)
            parts[name].append(out.numpy() if hasattr(out, "numpy") else np.asarray(out))
    order = np.argsort(np.concatenate(positions), kind="stable")
    return {n: np.concatenate(p)[order].astype(np.float32) for n, p in parts.items()}, np.asarray(data["label"])


def _score(dev: DevSet, logits, labels) -> tuple[float, dict]:
    from mtkd.scores import task_score

    metrics = dev.task.compute_metrics({dev.split: _predictions(logits, dev.task.task_type)}, {dev.split: labels})
    return float(task_score(metrics)), metrics


# ---------------------------------------------------------------- ONNX


class _LogitsOnly:
    """Wraps a sequence-classification model so that the traced graph returns the logits tensor alone."""

    def __new__(cls, hf_model, input_names):
        import torch

        class LogitsOnly(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = hf_model

            def forward(self, *args):
                return self.model(**dict(zip(input_names, args)), return_dict=True).logits

        return LogitsOnly().eval()


def _input_names(hf_model, tokenizer) -> list[str]:
    import inspect

    accepts = inspect.signature(hf_model.forward).parameters
    names = ["input_ids", "attention_mask"]
    # One token type (RoBERTa-like): mtkd never feeds them, nor does the exported graph.
    if "token_type_ids" in accepts and "token_type_ids" in tokenizer.model_input_names \
            and getattr(hf_model.config, "type_vocab_size", 2) > 1:
        names.append("token_type_ids")
    return names


def write_onnx(hf_model, tokenizer, path: Path, *, quantize: str | None = None) -> list[str]:
    """Trace ``hf_model`` into ``path`` (dynamic batch and sequence axes); int8: quantize it in place.

    The probe batch that is traced has padding, so the attention-mask path is part of the graph.
    Returns the graph's input names.
    """
    import torch

    require_serve()
    names = _input_names(hf_model, tokenizer)
    probe = tokenizer(*_PROBE, padding=True, return_tensors="pt")
    args = tuple(probe[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    fp32 = path.with_name(path.stem + "-fp32.onnx") if quantize else path
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notes about the TorchScript exporter
        torch.onnx.export(_LogitsOnly(hf_model, names), args, str(fp32), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The linear layers only (weights int8 per output channel, activations quantized per call);
        # embeddings, layer norms and the softmax stay fp32.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process: the dev-score check judges the result
        try:
            quantize_dynamic(str(fp32), str(path), op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        fp32.unlink()
    return names


# ---------------------------------------------------------------- export


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CheckpointError("the output folder exists and is not empty", file=out,
                              hint="choose another folder or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)


def _check_options(format: str, quantize: str | None, max_score_drop: float) -> None:
    if format not in FORMATS:
        raise MtkdError("unknown export format", path="--format", expected=" or ".join(FORMATS), found=format)
    if quantize is not None and quantize not in QUANTIZE:
        raise MtkdError("unknown quantization", path="--quantize", expected=" or ".join(QUANTIZE), found=quantize)
    if quantize and format != "onnx":
        raise MtkdError("int8 quantization writes an ONNX model", path="--quantize", found=f"--format {format}",
                        hint="use --format onnx --quantize int8 (a Hugging Face folder holds fp32 weights)")
    if not max_score_drop >= 0:
        raise MtkdError("the tolerated dev-score drop must be a number of points >= 0", path="--max-score-drop",
                        found=max_score_drop)


def export_model(model_dir, task: str, out, *, format: str = "hf", quantize: str | None = None,
                 dev: DevSet | None = None, max_score_drop: float = MAX_SCORE_DROP, allow_score_drop: bool = False,
                 overwrite: bool = False, threads: int | None = None, trust_remote_code: bool = False) -> dict:
    """Write ``task`` of the mtkd model folder ``model_dir`` to ``out`` in ``format``; return the export record.

    ``format``: ``"hf"`` or ``"onnx"``; ``quantize``: ``None`` or ``"int8"`` (ONNX only). Every export is
    checked against the checkpoint before it is moved into place: hf logits within 1e-5 on a probe
    batch; ONNX fp32 logits within 1e-4 and the same predictions on the probe batch, a single unpadded
    example and, given ``dev``, the whole dev split; int8 is scored on ``dev`` (required) and refused
    when it loses more than ``max_score_drop`` points, unless ``allow_score_drop``. The record (also
    written as ``mtkd_export.json``) holds the checks, the dev scores and the folder's size in bytes.
    ``trust_remote_code`` is the user's opt-in; a checkpoint asking for it on its own is refused.
    """
    import torch

    import mtkd
    from mtkd.model import load_model

    _check_options(format, quantize, max_score_drop)
    if format == "onnx":
        _, ort = require_serve()
    if quantize and dev is None and not allow_score_drop:
        raise MtkdError("an int8 export is scored on a dev split before it is written, and none was given",
                        path="--quantize", hint="name the recipe whose dev split to use (--recipe), or accept "
                        "an unchecked score with --allow-score-drop")
    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_dir, allow_code=trust_remote_code)
    hf_model = build_sequence_classifier(model, task, model_dir)
    tokenizer = model.encoder.tokenizer
    record: dict = {"format": format, "quantize": quantize, "task": task, "source": str(model_dir),
                    "mtkd_version": mtkd.__version__}
    tmp = _prepare_out(out, overwrite)
    try:
        hf_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if format == "hf":
            hf_model.save_pretrained(tmp)
            record["check"] = {"tolerance": TOLERANCE}
        else:
            record["inputs"] = write_onnx(hf_model, tokenizer, tmp / ONNX_NAME, quantize=quantize)
            record.update(opset=OPSET, onnxruntime=ort.__version__)
            record["check"] = _check_onnx(model, task, tokenizer, OnnxClassifier(tmp, threads=threads),
                                          exact=quantize is None, checkpoint=model_dir)
            if dev is not None:
                record["dev"] = _check_dev(model, task, tokenizer, OnnxClassifier(tmp, threads=threads), dev,
                                           exact=quantize is None, max_score_drop=max_score_drop,
                                           allow_score_drop=allow_score_drop, checkpoint=model_dir)
            elif quantize:
                record["dev"] = {"checked": False, "accepted_by": "--allow-score-drop"}
        record["size_bytes"] = folder_bytes(tmp)
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**record, "path": str(out)}


def _checkpoint_runner(model, task: str):
    import torch

    from mtkd.inference import MODEL_INPUTS

    def run(batch):
        with torch.no_grad():
            return model(task, **{k: batch[k] for k in MODEL_INPUTS if k in batch}).float()
    return run


def _check_onnx(model, task: str, tokenizer, runner, *, exact: bool, checkpoint) -> dict:
    """Probe batches (padded pairs; one unpadded sentence): fp32 must match the checkpoint."""
    import numpy as np

    ours = _checkpoint_runner(model.eval(), task)
    probes = [tokenizer(*_PROBE, padding=True, return_tensors="pt"),
              tokenizer([_PROBE[0][0]], return_tensors="pt")]
    kind = model.task_info[task]["task_type"]
    diff, same = 0.0, True
    for batch in probes:
        a, b = ours(batch).numpy(), runner(batch)
        if not np.all(np.isfinite(b)):
            raise _fail("the exported model gives non-finite logits on a probe batch", checkpoint)
        diff = max(diff, float(np.abs(a - b).max()))
        if kind != "regression":
            same = same and bool(np.array_equal(_predictions(a, kind), _predictions(b, kind)))
    if exact and not (diff <= ONNX_TOLERANCE and same):
        raise _fail(f"the ONNX model's logits differ from the checkpoint's by {diff:.2e} "
                    f"(tolerance {ONNX_TOLERANCE:g}){'' if same else ', with other predictions'}", checkpoint)
    return {"probe_max_abs_diff": diff, "tolerance": ONNX_TOLERANCE if exact else None}


def _check_dev(model, task: str, tokenizer, runner, dev: DevSet, *, exact: bool, max_score_drop: float,
               allow_score_drop: bool, checkpoint) -> dict:
    """The dev split through both models: fp32 must match; int8 may lose at most ``max_score_drop`` points."""
    import numpy as np

    logits, labels = _dev_logits(dev, tokenizer, {"checkpoint": _checkpoint_runner(model.eval(), task),
                                                  "export": runner})
    if not np.all(np.isfinite(logits["export"])):
        raise _fail(f"the exported model gives non-finite logits on {dev.split}", checkpoint)
    diff = float(np.abs(logits["checkpoint"] - logits["export"]).max()) if len(labels) else 0.0
    kind = dev.task.task_type
    changed = int((_predictions(logits["checkpoint"], kind) != _predictions(logits["export"], kind)).sum()) \
        if kind != "regression" else None
    before, metrics_before = _score(dev, logits["checkpoint"], labels)
    after, metrics_after = _score(dev, logits["export"], labels)
    drop = before - after
    result = {"split": dev.split, "examples": int(len(labels)), "max_abs_diff": diff,
              "changed_predictions": changed, "checkpoint_score": before, "export_score": after,
              "score_change": after - before, "checkpoint_metrics": metrics_before, "export_metrics": metrics_after,
              "max_score_drop": max_score_drop}
    if exact:
        if not (diff <= ONNX_TOLERANCE and not changed):
            raise _fail(f"on {dev.split} the ONNX model's logits differ from the checkpoint's by {diff:.2e} "
                        f"(tolerance {ONNX_TOLERANCE:g}), {changed} prediction(s) changed", checkpoint)
        return result
    if not drop <= max_score_drop:
        if not allow_score_drop:
            raise _fail(f"int8 quantization costs {drop:.2f} points of {dev.split} score ({before:.2f} -> "
                        f"{after:.2f}), more than the {max_score_drop:g} tolerated", checkpoint,
                        hint="raise --max-score-drop, or write it anyway with --allow-score-drop")
        result["accepted_by"] = "--allow-score-drop"
    return result


def export_task(checkpoint, task: str, out, *, overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Write ``task`` of the checkpoint folder as a Hugging Face folder at ``out``; return ``out``.

    ``trust_remote_code`` is the user's opt-in; a checkpoint asking for it on its own is refused.
    """
    return Path(export_model(checkpoint, task, out, overwrite=overwrite, trust_remote_code=trust_remote_code)["path"])


def _model_folder(source: Path, role: str, seed, output, overrides, plugins):
    """SOURCE as ``(model folder, recipe or None)``: a checkpoint folder as is; a recipe or run folder: its
    ``role`` model and that recipe version (whose dev split scores the export)."""
    if not source.exists():
        raise CheckpointError("checkpoint folder not found (nor a recipe file or a run folder)", file=source,
                              expected="an mtkd checkpoint folder, a recipe file or a run folder")
    if source.is_dir() and not (source / "recipe.json").is_file():
        return source, None  # a checkpoint folder; load_model says what is wrong with it
    from mtkd.stages.models import choose_model, open_source

    recipe, run_dir = open_source(source, overrides, plugins, output)
    chosen = choose_model(recipe, run_dir, role, seed)
    if len(chosen.dirs) != 1:
        raise CheckpointError("an ensemble is several models; export one of them", path="--model",
                              expected="student, control or teacher:NAME", found=role)
    return chosen.dirs[0], recipe


@click.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", "task", required=True, help="The task whose head to export.")
@click.option("--model", "role", default="student", show_default=True, metavar="ROLE",
              help="With a recipe or run folder: student, control or teacher:NAME of that recipe version "
                   "(student:VARIANT / control:VARIANT with student.variants).")
@click.option("--seed", type=int, default=None, help="Which student/control seed (default: the recipe's first).")
@click.option("--output", type=click.Path(), help="The recipe's run folder (default: <output_dir>/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE", help="Load an extra plugin.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="hf: a transformers folder (default); onnx: model.onnx for ONNX Runtime (needs mtkd[serve]).")
@click.option("--quantize", type=click.Choice(QUANTIZE), default=None,
              help="int8: dynamic int8 quantization of the linear layers (implies --format onnx).")
@click.option("--recipe", "recipe_file", type=click.Path(path_type=Path), default=None,
              help="With a checkpoint folder: score the export on this recipe's dev split of TASK (a recipe "
                   "or run folder SOURCE is its own).")
@click.option("--max-score-drop", type=float, default=MAX_SCORE_DROP, show_default=True,
              help="Refuse an int8 export that loses more dev-score points than this.")
@click.option("--allow-score-drop", is_flag=True, help="Write an int8 export even beyond --max-score-drop.")
@click.option("--threads", type=int, default=None, help="CPU threads for the checks (default: all).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--trust-remote-code", is_flag=True,
              help="Run Python code that the checkpoint's encoder folder ships (only if you trust its source).")
def export_command(source, out, task, role, seed, output, overrides, plugins, fmt, quantize, recipe_file,
                   max_score_drop, allow_score_drop, threads, force, trust_remote_code):
    """Export one task of a model as a folder OUT to serve outside mtkd.

    SOURCE is a checkpoint folder, or a recipe file / run folder whose --model (default: the student) is
    exported. hf: loads with AutoModelForSequenceClassification.from_pretrained(OUT), the same predictions
    (checked before writing). onnx: OUT/model.onnx for ONNX Runtime beside the config and tokenizer, logits
    checked against the checkpoint (1e-4); with --quantize int8 the dev-score change is measured on the
    recipe's dev split and refused beyond --max-score-drop.
    """
    from mtkd.cli import check_writable_folder

    fmt = fmt or ("onnx" if quantize else "hf")
    _check_options(fmt, quantize, max_score_drop)
    check_writable_folder(out, "OUT")
    checkpoint, recipe = _model_folder(source, role, seed, output, overrides, plugins)
    if recipe_file is not None:
        from mtkd.recipe import load_recipe

        recipe = load_recipe(recipe_file, overrides, extra_plugins=plugins)
    dev = dev_set_from_recipe(recipe, task) if recipe is not None and fmt == "onnx" else None
    record = export_model(checkpoint, task, out, format=fmt, quantize=quantize, dev=dev,
                          max_score_drop=max_score_drop, allow_score_drop=allow_score_drop, overwrite=force,
                          threads=threads, trust_remote_code=trust_remote_code)
    path = record["path"]
    what = "ONNX int8" if quantize else ("ONNX" if fmt == "onnx" else "Hugging Face")
    click.echo(f"exported {task!r} to {path} ({what}, {record['size_bytes'] / 2**20:.1f} MiB)")
    d = record.get("dev")
    if d and d.get("checked", True):
        click.echo(f"  {d['split']}: score {d['checkpoint_score']:.2f} -> {d['export_score']:.2f} "
                   f"({d['score_change']:+.2f} points; {d['changed_predictions']} of {d['examples']} predictions "
                   f"changed; max logit difference {d['max_abs_diff']:.1e})")
        if d.get("accepted_by"):
            click.echo(f"  WARNING: beyond the {d['max_score_drop']:g}-point tolerance, written because of "
                       "--allow-score-drop")
    elif d:
        click.echo("  WARNING: the int8 dev score was not checked (--allow-score-drop without --recipe)")
    if fmt == "hf":
        click.echo(f"  load it with: AutoModelForSequenceClassification.from_pretrained({str(path)!r})")
    else:
        click.echo(f"  serve it with: onnxruntime.InferenceSession({str(Path(path) / ONNX_NAME)!r}) "
                   "(inputs: " + ", ".join(record["inputs"]) + ")")
