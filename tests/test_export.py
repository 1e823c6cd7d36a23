"""``mtkd export``: a task as a folder AutoModelForSequenceClassification loads, with the same predictions."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from helpers import PAIRS, classification_task, requires_minilm, tiny_batch, tiny_model, tiny_tasks

from mtkd.model import save_model

pytestmark = requires_minilm

MORE_PAIRS = [("Is this exported faithfully?", "Yes, to within a tolerance."),
              ("Short.", "A much longer second sentence that forces padding.")]


def run_export(*args):
    from mtkd.cli import cli

    return CliRunner().invoke(cli, ["export", *map(str, args)])


@pytest.fixture
def checkpoint(registries, tmp_path):
    tasks = tiny_tasks()
    tasks["ax"] = classification_task("ax", ("entailment", "neutral", "contradiction"), head_task="nli")
    model = tiny_model(tasks, heads={"default": {"type": "linear"}, "sent": {"type": "san"}}, seed=0)
    # Non-zero head biases and larger weights, so a head wired to the wrong place would show.
    with torch.no_grad():
        for head in model.heads.values():
            for p in head.parameters():
                p.normal_(0, 0.3)
    return model, save_model(model, tmp_path / "ckpt")


@pytest.mark.parametrize("task", ["nli", "sts", "ax"])
def test_export_gives_the_same_predictions(checkpoint, tmp_path, task):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, path = checkpoint
    result = run_export(path, tmp_path / "out", "--task", task)
    assert result.exit_code == 0, result.output
    assert "exported" in result.output
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt"))]

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    batch = tiny_batch(tokenizer, PAIRS + MORE_PAIRS)
    ours_batch = tiny_batch(model.encoder.tokenizer, PAIRS + MORE_PAIRS)
    assert torch.equal(batch["input_ids"], ours_batch["input_ids"])
    model.eval()
    with torch.no_grad():
        ours = model(task, **batch)
        theirs = hf(**batch).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)

    config = hf.config
    if task == "sts":
        assert config.num_labels == 1 and config.problem_type == "regression"
    else:
        assert config.num_labels == 3 and config.problem_type == "single_label_classification"
        assert config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
        assert config.label2id["contradiction"] == 2


def test_export_refuses_what_it_cannot_reproduce(checkpoint, registries, tmp_path):
    model, path = checkpoint
    result = run_export(path, tmp_path / "out", "--task", "sent")  # a SAN head
    assert result.exit_code == 2
    assert "SANHead" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

    mean = tiny_model(tiny_tasks(), pooling="mean")
    mean_path = save_model(mean, tmp_path / "mean")
    result = run_export(mean_path, tmp_path / "out", "--task", "nli")
    assert result.exit_code == 2 and "pools with 'mean'" in result.output

    result = run_export(path, tmp_path / "out", "--task", "qqp")
    assert result.exit_code == 2 and "not in the checkpoint" in result.output

    result = run_export(tmp_path / "nowhere", tmp_path / "out", "--task", "nli")
    assert result.exit_code == 2 and "checkpoint folder not found" in result.output


def test_export_does_not_overwrite_without_force(checkpoint, tmp_path):
    _, path = checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_export(path, out, "--task", "nli")
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").exists()
    result = run_export(path, out, "--task", "nli", "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
