"""Recipes: YAML files validated in two passes, with ``extends:``, ``--set`` overrides and a content hash.

Pass 1 checks the recipe's shape against the models below (unknown keys are errors). Pass 2
checks every component section (``{type: NAME, ...params}``) against the parameter model that
the plugin registering NAME declared, and fills in its defaults. The result is a
:class:`Recipe` whose ``resolved`` dict is what ``mtkd recipe show`` prints and what is hashed.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer
from pydantic.functional_validators import AfterValidator

from .errors import MtkdError, RecipeError, UnknownComponentError
from .params import omit_at_default, recipe_error
from .plugins import get_registries, load_plugins

#: Names that become file or folder names: a letter, digit or underscore, then those or ``.+-``.
_SAFE_NAME = re.compile(r"\w[\w.+-]*")
#: Names Windows reserves for devices, with or without an extension.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
SAFE_NAME_RULE = ("a plain file name: letters, digits, `_`, then also `.`, `+` or `-`; at most 100 characters; "
                  "no path separator, no `..`, not a device name such as `con`")


def check_safe_name(value: str, *, dots: bool = True) -> str:
    """``value`` if it can be a file name in the run folder, else ValueError (names never become paths)."""
    ok = (0 < len(value) <= 100 and _SAFE_NAME.fullmatch(value) is not None and ".." not in value
          and not value.endswith(".") and value.split(".")[0].lower() not in _RESERVED and (dots or "." not in value))
    if not ok:
        raise ValueError(SAFE_NAME_RULE + ("" if dots else "; no `.` (it separates task and metric)"))
    return value


def _safe_task_name(value: str) -> str:
    return check_safe_name(value, dots=False)


SafeName = Annotated[str, AfterValidator(check_safe_name)]
#: What every RNG takes (numpy's seeds are unsigned 32-bit).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
TaskName = Annotated[str, AfterValidator(_safe_task_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Component(BaseModel):
    """``{type: NAME, ...params}``; params are checked in pass 2 against the plugin's schema."""

    model_config = ConfigDict(extra="allow")
    type: str

    @property
    def params(self) -> dict:
        return dict(self.model_extra or {})

    def spec(self) -> dict:
        return {"type": self.type, **self.params}


#: the task-entry keys of a transfer set (mtkd.data.transfer): read by the core, keyed only where they are consumed
TRANSFER_KEYS = ("transfer_split", "max_transfer_examples")


class TaskEntry(BaseModel):
    """One task of the run. Keys other than those below are the task plugin's own parameters."""

    model_config = ConfigDict(extra="allow")
    name: TaskName
    type: str | None = Field(None, description="registered task; defaults to `name`")
    loss_weight: float = Field(1.0, gt=0)
    max_train_examples: int | None = Field(None, gt=0, description="fixed-seed subsample of the training split")
    max_eval_examples: int | None = Field(None, gt=0)
    transfer_split: str | None = Field(
        None, description="a split of inputs whose labels are ignored: the teachers label them and the student "
                          "learns their outputs too (a transfer set); teachers and the control never see it")
    max_transfer_examples: int | None = Field(None, gt=0, description="fixed-seed subsample of the transfer split")

    @model_serializer(mode="wrap")
    def _omit_unset_transfer(self, handler):
        """Left out of the resolved recipe while unset, so recipes without a transfer set keep their hashes."""
        return omit_at_default(self, handler(self), TRANSFER_KEYS)

    @property
    def task_type(self) -> str:
        return self.type or self.name

    @property
    def params(self) -> dict:
        return dict(self.model_extra or {})


