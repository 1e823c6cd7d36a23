"""mtkd.plots: every picture renders from a small synthetic metrics dict and real metrics.jsonl files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtkd.plots import (
    cost_points,
    normalise_key,
    plot_deltas,
    plot_learning_curves,
    plot_run,
    plot_scores,
    plot_serving_cost,
    read_curves,
    score_groups,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(200, 150)):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 0  # something is drawn


def synthetic_metrics():
    return {
        "teacher_names": ["minilm-a", "minilm-b"],
        "tasks": {
            "rte": {"teachers": [{"accuracy": 66.0}, {"accuracy": 64.0}], "ensemble": {"accuracy": 67.5},
                    "students": [{"accuracy": 63.0}, {"accuracy": 65.0}, {"accuracy": 64.0}],
                    "controls": [{"accuracy": 60.0}, {"accuracy": 61.5}, {"accuracy": 59.0}]},
            "mrpc": {"teachers": [{"f1": 88.0, "accuracy": 84.0}, {"f1": 87.0, "accuracy": 83.0}],
                     "ensemble": {"f1": 89.0, "accuracy": 85.0},
                     "students": [{"f1": 86.0, "accuracy": 81.0}, {"f1": 87.0, "accuracy": 82.0}],
                     "controls": [{"f1": 85.0, "accuracy": 80.0}, {"f1": 84.0, "accuracy": 79.0}]},
            "stsb": {"teachers": [{"pearson": -5.0, "spearman": -3.0}, {"pearson": 10.0, "spearman": 9.0}],
                     "students": [{"pearson": float("nan"), "spearman": float("nan")}]},
        },
        "score": {"teachers": [70.0, 71.0], "ensemble": 72.0, "students": [68.0, 69.0, 70.0], "student": 69.0,
                  "controls": [66.0, 67.0, 65.0], "control": 66.0},
        "serving": {"task": "rte", "split": "validation", "examples": 64,
                    "ensemble": {"parameters": 45_000_000, "members": 2,
                                 "batch_1": {"examples_per_s": 40.0, "p50_ms": 25.0, "p95_ms": 30.0},
                                 "batch_32": {"examples_per_s": 300.0, "p50_ms": 100.0, "p95_ms": 120.0}},
                    "student": {"parameters": 11_000_000, "members": 1,
                                "batch_1": {"examples_per_s": 150.0, "p50_ms": 6.0, "p95_ms": 8.0},
                                "batch_32": {"examples_per_s": 1400.0, "p50_ms": 22.0, "p95_ms": 25.0}}},
        "comparison": {
            "student_vs_control": {"tasks": {"rte": {"delta": 3.8, "low": 0.5, "high": 7.0},
                                             "mrpc": {"delta": 1.5, "low": -1.0, "high": 4.0}},
                                   "score": {"delta": 2.7, "low": 0.9, "high": 4.4}},
            "student_vs_ensemble": {"tasks": {"rte": {"delta": -3.5, "low": -6.0, "high": -1.0},
                                              "mrpc": {"delta": float("nan"), "low": float("nan"),
                                                       "high": float("nan")}},
                                    "score": {"delta": -3.0, "low": -4.5, "high": -1.2}}},
    }


def test_score_groups_name_teachers_and_keep_every_seed():
    groups = score_groups(synthetic_metrics())
    assert set(groups) == {"rte", "mrpc", "stsb", "GLUE-style"}
    labels = [label for label, _, _ in groups["rte"]]
    assert labels == ["minilm-a", "minilm-b", "ensemble", "control", "student"]
    assert dict((lb, v) for lb, _, v in groups["rte"])["student"] == [63.0, 65.0, 64.0]
    assert [lb for lb, _, _ in groups["stsb"]] == ["minilm-a", "minilm-b"]  # the NaN student is left out


def test_every_plot_is_a_valid_png(tmp_path):
    metrics = synthetic_metrics()
    for fn, name in ((plot_scores, "scores.png"), (plot_deltas, "deltas.png"),
                     (plot_serving_cost, "quality_vs_cost.png")):
        paths = fn(metrics, tmp_path)
        assert paths == [tmp_path / name]
        assert_png(paths[0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_nothing_to_draw_writes_nothing(tmp_path):
    empty = {"tasks": {}, "score": {}, "teacher_names": []}
    assert plot_scores(empty, tmp_path) == []
    assert plot_deltas(empty, tmp_path) == []
    assert plot_serving_cost(empty, tmp_path) == []
    assert plot_learning_curves([tmp_path / "missing"], tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_cost_points_place_the_control_at_the_students_cost():
    points = {p["name"]: p for p in cost_points(synthetic_metrics())}
    assert set(points) == {"ensemble", "student", "control"}
    assert points["control"]["parameters"] == 11_000_000 and points["control"]["score"] == 66.0
    assert points["ensemble"]["examples_per_s"] == 300.0 and points["ensemble"]["batch_size"] == 32


@pytest.mark.parametrize("key, expected", [
    ("train/loss", "train/loss"), ("dev/score", "dev/score"), ("dev/rte/accuracy", "dev/rte/accuracy"),
    ("student-s1/train/loss", "train/loss"), ("teacher-0/rte/accuracy", "dev/rte/accuracy"),
    ("control-s3/dev/score", "dev/score"), ("step", None), ("time", None),
    ("holdout/score", "holdout/score"), ("holdout/rte/accuracy", "holdout/rte/accuracy"),
])
def test_old_and_new_metric_keys(key, expected):
    assert normalise_key(key) == expected


def _write_job(folder, job, old_format, steps=4):
    folder.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        train = {"train/loss": 1.0 / step, "train/lr": 1e-4}
        dev = {"dev/rte/accuracy": 50.0 + step, "dev/score": 50.0 + step}
        if old_format:
            train = {f"{job}/{k}": v for k, v in train.items()}
            dev = {f"{job}/rte/accuracy": dev["dev/rte/accuracy"], f"{job}/dev/score": dev["dev/score"]}
        lines += [json.dumps({"time": 0.0, "step": step, **train}), json.dumps({"time": 0.0, "step": step, **dev})]
    lines.append('{"time": 0.0, "step": 5, "train/lo')  # torn by a kill
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_learning_curves_read_both_key_styles(tmp_path):
    _write_job(tmp_path / "teachers" / "abc" , "teacher-0", old_format=True)
    _write_job(tmp_path / "students" / "def" / "seed-1", "student-s1", old_format=False)
    old = read_curves(tmp_path / "teachers" / "abc" / "metrics.jsonl")
    new = read_curves(tmp_path / "students" / "def" / "seed-1" / "metrics.jsonl")
    assert old == new
    assert old["train/loss"] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert old["dev/rte/accuracy"][-1] == (4, 54.0)
    paths = plot_learning_curves({"teacher-0": tmp_path / "teachers" / "abc",
                                  "student-s1": tmp_path / "students" / "def" / "seed-1"}, tmp_path / "plots")
    assert paths == [tmp_path / "plots" / "learning_curves.png"]
    assert_png(paths[0])


def test_plot_run_draws_all_four(tmp_path):
    _write_job(tmp_path / "jobs" / "control-s1", "control-s1", old_format=False)
    paths = plot_run(synthetic_metrics(), [tmp_path / "jobs" / "control-s1"], tmp_path / "plots")
    assert [p.name for p in paths] == ["scores.png", "deltas.png", "quality_vs_cost.png", "learning_curves.png"]
    for p in paths:
        assert_png(p)
