"""What the trainer does for objectives that need more than the student's logits.

An objective with ``uses_hidden_states = True`` (see ``mtkd.components.HiddenStateObjective``)
gets, at every step, the student's per-layer hidden states and the batch's model inputs (so it can
run the teachers on the same tokens). Before training, its ``attach`` is called once with the
student model and the run's teacher model folders; the trainable modules it returns (e.g. a
projection between hidden widths) are trained with the student and saved in the resumable
checkpoint, but never in the student's model folder: they exist for training only.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import RecipeError


def wants_hidden_states(objective) -> bool:
    return bool(getattr(objective, "uses_hidden_states", False))


class TeacherModels:
    """The run's teacher model folders, each loaded at most once per job (frozen, in eval mode, on ``device``)."""

    def __init__(self, folders: list[Path], device, *, allow_code: bool = False):
        self.folders = [Path(p) for p in folders]
        self.device = device
        self.allow_code = allow_code  # the user's opt-in to components that run code (mtkd.model.load_model)
        self._loaded: dict[int, nn.Module] = {}

    def __len__(self) -> int:
        return len(self.folders)

    def load(self, index: int) -> nn.Module:
        if index not in self._loaded:
            from .model import load_model

            model = load_model(self.folders[index], allow_code=self.allow_code).to(self.device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._loaded[index] = model
        return self._loaded[index]


def attach_objectives(objectives: dict, student, teacher_models: list[Path], device, *,
                      allow_code: bool = False) -> nn.ModuleDict:
    """Call ``attach`` on each objective that uses hidden states; return their trainable modules by task.

    Objectives of different tasks share the loaded teachers (one copy of each per job).
    """
    extras = nn.ModuleDict()
    teachers = TeacherModels(teacher_models, device, allow_code=allow_code)
    for task, objective in objectives.items():
        if not wants_hidden_states(objective):
            continue
        module = objective.attach(student=student, teachers=teachers, device=device)
        if module is not None and any(p.requires_grad for p in module.parameters()):
            extras[task] = module
    return extras.to(device)


def check_extras_supported(extras: nn.ModuleDict, accelerator) -> None:
    """Trainable objective modules live outside the wrapped model: one process, no DeepSpeed/FSDP, for now."""
    if not len(extras):
        return
    distributed = accelerator.num_processes > 1 or accelerator.distributed_type.value in ("DEEPSPEED", "FSDP")
    if distributed:
        raise RecipeError("a hidden-state objective with a learned projection trains on one process only",
                          path="student.objective", found=f"{accelerator.num_processes} processes, "
                                                          f"{accelerator.distributed_type.value}",
                          expected="scaling.nproc: 1 and strategy auto/ddp, or student and teacher encoders "
                                   "of the same width (no projection to train)")


def extra_param_group(extras: nn.ModuleDict, training: dict) -> dict:
    """The optimizer's parameter group for the objectives' modules (same lr and weight decay as the model)."""
    return {"params": [p for p in extras.parameters() if p.requires_grad], "lr": training["lr"],
            "weight_decay": training["weight_decay"]}


def objective_kwargs(objective, model_output, inputs: dict):
    """``(logits, extra keyword arguments)`` for the objective, from what the model returned."""
    if wants_hidden_states(objective):
        logits, hidden = model_output
        return logits, {"hidden_states": hidden, "inputs": inputs}
    return model_output, {}