class Data(BaseModel):
    """Data settings. Other keys name data sources by family, e.g. ``glue: ../shared/data/glue``."""

    model_config = ConfigDict(extra="allow")
    max_length: int = Field(128, gt=8)
    on_bad_rows: Literal["error", "skip"] = "error"
    cache_dir: str | None = Field(None, description="tokenised-data cache; default ~/.cache/mtkd")

    @property
    def sources(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


#: Training keys that joined after the first release; see Training._omit_unset_later_keys.
LATER_TRAINING_KEYS = ("best_tasks", "keep", "on_nonfinite", "compile", "save_dtype")


class Training(_Strict):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    token_budget: int | None = Field(None, gt=0, description="size batches by padded tokens instead of examples")
    group_by_length: bool = True
    optimizer: Literal["adamw", "adamax"] = "adamw"
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    eval_every: Annotated[int, Field(gt=0)] | Literal["epoch"] = "epoch"
    save_every: int = Field(200, gt=0, description="steps between resumable checkpoints")
    best_metric: str = Field("score", description="which dev checkpoint to keep: `score` (GLUE-style mean over "
                                                  "best_tasks), `TASK`, `TASK.METRIC`, or `final` (the last weights)")
    best_tasks: list[str] | None = Field(None, min_length=1, description="the tasks whose mean is `score` (default: the "
                                                           "headline's, i.e. all but evaluation.exclude_from_score); "
                                                           "e.g. leave out a tiny, noisy dev set such as WNLI's")
    keep: Literal["best", "final", "both"] | None = Field(
        None, description="model folders a finished job keeps: `best` (default; `final` when nothing was "
                          "evaluated or best_metric is `final`), `final`, or `both`")
    save_dtype: Literal["fp32", "fp16", "bf16"] | None = Field(
        None, description="dtype of the kept model folders' weights: `fp32` (default) or `fp16`/`bf16` (half the "
                          "disk; the evaluate stage scores the stored weights, so reported figures are those of "
                          "the saved model). Resumable checkpoints stay fp32")
    on_nonfinite: Literal["stop", "skip"] | None = Field(
        None, description="a NaN or infinite loss: `stop` the job with an error (default) or `skip` the step "
                          "(counted in result.json)")

    @model_serializer(mode="wrap")
    def _omit_unset_later_keys(self, handler):
        """Keys added after 0.1 are left out of the resolved recipe while unset, so the stage hashes of
        earlier runs stay valid and their teachers and students are reused."""
        return omit_at_default(self, handler(self), LATER_TRAINING_KEYS)
    log_every: int = Field(10, gt=0)
    sampling: Component
    num_threads: int | None = Field(None, gt=0)
    compile: bool | None = Field(None, description="torch.compile (inductor, dynamic shapes) the encoder for "
                                                   "training and evaluation; compile time is paid on the first steps")


class Objectives(_Strict):
    classification: Component
    regression: Component


class Member(_Strict):
    """One teacher: a variation of the base set-up, or an existing checkpoint."""

    name: SafeName | None = None
    seed: Seed | None = None
    checkpoint: str | None = None
    encoder: dict | None = None
    heads: dict[str, dict] | None = None
    training: dict | None = None
    bootstrap: bool = Field(False, description="train on a bootstrap resample of every task")


class Teachers(_Strict):
    tasks: list[str] | None = Field(None, min_length=1, description="tasks to distil; default all")
    members: list[Member] = Field(min_length=1)
    aggregation: Component
    regression_aggregation: Component
    min_dev_score: float | None = Field(None, description="refuse to distil from a teacher below this dev score")


class Search(BaseModel):
    """``student.search``: lists of values for scalar ``training`` fields (the grid) and the trial ``seeds``;
    checked in pass 2 (``_check_search``) against the training schema."""

    model_config = ConfigDict(extra="allow")
    seeds: list[Seed] = Field(min_length=1, description="trial seeds: every setting trains once per seed, for the "
                                                        "student and the control alike; disjoint from student.seeds")


class StudentVariant(_Strict):
    """One student set-up of a compression sweep: overrides of the base ``student:`` section."""

    name: SafeName = Field(description="addresses it: `--model student:NAME`, the report's frontier")
    encoder: dict | None = None
    init_from_teacher: int | None = Field(None, ge=0, description="copy the encoder of this teacher member "
                                                                  "(null: start from the encoder's own weights)")
    heads: dict[str, dict] | None = None
    training: dict | None = None
    objective: dict[str, dict] | None = Field(None, description="{classification: ..., regression: ...} over the "
                                                                "student's objective (a part with another type "
                                                                "replaces it)")


class Student(_Strict):
    encoder: dict | None = None
    init_from_teacher: int | None = Field(None, ge=0, description="copy the encoder of this teacher member")
    heads: dict[str, dict] | None = None
    training: dict | None = None
    objective: Objectives
    seeds: list[Seed] | None = Field(None, min_length=1, description="one student (and control) per seed")
    control: bool = Field(False, description="also train the same set-up on hard labels only")
    soft_targets: str | None = Field(None, description="bring soft targets as a file instead of teachers")
    search: Search | None = Field(None, description="a training-budget grid, e.g. {epochs: [2, 3], lr: [5.0e-5, "
                                                    "1.0e-4], seeds: [101]}, tried for student and control alike "
                                                    "and chosen on the holdout; student.seeds then confirm it")
    variants: list[StudentVariant] | None = Field(
        None, min_length=1, description="a compression sweep: several student set-ups (each over the base "
                                        "section), each trained for every seed with its own control")

    @model_serializer(mode="wrap")
    def _omit_unset_variants(self, handler):
        """No ``variants`` (or ``search``): the resolved recipe (and every hash) is the one of a recipe written
        before them."""
        return omit_at_default(self, handler(self), ("variants", "search"))


class Logging(_Strict):
    trackers: list[Component] = Field(default_factory=list)
    quiet: bool = False
    group: str | None = Field(None, description="tracker group for every job of the run; default the recipe name")
    progress_every_steps: int | None = Field(None, gt=0, description="when stderr is not a terminal: a progress "
                                                                     "line every this many steps (default 50)")
    progress_every_seconds: float | None = Field(None, gt=0, description="... or every this many seconds, "
                                                                         "whichever comes first (default 30)")

    @model_serializer(mode="wrap")
    def _omit_unset_progress_keys(self, handler):
        """Unset display settings stay out of the resolved recipe, so they never change its hash."""
        return omit_at_default(self, handler(self), ("progress_every_steps", "progress_every_seconds"))


class Scaling(_Strict):
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"
    nproc: int = Field(1, gt=0)
    zero_stage: int = Field(2, ge=0, le=3)
    offload: bool = False
    fsdp_sharding: Literal["full", "shard_grad_op", "no_shard"] = "full"
    backend: str | None = None


class HoldoutSelection(_Strict):
    holdout: float = Field(gt=0, lt=1, description="fraction of each task's training split carved off (by "
                                                   "content, seeded by the recipe seed and the task name)")


class Evaluation(_Strict):
    serving: bool = True
    serving_batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 32], min_length=1)
    serving_examples: int = Field(128, gt=0)
    serving_formats: list[str] = Field(
        default_factory=lambda: ["eager"], min_length=1,
        description="the student's formats timed in the report's serving section: `eager` (PyTorch, always "
                    "measured) and formats plugins register (mtkd_hf: `onnx`, `int8`; the `serve` extra)")
    selection: Literal["dev"] | HoldoutSelection = Field(
        "dev", description="the split that picks checkpoints, aggregator weights and gates: `dev`, or "
                           "{holdout: FRACTION} carved from each task's training data (dev is then only reported)")
    score_tasks: list[str] | None = Field(None, min_length=1, description="the tasks the headline GLUE-style "
                                                                          "score averages (default: all)")
    exclude_from_score: list[str] | None = Field(None, min_length=1, description="tasks reported but left out of "
                                                                                 "the headline score, e.g. [wnli]")

    @field_validator("selection", mode="before")
    @classmethod
    def _check_selection(cls, value):
        """`dev`, {holdout: FRACTION}, or ``holdout:FRACTION`` (handy with --set); one clear message otherwise."""
        if isinstance(value, str) and value.replace(" ", "").startswith("holdout:"):
            value = {"holdout": value.split(":", 1)[1].strip()}
        if value == "dev":
            return value
        if not isinstance(value, dict) or set(value) != {"holdout"}:
            raise ValueError("expected `dev` or {holdout: FRACTION}, e.g. {holdout: 0.1}")
        try:
            fraction = float(value["holdout"])
        except (TypeError, ValueError):
            fraction = None
        if isinstance(value["holdout"], bool) or fraction is None or not 0 < fraction < 1:
            raise ValueError(f"the holdout fraction must be between 0 and 1 (exclusive), got {value['holdout']!r}")
        return {"holdout": fraction}

    @field_validator("serving_formats")
    @classmethod
    def _distinct_formats(cls, value):
        twice = sorted({f for f in value if value.count(f) > 1})
        if twice:
            raise ValueError(f"each format once; listed twice: {', '.join(twice)}")
        return value

    @model_serializer(mode="wrap")
    def _omit_default_selection(self, handler):
        """``selection: dev`` and ``serving_formats: [eager]`` (the defaults) stay out of the resolved recipe,
        so earlier runs' hashes hold."""
        data = handler(self)
        if isinstance(data, dict) and data.get("selection") == "dev":
            data.pop("selection")
        if isinstance(data, dict) and data.get("serving_formats") == ["eager"]:
            data.pop("serving_formats")
        for key in ("score_tasks", "exclude_from_score"):  # unset: earlier runs' evaluation keys hold
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data


class RecipeModel(_Strict):
    name: SafeName
    description: str = ""
    plugins: list[str] = Field(default_factory=list)
    seed: Seed = 42
    output_dir: str = "runs"
    data: Data = Field(default_factory=Data)
    tasks: list[TaskEntry] = Field(min_length=1)
    encoder: Component
    heads: dict[str, Component] = Field(description="`default` and per-task head specs")
    objective: Objectives
    training: Training
    teachers: Teachers | None = None
    student: Student | None = None
    logging: Logging = Field(default_factory=Logging)
    scaling: Scaling = Field(default_factory=Scaling)
    evaluation: Evaluation = Field(default_factory=Evaluation)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, value):
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


