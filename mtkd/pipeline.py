"""The distillation pipeline: teachers -> soft targets -> students (and controls) -> evaluation -> report.

The run folder (``<output_dir>/<recipe name>/`` or ``--output``) is shared by every version of
a recipe; each stage writes under a folder named by the hash of what it depends on, so a
re-run reuses whatever did not change (changing the student's objective keeps the teachers and
the soft targets). A stage's output is complete when its marker file exists; it is written last
and atomically.

    teachers/<member hash>/            a trained teacher (jobs: see mtkd.training)
    teachers/<member hash>/logits/     its raw outputs on each task's train and dev splits
    soft_targets/<hash>/<task>.safetensors   aggregated targets + the data fingerprint
    students/<hash>/                   student seeds; controls/<hash>/ the hard-label controls
    report.md, metrics.json            the comparison
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import fingerprint_dataset, subsample
from .errors import CheckpointError, RecipeError
from .params import resolve_paths
from .plugins import get_registries
from .progress import NullProgress, make_progress
from .recipe import Recipe, content_hash, variation_config
from .training import Job, TaskData, check_hardware, check_selection, model_dir, train, write_json_atomic

STAGES = ("teachers", "soft-targets", "student", "evaluate", "report")


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


@dataclass
class Member:
    index: int
    name: str
    hash: str
    seed: int
    config: dict  # encoder / heads / training
    checkpoint: Path | None = None  # an existing model folder instead of training
    bootstrap: bool = False
    result: dict | None = None
    model_dir: Path | None = None


@dataclass
class RunContext:
    recipe: Recipe
    run_dir: Path
    tasks: dict[str, TaskBundle]
    console: Any
    quiet: bool = False
    timings: dict = field(default_factory=dict)
    progress: Any = field(default_factory=NullProgress)  # mtkd.progress.RunProgress (main process)

    @property
    def state(self):
        from accelerate import PartialState

        return PartialState()


# ---------------------------------------------------------------- set-up


def load_tasks(recipe: Recipe) -> dict[str, TaskBundle]:
    from .components import TaskContext

    reg = get_registries()
    data = recipe.resolved["data"]
    sources = {k: v for k, v in data.items() if k not in ("max_length", "on_bad_rows", "cache_dir")}
    out = {}
    for i, entry in enumerate(recipe.resolved["tasks"]):
        params = {k: v for k, v in entry.items() if k not in ("name", "type", "loss_weight", "max_train_examples",
                                                              "max_eval_examples")}
        ctx = TaskContext(name=entry["name"], sources=sources, on_bad_rows=data["on_bad_rows"],
                          resolve_path=recipe.resolve_path, cache_dir=data["cache_dir"])
        task = reg.tasks.create(entry["type"], params, ctx, file=recipe.file, path=f"tasks[{i}]")
        task.name = entry["name"]
        train_ds = None
        if task.train_split:
            train_ds = task.load_split(task.train_split)
            if entry["max_train_examples"]:
                train_ds = subsample(train_ds, entry["max_train_examples"], recipe.seed)
        evals = {}
        for split in task.eval_splits:
            ds = task.load_split(split)
            if entry["max_eval_examples"]:
                ds = subsample(ds, entry["max_eval_examples"], recipe.seed)
            evals[split] = ds
        out[task.name] = TaskBundle(task.name, task, train_ds, evals, entry["loss_weight"],
                                    fingerprint_dataset(train_ds) if train_ds is not None else "",
                                    {s: fingerprint_dataset(d) for s, d in evals.items()})
    return out


def _objectives(recipe: Recipe, spec: dict, path: str, tasks) -> dict:
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


def _aggregator(recipe: Recipe, task) -> Any:
    t = recipe.resolved["teachers"]
    key = "regression_aggregation" if task.task_type == "regression" else "aggregation"
    comp = t[key]
    agg = get_registries().aggregators.create(comp["type"], {k: v for k, v in comp.items() if k != "type"},
                                              file=recipe.file, path=f"teachers.{key}")
    if task.task_type not in agg.task_types:
        raise RecipeError(f"aggregation rule {comp['type']!r} does not apply to {task.task_type} task {task.name!r}",
                          file=recipe.file, path=f"teachers.{key}.type",
                          expected=f"a rule for {task.task_type} tasks", found=comp["type"])
    return agg


def data_hash(ctx: RunContext) -> str:
    r = ctx.recipe.resolved
    return content_hash({"data": r["data"], "tasks": r["tasks"],
                         "fp": {n: [t.train_fingerprint, t.eval_fingerprints] for n, t in ctx.tasks.items()}})


def plan_members(ctx: RunContext) -> list[Member]:
    recipe = ctx.recipe
    if recipe.model.teachers is None:
        return []
    dh = data_hash(ctx)
    members = []
    for i, m in enumerate(recipe.model.teachers.members):
        seed = m.seed if m.seed is not None else recipe.seed + i
        cfg = variation_config(recipe, m)
        if m.checkpoint:
            path = Path(recipe.resolve_path(m.checkpoint))
            h = content_hash({"checkpoint": str(path.resolve()), "data": dh})
            members.append(Member(i, m.name or f"teacher-{i}", h, seed, cfg, checkpoint=path))
            continue
        h = content_hash({"config": cfg, "seed": seed, "bootstrap": m.bootstrap, "data": dh,
                          "objective": recipe.resolved["objective"]})
        members.append(Member(i, m.name or f"teacher-{i}", h, seed, cfg, bootstrap=m.bootstrap))
    return members


def check_teacher_checkpoints(ctx: RunContext, members: list[Member]) -> None:
    """A teacher checkpoint trained on other tasks is an error before any training starts."""
    for m in members:
        if m.checkpoint is None:
            continue
        meta = m.checkpoint / "mtkd_model.json"
        if not meta.exists():
            raise CheckpointError("not an mtkd model folder", file=m.checkpoint,
                                  path=f"teachers.members[{m.index}].checkpoint",
                                  expected="a folder with mtkd_model.json and model.safetensors")
        info = json.loads(meta.read_text())["task_info"]
        for task in ctx.recipe.distilled_tasks():
            tb = ctx.tasks[task]
            head = tb.task.head_task or task
            if head not in info:
                raise CheckpointError(f"teacher checkpoint has no head for task {task!r}", file=m.checkpoint,
                                      path=f"teachers.members[{m.index}].checkpoint",
                                      expected=f"a model trained on {task}", found=sorted(info))
            if info[head]["num_outputs"] != tb.task.num_outputs:
                raise CheckpointError(f"teacher head for {task!r} has {info[head]['num_outputs']} outputs",
                                      file=m.checkpoint, path=f"teachers.members[{m.index}].checkpoint",
                                      expected=f"{tb.task.num_outputs} outputs", found=info[head]["num_outputs"])


def _job(ctx: RunContext, name: str, out_dir: Path, cfg: dict, seed: int, objectives: dict, *,
         soft: dict | None = None, bootstrap: bool = False, init_from: Path | None = None) -> Job:
    from .data import bootstrap as bootstrap_sample

    tasks = {}
    for tname, tb in ctx.tasks.items():
        train_ds = tb.train
        if bootstrap and train_ds is not None:
            train_ds = bootstrap_sample(train_ds, seed)
        tasks[tname] = TaskData(tb.task, train_ds, tb.evals, objectives[tname], tb.loss_weight,
                                (soft or {}).get(tname))
    data = ctx.recipe.resolved["data"]
    return Job(name=name, out_dir=out_dir, spec=_model_spec(ctx.recipe, cfg),
               training=cfg["training"], seed=seed, tasks=tasks, max_length=data["max_length"],
               cache_dir=data["cache_dir"], init_encoder_from=init_from,
               config={"recipe": ctx.recipe.resolved, "recipe_hash": ctx.recipe.hash, "job": name})


def _model_spec(recipe: Recipe, cfg: dict) -> dict:
    """The encoder and heads of ``cfg`` with their path parameters resolved (see ``mtkd.params.path_field``)."""
    reg = get_registries()

    def resolved(kind: str, comp: dict) -> dict:
        return resolve_paths(comp, reg[kind].get(comp["type"]).params, recipe.resolve_path)

    heads = {task: resolved("heads", comp) for task, comp in (cfg["heads"] or {}).items()}
    return {"encoder": resolved("encoders", cfg["encoder"]), "heads": heads}


def _loggers(ctx: RunContext):
    reg = get_registries()
    out = []
    for i, comp in enumerate(ctx.recipe.resolved["logging"]["trackers"]):
        out.append(reg.loggers.create(comp["type"], {k: v for k, v in comp.items() if k != "type"},
                                      file=ctx.recipe.file, path=f"logging.trackers[{i}]"))
    return out


def _train_job(ctx: RunContext, job: Job) -> dict:
    r = ctx.recipe.resolved
    if (job.out_dir / "result.json").exists():
        result = json.loads((job.out_dir / "result.json").read_text())
        loggers = _loggers(ctx) if ctx.state.is_main_process else []
        if loggers:  # a tracker turned on after the job ran: its history goes there once
            from .tracking import backfill

            backfill(job.out_dir, job=job.name, loggers=loggers, group=r["logging"]["group"] or r["name"],
                     config={**job.config, "job": job.name})
    else:
        result = train(job, scaling=r["scaling"], loggers=_loggers(ctx), group=r["logging"]["group"] or r["name"],
                       progress=ctx.progress if ctx.state.is_main_process else None)
    # result.json names the kept model folder relative to the job folder; readers get the full path.
    return {**result, "model": str(model_dir(job.out_dir, result))}


# ---------------------------------------------------------------- stages


def stage_teachers(ctx: RunContext, members: list[Member]) -> None:
    check_teacher_checkpoints(ctx, members)
    hard = _objectives(ctx.recipe, ctx.recipe.resolved["objective"], "objective", ctx.tasks)
    for m in members:
        if m.checkpoint is not None:
            m.model_dir = m.checkpoint
            continue
        out = ctx.run_dir / "teachers" / m.hash
        _save_spec(ctx, out, {"member": m.name, "seed": m.seed, "config": m.config, "bootstrap": m.bootstrap})
        job = _job(ctx, m.name, out, m.config, m.seed, hard, bootstrap=m.bootstrap)
        m.result = _train_job(ctx, job)
        m.model_dir = Path(m.result["model"])


def _save_spec(ctx: RunContext, folder: Path, spec: dict) -> None:
    if ctx.state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "spec.json", spec)


def member_logits(ctx: RunContext, m: Member, task: str, split: str) -> np.ndarray:
    """A member's raw outputs on one split, computed once and stored beside the member."""
    from safetensors.numpy import load_file, save_file

    from .data import tokenize_split
    from .inference import predict_logits
    from .model import load_model

    tb = ctx.tasks[task]
    ds = tb.train if split == tb.task.train_split else tb.evals[split]
    fp = tb.train_fingerprint if split == tb.task.train_split else tb.eval_fingerprints[split]
    folder = ctx.run_dir / "teachers" / m.hash / "logits"
    path = folder / f"{task}.{split}.{fp[:12]}.safetensors"
    if not path.exists():
        from accelerate.utils import gather_object

        state = ctx.state
        model = load_model(m.model_dir).to(state.device)
        r = ctx.recipe.resolved
        tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=r["data"]["max_length"],
                             cache_dir=r["data"]["cache_dir"], dataset=ds)
        logits = predict_logits(model, tb.task.head_task or task, tok,
                                batch_size=r["training"]["eval_batch_size"],
                                pad_token_id=model.encoder.tokenizer.pad_token_id or 0,
                                precision=m.config["training"]["precision"], rank=state.process_index,
                                world_size=state.num_processes, gather=gather_object)
        if state.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file({"logits": logits.astype(np.float32)}, str(tmp), metadata={"fingerprint": fp, "task": task})
            tmp.replace(path)
        state.wait_for_everyone()
    return load_file(str(path))["logits"]


