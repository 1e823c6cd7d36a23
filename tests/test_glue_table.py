"""The ``table`` task: a user's own csv/tsv/jsonl files, without code."""

from __future__ import annotations

import json

import pytest
from mtkd_glue import BadRowsWarning

from mtkd.components import Task, TaskContext
from mtkd.errors import DataError, RecipeError

CSV_TRAIN = ('id,premise,hypothesis,verdict\n'
             '10,"A cat, on a mat.",A cat sits.,yes\n'
             '11,"She said ""no"".",She agreed.,no\n'
             '12,It rained.,It was wet.,yes\n')


def table(registries, tmp_path, *, on_bad_rows="error", name="claims", **params):
    ctx = TaskContext(name=name, on_bad_rows=on_bad_rows, resolve_path=lambda p: str(tmp_path / p))
    return registries.tasks.create("table", params, ctx)


def test_csv_pair_classification(registries, tmp_path):
    (tmp_path / "train.csv").write_text(CSV_TRAIN)
    (tmp_path / "dev.csv").write_text('id,premise,hypothesis,verdict\n1,"x, y",z,no\n2,a,b,yes\n')
    (tmp_path / "test.csv").write_text("id,premise,hypothesis\n5,p,q\n6,r,s\n")
    task = table(registries, tmp_path, train="train.csv", validation="dev.csv", test="test.csv",
                 text_columns=["premise", "hypothesis"], label_column="verdict", id_column="id")
    assert isinstance(task, Task)
    assert task.labels == ["no", "yes"]  # sorted distinct train labels
    assert (task.eval_splits, task.test_splits, task.metric_names) == (["validation"], ["test"], ["accuracy"])
    train = task.load_split("train")
    assert train.to_dict() == {"text_a": ["A cat, on a mat.", 'She said "no".', "It rained."],
                               "text_b": ["A cat sits.", "She agreed.", "It was wet."],
                               "label": [1, 0, 1], "idx": [10, 11, 12]}
    assert task.load_split("validation")["label"] == [0, 1]
    test = task.load_split("test")
    assert test["label"] == [-1, -1] and test["idx"] == [5, 6]
    assert task.compute_metrics({"validation": [0, 0]}, {"validation": [0, 1]}) == {"accuracy": 50.0}


def test_labels_given_and_natural_order(registries, tmp_path):
    (tmp_path / "t.tsv").write_text('text\tstars\n"quoted\t10\nok\t2\nfine\t1\n')
    task = table(registries, tmp_path, train="t.tsv", text_columns=["text"], label_column="stars")
    assert task.labels == ["1", "2", "10"]  # numbers in numeric order
    ds = task.load_split("train")
    assert ds["text_a"][0] == '"quoted'  # TSV: quoting disabled, as in GLUE
    assert ds["label"] == [2, 1, 0] and ds["idx"] == [0, 1, 2]
    given = table(registries, tmp_path, train="t.tsv", text_columns=["text"], label_column="stars",
                  labels=[10, 2, 1, 5])  # YAML numbers are fine
    assert given.labels == ["10", "2", "1", "5"] and given.num_outputs == 4
    assert given.load_split("train")["label"] == [0, 1, 2]


def test_label_outside_the_set_errors_or_is_skipped(registries, tmp_path):
    (tmp_path / "train.csv").write_text(CSV_TRAIN)
    (tmp_path / "dev.csv").write_text("id,premise,hypothesis,verdict\n1,a,b,maybe\n2,c,d,no\n3,e,f\n")
    params = dict(train="train.csv", validation="dev.csv", text_columns=["premise", "hypothesis"],
                  label_column="verdict")
    with pytest.raises(DataError) as err:
        table(registries, tmp_path, **params).load_split("validation")
    assert err.value.file == str(tmp_path / "dev.csv")
    assert (err.value.path, err.value.found) == ("line 2", "maybe")
    assert "no, yes" in err.value.expected
    task = table(registries, tmp_path, on_bad_rows="skip", **params)
    with pytest.warns(BadRowsWarning, match=r"skipped 2 bad row"):
        ds = task.load_split("validation")
    assert task.bad_rows == {"train": 0, "validation": 2}
    assert ds.to_dict() == {"text_a": ["c"], "text_b": ["d"], "label": [0], "idx": [1]}


