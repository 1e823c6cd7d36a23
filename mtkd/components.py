"""The contracts between the core and the components that plugins register.

These are ``typing.Protocol`` classes: a plugin does not need to inherit from them, only to
provide the attributes and methods. Shapes use B = batch, T = tokens, H = hidden width,
C = outputs of a head (classes, or 1 for regression), K = teacher members, N = examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

TaskType = Literal["classification", "regression"]

#: Canonical split names. MNLI uses ``validation_matched``/``validation_mismatched`` and the
#: ``test_`` equivalents, as in the Hugging Face ``nyu-mll/glue`` dataset.
TRAIN, VALIDATION, TEST = "train", "validation", "test"


@runtime_checkable
class Task(Protocol):
    """A data set with a task type, labels, metrics and a submission format.

    ``load_split`` returns a ``datasets.Dataset`` with the columns ``text_a`` (str), ``text_b``
    (str, only for pair tasks), ``label`` (int class id; float for regression; -1 / NaN when
    the split has no labels) and ``idx`` (int, a stable example id within the split).
    """

    name: str  # the name the recipe uses for this task
    task_type: TaskType
    labels: list[str] | None  # class names in id order (None for regression)
    text_fields: tuple[str, ...]  # ("text_a",) or ("text_a", "text_b")
    metric_names: list[str]  # e.g. ["f1", "accuracy"]; MNLI: ["accuracy_matched", "accuracy_mismatched"]
    train_split: str  # usually "train"
    eval_splits: list[str]  # dev splits scored by compute_metrics, e.g. ["validation"]
    test_splits: list[str]  # splits written to submission files
    head_task: str | None  # evaluate with another task's head (AX uses MNLI's); None = own head

    @property
    def num_outputs(self) -> int:
        """Classes for classification, 1 for regression."""

    def load_split(self, split: str) -> Any:
        """Return the split as a ``datasets.Dataset`` with the columns described above."""

    def compute_metrics(self, predictions: dict[str, Any], labels: dict[str, Any]) -> dict[str, float]:
        """Metrics on the leaderboard's x100 scale, from predictions per eval split.

        ``predictions[split]`` holds class ids (classification) or values (regression).
        """

    def write_submission(self, predictions: dict[str, Any], indices: dict[str, Any], out_dir) -> list:
        """Write the GLUE submission file(s) for the test split(s); return the paths written."""

    def fingerprint(self) -> str:
        """A stable hash of the data this task loads (files, rows, options)."""


@dataclass
class TaskContext:
    """What a task factory gets besides its params: ``factory(params, context) -> Task``.

    ``sources`` holds the recipe's ``data:`` source settings by family (``{"glue": "../shared/data/glue"}``);
    ``resolve_path`` turns a relative path into one relative to the working directory or the recipe.
    """

    name: str  # the task's name in the recipe
    sources: dict = field(default_factory=dict)
    on_bad_rows: str = "error"  # or "skip" (skip, count and report)
    resolve_path: Any = None  # callable str -> str
    cache_dir: str | None = None


@dataclass
class EncoderOutput:
    pooled: Any  # [B, H]
    sequence: Any  # [B, T, H]
    hidden_states: tuple | None = None  # per layer, when asked for


@runtime_checkable
class Encoder(Protocol):
    """A torch ``nn.Module`` that turns token ids into vectors, and carries its tokenizer.

    ``forward(input_ids, attention_mask, token_type_ids=None, output_hidden_states=False)``
    returns an :class:`EncoderOutput`. ``save_config(directory)`` writes what is needed to
    rebuild the architecture without weights (``config.json``, the tokenizer); the encoder's
    factory is later called with ``params`` whose ``model`` points at that directory and
    ``pretrained=False`` to rebuild it before loading a state dict.
    """

    hidden_size: int
    num_layers: int
    tokenizer: Any

    def save_config(self, directory) -> None: ...


@runtime_checkable
class Objective(Protocol):
    """A loss for one task type.

    ``soft`` is the aggregated teacher target for the batch (probabilities [B, C] for
    classification, values [B, 1] for regression) or ``None`` for tasks without teachers.
    ``progress`` runs from 0 to 1 over training (for alpha/temperature schedules).
    Returns a scalar tensor.

    Optional ``handles_unlabelled = True``: the objective accepts rows without a gold label (label -1 for
    classification, NaN for regression; ``mtkd.data.transfer.labelled`` masks them), which a task's transfer
    set brings to the student. A student objective without it is refused for a task with a transfer set.
    """

    task_types: frozenset[str]
    uses_soft_targets: bool

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0): ...


class HiddenStateObjective(Objective, Protocol):
    """An objective that also matches the student's hidden states to the teachers' (``uses_hidden_states``).

    Before training the trainer calls ``attach(student=, teachers=, device=)`` once per job; ``teachers``
    is a ``mtkd.objective_hooks.TeacherModels`` (``len``, ``load(k)``: the run's k-th teacher, frozen,
    loaded once per job). ``attach`` returns the trainable modules it needs (projections) or None;
    the trainer optimises them with the student and keeps them in the resumable checkpoint, never in
    the saved model. At every step the objective is called with two more keywords:
    ``hidden_states`` (the student's per-layer states, [B, T, H] each, index 0 = embeddings) and
    ``inputs`` (the batch's ``input_ids``/``attention_mask``/``token_type_ids``).
    """

    uses_hidden_states: bool

    def attach(self, *, student, teachers, device): ...

    def __call__(self, logits, labels, soft=None, *, progress: float = 0.0, hidden_states=None, inputs=None): ...


@runtime_checkable
class Aggregator(Protocol):
    """Turns K members' raw outputs into one target per example.

    ``outputs`` are logits [K, N, C] (values [K, N, 1] for regression); ``weights`` are
    optional per-member weights [K] (e.g. their dev scores). Returns probabilities [N, C]
    for classification, values [N, 1] for regression.
    """

    task_types: frozenset[str]

    def __call__(self, outputs, *, weights=None): ...


@runtime_checkable
class TaskSampler(Protocol):
    """Decides which task each batch of an epoch comes from.

    ``epoch_plan`` must be a pure function of its arguments (it is re-run on resume):
    ``num_batches`` maps task -> batches in one pass over its training data; ``generator`` is
    a ``numpy.random.Generator`` seeded from the run seed and the epoch; ``progress`` is
    ``epoch / epochs``. Returns the task name of every batch of the epoch, in order.
    """

    def epoch_plan(self, num_batches: dict[str, int], *, generator, epoch: int, progress: float) -> list[str]: ...


@runtime_checkable
class Logger(Protocol):
    """Records metrics. ``start`` is called once per job, on the main process only.

    ``run_id`` (optional in ``start``'s signature) is the job's stable id: a resumed job passes the
    same one. Optional methods: ``tracking_key()`` (which tracker a job was logged to, for backfill),
    ``log_table(key, columns, rows, *, step)`` and ``log_images({name: path}, *, step)`` (the report run).
    """

    def start(self, *, run_dir, name: str, group: str | None, job_type: str, config: dict,
              run_id: str | None = None) -> None: ...

    def log(self, metrics: dict[str, float], *, step: int) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


@dataclass
class DevData:
    """A labelled dev split a serving format is scored on (the evaluate stage's first dev split of the task)."""

    task: Any  # the mtkd.components.Task
    split: str
    rows: Any  # a datasets.Dataset
    max_length: int = 128
    cache_dir: str | None = None


@dataclass
class PreparedFormat:
    """A model converted to one serving format: ``run(batch) -> [B, C] logits`` (torch or numpy) on
    mtkd's padded batches, its ``size_bytes`` on disk, and ``dev``: ``{checkpoint_score, score,
    score_change, ...}`` on the dev split (x100), or ``None``."""

    run: Any
    size_bytes: int
    dev: dict | None = None


@runtime_checkable
class ServingFormat(Protocol):
    """A deployable form of a trained model (ONNX, int8...) timed beside eager PyTorch in the report.

    ``check()`` raises :class:`mtkd.extras.MissingExtraError` when an optional dependency is missing
    (called while the recipe is checked, before anything runs). ``prepare`` converts the model folder's
    ``task`` into ``workdir`` (a temporary folder) and scores it on ``dev``; ``requests`` is the dataset the
    timed batches come from (a batch's ``positions`` index it: for a format that tokenises the raw texts
    itself). An input it cannot convert (an unsupported head, say) is an :class:`mtkd.errors.MtkdError`,
    shown in the report's row.
    """

    def check(self) -> None: ...

    def prepare(self, model_dir, task: str, workdir, *, dev: DevData, requests=None,
                threads: int | None = None) -> PreparedFormat: ...


@dataclass
class Registration:
    """What a ``register`` call recorded (see ``mtkd.registry``)."""

    kind: str
    name: str
    factory: Any
    params: Any  # a pydantic model class
    plugin: str
    distribution: str | None = None
    version: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)