def soft_targets_hash(ctx: RunContext, members: list[Member]) -> str:
    return content_hash({"members": [m.hash for m in members], "teachers": ctx.recipe.resolved["teachers"],
                         "data": data_hash(ctx)})


def _member_scores(ctx: RunContext, members: list[Member], task: str) -> list[float] | None:
    from .scores import task_score
    from .training import to_predictions

    tb = ctx.tasks[task]
    if not tb.evals:
        return None
    scores = []
    for m in members:
        preds = {s: to_predictions(member_logits(ctx, m, task, s), tb.task.task_type) for s in tb.evals}
        labels = {s: np.asarray(d["label"]) for s, d in tb.evals.items()}
        scores.append(task_score(tb.task.compute_metrics(preds, labels)))
    return scores


def aggregate(ctx: RunContext, members: list[Member], task: str, split: str, scores=None) -> np.ndarray:
    agg = _aggregator(ctx.recipe, ctx.tasks[task].task)
    outputs = torch.from_numpy(np.stack([member_logits(ctx, m, task, split) for m in members]))
    weights = None
    if getattr(agg, "uses_member_scores", False):
        scores = scores if scores is not None else _member_scores(ctx, members, task)
        weights = torch.tensor(scores, dtype=torch.float32) if scores is not None else None
    return agg(outputs.float(), weights=weights).numpy()


