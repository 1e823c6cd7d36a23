"""GLUE tasks: registration, both local layouts (real data and small files in GLUE's exact formats),
the hub code path, bad rows, fingerprints, and the shipped quickstart sample."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import datasets
import pytest

from mtkd.components import Task, TaskContext
from mtkd.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "recipes" / "data" / "glue-sample"
GLUE_NAMES = ["ax", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A private datasets cache, so tests leave nothing in ~/.cache."""
    return str(tmp_path_factory.mktemp("mtkd-cache"))


def make(registries, name, source=None, *, on_bad_rows="error", cache_dir=None, task_name=None, **params):
    if source is not None:
        params["source"] = str(source)
    ctx = TaskContext(name=task_name or name, on_bad_rows=on_bad_rows, cache_dir=cache_dir)
    return registries.tasks.create(name, params, ctx)


def rows(ds) -> dict:
    return ds.to_dict()


# ---------------------------------------------------------------- registration and task facts


def test_registers_every_glue_task_and_table(registries):
    assert set(GLUE_NAMES) | {"table"} <= set(registries.tasks.names())
    for name in GLUE_NAMES:
        assert registries.tasks.get(name).plugin == "mtkd_glue"


def test_task_facts(registries):
    rte = make(registries, "rte", task_name="my-rte")
    assert isinstance(rte, Task)
    assert rte.name == "my-rte"
    assert rte.labels == ["entailment", "not_entailment"]
    assert rte.text_fields == ("text_a", "text_b") and rte.num_outputs == 2
    assert (rte.train_split, rte.eval_splits, rte.test_splits) == ("train", ["validation"], ["test"])
    assert make(registries, "cola").text_fields == ("text_a",)
    assert make(registries, "cola").metric_names == ["mcc"]
    assert make(registries, "mrpc").metric_names == ["f1", "accuracy"]
    assert make(registries, "wnli").labels == ["not_entailment", "entailment"]
    stsb = make(registries, "stsb")
    assert stsb.task_type == "regression" and stsb.labels is None and stsb.num_outputs == 1
    assert stsb.metric_names == ["pearson", "spearman"]
    mnli = make(registries, "mnli")
    assert mnli.labels == ["entailment", "neutral", "contradiction"]
    assert mnli.eval_splits == ["validation_matched", "validation_mismatched"]
    assert mnli.test_splits == ["test_matched", "test_mismatched"]
    assert mnli.metric_names == ["accuracy_matched", "accuracy_mismatched"]
    ax = make(registries, "ax")
    assert ax.head_task == "mnli" and ax.labels == mnli.labels
    assert ax.train_split is None and ax.eval_splits == [] and ax.test_splits == ["test"]


