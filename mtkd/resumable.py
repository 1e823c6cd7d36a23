"""A job's resumable state, saved and loaded without pickle.

``checkpoint/`` (swapped into place whole; complete once ``trainer_state.json``, written last, exists)::

    model.safetensors                 the weights (not under DeepSpeed: its engine holds them)
    optimizer.safetensors/.json       the optimizer's tensors, and the rest of its state as JSON
    rng-<rank>.safetensors/.json      every process's torch (CPU, CUDA) RNG states; Python's and NumPy's as JSON
    deepspeed/                        under DeepSpeed only: the engine's own files, read with
                                      ``torch.load(weights_only=True)`` (tensors and plain containers only)
    extras.safetensors                trainable parts of the objectives (hidden-state projections), if any
    trainer_state.json                step, epoch, loader position, scheduler, dev history, best score

Nothing is unpickled on load: a file planted in the folder (``*.pkl``, ``*.bin``) is never read,
and a damaged or truncated file is a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError

STATE_NAME = "trainer_state.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer"
EXTRAS_NAME = "extras.safetensors"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"


# ---------------------------------------------------------------- nested state <-> tensors + JSON


def flatten(obj, tensors: dict, prefix: str = "t"):
    """``obj`` (dicts, lists, tuples, tensors, numbers, strings) as JSON, its tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(obj, dict):
        return {"$map": [[flatten(k, tensors, prefix), flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [flatten(v, tensors, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot save a {type(obj).__name__} in a resumable checkpoint")


def unflatten(obj, tensors: dict):
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "$tensor" in obj:
            return tensors[obj["$tensor"]]
        if "$tuple" in obj:
            return tuple(unflatten(v, tensors) for v in obj["$tuple"])
        return {_hashable(unflatten(k, tensors)): unflatten(v, tensors) for k, v in obj["$map"]}
    return obj


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _write_state(folder: Path, name: str, obj) -> None:
    from safetensors.torch import save_file

    tensors: dict = {}
    skeleton = flatten(obj, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def _read_state(folder: Path, name: str):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / f"{name}.safetensors"
    try:
        tensors = load_file(str(path))
        path = folder / f"{name}.json"
        return unflatten(json.loads(path.read_text(encoding="utf-8")), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError("the resumable checkpoint is damaged or incomplete", file=path,
                           found=f"{type(exc).__name__}: {str(exc)[:300]}",
                           hint=f"delete {path.parent} to restart the job from step 0")


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- DeepSpeed's files, read weights-only


def _weights_only_engine():
    """DeepSpeed's torch checkpoint engine, loading with ``weights_only=True``: tensors and plain
    containers (and the few DeepSpeed value types listed) load, any other pickled object is refused."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class WeightsOnly(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            from deepspeed.runtime.fp16.loss_scaler import LossScaler
            from deepspeed.runtime.zero.config import ZeroStageEnum
            from deepspeed.utils.tensor_fragment import fragment_address

            try:
                with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc:  # an unpickling error is the refusal of a foreign object
                raise _damaged(Path(path), exc) from None

    return WeightsOnly()


# ---------------------------------------------------------------- save and load


def save(folder: Path, *, accelerator, model, optimizer, state: dict, extras=None) -> None:
    """Write the resumable state into ``folder`` (a fresh temporary folder); every rank calls it.

    ``extras``: a module trained beside the model but not part of it (``mtkd.objective_hooks``)."""
    main = accelerator.is_main_process
    deepspeed = accelerator.distributed_type.value == "DEEPSPEED"
    if main:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if deepspeed:
        model.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)  # collective
    elif main:
        from safetensors.torch import save_model

        from .strategies import unwrap

        save_model(unwrap(accelerator, model), str(folder / MODEL_NAME))
        _write_state(folder, OPTIMIZER_NAME, optimizer.state_dict())
    if main and extras is not None and len(extras):
        from safetensors.torch import save_model as save_module

        save_module(extras, str(folder / EXTRAS_NAME))
    _write_state(folder, f"rng-{accelerator.process_index}", rng_state())
    accelerator.wait_for_everyone()
    if main:
        tmp = folder / (STATE_NAME + ".tmp")
        tmp.write_text(json.dumps(state, indent=1, default=float), encoding="utf-8")
        os.replace(tmp, folder / STATE_NAME)


def load(folder: Path, *, accelerator, model, optimizer, extras=None) -> dict:
    """Restore what :func:`save` wrote into the prepared model and optimizer; returns the trainer state."""
    try:
        state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(folder / STATE_NAME, exc) from None
    if accelerator.distributed_type.value == "DEEPSPEED":
        model.checkpoint_engine = _weights_only_engine()
        path, _ = model.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        if path is None:
            raise _damaged(folder / DEEPSPEED_DIR, FileNotFoundError("no DeepSpeed state"))
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        from .strategies import unwrap

        try:
            load_model(unwrap(accelerator, model), str(folder / MODEL_NAME), strict=True)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise _damaged(folder / MODEL_NAME, exc) from None
        saved = _read_state(folder, OPTIMIZER_NAME)
        try:
            optimizer.load_state_dict(saved)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise _damaged(folder / f"{OPTIMIZER_NAME}.json", exc) from None
    if extras is not None and len(extras):
        from safetensors import SafetensorError
        from safetensors.torch import load_model as load_module

        try:
            load_module(extras, str(folder / EXTRAS_NAME), strict=True)
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise _damaged(folder / EXTRAS_NAME, exc) from None
    rng_name = f"rng-{accelerator.process_index}"
    try:
        set_rng_state(_read_state(folder, rng_name))
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _damaged(folder / f"{rng_name}.json", exc) from None
    return state


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a finished temporary folder into place; never leaves no copy at all."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def recover(ckpt: Path) -> None:
    """A kill in the middle of :func:`replace_dir` leaves the checkpoint as ``.tmp`` (complete once its
    trainer_state.json exists) or as ``.old``; put it back in place."""
    if ckpt.exists():
        return
    for candidate in (ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")):
        if (candidate / STATE_NAME).exists():
            os.replace(candidate, ckpt)
            return