def stage_soft_targets(ctx: RunContext, members: list[Member]) -> Path:
    from safetensors.numpy import save_file

    folder = ctx.run_dir / "soft_targets" / soft_targets_hash(ctx, members)
    done = folder / "done.json"
    if done.exists():
        return folder
    teachers = ctx.recipe.model.teachers
    for task in ctx.recipe.distilled_tasks():
        _aggregator(ctx.recipe, ctx.tasks[task].task)  # wrong task type: fail before any inference
    for task in ctx.recipe.distilled_tasks():
        tb = ctx.tasks[task]
        if tb.train is None:
            continue
        scores = _member_scores(ctx, members, task)
        if teachers.min_dev_score is not None and scores:
            for m, s in zip(members, scores):
                if s < teachers.min_dev_score:
                    raise CheckpointError(f"teacher {m.name} scores {s:.2f} on {task} dev, below min_dev_score",
                                          path="teachers.min_dev_score", expected=f">= {teachers.min_dev_score}",
                                          found=round(s, 2), hint="retrain it or lower the threshold")
        targets = aggregate(ctx, members, task, tb.task.train_split, scores)
        if ctx.state.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{task}.safetensors.tmp"
            save_file({"targets": targets.astype(np.float32)}, str(tmp),
                      metadata={"fingerprint": tb.train_fingerprint, "task": task, "rows": str(len(tb.train))})
            tmp.replace(folder / f"{task}.safetensors")
    if ctx.state.is_main_process:
        write_json_atomic(done, {"members": [m.hash for m in members], "tasks": ctx.recipe.distilled_tasks()})
    ctx.state.wait_for_everyone()
    return folder