# ---------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError("a recipe must be a file, not a folder" if path.is_dir() else "recipe file not found",
                          file=path, expected="an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError("not a text file", file=path, expected="YAML in UTF-8", found=str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise RecipeError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=path, path=where,
                          expected="plain YAML (mappings, lists, text, numbers; no !!python tags)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a mapping", file=path, expected="key: value pairs at the top level",
                          found=type(data).__name__)
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; anything else in ``override`` replaces what ``base`` had."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "type" not in value:
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("type") == out[key].get("type"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: ``extends: mtkd:base.yaml`` names a recipe shipped inside the package (mtkd/recipes/), from any folder.
SHIPPED_PREFIX = "mtkd:"


def shipped_recipes_dir() -> Path:
    """The folder of the recipes installed with mtkd (``recipes/`` in a clone links to it)."""
    return Path(__file__).resolve().parent / "recipes"


def shipped_recipes() -> list[str]:
    return sorted(p.name for p in shipped_recipes_dir().glob("*.yaml"))


def _parent_path(parent: str, child: Path) -> Path:
    if not parent.startswith(SHIPPED_PREFIX):
        return (child.parent / parent).resolve()
    name = parent[len(SHIPPED_PREFIX):]
    if not name.endswith((".yaml", ".yml")):
        name += ".yaml"
    path = shipped_recipes_dir() / name
    if "/" in name or os.sep in name or not path.is_file():
        raise RecipeError("no shipped recipe by that name", file=child, path="extends",
                          expected="one of: " + ", ".join(SHIPPED_PREFIX + n for n in shipped_recipes()),
                          found=parent)
    return path


#: ``data:`` keys that are settings, not data sources.
DATA_SETTINGS = ("max_length", "on_bad_rows", "cache_dir")


def _rebase(value, parent_dir: Path, child_dir: Path):
    """A relative path that exists from the parent's folder, re-written relative to the child's."""
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return value
    if parent_dir == child_dir or not (parent_dir / value).exists():
        return value  # not a path of the parent's (a hub id, or a path from the working directory)
    return os.path.relpath(parent_dir / value, child_dir)


def _rebased_paths(data: dict, parent_dir: Path, child_dir: Path) -> dict:
    """A parent's data sources and task files stay relative to the parent's folder once merged into a child."""
    data = copy.deepcopy(data)
    if isinstance(data.get("data"), dict):
        for key, value in data["data"].items():
            if key not in DATA_SETTINGS:
                data["data"][key] = _rebase(value, parent_dir, child_dir)
    if isinstance(data.get("tasks"), list):
        for entry in data["tasks"]:
            if isinstance(entry, dict):
                for key, value in entry.items():
                    if key not in ("name", "type"):
                        entry[key] = _rebase(value, parent_dir, child_dir)
    return data


def load_raw(path: Path, _seen: tuple = (), origins: dict | None = None) -> dict:
    """The recipe with ``extends:`` resolved (paths relative to the file that names them;
    ``mtkd:NAME`` is a recipe shipped with the package).

    ``origins``, when given, is filled with each entry of the merged ``plugins:`` -> the file that declared it.
    """
    path = path.resolve()
    if path in _seen:
        raise RecipeError("`extends` forms a cycle", file=path, path="extends",
                          expected="parents that never extend their child",
                          found=" -> ".join(str(p) for p in (*_seen, path)))
    data = _read_yaml(path)
    if origins is not None and isinstance(data.get("plugins"), list):
        for spec in data["plugins"]:
            origins.setdefault(str(spec), path)
    parents = data.pop("extends", None)
    if parents is None:
        return data
    merged: dict = {}
    plugins: list = []
    for parent in [parents] if isinstance(parents, str) else parents:
        if not isinstance(parent, str):
            raise RecipeError("invalid `extends`", file=path, path="extends", expected="a file name or a list of them",
                              found=parent)
        parent_path = _parent_path(parent, path)
        parent_origins: dict = {}
        parent_data = _rebased_paths(load_raw(parent_path, (*_seen, path), parent_origins), parent_path.parent,
                                     path.parent)
        rebased = _rebased_plugins(parent_data.get("plugins"), parent_path.parent, path.parent)
        if origins is not None:
            for old, new in zip(parent_data.get("plugins") or [], rebased):
                origins.setdefault(str(new), parent_origins.get(str(old), parent_path))
        plugins += rebased
        merged = deep_merge(merged, parent_data)
    merged = deep_merge(merged, data)
    # Plugins add up (a child cannot drop what its parents' components need), and a parent's plugin
    # files stay relative to the parent's folder.
    own = data.get("plugins", [])
    if plugins and isinstance(own, list):
        merged["plugins"] = list(dict.fromkeys(plugins + own))
    return merged


def _rebased_plugins(specs, parent_dir: Path, child_dir: Path) -> list:
    if not isinstance(specs, list):
        return []
    return [os.path.relpath(parent_dir / s, child_dir)
            if isinstance(s, str) and (s.endswith(".py") or "/" in s or os.sep in s) and not Path(s).is_absolute()
            else s for s in specs]


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(dotted: str) -> list:
    parts: list = []
    for name, index in _SEGMENT.findall(dotted):
        parts.append(int(index) if index else name)
    return parts


def apply_override(data: dict, assignment: str) -> tuple[list, str]:
    """Apply ``a.b[2].c=value`` to ``data`` in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise RecipeError("invalid --set", path=assignment, expected="KEY.PATH=VALUE", found=assignment)
    key, raw = assignment.split("=", 1)
    parts = parse_path(key.strip())
    if not parts:
        raise RecipeError("invalid --set", path=assignment, expected="KEY.PATH=VALUE", found=assignment)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError("the --set value is not valid YAML", path=key.strip(),
                          expected="a YAML value (quote text that holds YAML syntax: --set 'k=\"a: b\"')",
                          found=f"{raw} ({getattr(exc, 'problem', exc)})") from None
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise RecipeError("--set index out of range", path=key, expected=f"an index below {len(node) if isinstance(node, list) else 0}", found=part)
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise RecipeError("--set path goes through a value that is not a mapping", path=key, found=node,
                                  expected="a key path through mappings (and [i] through lists)")
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            raise RecipeError("--set index out of range", path=key, found=last)
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    else:
        if not isinstance(node, dict):
            raise RecipeError("--set path goes through a value that is not a mapping", path=key, found=node,
                              expected="a key path through mappings (and [i] through lists)")
        node[last] = value
    return parts, raw


def _set_at(data, parts, value):
    node = data
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


class Recipe:
    """A validated recipe. ``model`` is the pydantic object, ``resolved`` the plain dict."""

    def __init__(self, model: RecipeModel, resolved: dict, file: Path | None, overrides=()):
        self.model = model
        self.overrides = tuple(overrides)  # the --set assignments it was loaded with
        self.resolved = resolved
        self.file = file
        self.base_dir = file.parent if file else Path.cwd()
        #: False for a recipe read from a run folder: its plugins are not imported and its code opt-ins
        #: (trust_remote_code) are not honoured -- a run folder is data, not the user's instructions
        self.user_trusted = True

    def __getattr__(self, item):
        return getattr(self.__dict__["model"], item)

    @property
    def hash(self) -> str:
        return content_hash(self.resolved)

    def section_hash(self, *keys: str, extra: Any = None) -> str:
        return content_hash({"sections": {k: self.resolved.get(k) for k in keys}, "extra": extra})

    def score_tasks(self) -> list[str]:
        return headline_tasks(self.model)

    def distilled_tasks(self) -> list[str]:
        names = [t.name for t in self.model.tasks]
        if self.model.teachers is None or self.model.teachers.tasks is None:
            return names
        return list(self.model.teachers.tasks)

    def resolve_path(self, value: str | None) -> str | None:
        """Relative paths: from the working directory if they exist there, else from the recipe's folder."""
        if value is None:
            return None
        p = Path(value).expanduser()
        if p.is_absolute() or p.exists():
            return str(p)
        candidate = self.base_dir / p
        return str(candidate) if candidate.exists() else value


def content_hash(obj: Any) -> str:
    """A stable hash: canonical JSON (sorted keys) of the object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_recipe(path, overrides=(), *, extra_plugins=(), check_files: bool = False) -> Recipe:
    """The validated recipe; ``check_files``: also that its data sources, checkpoints and model folders exist
    (``check_sources``), every problem reported at once."""
    path = Path(path)
    origins: dict = {}
    raw = load_raw(path, origins=origins)
    if isinstance(raw.get("tasks"), list):  # `- rte` shorthand as a mapping, so --set can reach tasks[0].max_train_examples
        raw["tasks"] = [{"name": t} if isinstance(t, str) else t for t in raw["tasks"]]
    set_paths = []
    for assignment in overrides:
        set_paths.append(apply_override(raw, assignment))
    recipe = validate_recipe(raw, file=path, set_paths=set_paths, extra_plugins=extra_plugins,
                             plugin_origins=origins, check_files=check_files)
    recipe.overrides = tuple(overrides)
    return recipe


#: Set (to anything but ``""`` or ``0``) to refuse the plugins a recipe names in ``plugins:`` (``--no-recipe-plugins``).
NO_RECIPE_PLUGINS = "MTKD_NO_RECIPE_PLUGINS"


def recipe_plugins_refused() -> bool:
    return os.environ.get(NO_RECIPE_PLUGINS, "") not in ("", "0")


def _announce_plugins(specs, file, origins: dict | None, stored: bool = False) -> None:
    """Say which code a recipe is about to import (and from which recipe file), before importing it."""
    if not isinstance(specs, list) or not specs or os.environ.get("RANK", "0") != "0":
        return
    named = ", ".join(f"{s} (declared in {origins.get(str(s), file) if origins else file})" for s in specs)
    if stored:
        line = f"mtkd: not loading the plugins named by a run folder's recipe: {named}"
    elif recipe_plugins_refused():
        line = f"mtkd: not loading the recipe's plugins ({NO_RECIPE_PLUGINS} is set): {named}"
    else:
        line = (f"mtkd: the recipe loads plugin code (it runs with your permissions): {named}; "
                f"refuse recipe plugins with {NO_RECIPE_PLUGINS}=1 or `mtkd --no-recipe-plugins`")
    print(line, file=sys.stderr, flush=True)


def validate_recipe(raw: dict, *, file=None, set_paths=(), extra_plugins=(), plugin_origins=None,
                    stored: bool = False, check_files: bool = False) -> Recipe:
    """``stored``: the recipe comes from a run folder (``recipe.json``), not from the user: its ``plugins:``
    are never imported (give them with --plugin) and the result is not ``user_trusted``."""
    raw = copy.deepcopy(raw)
    retried: set = set()
    _announce_plugins(raw.get("plugins"), file, plugin_origins, stored)
    while True:
        try:
            recipe = _validate_once(raw, file=file, extra_plugins=extra_plugins, stored=stored, check_files=check_files)
            recipe.user_trusted = not stored
            return recipe
        except RecipeError as exc:
            # A --set value that YAML typed (``name=123``, ``project=true``) where the schema -- the recipe's or a
            # plugin's -- wants text is retried as the text given; an item of a --set list as its text.
            at = parse_path(exc.path or "") if exc.error_type == "string_type" else []
            given = [(parts, text) for parts, text in set_paths if parts and at[: len(parts)] == parts]
            if not given or tuple(at) in retried:
                raise
            retried.add(tuple(at))
            parts, text = given[0]
            try:
                _set_at(raw, at, text if at == parts else str(_get_at(raw, at)))
            except (KeyError, IndexError, TypeError):
                raise exc from None


def _get_at(data, parts):
    for part in parts:
        data = data[part]
    return data


def _validate_once(raw: dict, *, file, extra_plugins, stored: bool = False, check_files: bool = False) -> Recipe:
    # Pass 1: the recipe's shape. Its errors are kept, and the rest is checked with the bad values left out
    # (their defaults), so that one run of `recipe validate` reports every problem it can find.
    shape_error = None
    try:
        model = RecipeModel.model_validate(raw)
    except ValidationError as exc:
        shape_error = recipe_error(exc, file=file, model=RecipeModel)
        model = _without_bad_values(raw, exc)
        if model is None:
            raise shape_error from None
    # The recipe's `plugins:` are relative to the recipe; --plugin paths to the working directory.
    refused = model.plugins if (stored or recipe_plugins_refused()) else []
    if not refused:
        load_plugins(model.plugins, file=file)
    load_plugins(extra_plugins)
    resolved = model.model_dump(mode="json")
    _default_best_tasks(model, resolved)
    # Pass 2: every component against the params its plugin registered; then the files the recipe names.
    token = _COLLECTED.set([])  # every independent problem is collected, so that all are reported at once
    try:
        bad_tasks: set[int] = set()
        with _collecting():
            _second_pass(model, resolved, file, bad_tasks)
        if check_files:
            with _collecting():
                check_sources(Recipe(model, resolved, Path(file) if file else None), skip_tasks=bad_tasks)
        collected = _COLLECTED.get()
    finally:
        _COLLECTED.reset(token)
    if refused:
        for exc in collected:
            if isinstance(exc, UnknownComponentError):
                exc.message += (f" (the recipe's plugins {', '.join(map(str, refused))} were not loaded and may "
                                "provide it)")
                exc.hint = ("a run folder's recipe never loads code: review the plugin and name it with --plugin, "
                            "or give the recipe file" if stored else
                            f"recipe plugins are refused because {NO_RECIPE_PLUGINS} is set (or "
                            "--no-recipe-plugins): review their code and run without it, or install the plugin and "
                            "name it with --plugin")
    if shape_error is not None or collected:
        raise _all_at_once([e for e in (shape_error,) if e is not None] + collected)
    return Recipe(model, resolved, Path(file) if file else None)


def _default_best_tasks(model: RecipeModel, resolved: dict) -> None:
    """A headline that leaves tasks out also chooses without them: unless the recipe names
    ``training.best_tasks``, checkpoints chosen by ``score`` and search trials use the headline's tasks. Written
    into the resolved recipe, so it is part of every training job's key."""
    ev = model.evaluation
    training = resolved["training"]
    # `final` keeps the last weights, but a search still scores its trials by the tasks' mean.
    by_mean = training.get("best_metric") == "score" or (
        training.get("best_metric") == "final" and (resolved.get("student") or {}).get("search"))
    if training.get("best_tasks") is not None or not by_mean or not (ev.score_tasks or ev.exclude_from_score):
        return  # named by the recipe, nothing chooses by the tasks' mean, or every task is in the headline
    chosen = headline_tasks(model)
    if chosen and len(chosen) < len(model.tasks):
        training["best_tasks"] = chosen


def headline_tasks(model: RecipeModel) -> list[str]:
    """The tasks the headline GLUE-style score averages (``evaluation.score_tasks`` / ``exclude_from_score``),
    in the recipe's order; names that are not tasks of the run are ignored here (pass 2 reports them)."""
    names = [t.name for t in model.tasks]
    ev = model.evaluation
    if ev.score_tasks:
        return [n for n in names if n in ev.score_tasks]
    return [n for n in names if n not in (ev.exclude_from_score or ())]


def _without_bad_values(raw: dict, exc: ValidationError) -> RecipeModel | None:
    """The recipe with every value pass 1 refused left out (so its default applies), if that validates;
    ``None`` when it does not (a required key was bad, or leaving a value out breaks something else)."""
    trimmed = copy.deepcopy(raw)
    for err in exc.errors():
        if err.get("type") == "missing":
            return None
        holder, key, node = None, None, trimmed
        for part in err.get("loc", ()):  # the deepest mapping key that exists (skips pydantic's union tags)
            if isinstance(node, dict) and part in node:
                holder, key, node = node, part, node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]  # a list item: the list's own key is what is left out
            else:
                break
        if holder is None:
            return None
        holder.pop(key, None)
    try:
        return RecipeModel.model_validate(trimmed)
    except ValidationError:
        return None


