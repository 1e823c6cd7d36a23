"""The `hidden-states` objective: layer pairing, projections, hand-computed losses on tiny models, and a real
training job through the trainer's hidden-state hook."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_CONFIG, classification_task, requires_minilm, tiny_batch, tiny_model
from mtkd_distill.hidden import default_pairs, masked_mse

from mtkd.errors import CheckpointError, RecipeError
from mtkd.model import load_model, save_model
from mtkd.objective_hooks import TeacherModels, attach_objectives

pytestmark = requires_minilm


@pytest.fixture
def losses(registries):
    return registries.losses


def test_default_pairs_spread_the_student_over_the_teacher():
    assert default_pairs(2, 6) == [(1, 3), (2, 6)]
    assert default_pairs(3, 12) == [(1, 4), (2, 8), (3, 12)]
    assert default_pairs(2, 2) == [(1, 1), (2, 2)]


def test_masked_mse_by_hand():
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    t = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    # only the first token counts: (1 + 4) / (1 token * 2 dims)
    assert masked_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(2.5)
    assert masked_mse(s, t, torch.tensor([[1, 1]])).item() == pytest.approx(30 / 4)


def test_params_are_checked_when_the_recipe_is_read(losses):
    reg = losses.get("hidden-states")
    assert reg.plugin == "mtkd_distill" and reg.description
    obj = losses.create("hidden-states", {})
    assert obj.uses_hidden_states and obj.uses_soft_targets and obj.task_types == frozenset({"classification"})
    assert not losses.create("hidden-states", {"base": "ce"}).uses_soft_targets
    with pytest.raises(RecipeError, match="cannot be the base part"):
        losses.validate_params("hidden-states", {"base": {"type": "hidden-states"}})
    with pytest.raises(RecipeError, match="cannot be the soft part"):
        losses.validate_params("mixture", {"soft": {"type": "hidden-states"}})
    with pytest.raises(RecipeError, match="start at 0"):
        losses.validate_params("hidden-states", {"layers": [[1, -1]]})
    with pytest.raises(RecipeError, match="distinct"):
        losses.validate_params("hidden-states", {"teachers": [0, 0]})


@pytest.fixture
def teacher_dir(tmp_path, registries):
    tasks = {"pair": classification_task("pair")}
    teacher = tiny_model(tasks, seed=3)
    return save_model(teacher, tmp_path / "teacher"), tasks


def test_a_copy_of_the_teacher_has_zero_hidden_loss_and_the_base_loss_only(losses, teacher_dir):
    folder, tasks = teacher_dir
    student = load_model(folder)
    obj = losses.create("hidden-states", {"base": "ce", "layers": [[0, 0], [1, 1], [2, 2]], "weight": 5.0})
    assert attach_objectives({"pair": obj}, student, [folder], "cpu") is not None  # an empty ModuleDict
    assert obj.projections is None  # same width: nothing to learn
    batch = tiny_batch(student.encoder.tokenizer)
    labels = torch.tensor([0, 1, 1, 0])
    logits, hidden = student("pair", **batch, output_hidden_states=True)
    loss = obj(logits, labels, None, hidden_states=hidden, inputs=batch)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(ce.item(), abs=1e-6)


def test_hidden_loss_by_hand_with_a_projection_and_gradients(losses, teacher_dir):
    folder, tasks = teacher_dir
    teacher = load_model(folder)
    wide = {**TINY_CONFIG, "hidden_size": 48, "num_hidden_layers": 1, "intermediate_size": 64}
    student = tiny_model(tasks, seed=4, config_overrides=wide)
    obj = losses.create("hidden-states", {"base": "ce", "weight": 2.0})  # default pairs: student 1 -> teacher 2
    extras = attach_objectives({"pair": obj}, student, [folder], "cpu")
    assert list(extras["pair"].keys()) == ["t0_s1_t2"]
    proj = extras["pair"]["t0_s1_t2"]
    assert (proj.in_features, proj.out_features) == (48, 32)
    batch = tiny_batch(student.encoder.tokenizer)
    labels = torch.tensor([0, 1, 1, 0])
    logits, hidden = student("pair", **batch, output_hidden_states=True)
    loss = obj(logits, labels, None, hidden_states=hidden, inputs=batch)
    with torch.no_grad():
        t_hidden = teacher.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                   output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].float()
    diff = (proj(hidden[1]) - t_hidden[2]) ** 2 * mask[..., None]
    expected = torch.nn.functional.cross_entropy(logits, labels) + 2.0 * diff.sum() / (mask.sum() * 32)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.encoder.parameters())
    assert all(p.grad is None for p in obj.teachers[0].parameters())  # frozen teacher


def test_attach_errors(losses, teacher_dir):
    folder, tasks = teacher_dir
    student = tiny_model(tasks, seed=5, num_layers=1)
    with pytest.raises(RecipeError, match="needs the run's teachers"):
        attach_objectives({"pair": losses.create("hidden-states", {})}, student, [], "cpu")
    with pytest.raises(RecipeError, match=r"names teacher\(s\) \[1\]"):
        attach_objectives({"pair": losses.create("hidden-states", {"teachers": [1]})}, student, [folder], "cpu")
    with pytest.raises(RecipeError, match="out of range") as info:
        attach_objectives({"pair": losses.create("hidden-states", {"layers": [[2, 1]]})}, student, [folder], "cpu")
    assert info.value.path == "student.objective.layers"
    obj = losses.create("hidden-states", {})
    with pytest.raises(RecipeError, match="got no hidden states"):
        obj(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_teachers_are_loaded_once_per_job(teacher_dir):
    folder, _ = teacher_dir
    teachers = TeacherModels([folder], "cpu")
    first = teachers.load(0)
    assert teachers.load(0) is first and not any(p.requires_grad for p in first.parameters())


def test_other_tokenizer_is_refused(losses, teacher_dir, tmp_path):
    folder, tasks = teacher_dir
    student = tiny_model(tasks, seed=6, num_layers=1)
    student.encoder.tokenizer.add_tokens(["zzzunseen"])  # another vocabulary
    with pytest.raises(CheckpointError, match="tokenizer differs"):
        attach_objectives({"pair": losses.create("hidden-states", {})}, student, [folder], "cpu")


def _train_job(losses, folder, task, out_dir, weight, objective=None):
    from helpers import TINY_ENCODER

    from mtkd.recipe import Training
    from mtkd.training import Job, TaskData, train

    training = Training(sampling={"type": "proportional"}, epochs=2, batch_size=4, lr=1e-3, eval_every="epoch",
                        log_every=1, keep="final").model_dump(mode="json")
    wide = {**TINY_CONFIG, "hidden_size": 48, "num_hidden_layers": 1, "intermediate_size": 64}
    objective = objective or losses.create("hidden-states", {"base": "ce", "weight": weight})
    job = Job(name="student-s1", out_dir=out_dir, seed=1,
              spec={"encoder": {**TINY_ENCODER, "config_overrides": wide}, "heads": {"default": {"type": "linear"}}},
              training=training, max_length=32, cache_dir=str(out_dir.parent / "cache"), teacher_models=[folder],
              tasks={"pair": TaskData(task, task.load_split("train"), {"validation": task.load_split("validation")},
                                      objective)})
    return train(job, scaling={"strategy": "auto"}), objective


def test_a_training_job_with_the_hidden_state_objective(losses, teacher_dir, tmp_path):
    folder, tasks = teacher_dir
    result, objective = _train_job(losses, folder, tasks["pair"], tmp_path / "job", weight=1.0)
    assert result["steps"] == 4
    # the kept student is a plain model folder: the projection trained with it is not part of it
    model = load_model(tmp_path / "job" / "final")
    assert model.encoder.hidden_size == 48
    records = [json.loads(line) for line in (tmp_path / "job" / "metrics.jsonl").read_text().splitlines()]
    logged = [v for r in records for k, v in r.items() if k.endswith("train/loss")]
    assert len(logged) == 4 and all(v > 0 for v in logged)
    # Weight 0 leaves the projection at its initialisation (no gradient reaches it) and the student on CE alone:
    # the same seed with weight 1 moved both.
    _, unweighted = _train_job(losses, folder, tasks["pair"], tmp_path / "job0", weight=0.0)
    trained, untouched = objective.projections["t0_s1_t2"], unweighted.projections["t0_s1_t2"]
    assert not torch.allclose(trained.weight, untouched.weight)
    plain = load_model(tmp_path / "job0" / "final")
    assert not torch.equal(model.encoder.state_dict()["model.encoder.layer.0.output.dense.weight"],
                           plain.encoder.state_dict()["model.encoder.layer.0.output.dense.weight"])


def test_a_recipe_names_the_objective_and_its_pairing():
    from mtkd.recipe import load_recipe

    spec = "{type: hidden-states, base: {type: mixture, alpha: 0.8}, layers: [[1, 3], [2, 6]], weight: 0.5}"
    recipe = load_recipe("recipes/quickstart.yaml", [f"student.objective.classification={spec}"])
    resolved = recipe.resolved["student"]["objective"]["classification"]
    assert resolved["layers"] == [[1, 3], [2, 6]] and resolved["teachers"] == [0] and resolved["weight"] == 0.5
    assert resolved["base"] == {"type": "mixture", "alpha": 0.8, "alpha_schedule": "constant", "alpha_end": None,
                                "hard": {"type": "ce", "label_smoothing": 0.0},
                                "soft": {"type": "soft-ce", "temperature": 1.0, "temperature_end": None}}
    with pytest.raises(RecipeError) as info:
        load_recipe("recipes/quickstart.yaml", ["student.objective.classification={type: hidden-states, layers: [[1]]}"])
    assert info.value.path.startswith("student.objective.classification.layers")


def test_an_interrupted_hidden_state_job_resumes_its_projection_exactly(losses, teacher_dir, tmp_path):
    """SIGINT after step 2 checkpoints (projection included); the rerun ends bitwise where an uninterrupted run does."""
    import os
    import signal

    from mtkd_distill.hidden import HiddenStates, HiddenStatesParams

    from mtkd.training import RunInterrupted

    class InterruptAt(HiddenStates):
        def __init__(self, at):
            super().__init__(HiddenStatesParams(base={"type": "ce"}))
            self.calls, self.at = 0, at

        def __call__(self, *args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)  # the trainer finishes this step, checkpoints and stops
            return super().__call__(*args, **kwargs)

    folder, tasks = teacher_dir
    _, straight = _train_job(losses, folder, tasks["pair"], tmp_path / "straight", weight=1.0,
                             objective=InterruptAt(at=0))
    with pytest.raises(RunInterrupted):
        _train_job(losses, folder, tasks["pair"], tmp_path / "resumed", weight=1.0, objective=InterruptAt(at=2))
    assert (tmp_path / "resumed" / "checkpoint" / "extras.safetensors").is_file()
    _, resumed = _train_job(losses, folder, tasks["pair"], tmp_path / "resumed", weight=1.0,
                            objective=InterruptAt(at=0))
    assert torch.equal(resumed.projections["t0_s1_t2"].weight, straight.projections["t0_s1_t2"].weight)
    a, b = load_model(tmp_path / "straight" / "final"), load_model(tmp_path / "resumed" / "final")
    assert all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())
