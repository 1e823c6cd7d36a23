"""The stages of a run, each declared once: how it plans its units (with the recipe fields that change
their output), how it runs one, and what it writes.

    teachers/<key>/          a trained teacher (a training job, see mtkd.training); one unit per member
    logits/<key>/            a member's raw outputs on the splits the run needs
    soft_targets/<key>/      the aggregated targets, one file per distilled task
    students/<key>/          one student seed; controls/<key>/ one hard-label control seed
    evaluations/<key>/       evaluation.json: every model's dev metrics (and the serving cost)
    reports/<recipe hash>/   report.md, metrics.json, recipe.json of that recipe version
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..params import path_params
from ..plugins import get_registries
from ..recipe import TRANSFER_KEYS
from .context import (
    HOLDOUT,
    TRANSFER,
    RunContext,
    aggregator,
    job_model_dir,
    loggers,
    make_job,
    objectives,
    run_job,
)
from .graph import NO_KEY_TRAINING, Stage, Unit
from .search import confirmations, job_name, plan_trials, run_trial, trial_outputs, unit_config
from .store import content_digest, folder_files

# ---------------------------------------------------------------- recipe fields in keys


def key_config(cfg: dict) -> dict:
    """A member's or the student's set-up without the settings that cannot change the model."""
    cfg = copy.deepcopy(cfg)
    for k in NO_KEY_TRAINING:
        cfg["training"].pop(k, None)
    return cfg


def data_fields(ctx: RunContext) -> dict:
    """The data as the models see it: task entries (path parameters out: their content is in the
    fingerprints), the maximum length, and the fingerprint of every split."""
    reg = get_registries()
    tasks = []
    for entry in ctx.recipe.resolved["tasks"]:
        # The transfer set is the student's alone: in the keys of the units that read it (transfer_fields)
        paths = set(path_params(reg.tasks.get(entry["type"]).params)) | set(TRANSFER_KEYS)
        tasks.append({k: v for k, v in entry.items() if k not in paths})
    fps = {n: {"train": tb.train_fingerprint, **tb.eval_fingerprints,
               **({HOLDOUT: tb.carve["holdout_fingerprint"]} if tb.carve else {})} for n, tb in ctx.tasks.items()}
    return {"max_length": ctx.recipe.resolved["data"]["max_length"], "tasks": tasks, "fingerprints": fps}


def transfer_fields(ctx: RunContext) -> dict:
    """The transfer sets by content (empty without any, so keys of runs without them do not change)."""
    return {n: tb.transfer_info["fingerprint"] for n, tb in ctx.tasks.items() if tb.transfer_info}


def job_outputs(out_dir: Path) -> list[str]:
    """A training job's outputs: result.json and its kept model folder(s)."""
    out = ["result.json"]
    for name in ("best", "final"):
        if (out_dir / name).is_dir():
            out += [f"{name}/{f}" for f in folder_files(out_dir / name)]
    return out


def all_files(out_dir: Path) -> list[str]:
    return [f for f in folder_files(out_dir) if not f.endswith(".tmp")]


# ---------------------------------------------------------------- teachers


def plan_teachers(ctx: RunContext) -> list[Unit]:
    r = ctx.recipe.resolved
    units = []
    data = data_fields(ctx) if ctx.members() else None
    for m in ctx.members():
        if m.checkpoint is not None:
            if not m.checkpoint.is_dir():
                raise CheckpointError("teacher checkpoint folder not found", file=m.checkpoint,
                                      path=f"teachers.members[{m.index}].checkpoint")
            units.append(Unit(f"teacher:{m.index}", "teachers", {"checkpoint": True},
                              external={"content": content_digest(m.checkpoint)}, label=m.name, data=m))
            continue
        fields = {"config": key_config(m.config), "seed": m.seed, "bootstrap": m.bootstrap,
                  "objective": r["objective"], "data": data}
        units.append(Unit(f"teacher:{m.index}", "teachers", fields, folder_prefix="teachers", label=m.name, data=m))
    return units