@contextlib.contextmanager
def _collecting():
    """While a recipe is validated: an error in the block is kept (reported with the others) and the checks
    go on. A bug-like exception after an error was kept is dropped: it follows from that error."""
    try:
        yield
    except MtkdError as exc:
        collected = _COLLECTED.get()
        if collected is None:
            raise
        collected.append(exc)
    except Exception:
        if not _COLLECTED.get():
            raise


def _component(registry, spec: Component | dict, resolved_holder: dict, key, *, file, path, context=None):
    """Validate one component against its plugin's params and store the filled-in spec."""
    if isinstance(spec, dict):
        spec = Component.model_validate(spec)
    try:
        params = registry.validate_params(spec.type, spec.params, file=file, path=path, context=context)
    except MtkdError as exc:  # a bad parameter or an unknown type
        collected = _COLLECTED.get()
        if collected is None:
            raise
        collected.append(exc)  # components are independent: report every bad one at once
        return
    resolved_holder[key] = {"type": spec.type, **params.model_dump(mode="json")}


#: While a recipe is validated: the component errors found so far (see _validate_once).
_COLLECTED: contextvars.ContextVar[list | None] = contextvars.ContextVar("mtkd_recipe_errors", default=None)


def _all_at_once(errors: list[MtkdError]) -> MtkdError:
    every, seen = [], set()
    for each in (each for e in errors for each in (getattr(e, "errors", None) or [e])):
        if (each.file, each.path, each.message) not in seen:  # two checks may find one problem
            seen.add((each.file, each.path, each.message))
            every.append(each)
    first = every[0]
    first.errors = every if len(every) > 1 else None
    for each in every if len(every) > 1 else ():
        if each.hint and each.hint.endswith("more problem(s) after this one"):
            each.hint = None  # they are all shown, and pass 2 may have found more
    return first


def _check_data_keys(model: RecipeModel, reg, file) -> None:
    """Each ``data:`` key beyond the core's must be a source family some task plugin declared it reads
    (``register(..., data_sources=(...))``): a typo such as ``glu:`` would otherwise be ignored."""
    import difflib

    claimed = sorted({s for e in reg.tasks for s in e.extra.get("data_sources", ())})
    for key in model.data.sources:
        if key not in claimed:
            known = [*Data.model_fields, *claimed]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            raise RecipeError(f"unknown data key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                              file=file, path=f"data.{key}",
                              expected=f"one of: {', '.join(Data.model_fields)}, or a data source a task plugin "
                                       f"reads ({', '.join(claimed) or 'none registered'})", found=key)


