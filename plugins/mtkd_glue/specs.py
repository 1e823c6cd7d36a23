"""What each GLUE task is: its columns in both layouts, labels, metrics and submission file.

Label orders are those of ``nyu-mll/glue`` (the ClassLabel names in its Parquet files); TSV column
names are those of the ``glue_data`` files written by the GLUE download script.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class TsvFormat:
    """How one ``glue_data`` TSV file is laid out.

    ``text``/``label``/``index`` are header names, or column positions for a headerless file
    (CoLA train/dev). ``index=None``: the example id is the running data-row number, as
    ``nyu-mll/glue`` numbers it. ``label_kind``: ``id`` (the file holds class ids 0/1), ``name``
    (the file holds label strings) or ``float`` (STS-B scores).
    """

    text: tuple
    label: str | int | None
    index: str | int | None = None
    header: bool = True
    ncols: int | None = None  # headerless files only


@dataclass(frozen=True)
class GlueSpec:
    config: str  # the nyu-mll/glue config name
    tsv_dir: str  # the task's folder in glue_data
    task_type: str
    labels: tuple[str, ...] | None
    hf_text: tuple[str, ...]  # text columns in the Parquet/hub layout
    tsv_labeled: TsvFormat  # train/dev files
    tsv_test: TsvFormat
    label_kind: str = "id"  # see TsvFormat
    metrics: dict = field(default_factory=dict)  # split -> ((reported name, metric function name), ...)
    train_split: str | None = TRAIN
    eval_splits: tuple[str, ...] = (VALIDATION,)
    test_splits: tuple[str, ...] = (TEST,)
    tsv_files: dict = field(default_factory=lambda: {TRAIN: "train.tsv", VALIDATION: "dev.tsv", TEST: "test.tsv"})
    submission: dict = field(default_factory=dict)  # test split -> file name
    submit_names: bool = False  # GLUE wants label strings in this task's submission file
    head_task: str | None = None
    value_range: tuple[float, float] | None = None  # regression

    @property
    def splits(self) -> list[str]:
        return [s for s in (self.train_split, *self.eval_splits, *self.test_splits) if s]

    @property
    def metric_names(self) -> list[str]:
        return [name for metrics in self.metrics.values() for name, _ in metrics]


def _pair(a: str, b: str, label: str | None, index: str | None = None) -> TsvFormat:
    return TsvFormat(text=(a, b), label=label, index=index)


_ACC = ((("accuracy", "accuracy"),))
_F1_ACC = (("f1", "f1"), ("accuracy", "accuracy"))
_NLI = ("entailment", "not_entailment")
_MNLI = ("entailment", "neutral", "contradiction")

SPECS: dict[str, GlueSpec] = {
    "cola": GlueSpec(
        "cola", "CoLA", "classification", ("unacceptable", "acceptable"), ("sentence",),
        # CoLA train/dev: no header; source, label, original mark, sentence.
        tsv_labeled=TsvFormat(text=(3,), label=1, header=False, ncols=4),
        tsv_test=TsvFormat(text=("sentence",), label=None, index="index"),
        metrics={VALIDATION: (("mcc", "mcc"),)}, submission={TEST: "CoLA.tsv"}),
    "sst2": GlueSpec(
        "sst2", "SST-2", "classification", ("negative", "positive"), ("sentence",),
        tsv_labeled=TsvFormat(text=("sentence",), label="label"),
        tsv_test=TsvFormat(text=("sentence",), label=None, index="index"),
        metrics={VALIDATION: _ACC}, submission={TEST: "SST-2.tsv"}),
    "mrpc": GlueSpec(
        "mrpc", "MRPC", "classification", ("not_equivalent", "equivalent"), ("sentence1", "sentence2"),
        tsv_labeled=_pair("#1 String", "#2 String", "Quality"),
        tsv_test=_pair("#1 String", "#2 String", None, "index"),
        metrics={VALIDATION: _F1_ACC}, submission={TEST: "MRPC.tsv"}),
    "stsb": GlueSpec(
        "stsb", "STS-B", "regression", None, ("sentence1", "sentence2"),
        tsv_labeled=_pair("sentence1", "sentence2", "score"),
        tsv_test=_pair("sentence1", "sentence2", None, "index"),
        label_kind="float", value_range=(0.0, 5.0),
        metrics={VALIDATION: (("pearson", "pearson"), ("spearman", "spearman"))}, submission={TEST: "STS-B.tsv"}),
    "qqp": GlueSpec(
        "qqp", "QQP", "classification", ("not_duplicate", "duplicate"), ("question1", "question2"),
        tsv_labeled=_pair("question1", "question2", "is_duplicate"),
        tsv_test=_pair("question1", "question2", None, "id"),
        metrics={VALIDATION: _F1_ACC}, submission={TEST: "QQP.tsv"}),
    "mnli": GlueSpec(
        "mnli", "MNLI", "classification", _MNLI, ("premise", "hypothesis"),
        tsv_labeled=_pair("sentence1", "sentence2", "gold_label"),
        tsv_test=_pair("sentence1", "sentence2", None, "index"),
        label_kind="name",
        metrics={"validation_matched": (("accuracy_matched", "accuracy"),),
                 "validation_mismatched": (("accuracy_mismatched", "accuracy"),)},
        eval_splits=("validation_matched", "validation_mismatched"),
        test_splits=("test_matched", "test_mismatched"),
        tsv_files={TRAIN: "train.tsv", "validation_matched": "dev_matched.tsv",
                   "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                   "test_mismatched": "test_mismatched.tsv"},
        submission={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}, submit_names=True),
    "qnli": GlueSpec(
        "qnli", "QNLI", "classification", _NLI, ("question", "sentence"),
        tsv_labeled=_pair("question", "sentence", "label"),
        tsv_test=_pair("question", "sentence", None, "index"),
        label_kind="name", metrics={VALIDATION: _ACC}, submission={TEST: "QNLI.tsv"}, submit_names=True),
    "rte": GlueSpec(
        "rte", "RTE", "classification", _NLI, ("sentence1", "sentence2"),
        tsv_labeled=_pair("sentence1", "sentence2", "label"),
        tsv_test=_pair("sentence1", "sentence2", None, "index"),
        label_kind="name", metrics={VALIDATION: _ACC}, submission={TEST: "RTE.tsv"}, submit_names=True),
    "wnli": GlueSpec(
        "wnli", "WNLI", "classification", ("not_entailment", "entailment"), ("sentence1", "sentence2"),
        tsv_labeled=_pair("sentence1", "sentence2", "label"),
        tsv_test=_pair("sentence1", "sentence2", None, "index"),
        metrics={VALIDATION: _ACC}, submission={TEST: "WNLI.tsv"}),
    # AX (the diagnostic set): test only, scored by GLUE with Matthews correlation, predicted by MNLI's head.
    "ax": GlueSpec(
        "ax", "diagnostic", "classification", _MNLI, ("premise", "hypothesis"),
        tsv_labeled=_pair("sentence1", "sentence2", None),
        tsv_test=_pair("sentence1", "sentence2", None, "index"),
        label_kind="name", metrics={TEST: (("mcc", "mcc"),)}, train_split=None, eval_splits=(),
        tsv_files={TEST: "diagnostic.tsv"}, submission={TEST: "AX.tsv"}, submit_names=True, head_task="mnli"),
}

DESCRIPTIONS = {
    "cola": "GLUE CoLA: is the sentence grammatical? (Matthews correlation)",
    "sst2": "GLUE SST-2: sentiment of movie-review sentences (accuracy)",
    "mrpc": "GLUE MRPC: are the two news sentences paraphrases? (F1, accuracy)",
    "stsb": "GLUE STS-B: similarity of two sentences, 0 to 5 (Pearson, Spearman)",
    "qqp": "GLUE QQP: are the two Quora questions duplicates? (F1, accuracy)",
    "mnli": "GLUE MNLI: entailment, neutral or contradiction (accuracy, matched and mismatched)",
    "qnli": "GLUE QNLI: does the sentence answer the question? (accuracy)",
    "rte": "GLUE RTE: does the first text entail the second? (accuracy)",
    "wnli": "GLUE WNLI: Winograd pronoun resolution as entailment (accuracy)",
    "ax": "GLUE AX: diagnostic entailment set, test only, predicted with MNLI's head (Matthews correlation)",
}

#: glue_data folder names, to recognise the TSV layout
TSV_DIRS = {spec.tsv_dir for spec in SPECS.values()}
