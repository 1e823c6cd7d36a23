"""Multi-task models: one shared encoder and a head per task (MT-DNN), built from registered components.

A checkpoint is a folder::

    model.safetensors   every weight (safetensors only: loading never unpickles)
    mtkd_model.json     the component spec, the tasks' types/labels, the format version
    encoder/            what the encoder needs to rebuild its architecture (config, tokenizer)

It is written into a temporary sibling folder and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, RecipeError
from .plugins import get_registries
from .registry import split_spec

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "mtkd_model.json"
ENCODER_DIR = "encoder"


class MultiTaskModel(nn.Module):
    """A shared encoder and ``heads[task]``; a task whose ``head_task`` is set uses that task's head."""

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], spec: dict,
                 task_info: dict[str, dict]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.spec = copy.deepcopy(spec)
        self.task_info = copy.deepcopy(task_info)

    @property
    def tasks(self) -> list[str]:
        return list(self.task_info)

    def head_name(self, task: str) -> str:
        """The name of the head that scores ``task``."""
        try:
            info = self.task_info[task]
        except KeyError:
            known = ", ".join(self.task_info)
            raise KeyError(f"task {task!r} is not part of this model (tasks: {known})") from None
        return info.get("head_task") or task

    def forward(self, task: str, input_ids, attention_mask, token_type_ids=None,
                output_hidden_states: bool = False):
        """Logits [B, C] for ``task``; ``(logits, hidden_states)`` when ``output_hidden_states``."""
        out = self.encoder(input_ids, attention_mask, token_type_ids=token_type_ids,
                           output_hidden_states=output_hidden_states)
        logits = self.heads[self.head_name(task)](out.pooled, out.sequence, attention_mask, token_type_ids)
        if output_hidden_states:
            return logits, out.hidden_states
        return logits

    def forward_with_hidden(self, task: str, input_ids, attention_mask, token_type_ids=None):
        """``(logits, hidden_states)``: the encoder's per-layer states, for intermediate-layer objectives."""
        return self.forward(task, input_ids, attention_mask, token_type_ids, output_hidden_states=True)


def task_info_of(tasks: dict[str, Any]) -> dict[str, dict]:
    """What a checkpoint records of each task: ``task_type``, ``num_outputs``, ``labels``, ``head_task``."""
    return {name: {"task_type": task.task_type, "num_outputs": int(task.num_outputs),
                   "labels": list(task.labels) if task.labels is not None else None,
                   "head_task": task.head_task}
            for name, task in tasks.items()}


def _check_tasks(task_info: dict[str, dict]) -> None:
    for name, info in task_info.items():
        if not name or "." in name:
            raise RecipeError(f"task name {name!r} cannot name a head", path="tasks",
                              expected="a non-empty name without dots", found=name)
        target = info.get("head_task")
        if target is None:
            continue
        if target not in task_info:
            raise RecipeError(f"task {name!r} is scored with the head of {target!r}, which is not in the run",
                              path="tasks", expected=f"add {target!r} to the recipe's tasks", found=target)
        if task_info[target].get("head_task"):
            raise RecipeError(f"task {name!r} borrows the head of {target!r}, which itself borrows a head",
                              path="tasks", found=target)
        if task_info[target]["num_outputs"] != info["num_outputs"]:
            raise RecipeError(f"task {name!r} has {info['num_outputs']} outputs but the head of {target!r} "
                              f"has {task_info[target]['num_outputs']}", path="tasks", found=target)


def _build(spec: dict, task_info: dict[str, dict], encoder_params: dict | None = None) -> MultiTaskModel:
    registries = get_registries()
    _check_tasks(task_info)
    enc_type, enc_params = split_spec(spec.get("encoder"), path="encoder")
    enc_params.update(encoder_params or {})
    try:
        encoder = registries.encoders.create(enc_type, enc_params, path="encoder")
    except RecipeError as exc:  # an encoder's own check (config_overrides.x): say it is the encoder's key
        if exc.path and not exc.path.startswith("encoder"):
            exc.path = f"encoder.{exc.path}"
        raise
    head_specs = spec.get("heads") or {}
    heads = {}
    for name, info in task_info.items():
        if info.get("head_task"):
            continue
        head_spec = head_specs.get(name, head_specs.get("default"))
        if head_spec is None:
            raise RecipeError(f"no head for task {name!r}", path=f"heads.{name}",
                              expected="a `default` head or one for this task, e.g. {type: linear}")
        head_type, head_params = split_spec(head_spec, path=f"heads.{name}")
        heads[name] = registries.heads.create(head_type, head_params, encoder.hidden_size,
                                              info["num_outputs"], path=f"heads.{name}")
    return MultiTaskModel(encoder, heads, spec, task_info)


def build_model(spec: dict, tasks: dict[str, Any]) -> MultiTaskModel:
    """A model for ``tasks`` (name -> Task).

    ``spec`` is ``{"encoder": {"type": ..., **params}, "heads": {"default": {...}, "<task>": {...}}}``;
    a task gets ``heads.get(task, heads["default"])``, a task with ``head_task`` no head of its own.
    """
    return _build(spec, task_info_of(tasks))