def _second_pass(model: RecipeModel, resolved: dict, file, bad_tasks: set | None = None) -> None:
    """Every component and cross-field check; independent checks go on after an error (``_collecting``);
    ``bad_tasks`` receives the index of every task entry that did not validate."""
    reg = get_registries()
    task_names = [t.name for t in model.tasks]
    with _collecting():
        _check_data_keys(model, reg, file)
    seen = set()
    for i, task in enumerate(model.tasks):
        # Case-blind: `rte` and `RTE` would share files on case-insensitive filesystems.
        if task.name.casefold() in seen:
            with _collecting():
                raise RecipeError("task listed twice", file=file, path=f"tasks[{i}].name", found=task.name,
                                  expected="each task once, names differing in more than case (name a second "
                                           "copy differently, with `type:`)")
        seen.add(task.name.casefold())
        try:
            params = reg.tasks.validate_params(task.task_type, task.params, file=file, path=f"tasks[{i}]")
        except MtkdError:
            if bad_tasks is not None:
                bad_tasks.add(i)
            with _collecting():
                raise
            continue
        core = {k: v for k, v in resolved["tasks"][i].items() if k in TaskEntry.model_fields}
        core["type"] = task.task_type
        resolved["tasks"][i] = {**core, **params.model_dump(mode="json")}

    def check_task_keys(mapping, path, allow_default=False):
        for key in mapping or {}:
            if key not in task_names and not (allow_default and key == "default"):
                import difflib

                close = difflib.get_close_matches(key, task_names, n=1)
                raise RecipeError(f"unknown task {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                                  file=file, path=f"{path}.{key}", expected=f"one of the recipe's tasks: {', '.join(task_names)}",
                                  found=key)

    _component(reg.encoders, model.encoder, resolved, "encoder", file=file, path="encoder")
    with _collecting():
        check_task_keys(model.heads, "heads", allow_default=True)
    if "default" not in model.heads:
        with _collecting():
            raise RecipeError("missing the default head", file=file, path="heads.default",
                              expected="a head spec such as {type: linear}")
    for key, spec in model.heads.items():
        _component(reg.heads, spec, resolved["heads"], key, file=file, path=f"heads.{key}")
    for kind in ("classification", "regression"):
        _component(reg.losses, getattr(model.objective, kind), resolved["objective"], kind, file=file,
                   path=f"objective.{kind}")
    _component(reg.samplers, model.training.sampling, resolved["training"], "sampling", file=file,
               path="training.sampling")
    for i, tracker in enumerate(model.logging.trackers):
        _component(reg.loggers, tracker, resolved["logging"]["trackers"], i, file=file, path=f"logging.trackers[{i}]")
    for i, fmt in enumerate(model.evaluation.serving_formats):
        if fmt != "eager":  # the core's own; the others come from plugins (`register_serving_formats`)
            _component(reg.serving_formats, {"type": fmt}, {}, i, file=file, path=f"evaluation.serving_formats[{i}]")

    if model.teachers is not None:
        t = model.teachers
        for j, name in enumerate(t.tasks or []):
            if name not in task_names:
                with _collecting():
                    check_task_keys({name: None}, f"teachers.tasks[{j}]")
        facts = {"teacher_members": len(t.members)}
        _component(reg.aggregators, t.aggregation, resolved["teachers"], "aggregation", file=file,
                   path="teachers.aggregation", context=facts)
        _component(reg.aggregators, t.regression_aggregation, resolved["teachers"], "regression_aggregation",
                   file=file, path="teachers.regression_aggregation", context=facts)
        for i, member in enumerate(t.members):
            with _collecting():
                _validate_variation(model, resolved, member, f"teachers.members[{i}]", file, check_task_keys,
                                    resolved["teachers"]["members"][i])
        with _collecting():
            _check_members(model, resolved, file)
    if model.student is not None:
        s = model.student
        with _collecting():
            _validate_variation(model, resolved, s, "student", file, check_task_keys, resolved["student"])
        for j, seed in enumerate(s.seeds or []):
            if seed in (s.seeds or [])[:j]:
                with _collecting():
                    raise RecipeError(f"student seed {seed} is listed twice", file=file, path=f"student.seeds[{j}]",
                                      expected="distinct seeds", found=seed,
                                      hint="a seed listed twice is trained once and counted twice in mean ± std")
        for kind in ("classification", "regression"):
            _component(reg.losses, getattr(s.objective, kind), resolved["student"]["objective"], kind, file=file,
                       path=f"student.objective.{kind}")
        with _collecting():
            _check_init_from_teacher(model, s.init_from_teacher, "student.init_from_teacher", file)
        if s.variants:
            with _collecting():
                _check_variants(model, resolved, file, check_task_keys)
    with _collecting():
        _check_score_tasks(model, file)
    with _collecting():
        _check_transfer(model, file)
    with _collecting():
        _check_search(model, resolved, file)
    with _collecting():
        _check_temperature(model, resolved, file)
    with _collecting():
        _check_run_inputs(model, resolved, file)


def _scalar_annotation(annotation) -> bool:
    """Whether a training field holds one value (not a list, mapping or component): only those are searched."""
    from typing import get_args, get_origin

    if annotation in (list, dict) or get_origin(annotation) in (list, dict):
        return False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return False
    return all(_scalar_annotation(a) for a in get_args(annotation) if isinstance(a, type) or get_origin(a))


def _check_search(model: RecipeModel, resolved: dict, file) -> None:
    """``student.search``: scalar training fields that change the model, each a list of distinct valid values;
    trial seeds distinct and disjoint from the confirmation seeds; the holdout (never dev) chooses."""
    s = model.student
    if s is None or s.search is None:
        return
    from .stages.graph import NO_KEY_TRAINING

    where = "student.search"
    example = "{epochs: [2, 3], lr: [5.0e-5, 1.0e-4], seeds: [101]}"
    grid = dict(s.search.model_extra or {})
    if not grid:
        raise RecipeError("a search needs at least one training field to vary", file=file, path=where,
                          expected=f"lists of training values and trial seeds, e.g. {example}")
    if model.evaluation.selection == "dev":
        raise RecipeError("a training-budget search must not choose on dev, the split that is reported", file=file,
                          path="evaluation.selection", expected="{holdout: FRACTION}", found="dev",
                          hint="set evaluation.selection: {holdout: 0.1} (or --set evaluation.selection=holdout:0.1): "
                               "the trials are then scored on a holdout carved from the training data")
    searchable = [k for k, f in Training.model_fields.items()
                  if k not in NO_KEY_TRAINING and _scalar_annotation(f.annotation)]
    base = deep_merge(resolved["training"], resolved["student"].get("training") or {})
    out: dict = {}
    for name, values in grid.items():
        path = f"{where}.{name}"
        if name not in Training.model_fields:
            import difflib

            close = difflib.get_close_matches(str(name), searchable + ["seeds"], n=1)
            raise RecipeError(f"unknown training field {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                              file=file, path=path, expected=f"seeds, or a training field: {', '.join(searchable)}",
                              found=name)
        if name not in searchable:
            why = "cannot change the trained model" if name in NO_KEY_TRAINING else "is not a single value"
            raise RecipeError(f"training.{name} {why}: it cannot be searched", file=file, path=path,
                              expected=f"one of {', '.join(searchable)}", found=name)
        if not isinstance(values, list) or not values:
            raise RecipeError("a searched field takes a list of values", file=file, path=path,
                              expected=f"a non-empty list, e.g. {name}: [{base.get(name)!r}, ...]", found=values)
        coerced = []
        for j, value in enumerate(values):
            try:
                value = Training.model_validate({**base, name: value}).model_dump(mode="json")[name]
            except ValidationError as exc:
                problem = exc.errors()[0].get("msg", "invalid").removeprefix("Value error, ")
                raise RecipeError(f"not a valid training.{name}: {problem}", file=file, path=f"{path}[{j}]",
                                  expected=problem, found=value) from None
            if value in coerced:
                raise RecipeError(f"{name} {value!r} is listed twice", file=file, path=f"{path}[{j}]",
                                  expected="distinct values (each is one tried setting)", found=value)
            coerced.append(value)
        out[name] = coerced
    confirm = s.seeds or [model.seed]
    for j, seed in enumerate(s.search.seeds):
        if seed in s.search.seeds[:j]:
            raise RecipeError(f"trial seed {seed} is listed twice", file=file, path=f"{where}.seeds[{j}]",
                              expected="distinct seeds", found=seed)
        if seed in confirm:
            raise RecipeError(f"trial seed {seed} is also a confirmation seed", file=file, path=f"{where}.seeds[{j}]",
                              expected=f"seeds other than student.seeds {confirm}", found=seed,
                              hint="the reported figures must come from seeds that no choice used")
    resolved["student"]["search"] = {**out, "seeds": list(s.search.seeds)}