def load_soft_targets(ctx: RunContext, source: Path) -> dict[str, np.ndarray]:
    """Soft targets from the soft-targets stage folder or a user's file, checked against their data.

    Two formats (safetensors): the stage's, one file per task with the tensor ``targets`` and
    metadata ``task`` and ``fingerprint``; or a user's single file with one tensor per task
    (named by the task) and metadata ``fingerprints``: a JSON object task -> fingerprint of the
    training split (``mtkd.data.fingerprint_dataset``).
    """
    from safetensors import safe_open

    if source.is_dir():
        files = sorted(source.glob("*.safetensors"))
    elif source.exists():
        files = [source]
    else:
        raise CheckpointError("soft-target file not found", file=source, path="student.soft_targets")
    out = {}
    for path in files:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
            if "targets" in fh.keys() and "task" in meta:
                found = [(meta["task"], fh.get_tensor("targets"), meta.get("fingerprint"))]
            else:
                fps = json.loads(meta.get("fingerprints", "{}"))
                found = [(name, fh.get_tensor(name), fps.get(name)) for name in fh.keys()]
        for task, tensor, fp in found:
            if task not in ctx.tasks:
                raise CheckpointError(f"soft targets for unknown task {task!r}", file=path,
                                      expected=f"one of {sorted(ctx.tasks)}", found=task)
            tb = ctx.tasks[task]
            if fp != tb.train_fingerprint or tensor.shape[0] != len(tb.train):
                raise CheckpointError(
                    f"soft targets for {task!r} belong to other data", file=path,
                    expected=f"fingerprint {tb.train_fingerprint[:12]} ({len(tb.train)} rows)",
                    found=f"fingerprint {str(fp)[:12]} ({tensor.shape[0]} rows)",
                    hint="recompute them (mtkd recipe run --force soft-targets) or use the data they came from")
            if tensor.ndim != 2 or tensor.shape[1] != tb.task.num_outputs:
                raise CheckpointError(f"soft targets for {task!r} have shape {tuple(tensor.shape)}", file=path,
                                      expected=f"[{len(tb.train)}, {tb.task.num_outputs}]", found=tuple(tensor.shape))
            out[task] = tensor
    return out


