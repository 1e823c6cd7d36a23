"""mtkd.stats: the paired bootstrap against hand-computed cases, the vectorised metrics against the GLUE
tasks' own compute_metrics, calibration formulas, and the metrics.json comparison block."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import InMemoryTask
from mtkd_glue.specs import SPECS
from mtkd_glue.tasks import GlueParams, GlueTask

from mtkd.components import TaskContext
from mtkd.stats import (
    System,
    TaskScorer,
    brier_score,
    calibration_deltas,
    calibration_on_counts,
    comparison,
    expected_calibration_error,
    paired_bootstrap,
    percentile_interval,
    weights_from_indices,
)


def glue(name: str) -> GlueTask:
    return GlueTask(SPECS[name], GlueParams(), TaskContext(name=name))


def onehot_logits(classes, num_classes=2, scale=3.0):
    out = np.zeros((len(classes), num_classes))
    out[np.arange(len(classes)), classes] = scale
    return out


def test_bootstrap_matches_the_hand_computed_distribution():
    # Student right on examples 0 and 1, control right on 1 only: the per-example accuracy gain is
    # (1, 0, 0). A resample's delta is 100 * k / 3 with k ~ Binomial(3, 1/3):
    # P(0) = 8/27, P(33.3) = 12/27, P(66.7) = 6/27, P(100) = 1/27. So the 2.5 % quantile is 0 and,
    # since P(delta <= 66.7) = 26/27 = 0.963 < 0.975, the 97.5 % quantile is 100.
    task = InMemoryTask("t", rows={})
    labels = {"validation": np.array([1, 1, 1])}
    student = {"t": {"validation": np.array([1, 1, 0])}}
    control = {"t": {"validation": np.array([0, 1, 0])}}
    scorer = TaskScorer(task, labels)
    scorer.prepare([student["t"], control["t"]], np.random.default_rng(0))
    out = paired_bootstrap({"t": scorer}, [student], [control], pairs=[(0, 0)], score_tasks=["t"],
                           resamples=20000, seed=1)
    t = out["tasks"]["t"]
    assert t["delta"] == pytest.approx(100 / 3)
    assert t["low"] == 0.0 and t["high"] == 100.0
    assert out["score"]["delta"] == pytest.approx(100 / 3)


def test_bootstrap_on_given_resamples_is_exact():
    # Three explicit resamples of 4 examples; deltas worked out by hand.
    task = InMemoryTask("t", rows={})
    labels = {"validation": np.array([0, 1, 1, 0])}
    student = {"t": {"validation": np.array([0, 1, 1, 1])}}  # right on 0, 1, 2
    control = {"t": {"validation": np.array([1, 1, 0, 0])}}  # right on 1, 3
    idx = np.array([[0, 0, 0, 0],    # student 100, control 0   -> +100
                    [3, 3, 1, 2],    # student 50,  control 75  -> -25
                    [0, 1, 2, 3]])   # student 75,  control 50  -> +25
    w = {"t": {"validation": weights_from_indices(idx, 4)}}
    scorer = TaskScorer(task, labels)
    scorer.prepare([student["t"], control["t"]], np.random.default_rng(0))
    out = paired_bootstrap({"t": scorer}, [student], [control], pairs=[(0, 0)], score_tasks=["t"], weights=w,
                           confidence=0.5)
    samples = np.array([100.0, -25.0, 25.0])
    assert out["tasks"]["t"]["delta"] == pytest.approx(25.0)
    lo, hi = np.quantile(samples, [0.25, 0.75])
    assert (out["tasks"]["t"]["low"], out["tasks"]["t"]["high"]) == pytest.approx((lo, hi))
    assert (lo, hi) == pytest.approx((0.0, 62.5))


def test_glue_score_bootstrap_is_the_mean_of_task_deltas_per_resample():
    # Two tasks, identical systems on one of them: the score's delta is half the other task's delta.
    task_a, task_b = InMemoryTask("a", rows={}), InMemoryTask("b", rows={})
    rng = np.random.default_rng(3)
    y = {"validation": rng.integers(0, 2, 50)}
    s_a = np.where(rng.random(50) < 0.8, y["validation"], 1 - y["validation"])
    c_a = np.where(rng.random(50) < 0.6, y["validation"], 1 - y["validation"])
    same = np.where(rng.random(50) < 0.7, y["validation"], 1 - y["validation"])
    student = {"a": {"validation": s_a}, "b": {"validation": same}}
    control = {"a": {"validation": c_a}, "b": {"validation": same}}
    scorers = {n: TaskScorer(t, y) for n, t in (("a", task_a), ("b", task_b))}
    for n, sc in scorers.items():
        sc.prepare([student[n], control[n]], rng)
    out = paired_bootstrap(scorers, [student], [control], pairs=[(0, 0)], score_tasks=["a", "b"], resamples=500)
    a, score = out["tasks"]["a"], out["score"]
    assert out["tasks"]["b"] == {"delta": 0.0, "low": 0.0, "high": 0.0}
    assert score["delta"] == pytest.approx(a["delta"] / 2)
    # the resampled indices of task b do not matter, so the score's bounds are exactly half of a's
    assert (score["low"], score["high"]) == pytest.approx((a["low"] / 2, a["high"] / 2))


@pytest.mark.parametrize("name", ["cola", "mrpc", "stsb", "mnli", "sst2"])
def test_fast_metrics_equal_the_tasks_own_metrics_on_resamples(name):
    task = glue(name)
    rng = np.random.default_rng(7)
    n = 60
    labels, preds = {}, {}
    for split in task.eval_splits:
        if task.task_type == "regression":
            y = np.round(rng.uniform(0, 5, n), 1)  # ties, as in STS-B's gold scores
            labels[split] = y
            preds[split] = np.round(y + rng.normal(0, 1, n), 1)
        else:
            y = rng.integers(0, task.num_outputs, n)
            labels[split] = y
            preds[split] = np.where(rng.random(n) < 0.7, y, rng.integers(0, task.num_outputs, n))
    scorer = TaskScorer(task, labels)
    scorer.prepare([preds], rng)
    assert scorer.fast is not None, "the vectorised path should reproduce the GLUE metrics"
    idx = {s: rng.integers(0, n, size=(5, n)) for s in task.eval_splits}
    fast = scorer.scores(preds, {s: weights_from_indices(i, n) for s, i in idx.items()})
    from mtkd.scores import task_score

    for b in range(5):
        exact = task.compute_metrics({s: preds[s][idx[s][b]] for s in task.eval_splits},
                                     {s: labels[s][idx[s][b]] for s in task.eval_splits})
        assert fast[b] == pytest.approx(task_score(exact), abs=1e-9)


def test_a_metric_without_a_fast_formula_falls_back_to_compute_metrics():
    task = InMemoryTask("r", task_type="regression", labels=None, rows={})  # reports "mse"
    labels = {"validation": np.array([0.0, 1.0, 2.0])}
    preds = {"validation": np.array([0.0, 1.0, 3.0])}
    scorer = TaskScorer(task, labels)
    scorer.prepare([preds], np.random.default_rng(0))
    assert scorer.fast is None
    w = weights_from_indices(np.array([[2, 2, 2], [0, 1, 0]]), 3)
    assert list(scorer.scores(preds, {"validation": w})) == pytest.approx([100.0, 0.0])


def test_calibration_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])
    # 2 bins: [0, .5) and [.5, 1]; every top-class confidence (.9, .6, .7, .55) is in the upper bin:
    # accuracy 2/4, mean confidence .6875 -> ECE .1875.
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.1875)
    # 10 bins: .9 (right), .6 (wrong), .7 (right), .55 (wrong) each alone in a bin:
    # (|1-.9| + |0-.6| + |1-.7| + |0-.55|) / 4 = 1.55 / 4
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(1.55 / 4)
    # Brier: (0.01+0.01) + (0.36+0.36) + (0.09+0.09) + (0.3025+0.3025), / 4
    assert brier_score(probs, labels) == pytest.approx((0.02 + 0.72 + 0.18 + 0.605) / 4)


def test_bias_corrected_interval_by_hand():
    samples = np.arange(1, 1001) / 1000  # uniform on (0, 1]
    # centred on its estimate it is the percentile interval (z0 = 0, up to the half-counted tie)
    assert percentile_interval(samples, point=0.5) == pytest.approx(percentile_interval(samples), abs=2e-4)
    # 29.95 % of resamples below the estimate .3: z0 = inv_cdf(.2995) = -.5254, so the quantiles are
    # Phi(2 z0 -/+ 1.96) = .0013 and .8183 of the samples
    assert percentile_interval(samples, point=0.3) == pytest.approx((0.0023, 0.8183), abs=2e-4)


def test_calibration_on_counts_is_calibration_on_the_drawn_rows():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=40)
    labels = rng.integers(0, 3, 40)
    idx = rng.integers(0, 40, size=(5, 40))
    ece, brier = calibration_on_counts(probs, labels, weights_from_indices(idx, 40))
    for b in range(5):
        assert ece[b] == pytest.approx(expected_calibration_error(probs[idx[b]], labels[idx[b]]))
        assert brier[b] == pytest.approx(brier_score(probs[idx[b]], labels[idx[b]]))


def test_calibration_deltas_by_hand():
    labels = {"t": {"validation": np.array([1, 1, 1])}}
    # Every row right, the student at confidence .9 and the control at .7: every resample has
    # ECE .1 vs .3 and Brier .02 vs .18, so the delta and both bounds are -.2 and -.16.
    sure = System([{"t": {"validation": np.tile([0.1, 0.9], (3, 1))}}], kind="probs")
    unsure = System([{"t": {"validation": np.tile([0.3, 0.7], (3, 1))}}], kind="probs")
    d = calibration_deltas(labels, sure, unsure, pairs=[(0, 0)], resamples=200)["t"]
    assert (d["ece"]["delta"], d["ece"]["low"], d["ece"]["high"]) == pytest.approx((-0.2, -0.2, -0.2))
    assert (d["brier"]["delta"], d["brier"]["low"], d["brier"]["high"]) == pytest.approx((-0.16, -0.16, -0.16))
    # Brier is a mean over rows: per-row deltas (-.5, 0, 0) give -.5 k / 3 with k ~ Binomial(3, 1/3);
    # P(k = 3) = 1/27 > 2.5 % and P(k = 0) = 8/27 > 2.5 %, so the interval is [-.5, 0].
    a = System([{"t": {"validation": np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])}}], kind="probs")
    b = System([{"t": {"validation": np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])}}], kind="probs")
    d = calibration_deltas(labels, a, b, pairs=[(0, 0)], resamples=20000, seed=1)["t"]["brier"]
    assert (d["delta"], d["low"], d["high"]) == pytest.approx((-0.5 / 3, -0.5, 0.0))


def test_percentile_interval_leaves_out_nan():
    assert percentile_interval([np.nan, 1.0, 1.0, 1.0]) == (1.0, 1.0)
    lo, hi = percentile_interval([np.nan, np.nan])
    assert np.isnan(lo) and np.isnan(hi)


def _synthetic_run(rng, y, accuracy, classes=2):
    right = rng.random(len(y)) < accuracy
    pred = np.where(right, y, (y + 1) % classes)
    return onehot_logits(pred, classes, scale=2.0) + rng.normal(0, 0.3, (len(y), classes))


def test_comparison_block_shape_and_the_quotable_sentence():
    rng = np.random.default_rng(0)
    tasks = {"mrpc": glue("mrpc"), "rte": glue("rte"), "stsb": glue("stsb")}
    n = 200
    labels = {"mrpc": {"validation": rng.integers(0, 2, n)}, "rte": {"validation": rng.integers(0, 2, n)},
              "stsb": {"validation": rng.uniform(0, 5, n)}}

    def run(acc, noise):
        out = {t: {"validation": _synthetic_run(rng, labels[t]["validation"], acc)} for t in ("mrpc", "rte")}
        out["stsb"] = {"validation": labels["stsb"]["validation"] + rng.normal(0, noise, n)}
        return out

    seeds = [1, 2, 3]
    student = System([run(0.85, 0.8) for _ in seeds], seeds)
    control = System([run(0.65, 1.5) for _ in seeds], seeds)
    ens_logits = run(0.9, 0.6)
    ensemble = System([{t: {"validation": (np.exp(v["validation"]) / np.exp(v["validation"]).sum(1, keepdims=True)
                                           if t != "stsb" else v["validation"])} for t, v in ens_logits.items()}],
                      kind="probs")
    block = comparison(tasks, labels, {"student": student, "control": control, "ensemble": ensemble,
                                       "teacher-a": System([run(0.88, 0.7)])}, resamples=300, seed=5)
    json.dumps(block)  # what goes into metrics.json must serialise
    sc = block["student_vs_control"]
    assert set(sc["tasks"]) == {"mrpc", "rte", "stsb"}
    assert sc["score"]["low"] <= sc["score"]["delta"] <= sc["score"]["high"]
    assert sc["score"]["low"] > 0, "a 20-point accuracy gap on 200 examples is beyond noise"
    assert len(sc["tasks"]["mrpc"]["per_seed"]) == 3
    assert block["student_vs_ensemble"]["score"]["delta"] < 0
    assert block["method"]["fast_metrics"] == {"mrpc": True, "rte": True, "stsb": True}
    assert set(block["calibration"]) == {"student", "control", "ensemble", "teacher-a"}
    assert set(block["calibration"]["student"]) == {"mrpc", "rte"}  # classification only
    for other in ("control", "ensemble"):
        per_task = block["calibration_deltas"][f"student_vs_{other}"]
        assert set(per_task) == {"mrpc", "rte"}
        for t in per_task:
            for m in ("ece", "brier"):
                d = per_task[t][m]
                expect = block["calibration"]["student"][t][m] - block["calibration"][other][t][m]
                assert d["delta"] == pytest.approx(expect) and d["low"] <= d["high"]
    # one-hot-ish logits: the student's Brier is lower than the weaker control's beyond noise
    assert block["calibration_deltas"]["student_vs_control"]["rte"]["brier"]["high"] < 0
    assert block["seed_spread"]["student"]["seeds"] == seeds
    assert len(block["seed_spread"]["control"]["score"]["values"]) == 3
    assert block["sentence"].startswith(f"Distillation changed the GLUE-style score by {sc['score']['delta']:+.2f} [")
    assert "3 seeds" in block["sentence"] and "excludes 0" in block["sentence"]
    # the same inputs and seed give the same block
    again = comparison(tasks, labels, {"student": student, "control": control, "ensemble": ensemble,
                                       "teacher-a": System([run(0.88, 0.7)])}, resamples=300, seed=5)
    assert again["student_vs_control"] == sc


def test_comparison_refuses_missing_outputs_and_unpaired_seeds():
    tasks = {"rte": glue("rte")}
    labels = {"rte": {"validation": np.array([0, 1, 1])}}
    good = {"rte": {"validation": onehot_logits([0, 1, 0])}}
    with pytest.raises(ValueError, match="lacks dev outputs"):
        comparison(tasks, labels, {"student": System([good]), "control": System([{}])})
    with pytest.raises(ValueError, match="must match"):
        comparison(tasks, labels, {"student": System([good, good], [1, 2]), "control": System([good, good], [1, 3])})


def test_a_task_that_scores_its_splits_only_together_uses_compute_metrics():
    task = InMemoryTask("two", eval_splits=["a", "b"], rows={})  # compute_metrics needs both splits at once
    labels = {"a": np.array([0, 1, 1]), "b": np.array([1, 1, 0, 0])}
    preds = {"a": np.array([0, 1, 0]), "b": np.array([1, 0, 0, 1])}
    scorer = TaskScorer(task, labels)
    scorer.prepare([preds], np.random.default_rng(0))
    assert scorer.fast is None
    w = {"a": weights_from_indices(np.array([[0, 0, 0]]), 3), "b": weights_from_indices(np.array([[0, 1, 2, 2]]), 4)}
    # InMemoryTask reports the accuracy of its last split: b resampled as rows 0, 1, 2, 2 -> 3 of 4 right
    assert scorer.scores(preds, w)[0] == pytest.approx(75.0)