def test_source_defaults_to_recipe_data_glue_then_hub(registries, tmp_path):
    (tmp_path / "data" / "RTE").mkdir(parents=True)
    (tmp_path / "data" / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    assert make(registries, "rte").source == ("hub", "nyu-mll/glue")
    ctx = TaskContext(name="rte", sources={"glue": "data"}, resolve_path=lambda p: str(tmp_path / p))
    task = registries.tasks.create("rte", {}, ctx)
    assert task.source == ("tsv", str((tmp_path / "data").resolve()))
    assert len(task.load_split("validation")) == 1
    # a per-task source wins over data.glue
    task = registries.tasks.create("rte", {"source": "nyu-mll/glue"}, ctx)
    assert task.source == ("hub", "nyu-mll/glue")


def test_hub_id_without_network_is_a_data_error(registries, hf_cache):
    task = make(registries, "rte", cache_dir=hf_cache)
    with pytest.raises(DataError) as err:
        task.load_split("validation")
    assert "nyu-mll/glue" in str(err.value) and "data.glue" in err.value.hint


def test_missing_folder_and_unknown_layout(registries, tmp_path):
    with pytest.raises(DataError, match="not found"):
        make(registries, "rte", tmp_path / "nope").load_split("train")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        make(registries, "rte", tmp_path).load_split("train")
    assert "not a GLUE data folder" in str(err.value)
    assert "train-00000-of-00001.parquet" in err.value.expected and "RTE/train.tsv" in err.value.expected
    assert err.value.found == ["notes.txt", "stuff/"]


# ---------------------------------------------------------------- real data (shared_data)

OFFICIAL = {
    "cola": {"train": 8551, "validation": 1043, "test": 1063},
    "sst2": {"train": 67349, "validation": 872, "test": 1821},
    "rte": {"train": 2490, "validation": 277, "test": 3000},
    "wnli": {"train": 635, "validation": 71, "test": 146},
    "qnli": {"validation": 5463, "test": 5463},
    "ax": {"test": 1104},
}
_loaded: dict = {}


def real_split(registries, shared_data, hf_cache, layout, name, split):
    """Each real split is read once per layout for the whole module (SST-2 train has 67k rows)."""
    key = (layout, name, split)
    if key not in _loaded:
        _loaded[key] = make(registries, name, shared_data / layout, cache_dir=hf_cache).load_split(split)
    return _loaded[key]


@pytest.mark.shared_data
@pytest.mark.parametrize("layout", ["glue", "glue_tsv"])
def test_real_data_official_row_counts(registries, shared_data, hf_cache, layout):
    for name, counts in OFFICIAL.items():
        task = make(registries, name, shared_data / layout)
        assert task.source[0] == ("parquet" if layout == "glue" else "tsv")
        assert set(counts) <= set(task.available_splits())
        for split, n in counts.items():
            ds = real_split(registries, shared_data, hf_cache, layout, name, split)
            assert len(ds) == n, (layout, name, split)
            assert ds.column_names == ["text_a", "label", "idx"] if name in ("cola", "sst2") else \
                ds.column_names == ["text_a", "text_b", "label", "idx"]


@pytest.mark.shared_data
def test_real_data_identical_between_layouts(registries, shared_data, hf_cache):
    for name, counts in OFFICIAL.items():
        for split in counts:
            a = real_split(registries, shared_data, hf_cache, "glue", name, split)
            b = real_split(registries, shared_data, hf_cache, "glue_tsv", name, split)
            assert a.features == b.features
            assert rows(a) == rows(b), (name, split)


@pytest.mark.shared_data
def test_real_data_values(registries, shared_data, hf_cache):
    rte = real_split(registries, shared_data, hf_cache, "glue_tsv", "rte", "train")
    assert rte[0] == {"text_a": "No Weapons of Mass Destruction Found in Iraq Yet.",
                      "text_b": "Weapons of Mass Destruction Found in Iraq.", "label": 1, "idx": 0}
    assert sum(rte["label"]) == 1241  # not_entailment rows
    cola = real_split(registries, shared_data, hf_cache, "glue_tsv", "cola", "train")
    assert cola[0]["text_a"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola[0]["label"] == 1
    sst_test = real_split(registries, shared_data, hf_cache, "glue_tsv", "sst2", "test")
    assert sst_test["idx"][:3] == [0, 1, 2] and set(sst_test["label"]) == {-1}
    assert real_split(registries, shared_data, hf_cache, "glue", "ax", "test")["label"][:2] == [-1, -1]


@pytest.mark.shared_data
def test_hub_code_path_on_local_parquet_folder(shared_data, hf_cache):
    """The hub loader is one datasets.load_dataset call; pointed at the local copy it reads the same files."""
    from mtkd_glue.readers import load_hub_split

    raw = load_hub_split(str(shared_data / "glue"), "rte", "validation", cache_dir=hf_cache)
    assert raw.num_rows == 277
    assert raw.features["label"].names == ["entailment", "not_entailment"]
    assert raw.column_names == ["sentence1", "sentence2", "label", "idx"]


# ---------------------------------------------------------------- small files in GLUE's exact formats

# (text_a, text_b, label as the TSV writes it) -- a text starting with " checks that quoting is off
PAIRS = {
    "mrpc": [
        ("Amrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his evidence .",
         "Referring to him as only \" the witness \" , Amrozi accused his brother of deliberately distorting his "
         "evidence .", "1"),
        ("He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
         "\" The foodservice pie business does not fit our long-term growth strategy .", "1"),
        ("No dates have been set for the civil or the criminal trial .",
         "No dates have been set for the criminal or civil cases , but Shanley has pleaded not guilty .", "0"),
    ],
    "stsb": [
        ("A plane is taking off.", "An air plane is taking off.", "5.000"),
        ("A man is playing a large flute.", "A man is playing a flute.", "3.800"),
        ("A woman is playing the guitar.", "A man is playing guitar.", "0.000"),
    ],
    "mnli": [
        ("Conceptually cream skimming has two basic dimensions - product and geography.",
         "Product and geography are what make cream skimming work. ", "neutral"),
        ("you know during the season and i guess at at your level uh you lose them to the next level",
         "You lose the things to the following level if the people recall.", "entailment"),
        ("\"Stop it.\" she said.", "She did not speak.", "contradiction"),
    ],
    "qqp": [
        ("How is the life of a math student? Could you describe your own experiences?",
         "Which level of prepration is enough for the exam jlpt5?", "0"),
        ("How do I control my horny emotions?", "How do you control your horniness?", "1"),
        ("\"What is the story of Kohinoor?\"", "What would happen if the Indian government stole the Kohinoor?", "0"),
    ],
}
TSV_SPLIT_FILES = {"mnli": {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                            "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                            "test_mismatched": "test_mismatched.tsv"}}
HF_COLUMNS = {"mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
              "mnli": ("premise", "hypothesis"), "qqp": ("question1", "question2")}
LABELS = {"mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
          "mnli": ["entailment", "neutral", "contradiction"]}
TSV_DIR = {"mrpc": "MRPC", "stsb": "STS-B", "mnli": "MNLI", "qqp": "QQP"}
MNLI_PARSE = "( ( x ) )"


def tsv_text(config: str, split: str, pairs) -> str:
    """A glue_data file for ``pairs``, with the header and columns GLUE's own files have."""
    test = split.startswith("test")
    lines = []
    if config == "mrpc":  # UTF-8 BOM on train/dev, as in the download
        lines.append(("index" if test else "\ufeffQuality") + "\t#1 ID\t#2 ID\t#1 String\t#2 String")
        for i, (a, b, label) in enumerate(pairs):
            lines.append(f"{i if test else label}\t{1000 + i}\t{2000 + i}\t{a}\t{b}")
    elif config == "stsb":  # ten columns, score last (nine in test)
        lines.append("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
                     + ("" if test else "\tscore"))
        for i, (a, b, label) in enumerate(pairs):
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}"
                         + ("" if test else f"\t{label}"))
    elif config == "mnli":
        head = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t" \
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2"
        extra = [] if test else (["label1", "gold_label"] if split == "train" else
                                 ["label1", "label2", "label3", "label4", "label5", "gold_label"])
        lines.append("\t".join([head, *extra]))
        for i, (a, b, label) in enumerate(pairs):
            cells = [str(i), "31193", f"{31193 + i}n", "government", MNLI_PARSE, MNLI_PARSE, MNLI_PARSE, MNLI_PARSE,
                     a, b] + [label] * len(extra)
            lines.append("\t".join(cells))
    elif config == "qqp":
        lines.append("id\tquestion1\tquestion2" if test else "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate")
        for i, (a, b, label) in enumerate(pairs):
            lines.append(f"{i}\t{a}\t{b}" if test else f"{i}\t{10 + i}\t{20 + i}\t{a}\t{b}\t{label}")
    return "\n".join(lines) + "\n"


def write_small_glue(root: Path, config: str) -> tuple[Path, Path]:
    """The same rows as a glue_data TSV folder and as a nyu-mll/glue Parquet folder (with ClassLabel features)."""
    tsv_root, pq_root = root / "glue_tsv", root / "glue"
    files = TSV_SPLIT_FILES.get(config, {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"})
    pairs = PAIRS[config]
    for split, fname in files.items():
        # each split gets its own slice of rows, so a split mix-up shows
        chosen = pairs if split == "train" else pairs[1:] if split.startswith("validation") else pairs[:2]
        path = tsv_root / TSV_DIR[config] / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tsv_text(config, split, chosen).encode("utf-8"))
        test = split.startswith("test")
        if config == "stsb":
            label_feature = datasets.Value("float32")
            labels = [-1.0 if test else float(lab) for _, _, lab in chosen]
        else:
            label_feature = datasets.ClassLabel(names=LABELS[config])
            # nyu-mll/glue's MRPC test split carries real labels; GLUE's test.tsv has none
            labels = [-1 if test and config != "mrpc" else (LABELS[config].index(lab) if config == "mnli" else int(lab))
                      for _, _, lab in chosen]
        a_col, b_col = HF_COLUMNS[config]
        feats = datasets.Features({a_col: datasets.Value("string"), b_col: datasets.Value("string"),
                                   "label": label_feature, "idx": datasets.Value("int32")})
        ds = datasets.Dataset.from_dict({a_col: [p[0] for p in chosen], b_col: [p[1] for p in chosen],
                                         "label": labels, "idx": list(range(len(chosen)))}, features=feats)
        out = pq_root / config / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(out))
    return tsv_root, pq_root


@pytest.mark.parametrize("config", ["mrpc", "stsb", "mnli", "qqp"])
def test_small_files_in_exact_formats_identical_between_layouts(registries, tmp_path, hf_cache, config):
    tsv_root, pq_root = write_small_glue(tmp_path, config)
    a = make(registries, config, tsv_root)
    b = make(registries, config, pq_root, cache_dir=hf_cache)
    assert a.source[0] == "tsv" and b.source[0] == "parquet"
    splits = [a.train_split, *a.eval_splits, *a.test_splits]
    assert a.available_splits() == b.available_splits() == splits
    for split in splits:
        ds_a, ds_b = a.load_split(split), b.load_split(split)
        assert ds_a.features == ds_b.features
        assert rows(ds_a) == rows(ds_b), split
    train = a.load_split("train")
    assert train["text_a"] == [p[0] for p in PAIRS[config]]
    assert train["text_b"] == [p[1] for p in PAIRS[config]]
    assert train["idx"] == [0, 1, 2]
    for layout in (a, b):  # test rows are unlabeled in both layouts
        test = layout.load_split(layout.test_splits[0])
        assert set(test["label"]) == {-1} and test["idx"] == [0, 1]


def test_small_file_values(registries, tmp_path):
    root = tmp_path / "g"
    for config in ("mrpc", "stsb", "mnli"):
        write_small_glue(root, config)
    src = root / "glue_tsv"
    mrpc = make(registries, "mrpc", src).load_split("validation")
    assert mrpc["text_b"][0].startswith("\" The foodservice")  # quoting disabled: the quote is text
    assert mrpc["label"] == [1, 0]
    assert not mrpc["text_a"][0].startswith("\ufeff")
    stsb = make(registries, "stsb", src).load_split("train")
    assert stsb.features["label"].dtype == "float32"
    assert stsb["label"] == pytest.approx([5.0, 3.8, 0.0])
    mnli = make(registries, "mnli", src)
    assert mnli.load_split("train")["label"] == [1, 0, 2]
    assert mnli.load_split("validation_mismatched")["label"] == [0, 2]
    assert mnli.load_split("train")["text_b"][0].endswith("work. ")  # whitespace kept, as in nyu-mll/glue


def test_qqp_test_ids_come_from_the_id_column(registries, tmp_path):
    path = tmp_path / "QQP" / "test.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("id\tquestion1\tquestion2\n7\tWhy?\tWhy not?\n3\tHow?\tHow so?\n")
    ds = make(registries, "qqp", tmp_path).load_split("test")
    assert ds["idx"] == [7, 3] and ds["label"] == [-1, -1]


def test_missing_split_file_names_the_expected_file(registries, tmp_path):
    tsv_root, pq_root = write_small_glue(tmp_path, "mrpc")
    os.remove(tsv_root / "MRPC" / "dev.tsv")
    os.remove(pq_root / "mrpc" / "validation-00000-of-00001.parquet")
    for root, expected in ((tsv_root, "MRPC/dev.tsv"), (pq_root, "mrpc/validation-00000-of-00001.parquet")):
        task = make(registries, "mrpc", root)
        assert "validation" not in task.available_splits()
        with pytest.raises(DataError) as err:
            task.load_split("validation")
        assert err.value.file.endswith(expected)
    with pytest.raises(DataError, match="no split"):
        make(registries, "mrpc", tsv_root).load_split("dev")


def test_parquet_with_another_label_order_is_refused(registries, tmp_path, hf_cache):
    feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["not_entailment", "entailment"]),
                               "idx": datasets.Value("int32")})
    out = tmp_path / "rte" / "train-00000-of-00001.parquet"
    out.parent.mkdir()
    datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]},
                               features=feats).to_parquet(str(out))
    with pytest.raises(DataError, match="label order") as err:
        make(registries, "rte", tmp_path, cache_dir=hf_cache).load_split("train")
    assert err.value.expected == ["entailment", "not_entailment"]