def run_teacher(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    m = unit.data
    hard = objectives(ctx.recipe, ctx.recipe.resolved["objective"], "objective", ctx.tasks)
    job = make_job(ctx, m.name, out_dir, m.config, m.seed, hard, bootstrap=m.bootstrap)
    result = run_job(ctx, job)
    return {"member": m.name, "seed": m.seed, "model": job_model_dir(out_dir, result).name}


def teacher_model_dir(ctx: RunContext, unit: Unit) -> Path:
    """The model folder of a teacher unit (a trained member's kept model, or the checkpoint)."""
    if not unit.folder_prefix:
        return unit.data.checkpoint
    folder = ctx.store.path(unit.folder)
    result = json.loads((folder / "result.json").read_text())
    return job_model_dir(folder, result)


# ---------------------------------------------------------------- member logits


def logit_splits(ctx: RunContext) -> dict[str, list[str]]:
    """Per task, the splits whose member outputs the run uses: distilled train splits and every eval split."""
    distilled = set(ctx.recipe.distilled_tasks())
    out = {}
    for name, tb in ctx.tasks.items():
        splits = [tb.task.train_split] if name in distilled and tb.train is not None else []
        if splits and tb.transfer is not None:
            splits.append(TRANSFER)
        out[name] = splits + list(tb.evals) + ([HOLDOUT] if tb.holdout is not None else [])
    return {k: v for k, v in out.items() if v}


def plan_logits(ctx: RunContext) -> list[Unit]:
    splits = logit_splits(ctx)
    units = []
    for m in ctx.members():
        fields = {"splits": {t: {s: ctx.tasks[t].fingerprint(s) for s in ss} for t, ss in splits.items()},
                  "max_length": ctx.recipe.resolved["data"]["max_length"],
                  "precision": m.config["training"]["precision"]}
        units.append(Unit(f"logits:{m.index}", "logits", fields, deps=(f"teacher:{m.index}",),
                          folder_prefix="logits", label=m.name, data=m))
    return units


def run_logits(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    from accelerate.utils import gather_object
    from safetensors.numpy import save_file

    from ..data import tokenize_split
    from ..inference import predict_logits
    from ..model import load_model, recipe_allows_code

    m = unit.data
    state = ctx.state
    model = load_model(teacher_model_dir(ctx, inputs[f"teacher:{m.index}"]),
                       allow_code=recipe_allows_code(ctx.recipe)).to(state.device)
    r = ctx.recipe.resolved
    for task, splits in logit_splits(ctx).items():
        tb = ctx.tasks[task]
        for split in splits:
            ctx.progress.work_started(f"{m.name} {task} {split}", total=len(tb.split(split)), unit="examples")
            tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=r["data"]["max_length"],
                                 cache_dir=r["data"]["cache_dir"], dataset=tb.split(split))
            logits = predict_logits(model, tb.task.head_task or task, tok,
                                    batch_size=r["training"]["eval_batch_size"],
                                    pad_token_id=model.encoder.tokenizer.pad_token_id or 0,
                                    precision=m.config["training"]["precision"], rank=state.process_index,
                                    world_size=state.num_processes, gather=gather_object)
            ctx.progress.work_finished(f"{m.name} {task} {split}")
            check_finite(logits, f"teacher {m.name}'s outputs on {task} {split}",
                         hint="the teacher diverged: retrain it (--force teachers, a lower training.lr) "
                              "or drop it from teachers.members")
            if ctx.main:
                out_dir.mkdir(parents=True, exist_ok=True)
                tmp = out_dir / f"{task}.{split}.safetensors.tmp"
                save_file({"logits": logits.astype(np.float32)}, str(tmp),
                          metadata={"fingerprint": tb.fingerprint(split), "task": task, "split": split})
                tmp.replace(out_dir / f"{task}.{split}.safetensors")
    return {"member": m.name}


def check_finite(values: np.ndarray, what: str, *, file=None, hint: str | None = None) -> None:
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise CheckpointError(f"{what} are not finite ({bad} NaN/inf values); stopping before any student "
                              "is trained", file=file, hint=hint)


def member_logits(ctx: RunContext, unit: Unit, task: str, split: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(ctx.store.path(unit.folder) / f"{task}.{split}.safetensors"))["logits"]


def member_scores(ctx: RunContext, logit_units: list[Unit], task: str) -> list[float] | None:
    from ..scores import task_score
    from ..training import to_predictions

    tb = ctx.tasks[task]
    chosen = tb.selection()  # the holdout when there is one: dev is then only reported
    if not chosen:
        return None
    labels = {s: np.asarray(d["label"]) for s, d in chosen.items()}
    return [task_score(tb.task.compute_metrics(
        {s: to_predictions(member_logits(ctx, u, task, tb.selection_source(s)), tb.task.task_type) for s in chosen},
        labels)) for u in logit_units]


def aggregate_outputs(recipe, task, outputs: list[np.ndarray], scores=None) -> np.ndarray:
    """The ensemble of the members' outputs by the recipe's rule (dev-score weights where the rule uses them)."""
    import torch

    agg = aggregator(recipe, task)
    weights = None
    if getattr(agg, "uses_member_scores", False) and scores is not None:
        weights = torch.tensor(scores, dtype=torch.float32)
    return agg(torch.from_numpy(np.stack(outputs)).float(), weights=weights).numpy()


def aggregate(ctx: RunContext, logit_units: list[Unit], task: str, split: str, scores=None) -> np.ndarray:
    if scores is None and getattr(aggregator(ctx.recipe, ctx.tasks[task].task), "uses_member_scores", False):
        scores = member_scores(ctx, logit_units, task)
    return aggregate_outputs(ctx.recipe, ctx.tasks[task].task,
                             [member_logits(ctx, u, task, split) for u in logit_units], scores)


# ---------------------------------------------------------------- soft targets


def user_soft_targets(ctx: RunContext) -> Path | None:
    s = ctx.recipe.model.student
    return Path(ctx.recipe.resolve_path(s.soft_targets)) if s is not None and s.soft_targets else None


def plan_soft_targets(ctx: RunContext) -> list[Unit]:
    user = user_soft_targets(ctx)
    if user is not None:
        if not user.exists():
            raise CheckpointError("soft-target file not found", file=user, path="student.soft_targets")
        return [Unit("soft-targets", "soft-targets", {}, external={"content": content_digest(user)},
                     label=str(user), data=user)]
    members = ctx.members()
    if not members:
        return []
    t = ctx.recipe.resolved["teachers"]
    fields = {"aggregation": t["aggregation"], "regression_aggregation": t["regression_aggregation"],
              "min_dev_score": t["min_dev_score"], "distilled": ctx.recipe.distilled_tasks()}
    return [Unit("soft-targets", "soft-targets", fields, deps=tuple(f"logits:{m.index}" for m in members),
                 folder_prefix="soft_targets", label="soft targets")]


def run_soft_targets(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    from safetensors.numpy import save_file

    logit_units = [inputs[d] for d in unit.deps]
    names = [u.label for u in logit_units]
    min_score = ctx.recipe.model.teachers.min_dev_score
    written = []
    for task in ctx.recipe.distilled_tasks():
        tb = ctx.tasks[task]
        if tb.train is None:
            continue
        scores = member_scores(ctx, logit_units, task)
        if min_score is not None and scores:
            for name, s in zip(names, scores):
                if s < min_score:
                    where = HOLDOUT if tb.holdout is not None else "dev"
                    raise CheckpointError(f"teacher {name} scores {s:.2f} on {task} {where}, below min_dev_score",
                                          path="teachers.min_dev_score", expected=f">= {min_score}",
                                          found=round(s, 2), hint="retrain it or lower the threshold")
        # The training rows' file, then (with a transfer set) the transfer rows' file, tagged with its split
        parts = [(tb.task.train_split, task, {"fingerprint": tb.train_fingerprint, "rows": str(len(tb.train))})]
        if tb.transfer is not None:
            parts.append((TRANSFER, f"{task}.{TRANSFER}", {"fingerprint": tb.transfer_info["fingerprint"],
                                                           "split": TRANSFER, "rows": str(len(tb.transfer))}))
        for split, name, meta in parts:
            targets = aggregate(ctx, logit_units, task, split, scores)
            check_finite(targets, f"the soft targets for {task} ({split})", hint="a teacher's outputs are too "
                         "extreme for the aggregation rule; check the teachers' dev scores")
            if ctx.main:
                out_dir.mkdir(parents=True, exist_ok=True)
                tmp = out_dir / f"{name}.safetensors.tmp"
                save_file({"targets": targets.astype(np.float32)}, str(tmp), metadata={"task": task, **meta})
                tmp.replace(out_dir / f"{name}.safetensors")
        written.append(task)
    return {"tasks": written}


def load_soft_targets(ctx: RunContext, source: Path) -> dict[str, np.ndarray]:
    """Soft targets from the soft-targets stage folder or a user's file, checked against their data.

    Two formats (safetensors): the stage's, one file per task with the tensor ``targets`` and
    metadata ``task`` and ``fingerprint``; or a user's single file with one tensor per task
    (named by the task) and metadata ``fingerprints``: a JSON object task -> fingerprint of the
    training split (``mtkd.data.fingerprint_dataset``).
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    out, transfer = {}, {}
    for path in files:
        try:  # a damaged or foreign file is an input problem, not a crash
            with safe_open(str(path), "np") as fh:
                meta = fh.metadata() or {}
                if "targets" in fh.keys() and "task" in meta:
                    found = [(meta["task"], fh.get_tensor("targets"), meta.get("fingerprint"), meta.get("split"))]
                else:
                    fps = json.loads(meta.get("fingerprints", "{}"))
                    found = [(name, fh.get_tensor(name), fps.get(name), None) for name in fh.keys()]
        except (SafetensorError, OSError, json.JSONDecodeError, AttributeError) as exc:
            raise CheckpointError(f"unreadable soft-target file: {exc}", file=path,
                                  expected="safetensors of soft targets written by mtkd",
                                  hint="recompute them (mtkd recipe run --force soft-targets)") from None
        for task, tensor, fp, split in found:
            if task not in ctx.tasks:
                raise CheckpointError(f"soft targets for unknown task {task!r}", file=path,
                                      expected=f"one of {sorted(ctx.tasks)}", found=task)
            tb = ctx.tasks[task]
            if split == TRANSFER and tb.transfer is None:
                continue  # the recipe no longer has a transfer set: its targets are not used
            rows, want = (tb.transfer, tb.transfer_info["fingerprint"]) if split == TRANSFER \
                else (tb.train, tb.train_fingerprint)
            if fp != want or tensor.shape[0] != len(rows):
                raise CheckpointError(
                    f"soft targets for {task!r}" + (" (transfer set)" if split == TRANSFER else "")
                    + " belong to other data", file=path, expected=f"fingerprint {want[:12]} ({len(rows)} rows)",
                    found=f"fingerprint {str(fp)[:12]} ({tensor.shape[0]} rows)",
                    hint="recompute them (mtkd recipe run --force soft-targets) or use the data they came from")
            if tensor.ndim != 2 or tensor.shape[1] != tb.task.num_outputs:
                raise CheckpointError(f"soft targets for {task!r} have shape {tuple(tensor.shape)}", file=path,
                                      expected=f"[{len(rows)}, {tb.task.num_outputs}]", found=tuple(tensor.shape))
            check_finite(tensor, f"the soft targets for {task}", file=path)
            (transfer if split == TRANSFER else out)[task] = tensor
    for task in list(out):
        if ctx.tasks[task].transfer is None:
            continue
        if task not in transfer:
            raise CheckpointError(f"no soft targets for {task!r}'s transfer set", file=source,
                                  expected=f"{task}.{TRANSFER}.safetensors",
                                  hint="recompute them (mtkd recipe run --force soft-targets)")
        out[task] = np.concatenate([out[task], transfer[task]])  # the order of make_job's training rows
    return out


def soft_targets_source(ctx: RunContext, unit: Unit) -> Path:
    return unit.data if not unit.folder_prefix else ctx.store.path(unit.folder)


# ---------------------------------------------------------------- students and controls


def uses_hidden_states(ctx: RunContext, objective: dict | None = None) -> bool:
    """Whether a student objective (default: the student's) matches the teachers' hidden states (it then needs
    the teacher models)."""
    losses = get_registries().losses
    objective = ctx.recipe.resolved["student"]["objective"] if objective is None else objective
    return any(getattr(losses.get(c["type"]).factory, "uses_hidden_states", False) for c in objective.values())


def _student_units(ctx: RunContext, kind: str) -> list[Unit]:
    from .variants import student_variants

    r = ctx.recipe
    s = r.model.student
    if s is None or (kind == "control" and not s.control):
        return []
    units = []
    for v in student_variants(r):
        deps: tuple[str, ...] = ()
        if v.init_from_teacher is not None:
            deps += (f"teacher:{v.init_from_teacher}",)
        if kind == "student" and uses_hidden_states(ctx, v.objective):
            deps += tuple(f"teacher:{m.index}" for m in ctx.members() if f"teacher:{m.index}" not in deps)
        # No variant name here: a unit is keyed by what it trains (a control by what changes the hard-label model)
        objective = v.objective if kind == "student" else r.resolved["objective"]
        fields = {"config": key_config(v.config), "objective": objective, "data": data_fields(ctx),
                  "init_from_teacher": v.init_from_teacher}
        if kind == "student":
            fields["distilled"] = r.distilled_tasks()
            if transfer_fields(ctx):
                fields["transfer"] = transfer_fields(ctx)
            if ctx.recipe.model.teachers is not None or s.soft_targets:
                deps = ("soft-targets",) + deps
        prefix = "students" if kind == "student" else "controls"
        units += [Unit(v.unit_id(kind, seed), kind, {**fields, "seed": seed}, deps=deps, folder_prefix=prefix,
                       label=v.label(kind, seed), data=(v, seed)) for seed in ctx.student_seeds()]
    return units


def plan_students(ctx: RunContext) -> list[Unit]:
    return confirmations(ctx, _student_units(ctx, "student"))


def plan_controls(ctx: RunContext) -> list[Unit]:
    return confirmations(ctx, _student_units(ctx, "control"))


def _init_from(ctx: RunContext, inputs: dict, variant) -> Path | None:
    idx = variant.init_from_teacher
    return teacher_model_dir(ctx, inputs[f"teacher:{idx}"]) if idx is not None else None


def run_student(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    r = ctx.recipe
    variant, seed = unit.data
    distilled = set(r.distilled_tasks())
    soft = {}
    if "soft-targets" in inputs:
        soft = load_soft_targets(ctx, soft_targets_source(ctx, inputs["soft-targets"]))
    soft = {t: v for t, v in soft.items() if t in distilled}
    missing = [t for t in distilled if t not in soft and ctx.tasks[t].train is not None]
    if missing:
        raise CheckpointError(f"no soft targets for distilled task(s) {missing}", path="teachers.tasks",
                              hint="run the soft-targets stage first, or give student.soft_targets")
    student_obj = objectives(r, variant.objective, f"{variant.path}.objective", ctx.tasks)
    hard = objectives(r, r.resolved["objective"], "objective", ctx.tasks)
    # Distilled tasks use the student objective; the others train on hard labels only.
    objs = {t: (student_obj[t] if t in soft else hard[t]) for t in ctx.tasks}
    teachers = [teacher_model_dir(ctx, inputs[f"teacher:{m.index}"]) for m in ctx.members()] \
        if uses_hidden_states(ctx, variant.objective) else []
    job = make_job(ctx, job_name(variant.job_name("student", seed), unit), out_dir, unit_config(variant.config, unit),
                   seed, objs, soft=soft, init_from=_init_from(ctx, inputs, variant), teacher_models=teachers)
    result = run_job(ctx, job)
    return {"seed": seed, "model": job_model_dir(out_dir, result).name}


def run_control(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    r = ctx.recipe
    variant, seed = unit.data
    hard = objectives(r, r.resolved["objective"], "objective", ctx.tasks)
    job = make_job(ctx, job_name(variant.job_name("control", seed), unit), out_dir, unit_config(variant.config, unit),
                   seed, hard, init_from=_init_from(ctx, inputs, variant))
    result = run_job(ctx, job)
    return {"seed": seed, "model": job_model_dir(out_dir, result).name}


def job_result(ctx: RunContext, unit: Unit) -> dict:
    return json.loads((ctx.store.path(unit.folder) / "result.json").read_text())


def unit_seconds(ctx: RunContext, unit: Unit) -> float | None:
    """The compute a finished unit took: a training job's ``train_seconds`` (``result.json``, summed over
    resumes), else the wall time its marker recorded; None for a unit made before markers recorded it."""
    result = ctx.store.path(unit.folder) / "result.json"
    if result.is_file():
        seconds = job_result(ctx, unit).get("train_seconds")
    else:
        seconds = (unit.marker or {}).get("seconds")
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    return float(seconds) if ok else None


def stage_compute(ctx: RunContext, units) -> dict:
    """Per stage, in order: how many finished units this version uses (a folder shared by several units
    counts once), the seconds they took and the range; ``unknown``: units with no recorded time."""
    out: dict = {}
    seen: set[str] = set()
    for u in units:
        if not u.folder or u.marker is None or u.folder in seen or u.stage == "report":
            continue
        seen.add(u.folder)
        entry = out.setdefault(u.stage, {"units": 0, "seconds": 0.0, "min": None, "max": None, "unknown": 0})
        entry["units"] += 1
        seconds = unit_seconds(ctx, u)
        if seconds is None:
            entry["unknown"] += 1
            continue
        entry["seconds"] += seconds
        entry["min"] = seconds if entry["min"] is None else min(entry["min"], seconds)
        entry["max"] = seconds if entry["max"] is None else max(entry["max"], seconds)
    return out


# ---------------------------------------------------------------- declarations


def _evaluate_stage():
    from . import evaluate

    return evaluate


def plan_evaluate(ctx):
    return _evaluate_stage().plan_evaluate(ctx)


def run_evaluate(ctx, unit, out_dir, inputs):
    return _evaluate_stage().run_evaluate(ctx, unit, out_dir, inputs)


def plan_report(ctx):
    return _evaluate_stage().plan_report(ctx)


def run_report(ctx, unit, out_dir, inputs):
    return _evaluate_stage().run_report(ctx, unit, out_dir, inputs)


def after_job(ctx, unit):
    """A job reused from an earlier run: a tracker turned on since receives its history, once."""
    from ..tracking import backfill

    if not unit.folder or not ctx.recipe.resolved["logging"]["trackers"]:
        return
    job_dir = ctx.store.path(unit.folder)
    if not (job_dir / "result.json").is_file():  # an outside checkpoint: no history
        return
    name = json.loads((job_dir / "result.json").read_text(encoding="utf-8")).get("job") or unit.label
    r = ctx.recipe.resolved
    backfill(job_dir, job=name, loggers=loggers(ctx.recipe), group=r["logging"]["group"] or r["name"],
             config={"recipe": r, "recipe_hash": ctx.recipe.hash, "job": name})


def after_report(ctx, unit):
    return _evaluate_stage().publish_report(ctx, unit)


STAGES = [
    Stage("teachers", plan_teachers, run_teacher, job_outputs, "train each teacher member (or use its checkpoint)",
          after=after_job),
    Stage("logits", plan_logits, run_logits, all_files, "each member's raw outputs on the splits the run uses",
          on_demand=True),
    Stage("soft-targets", plan_soft_targets, run_soft_targets, all_files,
          "aggregate the members' outputs into the student's targets (or use the user's file)"),
    Stage("student-search", lambda ctx: plan_trials(ctx, "student"), run_trial, trial_outputs,
          "student.search: each setting per trial seed, scored on the holdout", after=after_job),
    Stage("student", plan_students, run_student, job_outputs, "train the distilled student, one unit per seed",
          after=after_job),
    Stage("control-search", lambda ctx: plan_trials(ctx, "control"), run_trial, trial_outputs,
          "student.search for the control: the same settings and trial seeds", after=after_job),
    Stage("control", plan_controls, run_control, job_outputs, "the student's set-up on hard labels only, per seed",
          after=after_job),
    Stage("evaluate", plan_evaluate, run_evaluate, all_files, "every model's dev metrics and the serving cost"),
    Stage("report", plan_report, run_report, all_files, "report.md and metrics.json of this recipe version",
          always=True, after=after_report),
]
