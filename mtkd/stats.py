"""The evidence behind "distillation helped": paired bootstrap intervals, seed spread and calibration.

Entry point for the stages: :func:`comparison`, which returns the ``comparison`` block of
``metrics.json``. Its inputs are the systems' raw dev outputs, never their metrics, because an
interval over dev examples needs every example's prediction.

Input shape (``comparison(tasks, labels, systems)``)::

    tasks   = {task: Task}                        # compute_metrics, task_type (mtkd.components.Task)
    labels  = {task: {split: array [N]}}          # the gold labels of each eval split
    systems = {name: System(runs=[{task: {split: outputs}}, ...], seeds=[...], kind="logits")}

``outputs`` are logits [N, C] (``kind="logits"``) or class probabilities [N, C] (``kind="probs"``, the
ensemble's aggregated targets) for classification, values [N] or [N, 1] for regression. A system has
one run per seed (student, control) or a single run (a teacher, the ensemble). The names
``student``, ``control`` and ``ensemble`` are the ones compared; every system gets calibration, and
the student's ECE and Brier score get the same paired intervals against control and ensemble.

The method, stated in the block itself: a paired percentile bootstrap. Each resample draws the dev
examples of every task split with replacement (the same indices for both systems and for every
seed) and, when there are several seeds, draws the seeds with replacement too; student seed ``s``
is paired with control seed ``s`` (same seed, same initialisation and data order). The delta of a
resample is the mean over the drawn seeds of (student - control) on the drawn examples, so the
interval covers both the dev-set sampling and the seed-to-seed variation. The point estimate is the
mean over seeds of the per-seed delta on the full dev set (predictions are *not* averaged over
seeds: the deployed model is one seed). ``per_seed`` gives each seed's own interval (examples
only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from .scores import mean_std, task_score

CONFIDENCE = 0.95
RESAMPLES = 2000
ECE_BINS = 15
#: resample rows x examples held in memory at once (float64: ~32 MB)
_BLOCK_CELLS = 4_000_000


@dataclass
class System:
    """One model's (or one set of seeds') dev outputs: ``runs[i][task][split]`` for seed ``seeds[i]``."""

    runs: list[dict[str, dict[str, Any]]]
    seeds: list[Any] = field(default_factory=list)
    kind: str = "logits"  # or "probs"

    def __post_init__(self):
        if self.kind not in ("logits", "probs"):
            raise ValueError(f"System.kind must be 'logits' or 'probs', got {self.kind!r}")
        if not self.runs:
            raise ValueError("a System needs at least one run")
        if not self.seeds:
            self.seeds = list(range(len(self.runs)))
        if len(self.seeds) != len(self.runs):
            raise ValueError(f"{len(self.runs)} runs but {len(self.seeds)} seeds")


# ---------------------------------------------------------------- predictions and probabilities


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predictions(outputs, task_type: str) -> np.ndarray:
    """Class ids (classification) or values (regression) from raw outputs."""
    out = np.asarray(outputs)
    if task_type == "regression":
        return out.astype(np.float64).reshape(-1)
    if out.ndim != 2:
        raise ValueError(f"classification outputs must be [N, C], got shape {out.shape}")
    return out.argmax(axis=-1)


def probabilities(outputs, kind: str) -> np.ndarray:
    """Class probabilities [N, C] from logits (softmax) or from probabilities (checked, renormalised)."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"classification outputs must be [N, C], got shape {out.shape}")
    if kind == "logits":
        return _softmax(out)
    if (out < -1e-6).any() or not np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError("outputs declared as probabilities do not sum to 1 per row")
    return np.clip(out, 0.0, None) / out.clip(0.0, None).sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- calibration


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE of the top-class confidence: ``sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|``.

    Equal-width bins over [0, 1] (a confidence of exactly 1 falls in the last bin), as in
    Guo et al. 2017. A fraction in [0, 1], not x100.
    """
    return _calibration_on_all(probs, labels, bins)["ece"]


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: mean over examples of ``sum_c (p_c - 1[y = c])^2`` (0 best, 2 worst)."""
    return _calibration_on_all(probs, labels)["brier"]


