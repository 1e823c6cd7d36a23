"""``mtkd tasks list`` and ``mtkd data show`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtkd.cli import cli

SAMPLE = Path(__file__).resolve().parent.parent / "recipes" / "data" / "glue-sample"


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_tasks_list_json():
    result = run("tasks", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax", "table"} <= set(rows)
    assert rows["stsb"] == {"name": "stsb", "type": "regression", "metrics": ["pearson", "spearman"],
                            "plugin": "mtkd_glue"}
    assert rows["mnli"]["metrics"] == ["accuracy_matched", "accuracy_mismatched"]
    assert rows["table"]["type"] == "user-defined"


def test_tasks_list_table():
    result = run("tasks", "list")
    assert result.exit_code == 0, result.output
    assert "mtkd tasks" in result.stdout and "f1, accuracy" in result.stdout


def test_data_show_json_exact():
    result = run("data", "show", "rte", "--source", str(SAMPLE), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"task": "rte", "splits": {
        "train": {"rows": 240, "labels": {"entailment": 120, "not_entailment": 120}},
        "validation": {"rows": 80, "labels": {"entailment": 40, "not_entailment": 40}},
        "test": {"rows": 80, "labels": {"unlabeled": 80}}}}


def test_data_show_table():
    result = run("data", "show", "cola", "--source", str(SAMPLE))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cola (classification)" in out and "validation" in out and "unacceptable: 40" in out
    assert "unlabeled: 80" in out  # the sample's test split has GLUE's unlabelled rows


def test_data_show_regression_and_table_task(tmp_path):
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "dev.tsv").write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tg\tf\ty\t0\tn\tn\ta\tb\t1.000\n1\tg\tf\ty\t1\tn\tn\tc\td\t4.000\n")
    result = run("data", "show", "stsb", "--source", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"] == {"validation": {"rows": 2, "labels": {"min": 1.0, "mean": 2.5,
                                                                                       "max": 4.0}}}
    (tmp_path / "t.csv").write_text("text,label\nfine,ok\nbad,ko\nnice,ok\n")
    result = run("data", "show", "table", "--param", f"train={tmp_path / 't.csv'}", "--param", "text_columns=[text]",
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"task": "table", "splits": {"train": {"rows": 3,
                                                                               "labels": {"ko": 1, "ok": 2}}}}


@pytest.mark.parametrize("args, message", [
    (("data", "show", "rtee", "--source", str(SAMPLE)), "did you mean 'rte'"),
    (("data", "show", "rte", "--source", "/no/such/folder"), "GLUE data folder not found"),
    (("data", "show", "rte", "--source", str(SAMPLE.parent)), "not a GLUE data folder"),
    (("data", "show", "table", "--source", str(SAMPLE)), "takes no --source"),
    (("data", "show", "table", "--param", "train"), "invalid --param"),
    (("data", "show", "table", "--param", "train=x.csv"), "missing required key"),
])
def test_data_show_errors_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_data_show_bad_rows(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tyes\n1\tc\td\tentailment\n")
    result = run("data", "show", "rte", "--source", str(tmp_path))
    assert result.exit_code == 2 and "line 2" in result.stderr and "'yes'" in result.stderr
    result = run("data", "show", "rte", "--source", str(tmp_path), "--on-bad-rows", "skip", "--json")
    assert result.exit_code == 0
    assert "warning: rte validation: skipped 1 bad row(s)" in result.stderr
    assert json.loads(result.stdout)["splits"]["validation"] == {"rows": 1, "labels": {"entailment": 1}}


@pytest.mark.shared_data
def test_data_show_real_parquet(shared_data):
    result = run("data", "show", "qnli", "--source", str(shared_data / "glue"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"] == {
        "validation": {"rows": 5463, "labels": {"entailment": 2702, "not_entailment": 2761}},
        "test": {"rows": 5463, "labels": {"unlabeled": 5463}}}
