"""What every stage works with: the recipe, its tasks (loaded once), the run store, components."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, RecipeError
from ..params import resolve_paths
from ..plugins import get_registries
from ..progress import NullProgress
from ..recipe import TRANSFER_KEYS, Recipe, variation_config
from .store import RunStore


@dataclass
class TaskBundle:
    """A task of the run with its (sub-sampled) splits, loaded once."""

    name: str
    task: Any
    train: Any
    evals: dict
    loss_weight: float
    train_fingerprint: str
    eval_fingerprints: dict
    holdout: Any = None  # evaluation.selection: {holdout: F}: rows carved from the training split (never trained on)
    carve: dict | None = None  # mtkd.data.holdout.Carve.describe()
    transfer: Any = None  # tasks[].transfer_split: inputs without labels, labelled by the teachers for the student
    transfer_info: dict | None = None  # mtkd.data.transfer.Transfer.describe()

    def split(self, split: str):
        if split == HOLDOUT:
            return self.holdout
        if split == TRANSFER:
            return self.transfer
        return self.train if split == self.task.train_split else self.evals[split]

    def fingerprint(self, split: str) -> str:
        if split == HOLDOUT:
            return self.carve["holdout_fingerprint"]
        if split == TRANSFER:
            return self.transfer_info["fingerprint"]
        return self.train_fingerprint if split == self.task.train_split else self.eval_fingerprints[split]

    def selection(self) -> dict:
        """The labelled split(s) that choose checkpoints, aggregator weights and gates, keyed by the eval split
        whose metrics score them: the holdout (scored like the first eval split) when there is one, else dev."""
        if self.holdout is None or not self.task.eval_splits:
            return self.evals
        return {self.task.eval_splits[0]: self.holdout}

    def selection_source(self, split: str) -> str:
        """The split whose stored outputs stand for ``split`` of :meth:`selection`."""
        return HOLDOUT if self.holdout is not None and self.task.eval_splits else split


#: the name of the selection split carved from a training split (logit files, reports)
HOLDOUT = "holdout"
#: the name of a task's transfer set in logit and soft-target files (whatever split it was read from)
TRANSFER = "transfer"


@dataclass
class Member:
    """A teacher of the recipe: trained by the run, or an existing checkpoint."""

    index: int
    name: str
    seed: int
    config: dict  # encoder / heads / training
    checkpoint: Path | None = None
    bootstrap: bool = False


@dataclass
class RunContext:
    recipe: Recipe
    store: RunStore
    tasks: dict[str, TaskBundle]
    progress: Any = field(default_factory=NullProgress)
    timings: dict = field(default_factory=dict)
    metrics: dict | None = None  # set by the report stage
    units: dict = field(default_factory=dict)  # every unit of this version by id, as execute() resolves them

    @property
    def run_dir(self) -> Path:
        return self.store.root

    @property
    def state(self):
        from accelerate import PartialState

        return PartialState()

    @property
    def main(self) -> bool:
        return self.state.is_main_process

    def members(self) -> list[Member]:
        recipe = self.recipe
        if recipe.model.teachers is None:
            return []
        out = []
        for i, m in enumerate(recipe.model.teachers.members):
            seed = m.seed if m.seed is not None else recipe.seed + i
            ckpt = Path(recipe.resolve_path(m.checkpoint)) if m.checkpoint else None
            out.append(Member(i, member_name(recipe, i), seed, variation_config(recipe, i), ckpt, m.bootstrap))
        return out

    def student_config(self) -> dict:
        return variation_config(self.recipe, "student")

    def student_seeds(self) -> list[int]:
        return self.recipe.model.student.seeds or [self.recipe.seed]


def member_name(recipe: Recipe, index: int) -> str:
    return recipe.model.teachers.members[index].name or f"teacher-{index}"


# ---------------------------------------------------------------- tasks


def load_tasks(recipe: Recipe) -> dict[str, TaskBundle]:
    from ..components import TaskContext
    from ..data import fingerprint_dataset, subsample
    from ..data.holdout import carve_holdout, holdout_fraction

    reg = get_registries()
    data = recipe.resolved["data"]
    fraction = holdout_fraction(recipe.resolved["evaluation"].get("selection"))
    sources = {k: v for k, v in data.items() if k not in ("max_length", "on_bad_rows", "cache_dir")}
    out = {}
    for i, entry in enumerate(recipe.resolved["tasks"]):
        params = {k: v for k, v in entry.items() if k not in ("name", "type", "loss_weight", "max_train_examples",
                                                              "max_eval_examples", *TRANSFER_KEYS)}
        ctx = TaskContext(name=entry["name"], sources=sources, on_bad_rows=data["on_bad_rows"],
                          resolve_path=recipe.resolve_path, cache_dir=data["cache_dir"])
        task = reg.tasks.create(entry["type"], params, ctx, file=recipe.file, path=f"tasks[{i}]")
        task.name = entry["name"]
        train_ds = holdout = carve = carved = None
        if task.train_split:
            train_ds = task.load_split(task.train_split)
            if fraction is not None and task.eval_splits:
                # Carved from the full split before sub-sampling, so the training budget does not move it.
                cut = carve_holdout(train_ds, fraction, seed=recipe.seed, task=task.name)
                train_ds, holdout = carved = cut.train, cut.holdout
                if entry["max_eval_examples"]:
                    holdout = subsample(holdout, entry["max_eval_examples"], recipe.seed)
                carve = {**cut.describe(), "holdout_rows": len(holdout),
                         "holdout_fingerprint": fingerprint_dataset(holdout)}
            if entry["max_train_examples"]:
                train_ds = subsample(train_ds, entry["max_train_examples"], recipe.seed)
        evals = {}
        for split in task.eval_splits:
            ds = task.load_split(split)
            if entry["max_eval_examples"]:
                ds = subsample(ds, entry["max_eval_examples"], recipe.seed)
            evals[split] = ds
        transfer = None
        if entry.get("transfer_split"):
            # Excluded: the rows trained on, the whole carve and the whole dev splits, not only their sub-samples
            full_evals = [task.load_split(s) for s in task.eval_splits]
            transfer = _transfer(recipe, i, entry, task, train_ds, [carved[1] if carved else None, *full_evals])
        out[task.name] = TaskBundle(task.name, task, train_ds, evals, entry["loss_weight"],
                                    fingerprint_dataset(train_ds) if train_ds is not None else "",
                                    {s: fingerprint_dataset(d) for s, d in evals.items()}, holdout, carve,
                                    transfer.rows if transfer else None, transfer.describe() if transfer else None)
    return out


def _transfer(recipe: Recipe, index: int, entry: dict, task, train, held: list):
    """A task's transfer set (``mtkd.data.transfer``): never a dev split, never an input the run holds elsewhere."""
    from ..data.transfer import build_transfer

    split, where = entry["transfer_split"], f"tasks[{index}].transfer_split"
    if split in task.eval_splits or split == HOLDOUT:
        raise RecipeError(f"task {task.name!r}: {split!r} is reported (or chooses checkpoints); the student must not "
                          "learn from its inputs", file=recipe.file, path=where,
                          expected="a split of unlabelled inputs (or the training split's unused rows)", found=split)
    if train is None:
        raise RecipeError(f"task {task.name!r} has no training split to distil", file=recipe.file, path=where,
                          expected="a task with a training split", found=split)
    ds = task.load_split(split)
    rows = build_transfer(ds, split=split, task_type=task.task_type, exclude=[train, *held],
                          max_examples=entry.get("max_transfer_examples"), seed=recipe.seed)
    if not len(rows.rows):
        raise RecipeError(f"task {task.name!r}: no transfer rows left from {split!r} ({rows.read} read, "
                          f"{rows.overlap} repeat an input trained on, held out or reported)", file=recipe.file,
                          path=where, expected="inputs the run does not hold elsewhere", found=split)
    return rows