# ---------------------------------------------------------------- bad rows


RTE_BAD = ("index\tsentence1\tsentence2\tlabel\n"
           "0\tA cat sat.\tA cat exists.\tentailment\n"
           "1\tOnly three\tcolumns\n"
           "2\tA dog ran.\tNo dog ran.\tmaybe\n"
           "3\tIt rained.\tIt was wet.\tentailment\n")


def write_rte(root: Path, text: str, name: str = "train.tsv") -> Path:
    path = root / "RTE" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_row_is_an_error_naming_file_line_and_value(registries, tmp_path):
    path = write_rte(tmp_path, RTE_BAD)
    with pytest.raises(DataError) as err:
        make(registries, "rte", tmp_path).load_split("train")
    assert err.value.file == str(path) and err.value.path == "line 3"
    assert "3 columns instead of 4" in err.value.message and "on_bad_rows" in err.value.hint
    write_rte(tmp_path, RTE_BAD.replace("1\tOnly three\tcolumns\n", ""))
    with pytest.raises(DataError) as err:
        make(registries, "rte", tmp_path).load_split("train")
    assert (err.value.path, err.value.found) == ("line 3", "maybe")
    assert "entailment, not_entailment" in err.value.expected


def test_bad_rows_skipped_counted_and_reported(registries, tmp_path):
    write_rte(tmp_path, RTE_BAD)
    task = make(registries, "rte", tmp_path, on_bad_rows="skip")
    from mtkd_glue import BadRowsWarning

    with pytest.warns(BadRowsWarning, match=r"skipped 2 bad row\(s\).*line 3"):
        ds = task.load_split("train")
    assert task.bad_rows == {"train": 2}
    assert ds["text_a"] == ["A cat sat.", "It rained."]
    assert ds["idx"] == [0, 3]  # ids stay the rows' positions in the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.load_split("train")  # cached: no second report