def calibration(outputs_by_split: dict, labels_by_split: dict, kind: str, bins: int = ECE_BINS) -> dict:
    """ECE and Brier score of one classification model on a task, its eval splits pooled."""
    probs = np.concatenate([probabilities(outputs_by_split[s], kind) for s in sorted(outputs_by_split)])
    labels = np.concatenate([np.asarray(labels_by_split[s]).reshape(-1) for s in sorted(outputs_by_split)])
    return _calibration_on_all(probs, labels, bins)


def _calibration_on_all(probs, labels, bins: int = ECE_BINS) -> dict:
    ece, brier = calibration_on_counts(probs, labels, np.ones((1, len(np.asarray(labels).reshape(-1)))), bins)
    return {"ece": float(ece[0]), "brier": float(brier[0])}


def calibration_on_counts(probs, labels, W, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """ECE and Brier score on each resample given as counts ``W`` [B, N]; a row of ones is the full set.

    Per bin, ``|B_b|/N * |acc_b - conf_b|`` is ``|sum over the bin of (correct - confidence)| / N``, so a
    resample's ECE is one weighted sum per bin.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(int)
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    conf = probs.max(axis=-1)
    gap = (probs.argmax(axis=-1) == labels).astype(np.float64) - conf
    in_bin = np.zeros((len(labels), bins))
    in_bin[np.arange(len(labels)), np.minimum((conf * bins).astype(int), bins - 1)] = 1.0
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    n = W.sum(axis=1)
    ece = np.abs((W * gap) @ in_bin).sum(axis=1) / n
    brier = W @ ((probs - onehot) ** 2).sum(axis=-1) / n
    return ece, brier


def calibration_deltas(labels: dict, a: System, b: System, *, pairs: list[tuple[int, int]],
                       resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
                       bins: int = ECE_BINS) -> dict:
    """``a - b`` in ECE and Brier score per classification task: the score's paired bootstrap, BC intervals.

    ``labels`` is ``{task: {split: array}}`` (classification tasks only); splits are pooled as in
    :func:`calibration`, but each split's examples are drawn separately, and the seeds (pairs) are
    drawn with replacement. A negative delta means ``a`` is better calibrated.
    """
    rng = np.random.default_rng(seed)
    seed_w = _seed_weights(len(pairs), resamples, rng, True)
    out: dict = {}
    for t, by_split in labels.items():
        splits = sorted(by_split)
        y = np.concatenate([np.asarray(by_split[s]).reshape(-1) for s in splits])
        sizes = [len(np.asarray(by_split[s]).reshape(-1)) for s in splits]
        probs = {(side, i): np.concatenate([probabilities(system.runs[i][t][s], system.kind) for s in splits])
                 for side, system, idx in (("a", a, 0), ("b", b, 1)) for i in {pair[idx] for pair in pairs}}
        full = {k: calibration_on_counts(pr, y, np.ones((1, len(y))), bins) for k, pr in probs.items()}
        # [B] ECE and Brier per run, a block of resamples at a time so [block, N] stays small
        ece = {k: [] for k in probs}
        brier = {k: [] for k in probs}
        step = max(1, _BLOCK_CELLS // max(1, len(y)))
        for i in range(0, resamples, step):
            w = np.hstack([resample_weights(n, min(step, resamples - i), rng) for n in sizes])
            for k, pr in probs.items():
                e, br = calibration_on_counts(pr, y, w, bins)
                ece[k].append(e)
                brier[k].append(br)
        entry = {}
        for j, (name, samples_by_run) in enumerate((("ece", ece), ("brier", brier))):
            samples = np.stack([np.concatenate(samples_by_run["a", ia]) - np.concatenate(samples_by_run["b", ib])
                                for ia, ib in pairs], axis=1)
            point = np.array([full["a", ia][j][0] - full["b", ib][j][0] for ia, ib in pairs])
            entry[name] = _summarise(samples, point, seed_w, confidence, bias_corrected=True)
        out[t] = entry
    return out


# ---------------------------------------------------------------- resampling


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``W[b, i]``: how often example ``i`` is drawn in resample ``b`` (each row sums to ``n``)."""
    idx = rng.integers(0, n, size=(resamples, n))
    return weights_from_indices(idx, n)


def weights_from_indices(indices, n: int) -> np.ndarray:
    """Turn drawn indices [B, n'] into counts [B, n] (a metric on counts equals it on the drawn rows)."""
    indices = np.asarray(indices)
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
    flat = rows * n + indices.reshape(-1)
    return np.bincount(flat, minlength=indices.shape[0] * n).reshape(indices.shape[0], n).astype(np.float64)


def _safe_div(num, den):
    den = np.asarray(den, dtype=np.float64)
    return np.where(den != 0, np.asarray(num, dtype=np.float64) / np.where(den != 0, den, 1.0), 0.0)


def _accuracy(W, p, y, num_classes):
    return 100.0 * (W @ (p == y).astype(np.float64)) / W.sum(axis=1)


def _f1(W, p, y, num_classes):
    classes = [1] if num_classes <= 2 else range(num_classes)  # binary: the positive class; else macro
    scores = []
    for c in classes:
        tp = W @ ((p == c) & (y == c)).astype(np.float64)
        fp = W @ ((p == c) & (y != c)).astype(np.float64)
        fn = W @ ((p != c) & (y == c)).astype(np.float64)
        scores.append(_safe_div(2 * tp, 2 * tp + fp + fn))
    return 100.0 * np.mean(scores, axis=0)


def _mcc(W, p, y, num_classes):
    c = max(num_classes, int(max(p.max(initial=0), y.max(initial=0))) + 1)
    s = W.sum(axis=1)
    correct = W @ (p == y).astype(np.float64)
    t = W @ np.eye(c)[y]  # true counts per class [B, C]
    q = W @ np.eye(c)[p]  # predicted counts per class
    cov_pt = correct * s - (t * q).sum(axis=1)
    cov_pp = s**2 - (q * q).sum(axis=1)
    cov_tt = s**2 - (t * t).sum(axis=1)
    return 100.0 * _safe_div(cov_pt, np.sqrt(cov_pp * cov_tt))


def _weighted_pearson(W, x, y):
    """Pearson correlation per row of W; ``x`` and ``y`` are [N] or [B, N]."""
    s = W.sum(axis=1)
    mx = (W * x).sum(axis=1) / s
    my = (W * y).sum(axis=1) / s
    dx = x - mx[:, None]
    dy = y - my[:, None]
    cov = (W * dx * dy).sum(axis=1)
    vx = (W * dx * dx).sum(axis=1)
    vy = (W * dy * dy).sum(axis=1)
    den = np.sqrt(vx * vy)
    return np.where(den > 0, cov / np.where(den > 0, den, 1.0), np.nan)


def _weighted_ranks(W, v):
    """Average ranks (ties share their mean rank, as scipy's rankdata) of ``v`` within each resample."""
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    group_of = np.empty(len(v), dtype=int)
    group_of[order] = np.cumsum(np.r_[True, sorted_v[1:] != sorted_v[:-1]]) - 1
    group_w = np.add.reduceat(W[:, order], starts, axis=1)  # drawn rows per distinct value
    before = np.cumsum(group_w, axis=1) - group_w
    midrank = before + (group_w + 1.0) / 2.0
    return midrank[:, group_of]


def _pearson(W, p, y, num_classes):
    return 100.0 * _weighted_pearson(W, p.astype(np.float64), y.astype(np.float64))


def _spearman(W, p, y, num_classes):
    return 100.0 * _weighted_pearson(W, _weighted_ranks(W, p.astype(np.float64)),
                                     _weighted_ranks(W, y.astype(np.float64)))


#: vectorised metrics on resample counts, by the metric name's stem (``accuracy_matched`` -> accuracy)
FAST_METRICS = {"accuracy": _accuracy, "acc": _accuracy, "f1": _f1, "mcc": _mcc, "matthews": _mcc,
                "pearson": _pearson, "spearman": _spearman}


def _fast_metric(name: str):
    stem = name.split("_")[0].lower()
    return FAST_METRICS.get(stem)


class TaskScorer:
    """Scores one task's predictions on many resamples at once.

    The fast path computes each reported metric from resample counts with the vectorised formula its
    name suggests (accuracy, f1, mcc, pearson, spearman). It is used only when it reproduces the task's
    own ``compute_metrics`` on the full dev set and on two resamples, for every system given;
    otherwise every resample calls ``compute_metrics`` (exact for any task, slower).
    """

    def __init__(self, task, labels: dict[str, np.ndarray]):
        self.task = task
        self.labels = {s: np.asarray(v).reshape(-1) for s, v in labels.items()}
        self.splits = sorted(self.labels)
        self.num_classes = int(task.num_outputs) if task.task_type != "regression" else 1
        self.fast: dict | None = None  # split -> [(metric name, fn)]

    def metrics(self, preds: dict[str, np.ndarray]) -> dict[str, float]:
        """The task's own metrics on the full dev splits."""
        return self.task.compute_metrics({s: preds[s] for s in self.splits}, dict(self.labels))

    def _compute_plan(self, preds: dict[str, np.ndarray]) -> dict:
        """Which metric each split reports, found by scoring one split at a time with compute_metrics."""
        plan = {}
        for s in self.splits:
            try:
                names = self.task.compute_metrics({s: preds[s]}, {s: self.labels[s]})
            except Exception:  # a task that scores its splits only together: use compute_metrics itself
                return {}
            fns = [(n, _fast_metric(n)) for n in names]
            if any(fn is None for _, fn in fns):
                return {}
            plan[s] = fns
        return plan

    def prepare(self, all_preds: list[dict[str, np.ndarray]], rng: np.random.Generator) -> None:
        """Decide between the fast path and calling ``compute_metrics``, checked on these predictions."""
        plan = self._compute_plan(all_preds[0])
        if plan:
            checks = {s: np.vstack([np.full(len(self.labels[s]), 1.0),
                                    resample_weights(len(self.labels[s]), 2, rng)]) for s in self.splits}
            for preds in all_preds:
                fast = self._score_fast(plan, preds, checks)
                for b in range(3):
                    exact = self._exact_on_counts(preds, {s: checks[s][b] for s in self.splits})
                    if set(exact) != set(fast) or any(
                            not _close(exact[k], fast[k][b]) for k in exact):
                        plan = {}
                        break
                if not plan:
                    break
        self.fast = plan or None

    def _exact_on_counts(self, preds, counts: dict[str, np.ndarray]) -> dict[str, float]:
        idx = {s: np.repeat(np.arange(len(c)), c.astype(int)) for s, c in counts.items()}
        return self.task.compute_metrics({s: preds[s][idx[s]] for s in self.splits},
                                         {s: self.labels[s][idx[s]] for s in self.splits})

    def _score_fast(self, plan, preds, W: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for s in self.splits:
            p = np.asarray(preds[s])
            y = self.labels[s]
            if self.task.task_type != "regression":
                p, y = p.astype(int), y.astype(int)
            for name, fn in plan[s]:
                out[name] = fn(W[s], p, y, self.num_classes)
        return out

    def scores(self, preds: dict[str, np.ndarray], W: dict[str, np.ndarray]) -> np.ndarray:
        """The task score (mean of its metrics, NaN left out) on each resample: [B]."""
        if self.fast is not None:
            per_metric = self._score_fast(self.fast, preds, W)
            stacked = np.vstack(list(per_metric.values()))
            with np.errstate(all="ignore"):
                valid = ~np.isnan(stacked)
                count = valid.sum(axis=0)
                return np.where(count > 0, np.where(valid, stacked, 0).sum(axis=0) / np.maximum(count, 1), np.nan)
        b = next(iter(W.values())).shape[0]
        return np.array([task_score(self._exact_on_counts(preds, {s: W[s][i] for s in self.splits}))
                         for i in range(b)])


def _close(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or math.isnan(b)
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))


def percentile_interval(samples, confidence: float = CONFIDENCE, *, point: float | None = None) -> tuple[float, float]:
    """The percentile bootstrap interval of ``samples`` (NaN resamples left out).

    With ``point`` (the estimate on the full data), the bias-corrected percentile interval (Efron's BC):
    the quantiles move by how far the resamples sit off the estimate. ECE needs it: on a resample, whose
    repeated rows leave bins noisier, it is biased upward, most for a model whose ECE is near 0.
    """
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    qs = [alpha, 1.0 - alpha]
    if point is not None and math.isfinite(point):
        below = (np.sum(samples < point) + 0.5 * np.sum(samples == point)) / samples.size
        below = min(max(below, 1.0 / (samples.size + 1)), samples.size / (samples.size + 1))
        normal = NormalDist()
        z0 = normal.inv_cdf(below)
        qs = [normal.cdf(2 * z0 + normal.inv_cdf(q)) for q in qs]
    lo, hi = np.quantile(samples, qs)
    return float(lo), float(hi)


def paired_bootstrap(scorers: dict[str, TaskScorer], a_runs: list[dict], b_runs: list[dict], *,
                     pairs: list[tuple[int, int]], score_tasks: list[str], resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0, resample_seeds: bool = True,
                     weights: dict[str, dict[str, np.ndarray]] | None = None) -> dict:
    """Paired bootstrap of ``a - b`` per task and for the GLUE-style mean over ``score_tasks``.

    ``a_runs``/``b_runs`` are predictions ``[{task: {split: preds [N]}}]``; ``pairs`` lists the
    (a run, b run) pairs (student seed s with control seed s; every student seed with the one
    ensemble). ``weights`` may give the resample counts ``{task: {split: [B, N]}}`` explicitly (tests);
    otherwise they are drawn from ``seed``. Returns deltas with their interval bounds, per task,
    for ``score``, and per pair.
    """
    rng = np.random.default_rng(seed)
    tasks = list(scorers)
    if weights is None:
        weights = {t: {s: resample_weights(len(sc.labels[s]), resamples, rng) for s in sc.splits}
                   for t, sc in scorers.items()}
    resamples = next(iter(next(iter(weights.values())).values())).shape[0]
    seed_w = _seed_weights(len(pairs), resamples, rng, resample_seeds)
    per_pair: dict[str, np.ndarray] = {}  # task -> [B, P] deltas
    point: dict[str, np.ndarray] = {}  # task -> [P] deltas on the full dev set
    for t in tasks:
        sc = scorers[t]
        full = {s: np.ones((1, len(sc.labels[s]))) for s in sc.splits}
        deltas, points = [], []
        cache_a: dict[int, tuple] = {}
        cache_b: dict[int, tuple] = {}
        for ia, ib in pairs:
            if ia not in cache_a:
                cache_a[ia] = (_blocked_scores(sc, a_runs[ia][t], weights[t]), sc.scores(a_runs[ia][t], full)[0])
            if ib not in cache_b:
                cache_b[ib] = (_blocked_scores(sc, b_runs[ib][t], weights[t]), sc.scores(b_runs[ib][t], full)[0])
            deltas.append(cache_a[ia][0] - cache_b[ib][0])
            points.append(cache_a[ia][1] - cache_b[ib][1])
        per_pair[t] = np.stack(deltas, axis=1)
        point[t] = np.asarray(points)

    result = {"tasks": {t: _summarise(per_pair[t], point[t], seed_w, confidence) for t in tasks}}
    chosen = [t for t in score_tasks if t in per_pair]
    if chosen:
        score_samples = np.mean([per_pair[t] for t in chosen], axis=0)
        score_point = np.mean([point[t] for t in chosen], axis=0)
        result["score"] = {**_summarise(score_samples, score_point, seed_w, confidence), "tasks": chosen}
    return result


def _seed_weights(n_pairs: int, resamples: int, rng: np.random.Generator, resample_seeds: bool) -> np.ndarray:
    """[B, P] multiplicities of each pair: the seeds drawn with replacement (all ones when not resampled)."""
    if resample_seeds and n_pairs > 1:
        return weights_from_indices(rng.integers(0, n_pairs, size=(resamples, n_pairs)), n_pairs)
    return np.ones((resamples, n_pairs))


def _summarise(samples_bp: np.ndarray, point_p: np.ndarray, seed_w: np.ndarray, confidence: float,
               bias_corrected: bool = False) -> dict:
    """Point delta (mean over pairs), the interval of the seed-weighted resamples, and each pair's own."""
    pooled = (samples_bp * seed_w).sum(axis=1) / seed_w.sum(axis=1)
    delta = float(np.mean(point_p))
    lo, hi = percentile_interval(pooled, confidence, point=delta if bias_corrected else None)
    out = {"delta": delta, "low": lo, "high": hi}
    if len(point_p) > 1:
        out["per_seed"] = []
        for j in range(len(point_p)):
            plo, phi = percentile_interval(samples_bp[:, j], confidence,
                                           point=float(point_p[j]) if bias_corrected else None)
            out["per_seed"].append({"delta": float(point_p[j]), "low": plo, "high": phi})
    return out


def _blocked_scores(scorer: TaskScorer, preds: dict, W: dict[str, np.ndarray]) -> np.ndarray:
    """``scorer.scores`` in blocks of resamples, so [B, N] temporaries stay small for big dev sets."""
    b = next(iter(W.values())).shape[0]
    n = sum(w.shape[1] for w in W.values())
    step = max(1, _BLOCK_CELLS // max(1, n))
    return np.concatenate([scorer.scores(preds, {s: w[i:i + step] for s, w in W.items()})
                           for i in range(0, b, step)])


# ---------------------------------------------------------------- the metrics.json block


def _fmt_signed(x: float) -> str:
    return f"{x:+.2f}"


def quotable(delta: dict, seeds: int, what: str = "the GLUE-style score") -> str:
    """The one sentence a reader can quote."""
    lo, hi = delta["low"], delta["high"]
    verdict = ("the interval excludes 0" if (lo > 0 or hi < 0) else "the interval includes 0: no clear effect")
    return (f"Distillation changed {what} by {_fmt_signed(delta['delta'])} [{lo:+.2f}, {hi:+.2f}] "
            f"over the same model trained on hard labels, {seeds} seed{'s' if seeds != 1 else ''} "
            f"(95% paired bootstrap over dev examples{' and seeds' if seeds > 1 else ''}; {verdict}).")


def _seed_spread(scorers, system: System, preds_runs, score_tasks) -> dict:
    per_task = {t: [task_score(sc.metrics(run[t])) for run in preds_runs] for t, sc in scorers.items()}
    scores = [float(np.mean([per_task[t][i] for t in score_tasks if t in per_task])) for i in range(len(preds_runs))]

    def spread(values):
        m, s = mean_std(values)
        return {"mean": m, "std": s, "min": float(np.min(values)), "max": float(np.max(values)),
                "values": [float(v) for v in values]}

    return {"seeds": list(system.seeds), "score": spread(scores), "tasks": {t: spread(v) for t, v in per_task.items()}}


def comparison(tasks: dict, labels: dict, systems: dict[str, System], *, score_tasks: list[str] | None = None,
               resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
               ece_bins: int = ECE_BINS) -> dict:
    """The ``comparison`` block of metrics.json (see the module docstring for the input shape).

    Returns ``{"method": ..., "student_vs_control": ..., "student_vs_ensemble": ..., "seed_spread": ...,
    "calibration": {system: {task: {"ece", "brier"}}}, "sentence": ...}``; a comparison whose systems
    are absent is left out. ``score_tasks`` are the tasks the GLUE-style score averages (default: all).
    """
    evaluated = [t for t in tasks if labels.get(t)]
    for name, system in systems.items():
        for i, run in enumerate(system.runs):
            missing = [t for t in evaluated if t not in run or set(run[t]) != set(labels[t])]
            if missing:
                raise ValueError(f"system {name!r} run {i} lacks dev outputs for {missing} "
                                 f"(every eval split of every evaluated task is needed)")
    score_tasks = [t for t in (score_tasks or evaluated) if t in evaluated]
    scorers = {t: TaskScorer(tasks[t], labels[t]) for t in evaluated}
    preds = {name: [{t: {s: predictions(run[t][s], tasks[t].task_type) for s in labels[t]} for t in evaluated}
                    for run in system.runs] for name, system in systems.items()}
    rng = np.random.default_rng(seed)
    for t, sc in scorers.items():
        sc.prepare([p[t] for runs in preds.values() for p in runs], rng)
    out: dict = {"method": {
        "kind": "paired percentile bootstrap",
        "confidence": confidence, "resamples": resamples, "seed": seed,
        "unit": "per seed (student seed s paired with control seed s; predictions are not averaged over "
                "seeds); each resample draws every task's dev examples and the seeds with replacement; the "
                "delta is the mean over seeds of student - control; per_seed intervals resample examples only",
        "score_tasks": score_tasks,
        "calibration": f"ECE over {ece_bins} equal-width bins of the top-class probability (a fraction, 0-1); "
                       "multi-class Brier score; eval splits pooled; classification tasks only",
        "calibration_deltas": "ECE and Brier score, the same paired bootstrap (each eval split's examples "
                              "and the seeds drawn with replacement) with bias-corrected percentile intervals "
                              "(a resample's ECE is biased upward); negative means the student is better "
                              "calibrated",
        "fast_metrics": {t: sc.fast is not None for t, sc in scorers.items()},
    }}
    cal_deltas: dict = {}
    for other in ("control", "ensemble"):
        if "student" not in systems or other not in systems:
            continue
        s_runs, o_runs = preds["student"], preds[other]
        if len(o_runs) == 1:
            pairs = [(i, 0) for i in range(len(s_runs))]
        else:
            if systems["student"].seeds != systems[other].seeds:
                raise ValueError(f"student seeds {systems['student'].seeds} and {other} seeds "
                                 f"{systems[other].seeds} must match to be paired")
            pairs = [(i, i) for i in range(len(s_runs))]
        block = paired_bootstrap(scorers, s_runs, o_runs, pairs=pairs, score_tasks=score_tasks,
                                 resamples=resamples, confidence=confidence, seed=seed,
                                 resample_seeds=True)
        block["seeds"] = list(systems["student"].seeds)
        out[f"student_vs_{other}"] = block
        cal_labels = {t: labels[t] for t in evaluated if tasks[t].task_type != "regression"}
        if cal_labels:
            cal_deltas[f"student_vs_{other}"] = calibration_deltas(
                cal_labels, systems["student"], systems[other], pairs=pairs, resamples=resamples,
                confidence=confidence, seed=seed, bins=ece_bins)
    out["seed_spread"] = {name: _seed_spread(scorers, systems[name], preds[name], score_tasks)
                          for name in ("student", "control") if name in systems}
    cal: dict = {}
    for name, system in systems.items():
        per_task = {}
        for t in evaluated:
            if tasks[t].task_type == "regression":
                continue
            runs = [calibration(run[t], labels[t], system.kind, ece_bins) for run in system.runs]
            entry = {"ece": float(np.mean([r["ece"] for r in runs])), "brier": float(np.mean([r["brier"] for r in runs]))}
            if len(runs) > 1:
                entry["ece_std"] = mean_std([r["ece"] for r in runs])[1]
                entry["brier_std"] = mean_std([r["brier"] for r in runs])[1]
            per_task[t] = entry
        if per_task:
            cal[name] = per_task
    out["calibration"] = cal
    if cal_deltas:
        out["calibration_deltas"] = cal_deltas
    if "student_vs_control" in out and "score" in out["student_vs_control"]:
        out["sentence"] = quotable(out["student_vs_control"]["score"], len(systems["student"].runs))
    return out
