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


# ---------------------------------------------------------------- ONNX and int8 (the `serve` extra)

TEXTS = PAIRS + MORE_PAIRS


def onnx_logits(folder, batch):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: batch[n].numpy().astype(np.int64) for n in names})[0]


@pytest.mark.parametrize("task", ["nli", "sts", "ax"])
def test_onnx_export_gives_the_checkpoints_logits(checkpoint, tmp_path, task):
    import json

    model, path = checkpoint
    out = tmp_path / "onnx"
    result = run_export(path, out, "--task", task, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "ONNX" in result.output and "onnxruntime.InferenceSession" in result.output
    files = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "mtkd_export.json"} <= files
    assert "model.safetensors" not in files  # the ONNX file holds the weights
    record = json.loads((out / "mtkd_export.json").read_text())
    assert record["format"] == "onnx" and record["quantize"] is None and record["task"] == task
    assert record["check"]["probe_max_abs_diff"] <= 1e-4

    model.eval()
    tokenizer = model.encoder.tokenizer
    for texts in (TEXTS, TEXTS[:1], TEXTS[3:]):  # padded batches of other sizes and lengths; one unpadded row
        batch = tiny_batch(tokenizer, texts)
        with torch.no_grad():
            ours = model(task, **batch).numpy()
        theirs = onnx_logits(out, batch)
        assert theirs.shape == ours.shape
        assert abs(theirs - ours).max() <= 1e-4
        if task != "sts":
            assert (theirs.argmax(1) == ours.argmax(1)).all()


def test_int8_is_scored_on_a_dev_split_or_refused(checkpoint, tmp_path):
    _, path = checkpoint
    result = run_export(path, tmp_path / "q", "--task", "nli", "--quantize", "int8")
    assert result.exit_code == 2 and "dev split" in result.output and "--recipe" in result.output
    assert not (tmp_path / "q").exists()
    result = run_export(path, tmp_path / "q", "--task", "nli", "--format", "hf", "--quantize", "int8")
    assert result.exit_code == 2 and "--format onnx" in result.output
    result = run_export(path, tmp_path / "q", "--task", "nli", "--quantize", "int8", "--max-score-drop", "-1")
    assert result.exit_code == 2 and "--max-score-drop" in result.output
    # Accepted unchecked only when asked, and said so.
    result = run_export(path, tmp_path / "q", "--task", "nli", "--quantize", "int8", "--allow-score-drop")
    assert result.exit_code == 0, result.output
    assert "not checked" in result.output


def test_int8_beyond_the_tolerance_is_refused_unless_overridden(registries, tmp_path):
    """An outlier feature makes int8 activations coarse; the dev labels are the checkpoint's own predictions."""
    import datasets
    from mtkd_hf.export import DevSet, export_model

    from mtkd.errors import CheckpointError

    tasks = tiny_tasks()
    model = tiny_model(tasks, seed=1).eval()
    bert = model.encoder.model
    firsts = [a for a, _ in TEXTS] + ["a b c", "The end of the long meeting came late.", "Nothing at all.",
                                      "Music, loud and clear, all night.", "Prices fell.", "Dogs bark at cats."]
    seconds = list(reversed(firsts))
    batch = tiny_batch(model.encoder.tokenizer, list(zip(firsts, seconds)))
    with torch.no_grad():
        for module in model.modules():  # weights large enough that the logits depend on the input
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0, 0.5)
        # Feature 0 of the first layer's input 1000x larger, the weights reading it 1000x smaller: fp32
        # barely notices, but the per-tensor int8 range of those activations is spent on that one feature.
        bert.embeddings.LayerNorm.weight[0] *= 1000.0
        bert.embeddings.LayerNorm.bias[0] = 1000.0
        attention = bert.encoder.layer[0].attention.self
        for linear in (attention.query, attention.key, attention.value):
            linear.weight[:, 0] /= 1000.0
        # Classes 0 and 2 split the examples half and half, so a distorted model changes predictions.
        logits = model("nli", **batch)
        model.heads["nli"].linear.bias[0] -= (logits[:, 0] - logits[:, 2]).median() - 1e-3
        model.heads["nli"].linear.bias[1] -= 100.0
        labels = model("nli", **batch).argmax(1).tolist()
    assert sorted(set(labels)) == [0, 2]
    path = save_model(model, tmp_path / "ckpt")
    rows = [{"text_a": a, "text_b": b, "label": y, "idx": i}
            for i, (a, b, y) in enumerate(zip(firsts, seconds, labels))]
    dev = DevSet(tasks["nli"], "validation", datasets.Dataset.from_list(rows), max_length=64)

    with pytest.raises(CheckpointError, match="int8 quantization costs"):
        export_model(path, "nli", tmp_path / "q", format="onnx", quantize="int8", dev=dev)
    assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q.tmp-*"))

    record = export_model(path, "nli", tmp_path / "q", format="onnx", quantize="int8", dev=dev,
                          allow_score_drop=True)
    d = record["dev"]
    assert d["checkpoint_score"] == 100.0 and d["score_change"] < -0.5 and d["changed_predictions"] > 0
    assert d["accepted_by"] == "--allow-score-drop" and (tmp_path / "q" / "model.onnx").exists()

    wide = export_model(path, "nli", tmp_path / "q2", format="onnx", quantize="int8", dev=dev,
                        max_score_drop=100.0)
    assert wide["dev"]["export_score"] == d["export_score"] and "accepted_by" not in wide["dev"]


