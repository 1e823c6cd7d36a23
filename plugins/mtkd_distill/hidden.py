"""``hidden-states``: intermediate-layer distillation (TinyBERT / TextBrewer's hidden MSE) on top of a logit loss.

::

    loss = base(logits, labels, soft) + weight * mean over (teacher, pair) of
           MSE(project(h_student[i]), h_teacher[j])      over the non-padding tokens

``layers`` pairs student layer ``i`` with teacher layer ``j`` (0 = the embeddings, L = the last
layer); by default student layer ``i`` takes teacher layer ``round(i * L_t / L_s)`` (1..L_s).
When the widths differ a linear projection per (teacher, pair) maps the student's states to the
teacher's width; it is trained with the student and thrown away afterwards. The teachers named
by ``teachers`` (indices into the recipe's members) run on the student's batch at every step, in
``eval`` mode and without gradients, so they must share the student's tokenizer.

This objective needs the trainer's hidden-state hook (``mtkd.objective_hooks``): the student's
per-layer states and the batch inputs come as the ``hidden_states=`` and ``inputs=`` keywords.
It cannot be a part of a ``mixture``; put the mixture in ``base`` instead.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from mtkd.errors import CheckpointError, RecipeError
from mtkd.params import Params
from mtkd.plugins import get_registries

from ._common import name_only, params_error
from .objectives import _split, _validate_part


class HiddenStatesParams(Params):
    base: dict[str, Any] = Field(default_factory=lambda: {"type": "mixture"}, validate_default=True,
                                 description="the loss on the logits, e.g. {type: mixture, alpha: 0.5}")
    layers: list[tuple[int, int]] | None = Field(
        None, description="[[student layer, teacher layer], ...] (0 = embeddings); default: student layer i "
                          "matches teacher layer round(i * teacher layers / student layers)")
    teachers: list[int] = Field(default_factory=lambda: [0], min_length=1,
                                description="the teacher members (indices) whose hidden states are matched")
    weight: float = Field(1.0, ge=0, description="weight of the hidden-state term")

    _name_only = field_validator("base", mode="before")(name_only)

    @field_validator("base")
    @classmethod
    def _check_base(cls, value):
        return _validate_part(value, "base")  # refuses a hidden-state loss as the base

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value):
        if value is not None:
            if not value:
                raise ValueError("give at least one [student layer, teacher layer] pair, or leave `layers` out")
            if any(i < 0 or j < 0 for i, j in value):
                raise ValueError("layer numbers start at 0 (the embeddings)")
        return value

    @model_validator(mode="after")
    def _unique_teachers(self):
        if any(t < 0 for t in self.teachers) or len(set(self.teachers)) != len(self.teachers):
            raise params_error(("teachers",), "teacher indices must be distinct and >= 0", found=self.teachers)
        return self


def default_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Uniform mapping: student layer i -> teacher layer round(i * L_t / L_s), for i = 1..L_s."""
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the non-padding tokens (``mask`` [B, T]) and the hidden width."""
    m = mask.to(student.dtype).unsqueeze(-1)
    return ((student - teacher) ** 2 * m).sum() / (m.sum().clamp_min(1.0) * student.shape[-1])


class HiddenStates:
    """A logit loss plus the MSE between chosen student and teacher hidden layers (projected when widths differ)."""

    uses_hidden_states = True

    def __init__(self, params: HiddenStatesParams | None = None):
        self.params = params or HiddenStatesParams()
        self.base = get_registries().losses.create(*_split(self.params.base), path="base")
        self.task_types = frozenset(self.base.task_types)
        self.uses_soft_targets = bool(self.base.uses_soft_targets)
        self.handles_unlabelled = bool(getattr(self.base, "handles_unlabelled", False))
        self.teachers: list[nn.Module] = []
        self.pairs: list[tuple[int, int]] = []
        self.projections: nn.ModuleDict | None = None

    def attach(self, *, student, teachers, device) -> nn.Module | None:
        """Take the chosen teachers (``mtkd.objective_hooks.TeacherModels``), check the pairs, build the projections."""
        from mtkd.data import tokenizer_fingerprint

        where = "student.objective"
        if not len(teachers):
            raise RecipeError("the hidden-state objective needs the run's teachers, and this job has none",
                              path=where, expected="teachers.members (soft targets from a file bring no hidden states)")
        missing = [k for k in self.params.teachers if k >= len(teachers)]
        if missing:
            raise RecipeError(f"hidden-states names teacher(s) {missing}, but the run has {len(teachers)}",
                              path=f"{where}.teachers", expected=f"indices below {len(teachers)}",
                              found=self.params.teachers)
        encoder = student.encoder
        self.teachers = [teachers.load(k) for k in self.params.teachers]
        for k, teacher in zip(self.params.teachers, self.teachers):
            if tokenizer_fingerprint(teacher.encoder.tokenizer) != tokenizer_fingerprint(encoder.tokenizer):
                raise CheckpointError("the teacher's tokenizer differs from the student's: hidden states of the "
                                      "same batch cannot be matched", file=teachers.folders[k],
                                      path=f"{where}.teachers", expected="teachers and student on the same tokenizer")
        t_layers = {t.encoder.num_layers for t in self.teachers}
        pairs = self.params.layers or default_pairs(encoder.num_layers, min(t_layers))
        bad = [(i, j) for i, j in pairs if i > encoder.num_layers or j > min(t_layers)]
        if bad:
            raise RecipeError(f"hidden-states layer pairs {bad} are out of range", path=f"{where}.layers",
                              expected=f"student layers 0..{encoder.num_layers}, teacher layers 0..{min(t_layers)}",
                              found=[list(p) for p in pairs])
        self.pairs = [tuple(p) for p in pairs]
        projections = nn.ModuleDict()
        for k, teacher in zip(self.params.teachers, self.teachers):
            if teacher.encoder.hidden_size != encoder.hidden_size:
                for i, j in self.pairs:
                    projections[f"t{k}_s{i}_t{j}"] = nn.Linear(encoder.hidden_size, teacher.encoder.hidden_size)
        self.projections = projections.to(device) if len(projections) else None
        return self.projections

    def hidden_loss(self, hidden_states, inputs: dict) -> torch.Tensor:
        mask = inputs["attention_mask"]
        terms = []
        for k, teacher in zip(self.params.teachers, self.teachers):
            with torch.no_grad():
                t_hidden = teacher.encoder(inputs["input_ids"], mask, token_type_ids=inputs.get("token_type_ids"),
                                           output_hidden_states=True).hidden_states
            for i, j in self.pairs:
                s = hidden_states[i].float()
                key = f"t{k}_s{i}_t{j}"
                if self.projections is not None and key in self.projections:
                    s = self.projections[key](s)
                terms.append(masked_mse(s, t_hidden[j].float(), mask))
        return torch.stack(terms).mean()

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0, hidden_states=None, inputs=None):
        if hidden_states is None or inputs is None:
            raise RecipeError("`hidden-states` got no hidden states: it must be the task's objective itself "
                              "(not a part of a mixture), in a trainer with the hidden-state hook",
                              path="student.objective")
        if not self.teachers:
            raise RecipeError("`hidden-states` was not attached to its teachers before training",
                              path="student.objective")
        base = self.base(logits, labels, soft, progress=progress)
        if self.params.weight == 0:
            return base
        return base + self.params.weight * self.hidden_loss(hidden_states, inputs)

