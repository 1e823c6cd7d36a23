"""MultiTaskModel: assembly from the registries, save/load (safetensors only, atomic), encoder copying."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from helpers import (
    TINY_CONFIG,
    classification_task,
    requires_minilm,
    tiny_batch,
    tiny_model,
    tiny_spec,
    tiny_tasks,
)

import mtkd
from mtkd.errors import CheckpointError, RecipeError, UnknownComponentError
from mtkd.model import (
    META_NAME,
    WEIGHTS_NAME,
    MultiTaskModel,
    build_model,
    copy_encoder_weights,
    count_parameters,
    load_model,
    save_model,
)

pytestmark = requires_minilm

SAN_FOR_NLI = {"default": {"type": "linear", "dropout": 0.2}, "nli": {"type": "san", "steps": 3}}


def outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return {task: model(task, **batch) for task in model.tasks}


def test_build_model_heads_and_forward(registries):
    model = tiny_model(heads=SAN_FOR_NLI)
    assert isinstance(model, MultiTaskModel)
    assert set(model.heads) == {"nli", "sent", "sts"}
    assert type(model.heads["nli"]).__name__ == "SANHead" and model.heads["nli"].steps == 3
    assert type(model.heads["sts"]).__name__ == "LinearHead" and model.heads["sts"].dropout.p == 0.2
    assert model.task_info["nli"] == {"task_type": "classification", "num_outputs": 3,
                                      "labels": ["entailment", "neutral", "contradiction"], "head_task": None}
    assert model.task_info["sts"]["num_outputs"] == 1 and model.task_info["sts"]["labels"] is None
    batch = tiny_batch(model.encoder.tokenizer)
    logits = outputs(model, batch)
    assert {t: tuple(v.shape) for t, v in logits.items()} == {"nli": (4, 3), "sent": (4, 2), "sts": (4, 1)}
    logits, hidden = model.forward_with_hidden("nli", **batch)
    assert logits.shape == (4, 3) and len(hidden) == model.encoder.num_layers + 1
    with pytest.raises(KeyError, match="not part of this model"):
        model("qqp", **batch)


def test_a_task_can_borrow_another_tasks_head(registries):
    tasks = tiny_tasks()
    tasks["ax"] = classification_task("ax", ("entailment", "neutral", "contradiction"), head_task="nli")
    model = tiny_model(tasks)
    assert "ax" not in model.heads and model.head_name("ax") == "nli"
    batch = tiny_batch(model.encoder.tokenizer)
    logits = outputs(model, batch)
    assert torch.equal(logits["ax"], logits["nli"])


def test_build_errors(registries):
    tasks = {"ax": classification_task("ax", ("a", "b", "c"), head_task="nli")}
    with pytest.raises(RecipeError, match="not in the run"):
        tiny_model(tasks)
    with pytest.raises(RecipeError, match="no head for task"):
        build_model({"encoder": tiny_spec()["encoder"], "heads": {"nli": {"type": "linear"}}}, tiny_tasks())
    with pytest.raises(UnknownComponentError, match="unknown head"):
        tiny_model(heads={"default": {"type": "lineer"}})
    with pytest.raises(RecipeError, match="without dots"):
        tiny_model({"a.b": classification_task("a.b")})


def test_save_load_round_trip_is_bitwise(registries, tmp_path):
    model = tiny_model(heads=SAN_FOR_NLI, seed=1)
    path = save_model(model, tmp_path / "ckpt")
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {WEIGHTS_NAME, META_NAME, "encoder/config.json", "encoder/tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    meta = json.loads((path / META_NAME).read_text())
    assert meta["format_version"] == 1 and meta["spec"] == model.spec and meta["task_info"] == model.task_info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left behind

    loaded = load_model(path)
    assert not loaded.training and loaded.task_info == model.task_info
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    batch = tiny_batch(model.encoder.tokenizer)
    expected, got = outputs(model, batch), outputs(loaded, batch)
    assert all(torch.equal(expected[t], got[t]) for t in expected)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_storage_halves_the_file_and_loads_back_in_fp32(registries, tmp_path, dtype):
    from mtkd.model import SAVE_DTYPES

    model = tiny_model(heads=SAN_FOR_NLI, seed=2)
    full = save_model(model, tmp_path / "fp32")
    half = save_model(model, tmp_path / dtype, dtype=dtype)
    assert json.loads((half / META_NAME).read_text())["weights_dtype"] == dtype
    ratio = (half / WEIGHTS_NAME).stat().st_size / (full / WEIGHTS_NAME).stat().st_size
    assert 0.45 < ratio < 0.6
    loaded = load_model(half)
    before, after = model.state_dict(), loaded.state_dict()
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype  # built in fp32 again
        if tensor.is_floating_point():  # exactly the rounded weights, nothing else changed
            assert torch.equal(after[name], tensor.to(SAVE_DTYPES[dtype]).to(tensor.dtype)), name
        else:
            assert torch.equal(after[name], tensor), name
    batch = tiny_batch(model.encoder.tokenizer)
    expected, got = outputs(model, batch), outputs(loaded, batch)
    assert all(torch.allclose(expected[t], got[t], atol=5e-2) for t in expected)


def test_a_weight_beyond_fp16_range_is_refused_not_saved_as_infinity(registries, tmp_path):
    model = tiny_model(seed=3)
    with torch.no_grad():
        model.heads["sts"].linear.bias.fill_(1e6)
    with pytest.raises(CheckpointError, match="does not fit in fp16") as err:
        save_model(model, tmp_path / "ckpt", dtype="fp16")
    assert "heads.sts.linear.bias" in str(err.value)
    assert not (tmp_path / "ckpt").exists()
    assert load_model(save_model(model, tmp_path / "ckpt", dtype="bf16")).heads["sts"].linear.bias.isfinite().all()


class TiedHead(torch.nn.Module):
    """A head whose two layers share one weight: the rebuilt model ties them again."""

    def __init__(self, params, hidden_size, num_outputs):
        super().__init__()
        self.first = torch.nn.Linear(hidden_size, hidden_size)
        self.second = torch.nn.Linear(hidden_size, hidden_size)
        self.second.weight = self.first.weight
        self.out = torch.nn.Linear(hidden_size, num_outputs)

    def forward(self, pooled, sequence, attention_mask, token_type_ids=None):
        return self.out(self.second(torch.tanh(self.first(pooled))))


class TiedHeadPlugin:
    @mtkd.hookimpl
    def register_heads(self, register):
        register("tied-test", TiedHead)


def test_tied_weights_are_saved_once_and_tied_again(registries, tmp_path):
    from safetensors import safe_open

    from mtkd.plugins import register_plugin

    register_plugin(TiedHeadPlugin(), "tied-test")
    model = tiny_model(heads={"default": {"type": "linear"}, "sent": {"type": "tied-test"}}, seed=12)
    path = save_model(model, tmp_path / "ckpt")
    with safe_open(str(path / WEIGHTS_NAME), "pt") as f:
        keys = set(f.keys())
    assert "heads.sent.first.weight" in keys and "heads.sent.second.weight" not in keys
    loaded = load_model(path)
    head = loaded.heads["sent"]
    assert head.second.weight is head.first.weight
    batch = tiny_batch(model.encoder.tokenizer)
    assert torch.equal(outputs(loaded, batch)["sent"], outputs(model, batch)["sent"])


def test_save_an_explicitly_gathered_state_dict(registries, tmp_path):
    model = tiny_model(seed=13)
    gathered = {k: v.clone() for k, v in model.state_dict().items()}  # as FSDP/DeepSpeed would hand it over
    gathered["heads.sts.linear.bias"] = torch.tensor([0.5])
    loaded = load_model(save_model(model, tmp_path / "ckpt", state_dict=gathered))
    assert loaded.heads["sts"].linear.bias.item() == 0.5
    assert torch.equal(loaded.heads["nli"].linear.weight, model.heads["nli"].linear.weight)


def test_loading_never_unpickles(registries, tmp_path, monkeypatch):
    model = tiny_model(seed=2)
    save_model(model, tmp_path / "ckpt")

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must load without pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_model(tmp_path / "ckpt")
    batch = tiny_batch(model.encoder.tokenizer)
    assert torch.equal(outputs(loaded, batch)["sent"], outputs(model, batch)["sent"])


def test_save_replaces_an_existing_checkpoint(registries, tmp_path):
    first, second = tiny_model(seed=3), tiny_model(seed=4)
    save_model(first, tmp_path / "ckpt")
    save_model(second, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    batch = tiny_batch(first.encoder.tokenizer)
    assert torch.equal(outputs(load_model(tmp_path / "ckpt"), batch)["nli"], outputs(second, batch)["nli"])


def test_a_failed_save_leaves_the_old_checkpoint(registries, tmp_path):
    model = tiny_model(seed=5)
    save_model(model, tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes()

    def broken(directory):
        raise OSError("disk full")

    model.encoder.save_config = broken
    with torch.no_grad():
        model.heads["nli"].linear.bias.fill_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_bad_checkpoints_raise_checkpoint_errors(registries, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")
    model = tiny_model(seed=6)
    path = save_model(model, tmp_path / "ckpt")
    weights = (path / WEIGHTS_NAME).read_bytes()

    (path / WEIGHTS_NAME).write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)

    (path / WEIGHTS_NAME).write_bytes(weights)
    meta = json.loads((path / META_NAME).read_text())
    meta["task_info"]["nli"]["num_outputs"] = 5  # a head of another shape
    (path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match") as info:
        load_model(path)
    assert "heads.nli" in str(info.value.found)

    meta["task_info"]["nli"]["num_outputs"] = 3
    meta["task_info"]["extra"] = dict(meta["task_info"]["sent"])  # a head the weights lack
    (path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)

    meta["format_version"] = 99
    (path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load_model(path)

    (path / META_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)

    (path / WEIGHTS_NAME).unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="model.safetensors is missing") as info:
        load_model(path)
    assert "never unpickles pytorch_model.bin" in info.value.hint


def test_copy_encoder_weights_into_a_shallower_student(registries):
    teacher = tiny_model(seed=7)
    student = tiny_model(seed=8, num_layers=1)
    student_state = student.encoder.state_dict()
    assert not torch.equal(student_state["model.encoder.layer.0.output.dense.weight"],
                           teacher.encoder.state_dict()["model.encoder.layer.0.output.dense.weight"])
    copied = copy_encoder_weights(student, teacher)
    assert copied == len(student_state)  # every student tensor has a teacher counterpart
    teacher_state = teacher.encoder.state_dict()
    assert all(torch.equal(t, teacher_state[n]) for n, t in student.encoder.state_dict().items())
    # The student computes exactly the teacher's first layer.
    batch = tiny_batch(student.encoder.tokenizer)
    teacher.eval(), student.eval()
    with torch.no_grad():
        _, t_hidden = teacher.forward_with_hidden("nli", **batch)
        _, s_hidden = student.forward_with_hidden("nli", **batch)
    assert torch.equal(s_hidden[1], t_hidden[1])
    # A deeper destination keeps its extra layers; an encoder of another width is refused, not half-copied.
    assert copy_encoder_weights(teacher, student) == len(student_state)
    wide = tiny_model(seed=9, config_overrides={**TINY_CONFIG, "hidden_size": 48})
    with pytest.raises(CheckpointError, match="shapes differ"):
        copy_encoder_weights(wide, teacher)


def test_count_parameters(registries):
    model = tiny_model(seed=10)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    heads = sum(p.numel() for p in model.heads.parameters())
    assert heads == (32 * 3 + 3) + (32 * 2 + 2) + (32 * 1 + 1)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == heads


def test_load_model_to_a_device(registries, tmp_path):
    model = tiny_model(seed=11)
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", map_location=torch.device("cpu"))
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