def test_jsonl_regression(registries, tmp_path):
    lines = [{"s": "a b", "score": 0.5}, {"s": "c", "score": 2}, {"s": "d", "score": "x"}, "not json",
             {"s": "e", "score": 1.5}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines))
    params = dict(train="train.jsonl", validation="train.jsonl", text_columns=["s"], label_column="score",
                  task_type="regression", metrics=["pearson"])
    with pytest.raises(DataError) as err:
        table(registries, tmp_path, **params).load_split("train")
    assert (err.value.path, err.value.found) == ("line 3", "x")
    task = table(registries, tmp_path, on_bad_rows="skip", **params)
    with pytest.warns(BadRowsWarning):
        ds = task.load_split("train")
    assert task.bad_rows["train"] == 2
    assert ds["label"] == [0.5, 2.0, 1.5] and ds["idx"] == [0, 1, 4]
    assert task.labels is None and task.num_outputs == 1
    # pearson of (1, 2, 3) against (0.5, 2, 1.5): deviations (-1, 0, 1) and (-5/6, 2/3, 1/6),
    # r = 1 / sqrt(2 * 7/6) = 0.654654
    assert task.compute_metrics({"validation": [1.0, 2.0, 3.0]}, {"validation": [0.5, 2.0, 1.5]}) == \
        {"pearson": pytest.approx(65.4654, abs=1e-3)}


def test_params_are_checked(registries):
    ok = {"train": "t.csv", "text_columns": ["a"]}
    reg = registries.tasks
    reg.validate_params("table", ok)
    for bad in ({**ok, "text_columns": ["a", "b", "c"]}, {**ok, "task_type": "regression", "labels": ["x"]},
                {**ok, "metrics": ["pearson"]}, {**ok, "metrics": ["bleu"]}, {**ok, "colour": "red"},
                {"text_columns": ["a"]}, {**ok, "labels": ["a", "a"]}):
        with pytest.raises(RecipeError):
            reg.validate_params("table", bad)


def test_missing_file_column_and_unknown_extension(registries, tmp_path):
    with pytest.raises(DataError, match="not found"):
        table(registries, tmp_path, train="nope.csv", text_columns=["a"]).load_split("train")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="lacks the column") as err:
        table(registries, tmp_path, train="t.csv", text_columns=["text"]).load_split("train")
    assert err.value.path == "line 1"
    (tmp_path / "t.xlsx").write_text("")
    with pytest.raises(DataError, match="format"):
        table(registries, tmp_path, train="t.xlsx", text_columns=["a"]).load_split("train")
    # an explicit format wins over the extension
    (tmp_path / "t.data").write_text("a\tlabel\nx\t1\ny\t0\n")
    assert len(table(registries, tmp_path, train="t.data", format="tsv", text_columns=["a"]).load_split("train")) == 2


def test_submission_and_fingerprint(registries, tmp_path):
    (tmp_path / "train.csv").write_text(CSV_TRAIN)
    (tmp_path / "test.csv").write_text("premise,hypothesis\np,q\nr,s\n")
    params = dict(train="train.csv", test="test.csv", text_columns=["premise", "hypothesis"], label_column="verdict")
    task = table(registries, tmp_path, **params)
    [path] = task.write_submission({"test": [1, 0]}, {"test": [1, 0]}, tmp_path / "out")
    assert path.name == "claims.tsv"
    assert path.read_text() == "index\tprediction\n0\tno\n1\tyes\n"
    first = task.fingerprint()
    assert first == table(registries, tmp_path, **params).fingerprint()
    assert first != table(registries, tmp_path, **params, metrics=["f1"]).fingerprint()
    (tmp_path / "train.csv").write_text(CSV_TRAIN + "13,More.,Text.,no\n")
    assert table(registries, tmp_path, **params).fingerprint() != first


def test_a_split_column_selects_the_rows_of_each_split(registries, tmp_path):
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"s": "a", "y": "x", "part": "tr"}, {"s": "b", "y": "z", "part": "dv"}, {"s": "c", "y": "z", "part": "tr"},
        {"s": "d", "part": "te"}, {"s": "e", "y": "x", "part": "other"}]))
    task = table(registries, tmp_path, train="all.jsonl", split_column="part", text_columns=["s"], label_column="y",
                 split_values={"train": "tr", "validation": "dv", "test": "te"})
    assert (task.eval_splits, task.test_splits) == (["validation"], ["test"])
    assert task.load_split("train").to_dict() == {"text_a": ["a", "c"], "label": [0, 1], "idx": [0, 2]}
    assert task.load_split("validation")["text_a"] == ["b"]
    assert task.load_split("test").to_dict() == {"text_a": ["d"], "label": [-1], "idx": [3]}
    # By default the column's values are the split names, and only train and validation are read.
    default = table(registries, tmp_path, train="all.jsonl", split_column="part", text_columns=["s"], label_column="y")
    assert (default.eval_splits, default.test_splits) == (["validation"], [])
    with pytest.raises(DataError, match="no usable rows") as info:
        default.load_split("train")
    assert "part = 'train'" in info.value.hint
    with pytest.raises(RecipeError, match="train"):
        table(registries, tmp_path, train="all.jsonl", split_column="part", text_columns=["s"],
              split_values={"validation": "dv"})
    # Without a split column its keys stay out of the resolved params (earlier runs keep their hashes).
    params = registries.tasks.validate_params("table", {"train": "t.csv", "text_columns": ["s"]})
    assert "split_column" not in params.model_dump() and "split_values" not in params.model_dump()
