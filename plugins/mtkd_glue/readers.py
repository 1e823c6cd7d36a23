"""Reading task data: glue_data TSV files, Parquet through ``datasets.load_dataset``, user tables.

Every reader returns a ``datasets.Dataset`` with the columns ``text_a``, [``text_b``], ``label``
(int64 class id, float32 for regression, -1 for unlabeled rows) and ``idx`` (int64), and routes each
bad row through :class:`BadRows`, which raises a ``DataError`` naming file, line and value, or counts
the row when the user asked to skip bad rows.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from mtkd.errors import DataError

SKIP_HINT = "fix the file, or set `data.on_bad_rows: skip` to skip such rows (they are counted and reported)"


class BadRowsWarning(UserWarning):
    """Rows skipped because ``on_bad_rows`` is ``skip``."""


class BadRows:
    """Raises at the first bad row, or counts bad rows when skipping."""

    def __init__(self, file, on_bad_rows: str = "error"):
        if on_bad_rows not in ("error", "skip"):
            raise DataError("invalid on_bad_rows setting", path="data.on_bad_rows", expected="error or skip",
                            found=on_bad_rows)
        self.file = str(file)
        self.skip = on_bad_rows == "skip"
        self.count = 0
        self.first: str | None = None

    def __call__(self, where: str, message: str, *, expected: str, found) -> None:
        if not self.skip:
            raise DataError(f"bad row: {message}", file=self.file, path=where, expected=expected, found=found,
                            hint=SKIP_HINT)
        self.count += 1
        if self.first is None:
            self.first = f"{where}: {message} (found {found!r})"

    def report(self, task: str, split: str) -> int:
        """Warn once, in one line, about what was skipped; return the count."""
        if self.count:
            warnings.warn(f"{task} {split}: skipped {self.count} bad row(s) in {self.file}; first at {self.first}",
                          BadRowsWarning, stacklevel=3)
        return self.count


def features(pair: bool, regression: bool):
    import datasets

    cols = {"text_a": datasets.Value("string")}
    if pair:
        cols["text_b"] = datasets.Value("string")
    cols["label"] = datasets.Value("float32" if regression else "int64")
    cols["idx"] = datasets.Value("int64")
    return datasets.Features(cols)


def to_dataset(columns: dict, pair: bool, regression: bool):
    import datasets

    return datasets.Dataset.from_dict(columns, features=features(pair, regression))


# ---------------------------------------------------------------- labels


class LabelParser:
    """Turns a label cell into a class id or a score; ``None`` when the value is not valid."""

    def __init__(self, kind: str, labels=None, value_range=None):
        self.kind, self.labels, self.value_range = kind, list(labels or []), value_range
        self._ids = {name: i for i, name in enumerate(self.labels)}

    @property
    def expected(self) -> str:
        if self.kind == "float":
            lo, hi = self.value_range or (-math.inf, math.inf)
            return f"a number from {lo:g} to {hi:g}"
        if self.kind == "id":
            return "a class id: " + ", ".join(f"{i} ({n})" for i, n in enumerate(self.labels))
        return "one of: " + ", ".join(self.labels)

    def __call__(self, value: str):
        if self.kind == "name":
            return self._ids.get(value)
        if self.kind == "id":
            value = value.strip()
            if value.isdigit() and int(value) < len(self.labels):
                return int(value)
            return None
        try:
            score = float(value)
        except ValueError:
            return None
        if not math.isfinite(score):
            return None
        if self.value_range and not (self.value_range[0] <= score <= self.value_range[1]):
            return None
        return score


# ---------------------------------------------------------------- glue_data TSV files


def read_glue_tsv(path: Path, fmt, parse_label: LabelParser | None, bad: BadRows, *, pair: bool,
                  regression: bool):
    """One glue_data TSV file, parsed as GLUE writes them: tab-separated, quoting disabled, UTF-8 (BOM allowed)."""
    text_a, text_b, labels, ids = [], [], [], []
    unlabeled = -1.0 if regression else -1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if fmt.header:
                header = next(reader, None)
                wanted = [c for c in (*fmt.text, fmt.label, fmt.index) if c is not None]
                if header is None or any(c not in header for c in wanted):
                    raise DataError("unexpected header", file=path, path="line 1",
                                    expected="a header with the columns " + ", ".join(wanted),
                                    found="\t".join(header) if header else "(empty file)")
                ncols = len(header)
                col = {name: header.index(name) for name in wanted}
            else:
                ncols = fmt.ncols
                col = {c: c for c in (*fmt.text, fmt.label, fmt.index) if c is not None}
            text_cols = [col[c] for c in fmt.text]
            label_col = col.get(fmt.label) if fmt.label is not None else None
            index_col = col.get(fmt.index) if fmt.index is not None else None
            rowno = -1
            for row in reader:
                if not row:  # a blank line holds no row
                    continue
                rowno += 1
                where = f"line {reader.line_num}"
                if len(row) != ncols:
                    bad(where, f"{len(row)} columns instead of {ncols}", expected=f"{ncols} tab-separated columns",
                        found="\t".join(row)[:200])
                    continue
                if label_col is not None:
                    label = parse_label(row[label_col])
                    if label is None:
                        bad(where, "invalid label", expected=parse_label.expected, found=row[label_col])
                        continue
                else:
                    label = unlabeled
                if index_col is not None:
                    cell = row[index_col].strip()
                    if not cell.isdigit():
                        bad(where, "invalid index", expected="a non-negative integer", found=row[index_col])
                        continue
                    idx = int(cell)
                else:
                    idx = rowno
                text_a.append(row[text_cols[0]])
                if pair:
                    text_b.append(row[text_cols[1]])
                labels.append(label)
                ids.append(idx)
    except csv.Error as exc:
        raise DataError(f"unreadable TSV: {exc}", file=path, hint=SKIP_HINT) from None
    except UnicodeDecodeError as exc:
        raise DataError("the file is not UTF-8 text", file=path, found=str(exc), expected="UTF-8 text") from None
    columns = {"text_a": text_a, **({"text_b": text_b} if pair else {}), "label": labels, "idx": ids}
    return to_dataset(columns, pair, regression)


# ---------------------------------------------------------------- Parquet (hub or local folder)


@contextlib.contextmanager
def quiet_datasets():
    """No progress bars or card chatter ("Repo card metadata block was not found") while we load."""
    import datasets

    card_logger = logging.getLogger("huggingface_hub.repocard")
    level, bars = card_logger.level, datasets.utils.are_progress_bars_disabled()
    card_logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        card_logger.setLevel(level)
        if not bars:
            datasets.enable_progress_bars()


def load_hub_split(source: str, config: str, split: str, *, cache_dir: str | None = None):
    """``datasets.load_dataset`` on a hub id or a local folder in the hub's layout: the same call for both.

    The data files are named explicitly (``{config}/{split}-*.parquet``), which is how the
    ``nyu-mll/glue`` repository lays them out, so only the wanted split is read.
    """
    import datasets

    try:
        with quiet_datasets():
            return datasets.load_dataset(source, data_files={split: f"{config}/{split}-*.parquet"}, split=split,
                                         cache_dir=cache_dir)
    except Exception as exc:  # network, missing repo or file, unreadable Parquet: all input problems
        raise DataError(f"cannot load {config}/{split} from {source!r}: {exc}", file=source,
                        expected=f"a Hugging Face dataset id or a folder with {config}/{split}-00000-of-00001.parquet",
                        hint="without network access, point `data.glue` (or the task's `source`) at a local "
                             "copy: a Parquet folder laid out like nyu-mll/glue, or a glue_data TSV folder") from exc


def normalize_hub_split(ds, spec, split: str, bad: BadRows, *, labeled: bool):
    """Rename a ``nyu-mll/glue`` split to text_a/text_b/label/idx, checking labels and text first."""
    import datasets
    import pyarrow.compute as pc

    wanted = [*spec.hf_text, "label", "idx"]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise DataError(f"{spec.config}/{split} lacks columns {missing}", file=bad.file,
                        expected="the columns " + ", ".join(wanted), found=ds.column_names)
    feature = ds.features["label"]
    if spec.labels is not None and isinstance(feature, datasets.ClassLabel) and feature.names != list(spec.labels):
        raise DataError(f"{spec.config}/{split} has other class names or another label order", file=bad.file,
                        path="features.label", expected=list(spec.labels), found=feature.names)

    table = ds.data
    label = table.column("label").to_numpy(zero_copy_only=False).astype(float)
    if spec.task_type == "regression":
        lo, hi = spec.value_range
        valid = np.isfinite(label) & (label >= lo) & (label <= hi)
        expected = f"a score from {lo:g} to {hi:g}"
    else:
        valid = np.isin(label, np.arange(len(spec.labels)))
        expected = "a class id from 0 to " + str(len(spec.labels) - 1)
    if not labeled:  # test splits carry -1 (MRPC test, in nyu-mll/glue, its real labels)
        valid |= label == -1
        expected += " or -1 (unlabeled)"
    text_ok = np.ones(len(label), dtype=bool)
    for name in spec.hf_text:
        text_ok &= ~pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
    idx_ok = ~pc.is_null(table.column("idx")).to_numpy(zero_copy_only=False)
    good = valid & text_ok & idx_ok
    if not good.all():
        for i in np.flatnonzero(~good):
            if not text_ok[i]:
                bad(f"row {i}", "missing text", expected="a string", found=None)
            elif not idx_ok[i]:
                bad(f"row {i}", "missing idx", expected="an integer", found=None)
            else:
                bad(f"row {i}", "invalid label", expected=expected, found=ds[int(i)]["label"])
        ds = ds.select(np.flatnonzero(good).tolist())
    if not labeled:
        # test splits are unlabeled, as in GLUE's own files (nyu-mll/glue's MRPC test carries labels):
        # both layouts then give the same rows, and no test label can leak into training or model choice
        ds = ds.remove_columns("label").add_column("label", [-1] * len(ds))
    pair = len(spec.hf_text) == 2
    names = {spec.hf_text[0]: "text_a", **({spec.hf_text[1]: "text_b"} if pair else {})}
    ds = ds.select_columns(wanted).rename_columns(names)
    with quiet_datasets():
        return ds.cast(features(pair, spec.task_type == "regression"))


# ---------------------------------------------------------------- user tables (csv / tsv / jsonl)


def table_format(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = Path(path).suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        raise DataError("cannot tell the table's format from its file name", file=path,
                        expected="a .csv, .tsv or .jsonl file, or the task's `format:` key", found=suffix or path)
    return formats[suffix]


def read_table_rows(path: str, fmt: str, columns: list[str], optional: list[str], bad: BadRows):
    """Yield ``(where, rowno, {column: value})`` for each good row; the named columns must exist.

    CSV files use standard CSV quoting; TSV files are read like GLUE's (quoting disabled); JSON
    lines hold one object per line. ``optional`` columns may be absent from the whole file.
    """
    if not os.path.isfile(path):
        raise DataError("data file not found", file=path, expected="an existing csv, tsv or jsonl file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                yield from _jsonl_rows(f, path, columns, optional, bad)
                return
            if fmt == "csv":
                reader = csv.reader(f)
            else:
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            missing = [c for c in columns if c not in (header or [])]
            if missing:
                raise DataError(f"the header lacks the column(s) {', '.join(missing)}", file=path, path="line 1",
                                expected="a header row naming " + ", ".join(columns),
                                found=",".join(header) if header else "(empty file)")
            pos = {c: header.index(c) for c in [*columns, *optional] if c in header}
            rowno = -1
            for row in reader:
                if not row:
                    continue
                rowno += 1
                where = f"line {reader.line_num}"
                if len(row) != len(header):
                    bad(where, f"{len(row)} columns instead of {len(header)}",
                        expected=f"{len(header)} columns, as in the header", found=row[:8])
                    continue
                yield where, rowno, {c: row[i] for c, i in pos.items()}
    except csv.Error as exc:
        raise DataError(f"unreadable {fmt.upper()} file: {exc}", file=path) from None
    except UnicodeDecodeError as exc:
        raise DataError("the file is not UTF-8 text", file=path, found=str(exc), expected="UTF-8 text") from None


def _jsonl_rows(f, path, columns, optional, bad: BadRows):
    rowno = -1
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        rowno += 1
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad(where, f"invalid JSON ({exc.msg})", expected="one JSON object per line", found=line.strip()[:200])
            continue
        if not isinstance(obj, dict):
            bad(where, "not a JSON object", expected="one JSON object per line", found=line.strip()[:200])
            continue
        absent = [c for c in columns if obj.get(c) is None]
        if absent:
            bad(where, f"missing {', '.join(absent)}", expected="the keys " + ", ".join(columns),
                found=sorted(obj))
            continue
        yield where, rowno, {c: _cell(v) for c, v in obj.items()
                             if (c in columns or c in optional) and v is not None}


def _cell(value) -> str:
    """A JSON value as the string a CSV file would hold (``1`` stays ``1``, ``true`` becomes ``true``)."""
    return json.dumps(value) if not isinstance(value, str) else value