def _over(base: dict | None, override: dict | None) -> dict | None:
    """A variant's component override on top of the student's: merged, or the variant's alone when it names
    another ``type``."""
    if not override:
        return base
    if not base or override.get("type") not in (None, base.get("type")):
        return override
    return deep_merge(base, override)


def _check_init_from_teacher(model: RecipeModel, index: int | None, path: str, file) -> None:
    if index is not None and (model.teachers is None or index >= len(model.teachers.members)):
        raise RecipeError("init_from_teacher names no teacher", file=file, path=path,
                          expected="the index of a member in teachers.members", found=index)


def _check_variants(model: RecipeModel, resolved: dict, file, check_task_keys) -> None:
    """``student.variants``: safe, distinct names; each variant over the student section validated like the
    student, its resolved entry holding the combined overrides and its whole objective."""
    from types import SimpleNamespace

    reg = get_registries()
    s = model.student
    names: dict = {}
    entries = []
    for i, v in enumerate(s.variants):
        where = f"student.variants[{i}]"
        key = v.name.casefold()  # names become labels and job names: `L3` and `l3` would be confused
        if key in names:
            raise RecipeError(f"two student variants are named {v.name!r}", file=file, path=f"{where}.name",
                              expected=f"a name other than variants[{names[key]}]'s, also ignoring case",
                              found=v.name)
        names[key] = i
        entry: dict = {"name": v.name}
        heads = dict(s.heads or {})
        for k, spec in (v.heads or {}).items():
            heads[k] = _over(heads.get(k), spec)
        combined = SimpleNamespace(encoder=_over(s.encoder, v.encoder), heads=heads or None,
                                   training=deep_merge(s.training or {}, v.training or {}) or None)
        _validate_variation(model, resolved, combined, where, file, check_task_keys, entry)
        init = v.init_from_teacher if "init_from_teacher" in v.model_fields_set else s.init_from_teacher
        _check_init_from_teacher(model, init, f"{where}.init_from_teacher", file)
        entry["init_from_teacher"] = init
        objective = copy.deepcopy(resolved["student"]["objective"])
        for kind, spec in (v.objective or {}).items():
            if kind not in Objectives.model_fields:
                raise RecipeError(f"unknown objective kind {kind!r}", file=file, path=f"{where}.objective.{kind}",
                                  expected=f"one of {', '.join(Objectives.model_fields)}", found=kind)
            if not isinstance(spec, dict):
                raise RecipeError("an objective must be a mapping with `type:`", file=file,
                                  path=f"{where}.objective.{kind}", found=spec)
            _component(reg.losses, _over(objective[kind], spec), objective, kind, file=file,
                       path=f"{where}.objective.{kind}")
        entry["objective"] = objective
        entries.append(entry)
    resolved["student"]["variants"] = entries


def _check_transfer(model: RecipeModel, file) -> None:
    """A task's ``transfer_split`` needs teachers that label it and a student that learns from them."""
    distilled = None
    if model.teachers is not None:
        distilled = list(model.teachers.tasks) if model.teachers.tasks is not None else [t.name for t in model.tasks]
    for i, t in enumerate(model.tasks):
        where = f"tasks[{i}]"
        if t.max_transfer_examples is not None and t.transfer_split is None:
            raise RecipeError("max_transfer_examples without a transfer_split", file=file,
                              path=f"{where}.max_transfer_examples", expected="tasks[].transfer_split set as well",
                              found=t.max_transfer_examples)
        if t.transfer_split is None:
            continue
        problem = None
        if model.student is None:
            problem = "a transfer split is for the student, and the recipe has no student section"
        elif model.student.soft_targets:
            problem = ("student.soft_targets brings targets for the training split only; the teachers must run to "
                       "label a transfer split")
        elif distilled is None:
            problem = "a transfer split is labelled by the teachers, and the recipe has none"
        elif t.name not in distilled:
            problem = f"task {t.name!r} is not distilled (teachers.tasks), so no teacher labels its transfer split"
        if problem:
            raise RecipeError(problem, file=file, path=f"{where}.transfer_split",
                              expected="a distilled task of a recipe with teachers and a student",
                              found=t.transfer_split)


def _check_score_tasks(model: RecipeModel, file) -> None:
    """``evaluation.score_tasks`` / ``exclude_from_score`` name tasks of the run and leave one to average."""
    ev = model.evaluation
    names = [t.name for t in model.tasks]
    if ev.score_tasks and ev.exclude_from_score:
        raise RecipeError("give evaluation.score_tasks or evaluation.exclude_from_score, not both", file=file,
                          path="evaluation.exclude_from_score", expected="one of the two",
                          found={"score_tasks": ev.score_tasks, "exclude_from_score": ev.exclude_from_score})
    for key in ("score_tasks", "exclude_from_score"):
        for j, task in enumerate(getattr(ev, key) or []):
            if task not in names:
                raise RecipeError(f"evaluation.{key} names task {task!r}, which is not in the run", file=file,
                                  path=f"evaluation.{key}[{j}]",
                                  expected=f"one of the recipe's tasks: {', '.join(names)}", found=task)
    if ev.exclude_from_score and not set(names) - set(ev.exclude_from_score):
        raise RecipeError("evaluation.exclude_from_score leaves no task for the headline score", file=file,
                          path="evaluation.exclude_from_score", expected="at most all but one of the tasks",
                          found=ev.exclude_from_score)


def _check_run_inputs(model: RecipeModel, resolved: dict, file) -> None:
    """What would otherwise fail only once the run reaches it: the files the recipe brings (teacher
    checkpoints, soft targets), and tasks named by best_metric/best_tasks."""
    tasks = [t.name for t in model.tasks]
    trainings = [("training", resolved["training"])]
    members = model.teachers.members if model.teachers is not None else []
    for i, m in enumerate(members):
        where = f"teachers.members[{i}]"
        if m.checkpoint is not None:
            allow = {"encoder": deep_merge(resolved["encoder"], m.encoder or {}), "heads": resolved["heads"]}
            _check_checkpoint(_resolve(m.checkpoint, file), file, f"{where}.checkpoint", allow)
        if m.training:
            trainings.append((f"{where}.training", deep_merge(resolved["training"], m.training)))
    s = model.student
    if s is not None:
        if s.soft_targets is not None:
            _check_soft_targets(_resolve(s.soft_targets, file), file)
        if s.training:
            trainings.append(("student.training", deep_merge(resolved["training"], s.training)))
        for i, v in enumerate(resolved["student"].get("variants") or []):
            if v.get("training"):
                trainings.append((f"student.variants[{i}].training", deep_merge(resolved["training"], v["training"])))
    for where, training in trainings:
        best = training.get("best_metric", "score")
        task = best.partition(".")[0]
        if best not in ("score", "final") and task not in tasks:
            raise RecipeError(f"best_metric names task {task!r}, which is not in the run", file=file,
                              path=f"{where}.best_metric", found=best,
                              expected=f"score, final, TASK or TASK.METRIC with TASK one of {tasks}")
        unknown = [t for t in training.get("best_tasks") or () if t not in tasks]
        if unknown:
            raise RecipeError(f"best_tasks names tasks that are not in the run: {unknown}", file=file,
                              path=f"{where}.best_tasks", found=unknown, expected=f"some of {tasks}")


