"""GLUE metrics against values worked out by hand, and the GLUE score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mtkd_glue import accuracy, f1, mcc, pearson, spearman

from mtkd.components import TaskContext
from mtkd.scores import glue_score, task_score

# six binary examples: tp = 2 (rows 0, 3), tn = 2 (rows 2, 5), fp = 1 (row 1), fn = 1 (row 4)
PRED = [1, 1, 0, 1, 0, 0]
GOLD = [1, 0, 0, 1, 1, 0]


def task(registries, name):
    return registries.tasks.create(name, {}, TaskContext(name=name))


def test_classification_metrics_by_hand():
    assert accuracy(PRED, GOLD) == pytest.approx(100 * 4 / 6)
    # precision = recall = 2/3, so F1 = 2/3
    assert f1(PRED, GOLD) == pytest.approx(100 * 2 / 3)
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 1) / sqrt(3*3*3*3) = 1/3
    assert mcc(PRED, GOLD) == pytest.approx(100 / 3)
    assert mcc([1, 1, 1], [1, 0, 1]) == 0.0  # a constant prediction has no correlation


def test_correlations_by_hand():
    # deviations (-1.5, -.5, .5, 1.5) and (-3, -1, 0, 4): cov 11, sums of squares 5 and 26
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(100 * 11 / math.sqrt(130))
    # ranks (1, 2, 3, 4) and (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6*2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(80.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_task_metrics(registries):
    assert task(registries, "cola").compute_metrics({"validation": PRED}, {"validation": GOLD}) == \
        {"mcc": pytest.approx(100 / 3)}
    mrpc = task(registries, "mrpc").compute_metrics({"validation": PRED}, {"validation": GOLD})
    assert list(mrpc) == ["f1", "accuracy"]
    assert mrpc == {"f1": pytest.approx(200 / 3), "accuracy": pytest.approx(200 / 3)}
    assert task_score(mrpc) == pytest.approx(200 / 3)
    stsb = task(registries, "stsb").compute_metrics({"validation": np.array([[1.0], [2.0], [3.0], [4.0]])},
                                                    {"validation": [10, 30, 20, 40]})
    assert stsb == {"pearson": pytest.approx(80.0), "spearman": pytest.approx(80.0)}
    # logits are turned into class ids
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    assert task(registries, "rte").compute_metrics({"validation": logits}, {"validation": [1, 0, 0]}) == \
        {"accuracy": pytest.approx(200 / 3)}


def test_mnli_score_is_the_mean_of_matched_and_mismatched(registries):
    mnli = task(registries, "mnli")
    metrics = mnli.compute_metrics(
        {"validation_matched": [0, 1, 2, 2], "validation_mismatched": [0, 0, 0, 1, 2]},
        {"validation_matched": [0, 1, 2, 0], "validation_mismatched": [0, 1, 1, 1, 2]})
    assert metrics == {"accuracy_matched": 75.0, "accuracy_mismatched": 60.0}
    assert task_score(metrics) == 67.5


def test_glue_score(registries):
    per_task = {
        "cola": task(registries, "cola").compute_metrics({"validation": PRED}, {"validation": GOLD}),  # 33.33
        "mrpc": task(registries, "mrpc").compute_metrics({"validation": PRED}, {"validation": GOLD}),  # 66.67
        "rte": task(registries, "rte").compute_metrics({"validation": [1, 0]}, {"validation": [1, 1]}),  # 50
        "mnli": {"accuracy_matched": 75.0, "accuracy_mismatched": 60.0},  # 67.5
    }
    assert glue_score(per_task) == pytest.approx((100 / 3 + 200 / 3 + 50 + 67.5) / 4)


def test_metric_input_errors(registries):
    rte = task(registries, "rte")
    with pytest.raises(ValueError, match="no metrics"):
        rte.compute_metrics({"test": [0]}, {"test": [0]})
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        rte.compute_metrics({"validation": [0, 1]}, {"validation": [0, 1, 1]})
    with pytest.raises(ValueError, match="unlabeled"):
        rte.compute_metrics({"validation": [0, 1]}, {"validation": [0, -1]})
    assert rte.compute_metrics({}, {}) == {}
    # AX has no dev split; given labels (e.g. GLUE's diagnostic answers) it reports Matthews correlation
    assert task(registries, "ax").compute_metrics({"test": PRED}, {"test": GOLD}) == {"mcc": pytest.approx(100 / 3)}
