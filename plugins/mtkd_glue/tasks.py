"""The GLUE tasks and the ``table`` task (a user's own csv/tsv/jsonl files, no code needed)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_serializer, model_validator

from mtkd.errors import DataError
from mtkd.params import Params

from . import metrics as M
from .readers import (
    BadRows,
    LabelParser,
    load_hub_split,
    normalize_hub_split,
    read_glue_tsv,
    read_table_rows,
    table_format,
    to_dataset,
)
from .specs import DESCRIPTIONS, SPECS, TSV_DIRS, GlueSpec
from .submission import format_predictions, write_predictions

DEFAULT_SOURCE = "nyu-mll/glue"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _resolve(context, value: str) -> str:
    resolved = context.resolve_path(value) if context.resolve_path else value
    return os.path.expanduser(resolved)


class _Metrics:
    """Metrics per eval split, shared by GLUE and table tasks."""

    task_type: str
    name: str

    def _metric_plan(self) -> dict:  # split -> [(reported name, function)]
        raise NotImplementedError

    def compute_metrics(self, predictions: dict, labels: dict) -> dict[str, float]:
        """Metrics (x100) for every split of ``predictions`` this task scores; splits it does not score are errors."""
        plan = self._metric_plan()
        unknown = [s for s in predictions if s not in plan]
        if unknown:
            raise ValueError(f"{self.name}: no metrics for split(s) {unknown}; it scores {sorted(plan)}")
        out = {}
        for split, metrics in plan.items():
            if split not in predictions:
                continue
            if split not in labels:
                raise ValueError(f"{self.name}: predictions for {split!r} but no labels")
            y = np.asarray(labels[split])
            p = np.asarray(predictions[split])
            if self.task_type == "regression":
                p, y = p.astype(float).reshape(-1), y.astype(float).reshape(-1)
            else:
                p = p.argmax(axis=1) if p.ndim == 2 else p.reshape(-1)
                y = y.reshape(-1)
                if (y < 0).any():
                    raise ValueError(f"{self.name}: the labels of {split!r} include unlabeled rows (-1)")
            if len(p) != len(y):
                raise ValueError(f"{self.name}: {len(p)} predictions but {len(y)} labels for {split!r}")
            for name, fn in metrics:
                out[name] = fn(p, y)
        return out

    @property
    def num_outputs(self) -> int:
        return 1 if self.task_type == "regression" else len(self.labels)


# ---------------------------------------------------------------- GLUE


#: an optional split of inputs without labels (a transfer set), in the test split's format
UNLABELLED = "unlabelled"


def _tsv_file(spec: GlueSpec, split: str) -> str:
    return "unlabelled.tsv" if split == UNLABELLED else spec.tsv_files[split]


class GlueParams(Params):
    source: str | None = Field(
        None, description="this task's data: a hub id, a Parquet folder laid out like nyu-mll/glue, or a glue_data "
                          "TSV folder; default the recipe's `data.glue`, else nyu-mll/glue")


class GlueTask(_Metrics):
    """A GLUE task read from the Hugging Face hub, a local copy of it in Parquet, or a glue_data TSV folder."""

    def __init__(self, spec: GlueSpec, params: GlueParams, context):
        self.spec, self.params, self.context = spec, params, context
        self.name = context.name
        self.task_type = spec.task_type
        self.labels = list(spec.labels) if spec.labels else None
        self.text_fields = ("text_a", "text_b") if len(spec.hf_text) == 2 else ("text_a",)
        self.metric_names = spec.metric_names
        self.train_split = spec.train_split  # None for AX: nothing to train on
        self.eval_splits = list(spec.eval_splits)
        self.test_splits = list(spec.test_splits)
        self.head_task = spec.head_task
        self.bad_rows: dict[str, int] = {}
        self._source: tuple[str, str] | None = None
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"GlueTask({self.name!r}, {self.spec.config})"

    # ---- where the data is

    @property
    def source(self) -> tuple[str, str]:
        """``(layout, location)``: layout is ``hub``, ``parquet`` (local folder) or ``tsv`` (glue_data folder)."""
        if self._source is None:
            raw = str(self.params.source or self.context.sources.get("glue") or DEFAULT_SOURCE)
            path = Path(_resolve(self.context, raw))
            if path.is_dir():
                self._source = (detect_layout(path), str(path.resolve()))
            elif path.exists():
                raise DataError("the GLUE data source is a file, not a folder", file=path,
                                expected="a folder or a Hugging Face dataset id")
            elif _HUB_ID.fullmatch(raw):
                self._source = ("hub", raw)
            else:
                raise DataError("GLUE data folder not found", file=path,
                                expected="an existing folder (relative paths are read from the working directory "
                                         "or the recipe's folder) or a Hugging Face dataset id such as nyu-mll/glue")
        return self._source

    def _files(self, split: str) -> list[Path]:
        layout, where = self.source
        if layout == "tsv":
            path = Path(where) / self.spec.tsv_dir / _tsv_file(self.spec, split)
            return [path] if path.is_file() else []
        if layout == "parquet":
            return sorted((Path(where) / self.spec.config).glob(f"{split}-*.parquet"))
        return []

    def _expected_file(self, split: str) -> Path:
        layout, where = self.source
        if layout == "tsv":
            return Path(where) / self.spec.tsv_dir / _tsv_file(self.spec, split)
        return Path(where) / self.spec.config / f"{split}-00000-of-00001.parquet"

    def check_sources(self) -> None:
        """The data folder exists and holds the training and dev splits (a hub id is checked when loaded)."""
        have = self.available_splits()
        for split in [s for s in (self.train_split, *self.eval_splits) if s]:
            if split not in have:
                layout = self.source[0]
                raise DataError(f"no {split} data for {self.spec.config}", file=self._expected_file(split),
                                expected=f"this file in the {layout} layout")

    def available_splits(self) -> list[str]:
        """The task's splits present in the source (all of them for a hub id)."""
        if self.source[0] == "hub":
            return self.spec.splits
        return [s for s in (*self.spec.splits, UNLABELLED) if self._files(s)]

    # ---- data

    def load_split(self, split: str):
        """A split of the task; ``unlabelled`` is an optional extra file of inputs laid out like the test split
        (``<TASK>/unlabelled.tsv`` or ``<config>/unlabelled-*.parquet``), for a transfer set."""
        if split not in self.spec.splits and split != UNLABELLED:
            raise DataError(f"task {self.name!r} ({self.spec.config}) has no split {split!r}",
                            expected="one of: " + ", ".join([*self.spec.splits, UNLABELLED]), found=split)
        if split in self._cache:
            return self._cache[split]
        layout, where = self.source
        if split == UNLABELLED and layout == "hub":
            raise DataError(f"task {self.name!r}: the hub copy {where} has no {UNLABELLED} split", found=split,
                            expected=f"a local data folder with {self.spec.tsv_dir}/unlabelled.tsv (glue_data "
                                     f"layout) or {self.spec.config}/unlabelled-*.parquet, in the test split's format")
        labeled = split not in self.spec.test_splits and split != UNLABELLED
        pair, regression = len(self.text_fields) == 2, self.task_type == "regression"
        if layout != "hub" and not self._files(split):
            raise DataError(f"no {split} data for {self.spec.config}", file=self._expected_file(split),
                            expected=f"this file in the {layout} layout", hint="is this split part of your copy?")
        if layout == "tsv":
            path = self._files(split)[0]
            bad = BadRows(path, self.context.on_bad_rows)
            fmt = self.spec.tsv_labeled if labeled else self.spec.tsv_test
            parser = LabelParser(self.spec.label_kind, self.labels, self.spec.value_range)
            ds = read_glue_tsv(path, fmt, parser, bad, pair=pair, regression=regression)
        else:
            file = self._expected_file(split) if layout == "parquet" else f"{where}/{self.spec.config}/{split}"
            bad = BadRows(file, self.context.on_bad_rows)
            cache_dir = os.path.join(self.context.cache_dir, "hf-datasets") if self.context.cache_dir else None
            raw = load_hub_split(where, self.spec.config, split, cache_dir=cache_dir)
            ds = normalize_hub_split(raw, self.spec, split, bad, labeled=labeled)
        self.bad_rows[split] = bad.report(self.name, split)
        if labeled and not len(ds):  # nothing to train on or to score: fail now, not after training
            raise DataError(f"{self.spec.config} {split}: no rows" + (
                f" ({self.bad_rows[split]} skipped as bad)" if self.bad_rows[split] else ""), file=bad.file,
                expected="at least one labeled row")
        self._cache[split] = ds
        return ds

    def fingerprint(self) -> str:
        layout, where = self.source
        payload = {"task": self.name, "glue": self.spec.config, "layout": layout, "source": where,
                   "on_bad_rows": self.context.on_bad_rows}
        if layout == "hub":  # the hub's own content hashes, through the loaded splits
            payload["data"] = {s: self.load_split(s)._fingerprint for s in self.spec.splits}
        else:
            payload["files"] = {s: [_file_stamp(f) for f in self._files(s)] for s in self.spec.splits}
        return _digest(payload)

    # ---- scores and submissions

    def _metric_plan(self) -> dict:
        return {split: [(name, getattr(M, fn)) for name, fn in metrics] for split, metrics in self.spec.metrics.items()}

    def write_submission(self, predictions: dict, indices: dict, out_dir) -> list[Path]:
        """GLUE's file(s) for the given test split(s), e.g. ``RTE.tsv``; MNLI writes ``MNLI-m.tsv``/``MNLI-mm.tsv``."""
        paths = []
        for split, preds in predictions.items():
            if split not in self.spec.submission:
                raise ValueError(f"{self.name}: {split!r} is not a test split; expected one of {self.test_splits}")
            if split not in indices:
                raise ValueError(f"{self.name}: predictions for {split!r} but no indices")
            values = format_predictions(preds, task_type=self.task_type, labels=self.labels,
                                        names=self.spec.submit_names, value_range=self.spec.value_range)
            paths.append(write_predictions(Path(out_dir) / self.spec.submission[split], indices[split], values))
        return paths


