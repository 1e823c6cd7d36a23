"""GLUE submission files: names, headers, row counts, label strings, and the zip."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from mtkd_glue import GLUE_FILES, zip_submission

from mtkd.components import TaskContext

NAMES = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"]


def task(registries, name):
    return registries.tasks.create(name, {}, TaskContext(name=name))


def read(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_full_glue_submission(registries, tmp_path):
    rng = np.random.default_rng(0)
    written = []
    for name in NAMES:
        t = task(registries, name)
        preds, indices = {}, {}
        for split in t.test_splits:
            n = 7 if split != "test_mismatched" else 5
            indices[split] = np.arange(n)
            preds[split] = rng.uniform(-1, 6, n) if t.task_type == "regression" else rng.integers(0, t.num_outputs, n)
        written += t.write_submission(preds, indices, tmp_path)
    assert sorted(p.name for p in written) == sorted(GLUE_FILES)
    for path in written:
        header, rows = read(path)
        assert header == "index\tprediction"
        assert len(rows) == (5 if path.name == "MNLI-mm.tsv" else 7)
        assert [int(r[0]) for r in rows] == list(range(len(rows)))
        values = {r[1] for r in rows}
        if path.name in ("CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "QQP.tsv", "WNLI.tsv"):
            assert values <= {"0", "1"}
        elif path.name in ("RTE.tsv", "QNLI.tsv"):
            assert values <= {"entailment", "not_entailment"}
        elif path.name in ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"):
            assert values <= {"entailment", "neutral", "contradiction"}
        else:
            assert path.name == "STS-B.tsv"
            assert all(0.0 <= float(v) <= 5.0 for v in values)
    archive = zip_submission(written, tmp_path / "submission.zip")
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == sorted(GLUE_FILES)
        assert zf.read("RTE.tsv") == (tmp_path / "RTE.tsv").read_bytes()


def test_exact_file_contents(registries, tmp_path):
    [rte] = task(registries, "rte").write_submission({"test": [1, 0, 0]}, {"test": [2, 0, 1]}, tmp_path)
    # rows sorted by index: index 2 holds prediction 1
    assert rte.read_text() == "index\tprediction\n0\tentailment\n1\tentailment\n2\tnot_entailment\n"
    [wnli] = task(registries, "wnli").write_submission({"test": np.array([[0.2, 0.8], [3.0, 1.0]])},
                                                       {"test": [0, 1]}, tmp_path)
    assert wnli.read_text() == "index\tprediction\n0\t1\n1\t0\n"
    [stsb] = task(registries, "stsb").write_submission({"test": np.array([[-0.4], [2.25], [5.7]])},
                                                       {"test": [0, 1, 2]}, tmp_path)
    assert stsb.read_text() == "index\tprediction\n0\t0.000\n1\t2.250\n2\t5.000\n"
    m, mm = task(registries, "mnli").write_submission({"test_matched": [2], "test_mismatched": [1]},
                                                      {"test_matched": [0], "test_mismatched": [0]}, tmp_path)
    assert (m.name, mm.name) == ("MNLI-m.tsv", "MNLI-mm.tsv")
    assert m.read_text() == "index\tprediction\n0\tcontradiction\n"
    assert mm.read_text() == "index\tprediction\n0\tneutral\n"


def test_submission_input_errors(registries, tmp_path):
    rte = task(registries, "rte")
    with pytest.raises(ValueError, match="not a test split"):
        rte.write_submission({"validation": [0]}, {"validation": [0]}, tmp_path)
    with pytest.raises(ValueError, match="class ids"):
        rte.write_submission({"test": [0, 2]}, {"test": [0, 1]}, tmp_path)
    with pytest.raises(ValueError, match="duplicate"):
        rte.write_submission({"test": [0, 1]}, {"test": [1, 1]}, tmp_path)
    with pytest.raises(ValueError, match="2 predictions but 3 indices"):
        rte.write_submission({"test": [0, 1]}, {"test": [0, 1, 2]}, tmp_path)
    with pytest.raises(ValueError, match="finite"):
        task(registries, "stsb").write_submission({"test": [float("nan")]}, {"test": [0]}, tmp_path)
    assert not (tmp_path / "RTE.tsv").exists()  # nothing half-written
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "RTE.tsv").write_text("x")
    (tmp_path / "RTE.tsv").write_text("y")
    with pytest.raises(ValueError, match="share a name"):
        zip_submission([tmp_path / "a" / "RTE.tsv", tmp_path / "RTE.tsv"], tmp_path / "s.zip")
