"""Predictions of one model of a recipe version (see ``mtkd.stages.models``): submission files for the test
splits (``mtkd predict``) and metrics on any labelled split (``mtkd evaluate``)."""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError, DataError


def _outputs(chosen, models, task_name: str, tb, split: str, ds) -> np.ndarray:
    """The chosen model's outputs on a split: one model's logits, or the ensemble's aggregate."""
    from .data import tokenize_split
    from .inference import predict_logits
    from .stages.context import aggregator
    from .stages.units import aggregate_outputs, member_scores

    ctx = chosen.ctx
    r = ctx.recipe.resolved
    outputs = []
    for model in models:
        tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=r["data"]["max_length"],
                             cache_dir=r["data"]["cache_dir"], dataset=ds)
        outputs.append(predict_logits(model, tb.task.head_task or task_name, tok,
                                      batch_size=r["training"]["eval_batch_size"],
                                      pad_token_id=model.encoder.tokenizer.pad_token_id or 0,
                                      precision=r["training"]["precision"]))
    if chosen.role != "ensemble":
        return outputs[0]
    scores = None
    if getattr(aggregator(ctx.recipe, tb.task), "uses_member_scores", False):  # as in the soft targets
        if len(chosen.logit_units) != len(models):
            raise CheckpointError("the ensemble weights members by their dev scores, and the members' dev outputs "
                                  "are not computed for this recipe version",
                                  hint="run `mtkd recipe run RECIPE --stage logits`")
        scores = member_scores(ctx, chosen.logit_units, task_name)
    return aggregate_outputs(ctx.recipe, tb.task, outputs, scores)


def _load_counting_skipped(task, split: str):
    """The split, and how many rows ``on_bad_rows: skip`` dropped from it (reported by the reader's warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = task.load_split(split)
    skipped = 0
    for w in caught:
        if type(w.message).__name__ == "BadRowsWarning":
            count = getattr(w.message, "count", None)
            if count is None:
                m = re.search(r"skipped (\d+) bad row", str(w.message))
                count = int(m.group(1)) if m else 1
            skipped += int(count)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ds, skipped


def write_predictions(chosen, *, out_dir: Path | None = None, allow_incomplete: bool = False) -> Path:
    """GLUE-style submission files (and a zip) of the chosen model for every test split."""
    from .model import load_model, recipe_allows_code
    from .training import to_predictions

    ctx = chosen.ctx
    models = [load_model(d, allow_code=recipe_allows_code(ctx.recipe)).eval() for d in chosen.dirs]
    first = chosen.seed is None or chosen.seed == ctx.student_seeds()[0]
    label = chosen.role.replace(":", "-") + ("" if first else f"-s{chosen.seed}")
    out_dir = Path(out_dir or ctx.store.path(f"submission-{label}"))
    todo = []
    for name, tb in ctx.tasks.items():
        for split in tb.task.test_splits or []:
            ds, skipped = _load_counting_skipped(tb.task, split)
            todo.append((name, tb, split, ds, skipped))
    incomplete = [(n, s, k) for n, _, s, _, k in todo if k]
    if incomplete and not allow_incomplete:
        n, s, k = incomplete[0]
        raise DataError(f"{sum(x[2] for x in incomplete)} test row(s) were skipped as bad rows ({n} {s}: {k}); "
                        "the submission would miss them", path="data.on_bad_rows",
                        hint="fix the rows, or pass --allow-incomplete to write the submission without them")
    if not todo:
        raise CheckpointError("no task of the recipe has a test split to predict", file=ctx.recipe.file)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    by_task: dict = {}
    for name, tb, split, ds, _ in todo:
        entry = by_task.setdefault(name, (tb, {}, {}))
        entry[1][split] = to_predictions(_outputs(chosen, models, name, tb, split, ds), tb.task.task_type)
        entry[2][split] = np.asarray(ds["idx"])
    for tb, preds, indices in by_task.values():
        written += [Path(p) for p in tb.task.write_submission(preds, indices, out_dir)]
    zip_path = out_dir.with_suffix(".zip")
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in written:
            zf.write(p, arcname=p.name)
    tmp.replace(zip_path)
    return zip_path


def _has_labels(labels: np.ndarray, task_type: str) -> bool:
    if labels.size == 0:
        return False
    if task_type == "regression":
        return bool(np.isfinite(labels.astype(float)).all())
    return bool((labels >= 0).all())


def evaluate_split(chosen, split: str, tasks=None) -> dict:
    """Metrics (x100) of the chosen model on ``split`` of every task that has it with labels.

    A split the task does not score itself (a labelled test split) is scored with its dev split's metrics;
    the train and dev splits are the recipe's (``max_train_examples``/``max_eval_examples`` applied).
    """
    from .model import load_model, recipe_allows_code
    from .training import to_predictions

    ctx = chosen.ctx
    models = [load_model(d, allow_code=recipe_allows_code(ctx.recipe)).eval() for d in chosen.dirs]
    out = {}
    names = tasks or list(ctx.tasks)
    for name in names:
        if name not in ctx.tasks:
            raise DataError(f"no task {name!r} in the recipe", path="--task", expected=f"one of {list(ctx.tasks)}",
                            found=name)
        tb = ctx.tasks[name]
        splits = [tb.task.train_split, *tb.task.eval_splits, *(tb.task.test_splits or [])]
        if split not in splits:
            if tasks:
                raise DataError(f"task {name!r} has no split {split!r}", path="--split", expected=f"one of {splits}",
                                found=split)
            continue
        # The train and dev splits as the run sees them (max_*_examples applied): the report's figures.
        ds = tb.split(split) if split == tb.task.train_split or split in tb.evals else tb.task.load_split(split)
        labels = np.asarray(ds["label"])
        if not _has_labels(labels, tb.task.task_type):
            if tasks:
                raise DataError(f"{name} {split} has no labels to score against", path="--split", found=split)
            continue
        preds = to_predictions(_outputs(chosen, models, name, tb, split, ds), tb.task.task_type)
        as_split = split if split in tb.task.eval_splits else tb.task.eval_splits[0]
        out[name] = tb.task.compute_metrics({as_split: preds}, {as_split: labels})
    if not out:
        raise DataError(f"no task of the recipe has a labelled {split!r} split", path="--split", found=split)
    return out