def _resolve(value: str, file) -> Path:
    """As Recipe.resolve_path: from the working directory if it exists there, else from the recipe's folder."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or file is None:
        return p
    return Path(file).parent / p


def _check_checkpoint(path: Path, file, where: str, user_spec: dict) -> None:
    """A teacher checkpoint the recipe brings: an mtkd model folder that asks for no code the user did not allow."""
    from .errors import CheckpointError

    expected = "an mtkd model folder (mtkd_model.json, model.safetensors, encoder/)"
    if not path.is_dir():
        raise RecipeError("teacher checkpoint folder not found", file=file, path=where, expected=expected,
                          found=str(path))
    from .model import read_checkpoint_meta, refuse_untrusted_code, spec_allows_code

    try:
        meta = read_checkpoint_meta(path)
        refuse_untrusted_code(meta["spec"], spec_allows_code(user_spec), path / "mtkd_model.json")
    except CheckpointError as exc:
        raise RecipeError(f"not a usable teacher checkpoint: {exc.file}: {exc.message}", file=file, path=where,
                          expected=exc.expected or expected, found=str(path), hint=exc.hint) from None


def _check_soft_targets(path: Path, file) -> None:
    """The soft-target file (or folder of files) is readable safetensors with readable metadata."""
    expected = "an existing safetensors file (or folder of them) of soft targets"
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise RecipeError("soft-target file not found", file=file, path="student.soft_targets", expected=expected,
                          found=str(path))
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), "np") as fh:
                meta = fh.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise RecipeError(f"{f} is not a readable safetensors file: {exc}", file=file,
                              path="student.soft_targets", expected=expected, found=str(f)) from None
        try:
            fingerprints = json.loads(meta.get("fingerprints", "{}"))
        except json.JSONDecodeError as exc:
            fingerprints = exc
        if not isinstance(fingerprints, dict):
            raise RecipeError(f"{f}: its `fingerprints` metadata is not a JSON object", file=file,
                              path="student.soft_targets", expected="{task: fingerprint of its training split}",
                              found=meta.get("fingerprints"))


def _validate_variation(model: RecipeModel, resolved: dict, variation, path: str, file, check_task_keys,
                        target: dict) -> None:
    """A member or the student overrides parts of the base set-up: validate the merged result with the base's
    models and store the override coerced in ``target`` (its resolved entry). A component whose ``type``
    changes is stored whole, with the new type's defaults; otherwise only the keys the override gives."""
    reg = get_registries()

    def component(registry, base: dict, override: dict, where: str) -> dict:
        new_type = override.get("type") not in (None, base.get("type"))
        merged = copy.deepcopy(override) if new_type else deep_merge(base, override)
        try:
            comp = Component.model_validate(merged)
        except ValidationError as exc:
            raise recipe_error(exc, file=file, prefix=where) from None
        params = registry.validate_params(comp.type, comp.params, file=file, path=where)
        full = {"type": comp.type, **params.model_dump(mode="json")}
        if comp.type != base.get("type"):
            return full
        return {k: full[k] for k in override if k in full}

    if variation.encoder:
        with _collecting():  # the encoder, the heads and the training settings are reported independently
            target["encoder"] = component(reg.encoders, resolved["encoder"], variation.encoder, f"{path}.encoder")
    if variation.heads:
        with _collecting():
            check_task_keys(variation.heads, f"{path}.heads", allow_default=True)
            target["heads"] = {key: component(reg.heads, resolved["heads"].get(key, resolved["heads"]["default"]),
                                              spec, f"{path}.heads.{key}")
                               for key, spec in variation.heads.items()}
    if variation.training:
        merged = deep_merge(resolved["training"], variation.training)
        try:
            training = Training.model_validate(merged).model_dump(mode="json")
        except ValidationError as exc:
            raise recipe_error(exc, file=file, prefix=f"{path}.training", model=Training) from None
        coerced = {k: training[k] for k in variation.training if k in training}
        if isinstance(variation.training.get("sampling"), dict):
            coerced["sampling"] = component(reg.samplers, resolved["training"]["sampling"],
                                            variation.training["sampling"], f"{path}.training.sampling")
        target["training"] = coerced


def _check_members(model: RecipeModel, resolved: dict, file) -> None:
    """Two members with one name, or the same member twice, would be counted twice in the report."""
    members = model.teachers.members
    names: dict = {}
    seen: dict = {}
    recipe = Recipe(model, resolved, Path(file) if file else None)
    for i, m in enumerate(members):
        name = m.name or f"teacher-{i}"
        key = name.casefold()  # names become folders: a case-insensitive filesystem would merge `T1` and `t1`
        if key in names:
            raise RecipeError(f"two teacher members are named {name!r}", file=file, path=f"teachers.members[{i}].name",
                              expected=f"a name other than members[{names[key]}]'s, also ignoring case", found=name)
        names[key] = i
        seed = m.seed if m.seed is not None else model.seed + i
        same = content_hash({"checkpoint": m.checkpoint} if m.checkpoint else
                            {"config": variation_config(recipe, i), "seed": seed, "bootstrap": m.bootstrap})
        if same in seen:
            raise RecipeError(f"teacher member {i} is identical to member {seen[same]} (same set-up and seed)",
                              file=file, path=f"teachers.members[{i}]",
                              expected="members that differ (another seed, set-up or checkpoint)",
                              hint="it would be trained once and counted twice in the report's mean ± std")
        seen[same] = i


def _soft_temperatures(spec, where: str):
    """(path, temperature) of every loss in an objective that softens the student's logits."""
    if not isinstance(spec, dict):
        return
    if spec.get("type"):
        try:
            field = get_registries().losses.get(spec["type"]).params.model_fields.get("temperature")
        except Exception:  # noqa: BLE001 - an unknown type was reported by its own check
            field = None
        if "temperature" in spec or field is not None:
            yield where, spec.get("temperature", getattr(field, "default", None))
    for key, value in spec.items():
        if isinstance(value, dict) and value.get("type"):
            yield from _soft_temperatures(value, f"{where}.{key}")


def _check_temperature(model: RecipeModel, resolved: dict, file) -> None:
    """The teachers are softened at the aggregation's temperature; the student must be compared at the same one."""
    if model.teachers is None or model.student is None or model.student.soft_targets:
        return
    teacher_t = resolved["teachers"]["aggregation"].get("temperature")
    if teacher_t is None:
        return
    found = list(_soft_temperatures(resolved["student"]["objective"]["classification"],
                                    "student.objective.classification"))
    for i, v in enumerate(resolved["student"].get("variants") or []):
        found += _soft_temperatures(v["objective"]["classification"], f"student.variants[{i}].objective.classification")
    for where, t in found:
        if t != teacher_t:
            raise RecipeError(
                "the student is compared at another temperature than the teachers are softened at", file=file,
                path=f"{where}.temperature", expected=f"{teacher_t} (teachers.aggregation.temperature)", found=t,
                hint=f"use one temperature for both, e.g. teachers.aggregation.temperature: {t} and "
                     f"{where}.temperature: {t}")


def variation_config(recipe: Recipe, variation) -> dict:
    """The encoder, heads and training of a member (its index) or the student (``"student"``): the base set-up
    with its validated, coerced overrides."""
    r = recipe.resolved
    if variation == "student":
        v = r["student"]
    elif isinstance(variation, int):
        v = r["teachers"]["members"][variation]
    elif isinstance(variation, dict):  # a resolved entry (a student variant's)
        v = variation
    else:  # a pydantic Member/Student (its overrides as written)
        v = {"encoder": variation.encoder, "heads": variation.heads, "training": variation.training}
    encoder = deep_merge(r["encoder"], v.get("encoder") or {})
    heads = copy.deepcopy(r["heads"])
    for key, spec in (v.get("heads") or {}).items():
        heads[key] = deep_merge(heads.get(key, heads["default"]), spec)
    training = deep_merge(r["training"], v.get("training") or {})
    return {"encoder": encoder, "heads": heads, "training": training}


def _relax(node):
    """No key is required in a file that extends another (its parents, or base.yaml, supply them)."""
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _relax(value)
    elif isinstance(node, list):
        for value in node:
            _relax(value)


