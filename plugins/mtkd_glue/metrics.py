"""GLUE metrics on the leaderboard's x100 scale, from scikit-learn and scipy."""

from __future__ import annotations

import warnings

import numpy as np


def accuracy(predictions, labels) -> float:
    return 100.0 * float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions, labels, *, num_classes: int = 2) -> float:
    """F1 of the positive class (id 1), as GLUE reports it for MRPC and QQP; macro F1 over more than 2 classes."""
    from sklearn.metrics import f1_score

    average = "binary" if num_classes <= 2 else "macro"
    kwargs = {} if average == "binary" else {"labels": list(range(num_classes))}
    return 100.0 * float(f1_score(labels, predictions, average=average, zero_division=0, **kwargs))


def mcc(predictions, labels) -> float:
    """Matthews correlation (CoLA, AX)."""
    from sklearn.metrics import matthews_corrcoef

    return 100.0 * float(matthews_corrcoef(labels, predictions))


def _correlation(fn, predictions, labels) -> float:
    from scipy.stats import ConstantInputWarning

    with warnings.catch_warnings():
        # a constant prediction has no correlation: NaN, which task_score leaves out, not a crash
        warnings.simplefilter("ignore", ConstantInputWarning)
        value = fn(np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float))[0]
    return 100.0 * float(value)


def pearson(predictions, labels) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, predictions, labels)


def spearman(predictions, labels) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, predictions, labels)


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "matthews": mcc, "pearson": pearson, "spearman": spearman}
CLASSIFICATION_METRICS = {"accuracy", "f1", "mcc", "matthews"}
REGRESSION_METRICS = {"pearson", "spearman"}