def detect_layout(folder: Path) -> str:
    """``parquet`` or ``tsv`` from what the folder holds; a DataError saying what was expected otherwise."""
    if any(folder.glob("*/*.parquet")):
        return "parquet"
    if any((folder / d).is_dir() and any((folder / d).glob("*.tsv")) for d in TSV_DIRS):
        return "tsv"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:12]
    raise DataError("not a GLUE data folder", file=folder,
                    expected="a Parquet folder laid out like nyu-mll/glue ({config}/{split}-00000-of-00001.parquet, "
                             "e.g. rte/train-00000-of-00001.parquet) or a glue_data TSV folder (<TASK>/train.tsv, "
                             "dev.tsv, test.tsv, e.g. RTE/train.tsv)",
                    found=found or "(empty folder)")


def glue_factory(config: str):
    spec = SPECS[config]

    def factory(params: GlueParams, context) -> GlueTask:
        return GlueTask(spec, params, context)

    factory.__doc__ = DESCRIPTIONS[config]
    return factory


# ---------------------------------------------------------------- user tables


TableMetric = Literal["accuracy", "f1", "matthews", "pearson", "spearman"]


class TableParams(Params):
    """A task from your own files: one row per example, one or two text columns and a label column."""

    train: str = Field(description="training file (csv, tsv or jsonl)")
    validation: str | None = Field(None, description="dev file, scored with `metrics`")
    test: str | None = Field(None, description="test file (labels optional), written as <name>.tsv submissions")
    split_column: str | None = Field(None, description="a column naming each row's split, for one file holding "
                                                       "several splits (`validation`/`test` default to `train`'s "
                                                       "file)")
    split_values: dict[Literal["train", "validation", "test"], str] = Field(
        default_factory=lambda: {"train": "train", "validation": "validation"},
        description="with `split_column`: the splits to read and the value that selects each, e.g. "
                    "{train: TRAIN, validation: TRIAL, test: TEST}")
    format: Literal["csv", "tsv", "jsonl"] | None = Field(None, description="default: from the file extension")
    text_columns: list[str] = Field(min_length=1, max_length=2)
    label_column: str = "label"
    id_column: str | None = Field(None, description="integer example ids; default the row number")
    task_type: Literal["classification", "regression"] = "classification"
    labels: list[str] | None = Field(None, description="class names in id order; default the sorted train labels")
    metrics: list[TableMetric] | None = Field(None, description="default accuracy, or pearson + spearman")

    @model_serializer(mode="wrap")
    def _omit_unused_split_keys(self, handler):
        """Without a split column, its keys stay out of the resolved recipe: earlier runs keep their hashes."""
        data = handler(self)
        if isinstance(data, dict) and data.get("split_column") is None:
            data.pop("split_column", None)
            data.pop("split_values", None)
        return data

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value):
        # YAML reads `labels: [0, 1]` as numbers; the files hold them as text
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self):
        if self.split_column and "train" not in self.split_values:
            raise ValueError("`split_values` needs the value that selects the `train` rows")
        if self.task_type == "regression" and self.labels:
            raise ValueError("`labels` is for classification tasks, not regression")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("`labels` has duplicates")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("a classification task needs at least 2 `labels`")
        if len(set(self.text_columns)) != len(self.text_columns):
            raise ValueError("`text_columns` names the same column twice")
        allowed = M.REGRESSION_METRICS if self.task_type == "regression" else M.CLASSIFICATION_METRICS
        wrong = [m for m in self.metrics or [] if m not in allowed]
        if wrong:
            raise ValueError(f"metric(s) {wrong} do not apply to {self.task_type}; use {sorted(allowed)}")
        return self