def _hoisted(kind: str, name: str, sub: dict, defs: dict) -> dict:
    """A component's params schema with its own ``$defs`` moved into the recipe's (renamed, refs rewritten)."""
    sub = copy.deepcopy(sub)
    prefix = f"{kind}.{name}."
    local = sub.pop("$defs", {})

    def rewrite(node):
        if isinstance(node, dict):
            return {k: ("#/$defs/" + prefix + v.rsplit("/", 1)[1] if k == "$ref" and isinstance(v, str)
                        and v.startswith("#/$defs/") else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for key, value in local.items():
        defs[prefix + key] = rewrite(value)
    return rewrite(sub)


#: Where a recipe file holds components of each kind (JSON pointer-ish paths into the schema).
_COMPONENT_SITES = {
    "encoders": [("properties", "encoder", "anyOf", 0)],
    "heads": [("properties", "heads", "anyOf", 0, "additionalProperties")],
    "losses": [("$defs", "Objectives", "properties", "classification"),
               ("$defs", "Objectives", "properties", "regression")],
    "samplers": [("$defs", "Training", "properties", "sampling")],
    "aggregators": [("$defs", "Teachers", "properties", "aggregation"),
                    ("$defs", "Teachers", "properties", "regression_aggregation")],
    "loggers": [("$defs", "Logging", "properties", "trackers", "items")],
}


def _typed_components(schema: dict) -> None:
    """Each component site accepts the registered names of its kind, and each name's parameters (an editor
    completes them and flags a misspelled one); nothing is required, as a child may change one key."""
    defs = schema.setdefault("$defs", {})
    registries = get_registries()
    for kind, sites in _COMPONENT_SITES.items():
        entries = list(registries[kind])
        if not entries:
            continue
        rules = []
        for entry in entries:
            params = _hoisted(kind, entry.name, entry.params.model_json_schema(), defs)
            props = {"type": {"const": entry.name}, **params.get("properties", {})}
            rules.append({"if": {"properties": {"type": {"const": entry.name}}, "required": ["type"]},
                          "then": {"properties": props, "additionalProperties": False}})
        defs[f"mtkd-{kind}"] = {
            "type": "object", "description": f"a registered {kind[:-1]}: `type` and its parameters",
            "properties": {"type": {"enum": sorted(e.name for e in entries)}}, "allOf": rules}
        for site in sites:
            node = schema
            for part in site[:-1]:
                node = node[part]
            node[site[-1]] = {"$ref": f"#/$defs/mtkd-{kind}"}
    # A task entry: its `type` (or, without one, its `name`) picks the task plugin's parameters.
    entry = defs.get("TaskEntry")
    if entry is not None:
        rules = []
        for reg in registries.tasks:
            params = _hoisted("tasks", reg.name, reg.params.model_json_schema(), defs)
            chosen = {"anyOf": [{"required": ["type"], "properties": {"type": {"const": reg.name}}},
                                {"not": {"required": ["type"]}, "required": ["name"],
                                 "properties": {"name": {"const": reg.name}}}]}
            rules.append({"if": chosen, "then": {"properties": {**entry.get("properties", {}),
                                                                **params.get("properties", {})},
                                                 "additionalProperties": False}})
        if rules:
            entry["allOf"] = rules


def json_schema(resolved: bool = False) -> dict:
    """The JSON Schema of the recipe file a user writes (``extends``, ``- rte`` task names, every key
    optional, a section set to null to drop a parent's), or with ``resolved`` of the recipe after
    ``extends`` and defaults. Every registered component's parameters are under ``x-mtkd-components``."""
    schema = RecipeModel.model_json_schema()
    if not resolved:
        _relax(schema)
        props = schema["properties"]
        for key, sub in list(props.items()):
            if key not in ("name", "tasks"):
                props[key] = {"anyOf": [sub, {"type": "null"}], **{k: sub[k] for k in ("description",) if k in sub}}
        props["tasks"]["items"] = {"anyOf": [{"type": "string", "description": "a task name, e.g. rte"},
                                             props["tasks"]["items"]]}
        props["extends"] = {
            "description": "recipe(s) this one builds on: a file relative to this one, or `mtkd:NAME` for a "
                           "recipe shipped with mtkd (" + ", ".join(shipped_recipes()) + ")",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        schema["title"] = "mtkd recipe"
        _typed_components(schema)
    components: dict = {}
    for kind, entry in get_registries().all():
        sub = entry.params.model_json_schema()
        sub.setdefault("description", entry.description)
        components.setdefault(kind, {})[entry.name] = sub
    schema["x-mtkd-components"] = components
    return schema


def _looks_like_local_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in value)


def _check_max_length(recipe: Recipe, encoders, reg, problems: list) -> None:
    """``data.max_length`` within every encoder's input limit, where its plugin can tell it before loading
    (``register(..., max_input_length=fn)``, ``fn(params) -> int | None``)."""
    max_length = recipe.resolved["data"]["max_length"]
    base = recipe.resolved["encoder"]
    tightest = None
    for path, enc in encoders:
        full = enc if path == "encoder" or enc.get("type") not in (None, base.get("type")) else deep_merge(base, enc)
        try:
            entry = reg.encoders.get(full.get("type"))
            fn = entry.extra.get("max_input_length")
            if fn is None:
                continue
            limit = fn(reg.encoders.validate_params(full["type"], {k: v for k, v in full.items() if k != "type"}))
        except MtkdError:
            continue  # a bad encoder spec: its own error is reported
        if limit is not None and max_length > limit and (tightest is None or limit < tightest[0]):
            tightest = (limit, path)
    if tightest is not None:
        limit, path = tightest
        problems.append(RecipeError(f"data.max_length is longer than the encoder takes ({limit} tokens)",
                                    file=recipe.file, path="data.max_length", expected=f"at most {limit}",
                                    found=max_length, hint=f"the tokenizer of {path} takes at most {limit} tokens: "
                                                           "longer inputs would index past its position embeddings"))


def check_sources(recipe: Recipe, skip_tasks=()) -> None:
    """What ``run`` would refuse after loading: missing data files or folders (through each task's optional
    ``check_sources()``), teacher checkpoints, a soft-target file, a local model folder. Raises every
    problem found at once (:class:`mtkd.errors.ManyErrors`). ``skip_tasks``: indices of task entries that did not
    validate (their own error is reported)."""
    from .components import TaskContext
    from .errors import ManyErrors

    reg = get_registries()
    problems: list[MtkdError] = []
    data = recipe.resolved["data"]
    sources = {k: v for k, v in data.items() if k not in DATA_SETTINGS}
    for i, entry in enumerate(recipe.resolved["tasks"]):
        if i in skip_tasks:
            continue
        params = {k: v for k, v in entry.items() if k not in TaskEntry.model_fields}
        ctx = TaskContext(name=entry["name"], sources=sources, on_bad_rows=data["on_bad_rows"],
                          resolve_path=recipe.resolve_path, cache_dir=data["cache_dir"])
        try:
            task = reg.tasks.create(entry["type"], params, ctx, file=recipe.file, path=f"tasks[{i}]")
            check = getattr(task, "check_sources", None)
            if check is not None:
                check()
        except MtkdError as exc:
            exc.path = f"tasks[{i}]" + (f".{exc.path}" if exc.path else "")
            problems.append(exc)
        except Exception as exc:  # a plugin's bug: named, not a traceback
            from .errors import PluginError

            problems.append(PluginError(f"task {entry['type']!r} could not be built to check its data: "
                                        f"{type(exc).__name__}: {exc}", file=recipe.file, path=f"tasks[{i}]"))

    def must_exist(value, path, what):
        if value and not Path(recipe.resolve_path(value)).exists():
            problems.append(RecipeError(f"{what} not found", file=recipe.file, path=path,
                                        expected="an existing path (relative paths are read from the working "
                                                 "directory or the recipe's folder)", found=value))

    model = recipe.model
    for i, m in enumerate(model.teachers.members if model.teachers else []):
        must_exist(m.checkpoint, f"teachers.members[{i}].checkpoint", "teacher checkpoint")
    if model.student is not None:
        must_exist(model.student.soft_targets, "student.soft_targets", "soft-target file")
    encoders = [("encoder", recipe.resolved["encoder"])]
    encoders += [(f"teachers.members[{i}].encoder", m.encoder) for i, m in
                 enumerate(model.teachers.members if model.teachers else []) if m.encoder]
    if model.student is not None and model.student.encoder:
        encoders.append(("student.encoder", model.student.encoder))
    if model.student is not None:
        encoders += [(f"student.variants[{i}].encoder", v.encoder) for i, v in enumerate(model.student.variants or [])
                     if v.encoder]
    for path, enc in encoders:
        for key in ("model", "tokenizer"):
            value = enc.get(key)
            if isinstance(value, str) and _looks_like_local_path(value):
                must_exist(value, f"{path}.{key}", "model folder")
    _check_max_length(recipe, encoders, reg, problems)
    merged: dict = {}  # one missing folder that several tasks read is one problem, naming every task
    for p in problems:
        key = (p.file, p.message, p.expected, repr(p.found))
        if key in merged and p.path and merged[key].path:
            merged[key].path += f", {p.path}"
        else:
            merged.setdefault(key, p)
    problems = list(merged.values())
    if problems:
        raise problems[0] if len(problems) == 1 else ManyErrors(problems)