def selection_info(ctx: RunContext) -> dict:
    """What the report says about the split that chose checkpoints, aggregator weights and gates."""
    carves = {n: tb.carve for n, tb in ctx.tasks.items() if tb.carve}
    training = ctx.recipe.resolved["training"]
    on = ""
    if training.get("best_metric", "score") == "score" and training.get("best_tasks"):
        on = f" (checkpoints by the mean score of {', '.join(training['best_tasks'])}: training.best_tasks)"
    if not carves:
        return {"split": "dev", "note": f"Dev chose every checkpoint{on}, the aggregator weights and the gates, "
                                        "and is also what is reported: the dev figures are optimistic"}
    return {"split": HOLDOUT, "fraction": next(iter(carves.values()))["fraction"], "tasks": carves,
            "note": "A holdout carved from each training split (never trained on, no soft targets) chose every "
                    f"checkpoint{on}, the aggregator weights and the gates; dev is only reported"}


# ---------------------------------------------------------------- components


def objectives(recipe: Recipe, spec: dict, path: str, tasks) -> dict:
    """One objective per task, by task type, checked against the task's type before any training."""
    reg = get_registries()
    out = {}
    for name, tb in tasks.items():
        kind = tb.task.task_type
        comp = spec[kind]
        obj = reg.losses.create(comp["type"], {k: v for k, v in comp.items() if k != "type"}, file=recipe.file,
                                path=f"{path}.{kind}")
        if kind not in obj.task_types:
            raise RecipeError(f"objective {comp['type']!r} does not apply to {kind} tasks ({name})",
                              file=recipe.file, path=f"{path}.{kind}.type",
                              expected=f"an objective for {kind}", found=comp["type"])
        out[name] = obj
    return out