@pytest.mark.parametrize("config, folder, text, line, found", [
    # CoLA: headerless, class ids; "2" is outside the label set
    ("cola", "CoLA", "gj04\t1\t\tGood.\ngj04\t2\t*\tBad label.\n", "line 2", "2"),
    # STS-B: scores must be numbers from 0 to 5
    ("stsb", "STS-B", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                      "0\tg\tf\ty\t0\tn\tn\ta\tb\t7.5\n", "line 2", "7.5"),
    ("stsb", "STS-B", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                      "0\tg\tf\ty\t0\tn\tn\ta\tb\t4.0\n1\tg\tf\ty\t0\tn\tn\ta\tb\tabc\n", "line 3", "abc"),
    # SST-2 labels are ids, not names
    ("sst2", "SST-2", "sentence\tlabel\ngood film \tpositive\n", "line 2", "positive"),
])
def test_invalid_labels(registries, tmp_path, config, folder, text, line, found):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "train.tsv").write_text(text)
    with pytest.raises(DataError) as err:
        make(registries, config, tmp_path).load_split("train")
    assert (err.value.path, err.value.found) == (line, found)
    task = make(registries, config, tmp_path, on_bad_rows="skip")
    with pytest.warns(UserWarning):
        try:
            left = len(task.load_split("train"))
        except DataError as exc:  # the file's only row was skipped: nothing left to train on
            assert "no rows" in exc.message
            left = 0
    assert task.bad_rows["train"] == 1
    assert left == text.count("\n") - 1 - (folder != "CoLA")  # every row but the bad one (and the header)