def _jsonable(obj):
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing an existing folder only once the new one is complete."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _tied_names(model: nn.Module) -> set[str]:
    """Names that repeat a tensor already saved under another name (tied weights).

    Found by object identity, which also holds for sharded (FSDP/ZeRO) placeholders.
    """
    seen: set[int] = set()
    tied = set()
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        if id(tensor) in seen:
            tied.add(name)
        seen.add(id(tensor))
    return tied


def _tensors_to_save(model: nn.Module, state_dict: dict | None) -> dict[str, torch.Tensor]:
    state = model.state_dict() if state_dict is None else state_dict
    tied = _tied_names(model)
    out: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in state.items():
        if name in tied:
            continue  # loading fills it from its twin (safetensors cannot store shared storage twice)
        tensor = tensor.detach().to("cpu").contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if tensor.numel() and ptr in storages:
            tensor = tensor.clone()  # views of one storage under different names
        storages.add(ptr)
        out[name] = tensor
    return out


#: ``training.save_dtype`` names -> the dtype kept model folders store floating-point weights in.
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _cast_for_saving(tensors: dict[str, torch.Tensor], dtype: str, directory: Path) -> dict[str, torch.Tensor]:
    """Floating-point tensors in ``dtype`` (integer buffers untouched). A value the dtype cannot hold
    (fp16 overflows above 65504) is an error, never an infinity written to disk."""
    target = SAVE_DTYPES[dtype]
    out = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != target:
            cast = tensor.to(target)
            if not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"a weight does not fit in {dtype}", file=directory, path=name,
                                      expected=f"values within {dtype}'s range",
                                      found=f"max |w| = {tensor.abs().max().item():.4g}",
                                      hint="set training.save_dtype: fp32 (or bf16, which has fp32's range)")
            tensor = cast
        out[name] = tensor
    return out