def aggregator(recipe: Recipe, task) -> Any:
    key = "regression_aggregation" if task.task_type == "regression" else "aggregation"
    comp = recipe.resolved["teachers"][key]
    agg = get_registries().aggregators.create(comp["type"], {k: v for k, v in comp.items() if k != "type"},
                                              file=recipe.file, path=f"teachers.{key}")
    if task.task_type not in agg.task_types:
        raise RecipeError(f"aggregation rule {comp['type']!r} does not apply to {task.task_type} task {task.name!r}",
                          file=recipe.file, path=f"teachers.{key}.type",
                          expected=f"a rule for {task.task_type} tasks", found=comp["type"])
    return agg


def model_spec(recipe: Recipe, cfg: dict) -> dict:
    """The encoder and heads of ``cfg`` with their path parameters resolved (see ``mtkd.params.path_field``)."""
    reg = get_registries()

    def resolved(kind: str, comp: dict) -> dict:
        return resolve_paths(comp, reg[kind].get(comp["type"]).params, recipe.resolve_path)

    heads = {task: resolved("heads", comp) for task, comp in (cfg["heads"] or {}).items()}
    return {"encoder": resolved("encoders", cfg["encoder"]), "heads": heads}


def loggers(recipe: Recipe) -> list:
    reg = get_registries()
    return [reg.loggers.create(comp["type"], {k: v for k, v in comp.items() if k != "type"}, file=recipe.file,
                               path=f"logging.trackers[{i}]")
            for i, comp in enumerate(recipe.resolved["logging"]["trackers"])]


def check_teacher_checkpoint(ctx: RunContext, m: Member) -> None:
    """A teacher checkpoint trained on other tasks is an error before any training starts."""
    where = f"teachers.members[{m.index}].checkpoint"
    meta = m.checkpoint / "mtkd_model.json"
    if not meta.exists():
        raise CheckpointError("not an mtkd model folder", file=m.checkpoint, path=where,
                              expected="a folder with mtkd_model.json and model.safetensors")
    info = json.loads(meta.read_text())["task_info"]
    for task in ctx.recipe.distilled_tasks():
        tb = ctx.tasks[task]
        head = tb.task.head_task or task
        if head not in info:
            raise CheckpointError(f"teacher checkpoint has no head for task {task!r}", file=m.checkpoint, path=where,
                                  expected=f"a model trained on {task}", found=sorted(info))
        if info[head]["num_outputs"] != tb.task.num_outputs:
            raise CheckpointError(f"teacher head for {task!r} has {info[head]['num_outputs']} outputs",
                                  file=m.checkpoint, path=where,
                                  expected=f"{tb.task.num_outputs} outputs", found=info[head]["num_outputs"])