def _student_cfg(ctx: RunContext) -> dict:
    return variation_config(ctx.recipe, ctx.recipe.model.student)


def student_seeds(ctx: RunContext) -> list[int]:
    return ctx.recipe.model.student.seeds or [ctx.recipe.seed]


def _init_from(ctx: RunContext, members: list[Member]) -> Path | None:
    idx = ctx.recipe.model.student.init_from_teacher
    return members[idx].model_dir if idx is not None else None


def _init_hash(ctx: RunContext, members) -> str | None:
    idx = ctx.recipe.model.student.init_from_teacher
    return members[idx].hash if idx is not None else None


def student_folder(ctx: RunContext, soft_hash: str, members) -> Path:
    s = ctx.recipe.resolved["student"]
    h = content_hash({"config": _student_cfg(ctx), "objective": s["objective"], "soft": soft_hash,
                      "init": _init_hash(ctx, members), "data": data_hash(ctx)})
    return ctx.run_dir / "students" / h


def control_folder(ctx: RunContext, members) -> Path:
    h = content_hash({"config": _student_cfg(ctx), "objective": ctx.recipe.resolved["objective"],
                      "init": _init_hash(ctx, members), "data": data_hash(ctx)})
    return ctx.run_dir / "controls" / h


def stage_student(ctx: RunContext, members: list[Member], soft_source: Path | None) -> dict:
    r = ctx.recipe
    distilled = set(r.distilled_tasks())
    soft = load_soft_targets(ctx, soft_source) if soft_source is not None else {}
    soft = {t: v for t, v in soft.items() if t in distilled}
    missing = [t for t in distilled if t not in soft and ctx.tasks[t].train is not None]
    if missing:
        raise CheckpointError(f"no soft targets for distilled task(s) {missing}",
                              path="teachers.tasks", hint="run the soft-targets stage first")
    student_obj = _objectives(r, r.resolved["student"]["objective"], "student.objective", ctx.tasks)
    hard = _objectives(r, r.resolved["objective"], "objective", ctx.tasks)
    # Distilled tasks use the student objective; the others train on hard labels only.
    objectives = {t: (student_obj[t] if t in soft else hard[t]) for t in ctx.tasks}
    cfg = _student_cfg(ctx)
    init = _init_from(ctx, members)
    soft_hash = soft_source.name if soft_source is not None and soft_source.is_dir() else \
        content_hash(str(soft_source))
    results = {"students": [], "controls": []}
    sfolder = student_folder(ctx, soft_hash, members)
    _save_spec(ctx, sfolder, {"config": cfg, "objective": r.resolved["student"]["objective"], "soft": soft_hash})
    for seed in student_seeds(ctx):
        job = _job(ctx, f"student-s{seed}", sfolder / f"seed-{seed}", cfg, seed, objectives, soft=soft,
                   init_from=init)
        results["students"].append(_train_job(ctx, job))
    if r.model.student.control:
        cfolder = control_folder(ctx, members)
        _save_spec(ctx, cfolder, {"config": cfg, "objective": r.resolved["objective"]})
        for seed in student_seeds(ctx):
            job = _job(ctx, f"control-s{seed}", cfolder / f"seed-{seed}", cfg, seed, hard, init_from=init)
            results["controls"].append(_train_job(ctx, job))
    return results


