"""``mtkd export``: one task of a checkpoint as a Hugging Face ``AutoModelForSequenceClassification`` folder.

Only combinations that the standard classes reproduce exactly are exported: an ``hf`` encoder
with pooler pooling (BERT-family: pooled [CLS] -> dropout -> ``classifier``) and a ``linear``
head. Anything else (a SAN head, cls/mean pooling, a RoBERTa-style classification head) is an
error rather than a model that predicts differently. The export is checked numerically before
it is written.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import click

from mtkd.errors import CheckpointError

#: Largest difference tolerated between the checkpoint's and the exported model's logits.
TOLERANCE = 1e-5

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


def export_task(checkpoint, task: str, out, *, overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Write ``task`` of the checkpoint folder as a Hugging Face folder at ``out``; return ``out``.

    ``trust_remote_code`` is the user's opt-in; a checkpoint asking for it on its own is refused.
    """
    from mtkd.model import load_model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CheckpointError("the output folder exists and is not empty", file=out,
                              hint="choose another folder or pass --force to replace it")
    model = load_model(checkpoint, allow_code=trust_remote_code)
    hf_model = build_sequence_classifier(model, task, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        hf_model.save_pretrained(tmp)
        model.encoder.tokenizer.save_pretrained(tmp)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _model_folder(source: Path, role: str, seed, output, overrides, plugins) -> Path:
    """SOURCE as a model folder: a checkpoint folder as is; a recipe or run folder: its ``role`` model."""
    if not source.exists():
        raise CheckpointError("checkpoint folder not found (nor a recipe file or a run folder)", file=source,
                              expected="an mtkd checkpoint folder, a recipe file or a run folder")
    if source.is_dir() and not (source / "recipe.json").is_file():
        return source  # a checkpoint folder; load_model says what is wrong with it
    from mtkd.cli import chosen_model

    chosen = chosen_model(source, role, seed, output, overrides, plugins)
    if len(chosen.dirs) != 1:
        raise CheckpointError("an ensemble is several models; export one of them", path="--model",
                              expected="student, control or teacher:NAME", found=role)
    return chosen.dirs[0]


@click.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", "task", required=True, help="The task whose head to export.")
@click.option("--model", "role", default="student", show_default=True, metavar="ROLE",
              help="With a recipe or run folder: student, control or teacher:NAME of that recipe version.")
@click.option("--seed", type=int, default=None, help="Which student/control seed (default: the recipe's first).")
@click.option("--output", type=click.Path(), help="The recipe's run folder (default: <output_dir>/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE", help="Load an extra plugin.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--trust-remote-code", is_flag=True,
              help="Run Python code that the checkpoint's encoder folder ships (only if you trust its source).")
def export_command(source, out, task, role, seed, output, overrides, plugins, force, trust_remote_code):
    """Export one task of a model as a Hugging Face model folder OUT.

    SOURCE is a checkpoint folder, or a recipe file / run folder whose --model (default: the student) is
    exported. The folder loads with AutoModelForSequenceClassification.from_pretrained(OUT) and gives the
    same predictions (checked before writing).
    """
    from mtkd.cli import check_writable_folder

    check_writable_folder(out, "OUT")
    checkpoint = _model_folder(source, role, seed, output, overrides, plugins)
    path = export_task(checkpoint, task, out, overwrite=force, trust_remote_code=trust_remote_code)
    click.echo(f"exported {task!r} to {path}")
    click.echo(f"  load it with: AutoModelForSequenceClassification.from_pretrained({str(path)!r})")