def check_before_training(ctx: RunContext) -> None:
    """What can be checked before hours of training: hardware, checkpoint selection, objectives, aggregators."""
    from ..training import check_hardware, check_selection

    recipe = ctx.recipe
    members = ctx.members()
    trainings = [(m.config["training"], f"teachers.members[{m.index}].training")
                 for m in members if m.checkpoint is None]
    from .variants import student_variants

    variants = student_variants(recipe)
    for v in variants:
        trainings.append((v.config["training"], f"{v.path}.training"))
    task_objs = {name: tb.task for name, tb in ctx.tasks.items()}
    train_tasks = {name: tb.task for name, tb in ctx.tasks.items() if tb.train is not None}
    for training, where in trainings:
        check_hardware(recipe.resolved["scaling"], training, file=recipe.file, training_path=where, tasks=train_tasks)
        check_selection(training, task_objs, file=recipe.file, training_path=where)
    from ..strategies import slow_bf16_warning

    bf16 = [where for training, where in trainings if training["precision"] == "bf16"]
    if bf16 and recipe.resolved["training"]["precision"] == "bf16":  # set once for all: name that setting
        bf16 = ["training"]
    warning = slow_bf16_warning(bf16)
    if warning and ctx.main:  # once per run, not per job
        ctx.progress.message(warning)
    transfer = [name for name, tb in ctx.tasks.items() if tb.transfer is not None]
    for v in variants:
        objs = objectives(recipe, v.objective, f"{v.path}.objective", ctx.tasks)
        for name in transfer:
            if not getattr(objs[name], "handles_unlabelled", False):
                kind = ctx.tasks[name].task.task_type
                raise RecipeError(f"task {name!r} has a transfer set, whose rows have no label, and the student "
                                  f"objective {v.objective[kind]['type']!r} does not say it handles such rows",
                                  file=recipe.file, path=f"{v.path}.objective.{kind}.type",
                                  expected="an objective with handles_unlabelled = True (mixture, soft-ce, kl, ...)",
                                  found=v.objective[kind]["type"])
    objectives(recipe, recipe.resolved["objective"], "objective", ctx.tasks)
    if members:
        for task in recipe.distilled_tasks():
            aggregator(recipe, ctx.tasks[task].task)
        for m in members:
            if m.checkpoint is not None:
                check_teacher_checkpoint(ctx, m)


# ---------------------------------------------------------------- training jobs


def job_model_dir(job_dir: Path, result: dict) -> Path:
    """The kept model folder of a finished job: ``result["model"]`` is ``best``/``final`` relative to the job
    folder (older runs stored a path: its last part names the folder, looked up in the job folder)."""
    name = Path(str(result.get("model") or "final")).name
    return Path(job_dir) / name


def make_job(ctx: RunContext, name: str, out_dir: Path, cfg: dict, seed: int, objs: dict, *,
             soft: dict | None = None, bootstrap: bool = False, init_from: Path | None = None,
             teacher_models: list | None = None):
    """A training job on the run's tasks. With ``soft`` (a student), a task with a transfer set trains on its
    training rows followed by the transfer rows, and ``soft[task]`` covers both (see ``load_soft_targets``)."""
    from ..data import bootstrap as bootstrap_sample
    from ..data.transfer import with_transfer
    from ..training import Job, TaskData

    tasks = {}
    for tname, tb in ctx.tasks.items():
        train_ds = tb.train
        if bootstrap and train_ds is not None:
            train_ds = bootstrap_sample(train_ds, seed)
        if soft and tname in soft and tb.transfer is not None:
            train_ds = with_transfer(train_ds, tb.transfer)
        tasks[tname] = TaskData(tb.task, train_ds, tb.selection(), objs[tname], tb.loss_weight, (soft or {}).get(tname))
    data = ctx.recipe.resolved["data"]
    return Job(name=name, out_dir=out_dir, spec=model_spec(ctx.recipe, cfg), training=cfg["training"], seed=seed,
               tasks=tasks, max_length=data["max_length"], cache_dir=data["cache_dir"], init_encoder_from=init_from,
               teacher_models=list(teacher_models or []),
               selection=HOLDOUT if any(tb.holdout is not None for tb in ctx.tasks.values()) else "dev",
               config={"recipe": ctx.recipe.resolved, "recipe_hash": ctx.recipe.hash, "job": name})


def run_job(ctx: RunContext, job) -> dict:
    from ..training import train

    r = ctx.recipe.resolved
    progress = ctx.progress if ctx.main else NullProgress()
    return train(job, scaling=r["scaling"], loggers=loggers(ctx.recipe), group=r["logging"]["group"] or r["name"],
                 progress=progress)