# ---------------------------------------------------------------- driver


def run_dir_for(recipe: Recipe, output: str | None) -> Path:
    if output:
        return Path(output)
    return Path(recipe.resolve_path(recipe.model.output_dir) or "runs") / recipe.model.name


def run_pipeline(recipe: Recipe, *, output: str | None = None, stage: str | None = None, force=(),
                 console=None, quiet: bool = False) -> dict | None:
    """Run every stage (or one), reusing whatever is already done. Returns metrics.json's content."""
    from accelerate import PartialState
    from rich.console import Console

    from .report import stage_evaluate, stage_report

    console = console or Console(stderr=True)
    state = PartialState()
    run_dir = run_dir_for(recipe, output)
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "recipe.json", {"hash": recipe.hash, "recipe": recipe.resolved})
    t0 = time.perf_counter()
    ctx = RunContext(recipe, run_dir, load_tasks(recipe), console, quiet=quiet or recipe.model.logging.quiet)
    logging_cfg = recipe.resolved["logging"]
    ctx.progress = make_progress(console, ctx.quiet, every_steps=logging_cfg.get("progress_every_steps"),
                                 every_seconds=logging_cfg.get("progress_every_seconds"),
                                 main_process=state.is_main_process)
    ctx.timings["load"] = time.perf_counter() - t0
    for name in force:
        _force(ctx, name)

    members = plan_members(ctx)
    trainings = [(m.config["training"], f"teachers.members[{m.index}].training")
                 for m in members if m.checkpoint is None]
    if recipe.model.student is not None:
        trainings.append((_student_cfg(ctx)["training"], "student.training"))
    task_objs = {name: tb.task for name, tb in ctx.tasks.items()}
    for training, where in trainings:  # check what can be checked before hours of training
        check_hardware(recipe.resolved["scaling"], training, file=recipe.file, training_path=where, tasks=task_objs)
        check_selection(training, task_objs, file=recipe.file, training_path=where)
    if recipe.model.student is not None:
        _objectives(recipe, recipe.resolved["student"]["objective"], "student.objective", ctx.tasks)
    _objectives(recipe, recipe.resolved["objective"], "objective", ctx.tasks)
    if members:
        for task in recipe.distilled_tasks():
            _aggregator(recipe, ctx.tasks[task].task)
        check_teacher_checkpoints(ctx, members)

    def want(name):
        return stage is None or stage == name

    def timed(name, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        ctx.timings[name] = time.perf_counter() - start
        return value

    if members and (want("teachers") or stage in ("soft-targets", "evaluate", "student")):
        if stage in ("soft-targets", "student", "evaluate"):
            _require_teachers(ctx, members)
        timed("teachers", stage_teachers, ctx, members)
    soft_source = None
    if recipe.model.student is not None and recipe.model.student.soft_targets:
        soft_source = Path(recipe.resolve_path(recipe.model.student.soft_targets))
    elif members and (want("soft-targets") or stage in ("student", "evaluate")):
        if stage in ("student", "evaluate"):
            folder = ctx.run_dir / "soft_targets" / soft_targets_hash(ctx, members)
            if not (folder / "done.json").exists():
                raise CheckpointError("the soft-targets stage has not run for this recipe", file=folder,
                                      hint="run without --stage, or with --stage soft-targets first")
        soft_source = timed("soft-targets", stage_soft_targets, ctx, members)
    students = None
    if recipe.model.student is not None and (want("student") or stage == "evaluate"):
        if stage == "evaluate":
            _require_students(ctx, members, soft_source)
        students = timed("student", stage_student, ctx, members, soft_source)
    if stage in (None, "evaluate", "report"):
        if stage == "report":
            _require_evaluation(run_dir, recipe)
        if stage != "report":
            timed("evaluate", stage_evaluate, ctx, members, students)
        return stage_report(ctx)
    return None


def _require_evaluation(run_dir: Path, recipe: Recipe) -> None:
    """The run folder is shared by every version of a recipe: report only this version's evaluation."""
    path = run_dir / "evaluation.json"
    if not path.exists():
        raise CheckpointError("nothing evaluated yet", file=run_dir, hint="run the evaluate stage first")
    found = json.loads(path.read_text()).get("recipe_hash")
    if found is not None and found != recipe.hash:
        raise CheckpointError("the evaluation in the run folder is of another version of the recipe", file=path,
                              expected=f"recipe hash {recipe.hash}", found=found,
                              hint="run without --stage (finished stages are reused), or --stage evaluate")


def _require_teachers(ctx, members):
    for m in members:
        if m.checkpoint is None and not (ctx.run_dir / "teachers" / m.hash / "result.json").exists():
            raise CheckpointError(f"teacher {m.name} has not been trained for this recipe",
                                  file=ctx.run_dir / "teachers" / m.hash, hint="run --stage teachers first")


def _require_students(ctx, members, soft_source):
    folder = student_folder(ctx, soft_source.name if soft_source and soft_source.is_dir() else
                            content_hash(str(soft_source)), members)
    for seed in student_seeds(ctx):
        if not (folder / f"seed-{seed}" / "result.json").exists():
            raise CheckpointError("the student has not been trained for this recipe", file=folder,
                                  hint="run --stage student first")


def _force(ctx: RunContext, name: str) -> None:
    """Delete the outputs of one stage (for the current recipe's hashes) so it runs again."""
    if name not in STAGES:
        raise RecipeError("unknown stage", path="--force", expected=f"one of {', '.join(STAGES)}", found=name)
    if not ctx.state.is_main_process:
        ctx.state.wait_for_everyone()
        return
    members = plan_members(ctx)
    targets: list[Path] = []
    if name == "teachers":
        targets = [ctx.run_dir / "teachers" / m.hash for m in members if m.checkpoint is None]
    elif name == "soft-targets":
        targets = [ctx.run_dir / "soft_targets" / soft_targets_hash(ctx, members)]
        targets += [ctx.run_dir / "teachers" / m.hash / "logits" for m in members]
    elif name == "student" and ctx.recipe.model.student is not None:
        soft = ctx.recipe.model.student.soft_targets
        soft_hash = content_hash(str(Path(ctx.recipe.resolve_path(soft)))) if soft else \
            soft_targets_hash(ctx, members)
        targets = [student_folder(ctx, soft_hash, members), control_folder(ctx, members)]
    elif name in ("evaluate", "report"):
        targets = [ctx.run_dir / "evaluation.json"]
    for t in targets:
        if t.is_dir():
            shutil.rmtree(t)
        elif t.exists():
            t.unlink()
    ctx.state.wait_for_everyone()