def test_unexpected_header_is_an_error(registries, tmp_path):
    write_rte(tmp_path, "idx\ts1\ts2\tlab\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match="unexpected header") as err:
        make(registries, "rte", tmp_path).load_split("train")
    assert "sentence1, sentence2, label" in err.value.expected


def test_bad_rows_in_parquet(registries, tmp_path, hf_cache):
    out = tmp_path / "rte" / "train-00000-of-00001.parquet"
    out.parent.mkdir()
    datasets.Dataset.from_dict({"sentence1": ["a", "b", None, "d"], "sentence2": ["w", "x", "y", "z"],
                                "label": [0, 5, 1, -1], "idx": [0, 1, 2, 3]}).to_parquet(str(out))
    with pytest.raises(DataError) as err:
        make(registries, "rte", tmp_path, cache_dir=hf_cache).load_split("train")
    assert (err.value.path, err.value.found) == ("row 1", 5)
    task = make(registries, "rte", tmp_path, on_bad_rows="skip", cache_dir=hf_cache)
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = task.load_split("train")
    assert rows(ds) == {"text_a": ["a"], "text_b": ["w"], "label": [0], "idx": [0]}


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable_and_follows_the_data(registries, tmp_path):
    path = write_rte(tmp_path, RTE_BAD.replace("1\tOnly three\tcolumns\n", "").replace("maybe", "entailment"))
    first = make(registries, "rte", tmp_path).fingerprint()
    assert first == make(registries, "rte", tmp_path).fingerprint()
    assert first != make(registries, "rte", tmp_path, task_name="rte2").fingerprint()
    assert first != make(registries, "rte", tmp_path, on_bad_rows="skip").fingerprint()
    assert first != make(registries, "wnli", tmp_path).fingerprint()
    path.write_text(path.read_text().replace("It rained.", "It snowed."))
    os.utime(path, ns=(1, 1))
    assert make(registries, "rte", tmp_path).fingerprint() != first


# ---------------------------------------------------------------- the quickstart sample


def test_quickstart_sample(registries):
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert size < 200_000
    assert (SAMPLE / "SOURCES.md").is_file()
    for name in ("cola", "sst2", "rte"):
        task = make(registries, name, SAMPLE)
        assert task.source[0] == "tsv"
        train, dev = task.load_split("train"), task.load_split("validation")
        assert (len(train), len(dev)) == (240, 80)
        assert sorted(dev["label"]).count(0) == 40 and sorted(train["label"]).count(0) == 120


@pytest.mark.shared_data
def test_quickstart_sample_rows_are_real_rows(shared_data):
    for folder in ("CoLA", "SST-2", "RTE"):
        for fname in ("train.tsv", "dev.tsv"):
            full = set((shared_data / "glue_tsv" / folder / fname).read_bytes().splitlines())
            sample = (SAMPLE / folder / fname).read_bytes().splitlines()
            assert set(sample) <= full, (folder, fname)


@pytest.mark.shared_data
def test_the_quickstart_sample_is_what_make_sample_writes(shared_data, tmp_path, registries):
    """sst2-2k (train, dev, test and the unlabelled transfer sentences) rebuilt from the full files, byte for byte."""
    import runpy

    sample = ROOT / "recipes" / "data" / "sst2-2k"
    runpy.run_path(str(sample / "make_sample.py"))["main"](str(shared_data / "glue_tsv"), str(tmp_path))
    for name in ("train.tsv", "dev.tsv", "test.tsv", "unlabelled.tsv"):
        assert (tmp_path / "SST-2" / name).read_bytes() == (sample / "SST-2" / name).read_bytes(), name
    task = make(registries, "sst2", sample)
    unlabelled = task.load_split("unlabelled")
    assert len(unlabelled) == 8000 and set(unlabelled["label"]) == {-1}
    full = {line.rsplit(b"\t", 1)[0] for line in (shared_data / "glue_tsv" / "SST-2" / "train.tsv").read_bytes()
            .splitlines()[1:]}
    assert {s.encode() for s in unlabelled["text_a"]} <= full  # real training sentences