def save_model(model: MultiTaskModel, directory, *, state_dict: dict | None = None, dtype: str = "fp32") -> Path:
    """Write the checkpoint folder (weights, spec, encoder config) atomically; return its path.

    ``state_dict`` replaces ``model.state_dict()`` when the weights were gathered elsewhere
    (FSDP / DeepSpeed full state dicts); ``model`` still supplies the spec and the encoder config.
    ``dtype`` (``training.save_dtype``) is what the floating-point weights are stored in; loading
    always builds the model in fp32 and casts them back, so a stored folder is exactly what it scores.
    """
    from safetensors.torch import save_file

    if not isinstance(model, MultiTaskModel):
        raise TypeError("save_model expects a MultiTaskModel (unwrap DDP/accelerate first), "
                        f"got {type(model).__name__}")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        tensors = _cast_for_saving(_tensors_to_save(model, state_dict), dtype, directory)
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "mtkd_format": str(FORMAT_VERSION)})
        meta = {"format_version": FORMAT_VERSION, "mtkd_version": __version__, "spec": model.spec,
                "task_info": model.task_info, "weights_dtype": dtype}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        model.encoder.save_config(tmp / ENCODER_DIR)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_checkpoint_meta(directory) -> dict:
    """The checkpoint's ``mtkd_model.json``, checked; CheckpointError when the folder is not a checkpoint."""
    directory = Path(directory)
    expected = f"a folder written by mtkd ({WEIGHTS_NAME}, {META_NAME}, {ENCODER_DIR}/)"
    if not directory.is_dir():
        raise CheckpointError("checkpoint folder not found", file=directory, expected=expected)
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    for name in (META_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            hint = (f"mtkd loads safetensors only and never unpickles {', '.join(pickled)}" if pickled else
                    "was the run interrupted before its first checkpoint?")
            raise CheckpointError(f"not an mtkd checkpoint: {name} is missing", file=directory,
                                  expected=expected, hint=hint)
    try:
        meta = json.loads((directory / META_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{META_NAME} is not valid JSON: {exc}", file=directory / META_NAME,
                              expected="the JSON description mtkd writes beside the weights") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError("unsupported checkpoint format", file=directory / META_NAME,
                              path="format_version", expected=str(FORMAT_VERSION), found=found,
                              hint="load it with the mtkd version that wrote it")
    for key in ("spec", "task_info"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{META_NAME} has no {key!r} mapping", file=directory / META_NAME, path=key)
    return meta


def _trust_switches(spec: dict):
    """``(where, component, parameter)`` for every trust opt-in (``mtkd.params.trust_field``) the spec's
    encoder and heads declare."""
    from .params import trust_params

    registries = get_registries()
    parts = [("encoder", registries.encoders, spec.get("encoder"))]
    heads = spec.get("heads")
    parts += [(f"heads.{k}", registries.heads, v) for k, v in (heads.items() if isinstance(heads, dict) else ())]
    for where, registry, component in parts:
        if isinstance(component, dict) and component.get("type") in registry:
            for name in trust_params(registry.get(component["type"]).params):
                yield where, component, name


def spec_allows_code(spec: dict) -> bool:
    """Whether the user's model spec (from a recipe) opts in to running code that models ship."""
    return any(bool(component.get(name)) for _, component, name in _trust_switches(spec))


def recipe_allows_code(recipe) -> bool:
    """Whether the recipe opts in, in its encoder or in any teacher's or the student's encoder."""
    from .recipe import variation_config

    if not getattr(recipe, "user_trusted", True):  # read from a run folder: not the user's say
        return False
    r = recipe.resolved
    variations = [m for m in (recipe.model.teachers.members if recipe.model.teachers else [])]
    variations += [recipe.model.student] if recipe.model.student is not None else []
    specs = [{"encoder": r["encoder"], "heads": r["heads"]}]
    specs += [{k: v for k, v in variation_config(recipe, v).items() if k != "training"} for v in variations]
    return any(spec_allows_code(spec) for spec in specs)


def refuse_untrusted_code(spec: dict, allow_code: bool, meta_file: Path) -> dict:
    """The checkpoint's spec with every trust opt-in set by the user, never by the file: a checkpoint
    that asks to run code is refused unless the user allowed it."""
    spec = copy.deepcopy(spec)
    for where, component, name in _trust_switches(spec):
        if component.get(name) and not allow_code:
            raise CheckpointError(
                f"the checkpoint asks to run code that it ships ({where}.{name}: true); mtkd never takes that "
                "from a checkpoint", file=meta_file, path=f"spec.{where}.{name}",
                expected=f"{name}: false, or your own opt-in", found=True,
                hint=f"only if you trust where this checkpoint came from: set `{where}.{name}: true` in your "
                     f"recipe, or pass --{name.replace('_', '-')} to `mtkd export`")
        component[name] = bool(allow_code)
    return spec


def load_model(directory, map_location="cpu", *, allow_code: bool = False) -> MultiTaskModel:
    """Rebuild the model a checkpoint folder describes and load its weights (safetensors, never pickle).

    ``allow_code`` is the user's opt-in (recipe or command line) to components that run code a model
    folder ships (``trust_remote_code``); the checkpoint's own ``mtkd_model.json`` never switches it on.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_safetensors

    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    spec = refuse_untrusted_code(meta["spec"], allow_code, directory / META_NAME)
    # The encoder rebuilds its architecture from the folder it wrote; the weights come next.
    model = _build(spec, meta["task_info"],
                   encoder_params={"model": str(directory / ENCODER_DIR), "pretrained": False})
    weights = directory / WEIGHTS_NAME
    try:
        load_safetensors(model, str(weights), strict=True, device="cpu")
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().split("\n")
        raise CheckpointError("the checkpoint's weights do not match the model its spec describes",
                              file=weights, found=" ".join(first[:3])[:500],
                              hint="the file may be truncated or come from another model") from None
    return model.to(map_location).eval()


def copy_encoder_weights(dst_model: nn.Module, src_model: nn.Module) -> int:
    """Copy the source encoder's tensors into the destination's, by name (a shallower student gets the
    teacher's lower layers). Names the destination lacks are skipped; a shape mismatch is a
    CheckpointError, since a half-copied encoder of another width would be a silent mistake.

    Returns the number of tensors copied.
    """
    dst = getattr(dst_model, "encoder", dst_model)
    src = getattr(src_model, "encoder", src_model)
    dst_state = dst.state_dict()
    src_state = {name: tensor for name, tensor in src.state_dict().items() if name in dst_state}
    mismatched = [f"{name}: {tuple(tensor.shape)} -> {tuple(dst_state[name].shape)}"
                  for name, tensor in src_state.items() if tensor.shape != dst_state[name].shape]
    if mismatched:
        raise CheckpointError("cannot copy the encoder: tensor shapes differ",
                              found="; ".join(mismatched[:3]),
                              expected="encoders of the same width (only the number of layers may differ)")
    with torch.no_grad():
        for name, tensor in src_state.items():
            dst_state[name].copy_(tensor)  # state_dict tensors share storage with the parameters
    return len(src_state)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def compile_encoder(model: nn.Module, enabled) -> bool:
    """``training.compile``: ``torch.compile`` (inductor) the encoder's network in place; returns whether it did.

    Dynamic shapes (``dynamic=True``): the batch and sequence sizes are symbolic from the first call, so
    length-grouped batches of varying length reuse one graph instead of recompiling every step. In
    place (``nn.Module.compile``), so parameter names, checkpoints and DDP wrapping are unchanged; the
    compiled forward serves training and evaluation alike (grad mode is one recompile). The compile
    time, paid on the first steps, is ``compile_seconds()``.
    """
    if not enabled:
        return False
    encoder = getattr(model, "encoder", model)
    getattr(encoder, "model", encoder).compile(backend="inductor", dynamic=True)
    return True


def compile_seconds() -> float:
    """Seconds this process has spent in torch.compile so far: dynamo's timer of every (re)compiled frame
    (``_compile.compile_inner``, which holds the forward graph's inductor compile) plus the backward graphs
    that AOT autograd compiles lazily on the first backward (``backward._backward_impl``); timers nested in
    those two are not added again."""
    from torch._dynamo.utils import compilation_time_metrics as metrics

    return float(sum(sum(metrics.get(k, ())) for k in ("_compile.compile_inner", "backward._backward_impl")))