def _natural_sorted(values) -> list[str]:
    """Numbers in numeric order (``2`` before ``10``), anything else alphabetically."""
    def number(v):
        try:
            return float(v)
        except ValueError:
            return None

    if all(number(v) is not None for v in values):
        return sorted(values, key=lambda v: (number(v), v))
    return sorted(values)


class TableTask(_Metrics):
    """A user-defined task read from csv/tsv/jsonl files."""

    def __init__(self, params: TableParams, context):
        self.params, self.context = params, context
        self.name = context.name
        self.task_type = params.task_type
        self.text_fields = ("text_a", "text_b") if len(params.text_columns) == 2 else ("text_a",)
        self.metric_names = list(params.metrics or (["accuracy"] if self.task_type == "classification"
                                                    else ["pearson", "spearman"]))
        self.train_split = "train"
        by_column = params.split_values if params.split_column else {}
        self.eval_splits = ["validation"] if params.validation or "validation" in by_column else []
        self.test_splits = ["test"] if params.test or "test" in by_column else []
        self.head_task = None
        self.bad_rows: dict[str, int] = {}
        self._labels = list(params.labels) if params.labels else None
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"TableTask({self.name!r})"

    @property
    def labels(self) -> list[str] | None:
        if self.task_type == "regression":
            return None
        if self._labels is None:
            self.load_split("train")  # infers them
        return self._labels

    def _path(self, split: str) -> str:
        # With a split column, one file may hold every split: `validation`/`test` default to `train`'s.
        return _resolve(self.context, getattr(self.params, split) or self.params.train)

    def available_splits(self) -> list[str]:
        return [self.train_split, *self.eval_splits, *self.test_splits]

    def check_sources(self) -> None:
        """Every file the task names exists."""
        for split in self.available_splits():
            if not os.path.isfile(self._path(split)):
                raise DataError("data file not found", file=self._path(split), path=split,
                                expected="an existing csv, tsv or jsonl file")

    def load_split(self, split: str):
        if split not in self.available_splits():
            raise DataError(f"task {self.name!r} has no split {split!r}",
                            expected="one of: " + ", ".join(self.available_splits()), found=split)
        if split in self._cache:
            return self._cache[split]
        p = self.params
        path = self._path(split)
        labeled = split != "test"
        # One file for every split: the test rows may lack the label, so it is checked per selected row.
        label_required = labeled and not p.split_column
        required = [*p.text_columns, *([p.label_column] if label_required else []),
                    *([p.id_column] if p.id_column else []), *([p.split_column] if p.split_column else [])]
        optional = [] if label_required else [p.label_column]
        bad = BadRows(path, self.context.on_bad_rows)
        rows = read_table_rows(path, table_format(path, p.format), required, optional, bad)
        if p.split_column:
            wanted = p.split_values[split]
            rows = (r for r in rows if r[2][p.split_column] == wanted)
        regression = self.task_type == "regression"
        if not regression and self._labels is None:
            if split != "train":
                self.load_split("train")
            else:  # the labels are the train file's: read it whole first
                rows = list(rows)
                labels = _natural_sorted({r[p.label_column] for _, _, r in rows if r[p.label_column] != ""})
                if len(labels) == 1:  # (none at all: "no usable rows" below)
                    raise DataError(f"the training file has only one distinct label in {p.label_column!r}",
                                    file=path, path=p.label_column,
                                    expected="at least 2 classes (or task_type: regression)", found=labels)
                self._labels = labels
        ids = {name: i for i, name in enumerate(self._labels or [])}
        expected = ("a number" if regression else "one of the task's labels: " + ", ".join(self._labels))
        cols = {"text_a": [], "text_b": [], "label": [], "idx": []}
        seen_ids: dict[int, str] = {}
        for where, rowno, row in rows:
            value = row.get(p.label_column, "")
            if value == "" and not labeled:
                label = -1.0 if regression else -1
            elif regression:
                try:
                    label = float(value)
                except ValueError:
                    label = math.nan
                if not math.isfinite(label):
                    bad(where, f"invalid {p.label_column}", expected=expected, found=value)
                    continue
            elif value in ids:
                label = ids[value]
            else:
                bad(where, f"{p.label_column} outside the task's labels" if value else f"empty {p.label_column}",
                    expected=expected, found=value)
                continue
            if p.id_column:
                cell = row[p.id_column].strip()
                if not re.fullmatch(r"-?\d+", cell):
                    bad(where, f"invalid {p.id_column}", expected="an integer id", found=row[p.id_column])
                    continue
                idx = int(cell)
                if idx in seen_ids:  # predictions and submissions are keyed by id
                    bad(where, f"duplicate {p.id_column}", expected=f"unique ids ({idx} is on {seen_ids[idx]} too)",
                        found=row[p.id_column])
                    continue
                seen_ids[idx] = where
            else:
                idx = rowno
            cols["text_a"].append(row[p.text_columns[0]])
            if len(p.text_columns) == 2:
                cols["text_b"].append(row[p.text_columns[1]])
            cols["label"].append(label)
            cols["idx"].append(idx)
        if len(p.text_columns) == 1:
            del cols["text_b"]
        self.bad_rows[split] = bad.report(self.name, split)
        if split == "train" and not cols["idx"]:
            raise DataError("the training file has no usable rows", file=path, expected="at least one labeled row",
                            hint=f"no row has {p.split_column} = {p.split_values['train']!r}" if p.split_column
                            else None)
        if labeled and not cols["idx"]:
            raise DataError(f"the {split} file has no rows", file=path, expected="at least one labeled row",
                            hint=f"no row has {p.split_column} = {p.split_values[split]!r}" if p.split_column
                            else None)
        ds = to_dataset(cols, len(p.text_columns) == 2, regression)
        self._cache[split] = ds
        return ds

    def _metric_plan(self) -> dict:
        n = self.num_outputs
        fns = {name: (functools.partial(M.f1, num_classes=n) if name == "f1" else M.METRICS[name])
               for name in self.metric_names}
        return {s: [(name, fns[name]) for name in self.metric_names] for s in self.eval_splits}

    def fingerprint(self) -> str:
        files = {s: _file_stamp(Path(self._path(s))) for s in self.available_splits()
                 if os.path.isfile(self._path(s))}
        return _digest({"task": self.name, "table": self.params.model_dump(mode="json"), "files": files,
                        "on_bad_rows": self.context.on_bad_rows})

    def write_submission(self, predictions: dict, indices: dict, out_dir) -> list[Path]:
        """``<name>.tsv`` with ``index<TAB>prediction`` (class names, or values for regression)."""
        paths = []
        for split, preds in predictions.items():
            if split not in self.test_splits:
                raise ValueError(f"{self.name}: {split!r} is not a test split; expected one of {self.test_splits}")
            if split not in indices:
                raise ValueError(f"{self.name}: predictions for {split!r} but no indices")
            values = format_predictions(preds, task_type=self.task_type, labels=self.labels, names=True)
            paths.append(write_predictions(Path(out_dir) / f"{self.name}.tsv", indices[split], values))
        return paths


def table_factory(params: TableParams, context) -> TableTask:
    """A user-defined task from csv/tsv/jsonl files (no code): text columns, a label column, metrics."""
    return TableTask(params, context)