def test_missing_serve_extra_is_a_clean_error(checkpoint, tmp_path):
    import subprocess
    import sys

    from helpers import mtkd_env

    _, path = checkpoint
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # as if the extra were not installed
            "from mtkd.cli import cli\n"
            f"cli(['export', {str(path)!r}, {str(tmp_path / 'o')!r}, '--task', 'nli', '--format', 'onnx'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mtkd_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "mtkd[serve]" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def trained_job(tmp_path_factory):
    """A real trained tiny job: a one-teacher run of a tiny recipe on GLUE samples (fp32, as served)."""
    from helpers import only_job, pipeline_recipe, run_cli

    from mtkd import plugins

    tmp = tmp_path_factory.mktemp("export-run")
    recipe = pipeline_recipe(tmp, teachers={"members": [{"seed": 1}]}, student=None,
                             training={"epochs": 2, "batch_size": 8, "eval_batch_size": 32, "num_threads": 1,
                                       "precision": "fp32"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTKD_LOAD_PLUGINS", "glue,hf,distill,samplers,loggers")
        plugins.reset()
        result = run_cli("recipe", "run", recipe, "--quiet")
        plugins.reset()
    assert result.exit_code == 0, result.output
    return recipe, only_job(tmp / "runs" / "tiny")


def test_int8_and_onnx_from_a_trained_job(trained_job, registries, tmp_path):
    import json

    from mtkd.scores import task_score

    recipe, job = trained_job
    result = json.loads((job / "result.json").read_text())
    best = job / "best"
    for task in ("rte", "sst2"):
        out = tmp_path / f"{task}-int8"
        res = run_export(best, out, "--task", task, "--quantize", "int8", "--recipe", recipe)
        assert res.exit_code == 0, res.output
        assert "ONNX int8" in res.output and "points" in res.output
        d = json.loads((out / "mtkd_export.json").read_text())["dev"]
        # The dev split the recipe defines, scored as the trainer scored it.
        assert d["examples"] == 16
        assert d["checkpoint_score"] == pytest.approx(task_score(result["metrics"][task]))
        assert d["score_change"] >= -0.5 and d["max_score_drop"] == 0.5

        out = tmp_path / f"{task}-onnx"
        res = run_export(best, out, "--task", task, "--format", "onnx", "--recipe", recipe)
        assert res.exit_code == 0, res.output
        d = json.loads((out / "mtkd_export.json").read_text())["dev"]
        assert d["max_abs_diff"] <= 1e-4 and d["changed_predictions"] == 0 and d["score_change"] == 0


def test_measure_formats_times_each_format_on_the_same_requests(checkpoint, tmp_path):
    """What the report's serving section calls: eager and ONNX formats of one checkpoint, timed alike."""
    import datasets
    from mtkd_hf.export import DevSet
    from mtkd_hf.serving import measure_formats

    from mtkd.data import tokenize_split

    model, path = checkpoint
    task = classification_task("nli", ("entailment", "neutral", "contradiction"))
    rows = datasets.Dataset.from_list([{"text_a": a, "text_b": b, "label": i % 3, "idx": i}
                                       for i, (a, b) in enumerate(TEXTS * 2)])
    data = tokenize_split(task, "validation", model.encoder.tokenizer, max_length=64, cache_dir=tmp_path / "c",
                          dataset=rows)
    dev = DevSet(task, "validation", rows, max_length=64, cache_dir=str(tmp_path / "c"))
    out = measure_formats(path, "nli", ["eager-fp32", "onnx", "onnx-int8"], data, batch_sizes=(1, 4),
                          threads=1, workdir=tmp_path, dev=dev)
    assert list(out) == ["eager-fp32", "onnx", "onnx-int8"]
    for res in out.values():
        for bs, requests in ((1, 12), (4, 3)):
            r = res[f"batch_{bs}"]
            assert r["requests"] == requests and r["examples_per_s"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"]
        assert res["size_bytes"] > 0
    assert out["eager-fp32"]["export"] is None
    assert out["onnx"]["export"]["dev"]["changed_predictions"] == 0
    assert out["onnx-int8"]["export"]["quantize"] == "int8" and "score_change" in out["onnx-int8"]["export"]["dev"]
    assert out["onnx-int8"]["size_bytes"] < out["onnx"]["size_bytes"]  # int8 weights in the linear layers
    assert not list(tmp_path.glob("mtkd-serving-*"))  # the exports are temporary
