"""The evaluate and report stages: every model's dev metrics, then this recipe version's report.

``evaluations/<key>/evaluation.json`` holds the raw figures; ``reports/<recipe hash>/`` holds the
version's ``metrics.json``, ``report.md`` and resolved ``recipe.json``; the run folder's top-level
copies are the latest version's.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from ..scores import glue_score, mean_std
from .context import RunContext
from .graph import Unit
from .units import aggregate, data_fields, job_result, member_logits, teacher_model_dir


def plan_evaluate(ctx: RunContext) -> list[Unit]:
    r = ctx.recipe
    members = ctx.members()
    deps = tuple(f"teacher:{m.index}" for m in members) + tuple(f"logits:{m.index}" for m in members)
    if r.model.student is not None:
        deps += tuple(f"student:{s}" for s in ctx.student_seeds())
        if r.model.student.control:
            deps += tuple(f"control:{s}" for s in ctx.student_seeds())
    fields = {"evaluation": r.resolved["evaluation"], "names": [m.name for m in members],
              "data": data_fields(ctx)["fingerprints"]}
    if members:
        fields["aggregation"] = {k: r.resolved["teachers"][k] for k in ("aggregation", "regression_aggregation")}
    return [Unit("evaluate", "evaluate", fields, deps=deps, folder_prefix="evaluations", label="evaluation")]


def _mean_metrics(runs: list[dict]) -> dict:
    out: dict = {}
    for task in runs[0] if runs else {}:
        out[task] = {m: float(np.mean([r[task][m] for r in runs])) for m in runs[0][task]}
    return out


def run_evaluate(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    from ..training import to_predictions

    members = ctx.members()
    teachers = [inputs[f"teacher:{m.index}"] for m in members]
    logit_units = [inputs[f"logits:{m.index}"] for m in members]
    evaluated = {n: tb for n, tb in ctx.tasks.items() if tb.evals}
    out: dict = {"recipe_hash": ctx.recipe.hash, "teachers": [], "teacher_names": [m.name for m in members],
                 "ensemble": {}, "students": [], "controls": [], "seeds": [], "timings": dict(ctx.timings)}
    for lu in logit_units:
        per_task = {}
        for name, tb in evaluated.items():
            preds = {s: to_predictions(member_logits(ctx, lu, name, s), tb.task.task_type) for s in tb.evals}
            labels = {s: np.asarray(d["label"]) for s, d in tb.evals.items()}
            per_task[name] = tb.task.compute_metrics(preds, labels)
        out["teachers"].append(per_task)
    if members:
        for name, tb in evaluated.items():
            preds = {s: to_predictions(aggregate(ctx, logit_units, name, s), tb.task.task_type) for s in tb.evals}
            labels = {s: np.asarray(d["label"]) for s, d in tb.evals.items()}
            out["ensemble"][name] = tb.task.compute_metrics(preds, labels)
    student_dirs = []
    if ctx.recipe.model.student is not None:
        seeds = ctx.student_seeds()
        students = [job_result(ctx, inputs[f"student:{s}"]) for s in seeds]
        controls = [job_result(ctx, inputs[f"control:{s}"]) for s in seeds] if ctx.recipe.model.student.control \
            else []
        out["students"] = [r.get("metrics") or {} for r in students]
        out["controls"] = [r.get("metrics") or {} for r in controls]
        out["seeds"] = seeds
        out["train_seconds"] = {"students": [r["train_seconds"] for r in students],
                                "controls": [r["train_seconds"] for r in controls]}
        student_dirs = [ctx.store.path(inputs[f"student:{s}"].folder) / Path(str(r.get("model") or "final")).name
                        for s, r in zip(seeds, students)]
    out["teacher_train_seconds"] = [job_result(ctx, t)["train_seconds"] if t.folder_prefix else None
                                    for t in teachers]
    if ctx.recipe.model.evaluation.serving and ctx.main and members and student_dirs:
        out["serving"] = measure_serving(ctx, [teacher_model_dir(ctx, t) for t in teachers], student_dirs[0])
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "evaluation.json.tmp"
        tmp.write_text(json.dumps(out, indent=2), encoding="utf-8")
        tmp.replace(out_dir / "evaluation.json")
    return {}


def measure_serving(ctx: RunContext, teacher_dirs: list[Path], student_dir: Path) -> dict:
    """Parameters, throughput and latency (p50/p95) of the K-member ensemble against the student."""
    import torch

    from ..data import eval_batches, tokenize_split
    from ..inference import MODEL_INPUTS, autocast
    from ..model import count_parameters, load_model

    ev = ctx.recipe.model.evaluation
    name, tb = next((n, tb) for n, tb in ctx.tasks.items() if tb.evals)
    split, ds = next(iter(tb.evals.items()))
    ds = ds.select(range(min(len(ds), ev.serving_examples)))
    precision = ctx.recipe.resolved["training"]["precision"]
    head = tb.task.head_task or name

    def bench(dirs: list[Path]) -> dict:
        models = [load_model(d).eval() for d in dirs]
        tok = tokenize_split(tb.task, split, models[0].encoder.tokenizer, max_length=ctx.recipe.model.data.max_length,
                             cache_dir=ctx.recipe.model.data.cache_dir, dataset=ds)
        pad = models[0].encoder.tokenizer.pad_token_id or 0
        result = {"parameters": int(sum(count_parameters(m) for m in models)), "members": len(models)}
        for bs in ev.serving_batch_sizes:
            batches = list(eval_batches(tok, batch_size=bs, pad_token_id=pad, sort_by_length=False))
            times = []
            with torch.no_grad(), autocast(precision, torch.device("cpu")):
                for b in batches[:2]:  # warm-up
                    for m in models:
                        m(head, **{k: b[k] for k in MODEL_INPUTS if k in b})
                for b in batches:
                    start = time.perf_counter()
                    for m in models:
                        m(head, **{k: b[k] for k in MODEL_INPUTS if k in b})
                    times.append(time.perf_counter() - start)
            times_ms = np.array(times) * 1000
            result[f"batch_{bs}"] = {"examples_per_s": float(len(tok) / max(sum(times), 1e-9)),
                                     "p50_ms": float(np.percentile(times_ms, 50)),
                                     "p95_ms": float(np.percentile(times_ms, 95))}
        return result

    return {"task": name, "split": split, "examples": len(ds), "ensemble": bench(teacher_dirs),
            "student": bench([student_dir])}


def build_metrics(ev: dict) -> dict:
    """metrics.json: per task and GLUE-style score for teachers, ensemble, student(s) and control(s)."""
    tasks: dict = {}
    names = set()
    for group in (ev["teachers"], [ev["ensemble"]], ev["students"], ev["controls"]):
        for per_task in group:
            names.update(per_task)
    for task in sorted(names):
        entry: dict = {"teachers": [t.get(task, {}) for t in ev["teachers"]]}
        if ev["ensemble"]:
            entry["ensemble"] = ev["ensemble"].get(task, {})
        if ev["students"]:
            entry["student"] = _mean_metrics([{task: s[task]} for s in ev["students"] if task in s]).get(task, {})
            entry["students"] = [s.get(task, {}) for s in ev["students"]]
        if ev["controls"]:
            entry["control"] = _mean_metrics([{task: s[task]} for s in ev["controls"] if task in s]).get(task, {})
            entry["controls"] = [s.get(task, {}) for s in ev["controls"]]
        tasks[task] = entry
    score: dict = {}
    teacher_scores = [glue_score(t) for t in ev["teachers"]]
    if teacher_scores:
        score["teachers"] = teacher_scores
        score["teachers_mean"], score["teachers_std"] = mean_std(teacher_scores)
    if ev["ensemble"]:
        score["ensemble"] = glue_score(ev["ensemble"])
    for key, runs in (("student", ev["students"]), ("control", ev["controls"])):
        if runs:
            values = [glue_score(r) for r in runs]
            score[f"{key}s"] = values
            score[key], score[f"{key}_std"] = mean_std(values)
    out = {"tasks": tasks, "score": score, "seeds": ev.get("seeds", []), "teacher_names": ev["teacher_names"]}
    if "serving" in ev:
        out["serving"] = ev["serving"]
    out["timings"] = ev.get("timings", {})
    return out


# ---------------------------------------------------------------- report


def plan_report(ctx: RunContext) -> list[Unit]:
    h = ctx.recipe.hash
    return [Unit("report", "report", {"recipe": h}, deps=("evaluate",), folder_prefix="reports",
                 folder_name=lambda key: h, label=f"report {h}")]


def run_report(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    from ..report import render_markdown

    if not ctx.main:
        return {}
    ev = json.loads((ctx.store.path(inputs["evaluate"].folder) / "evaluation.json").read_text())
    metrics = build_metrics(ev)
    metrics["recipe_hash"] = ctx.recipe.hash
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = ctx.store.read_json(f"{unit.folder}/recipe.json") or {}
    version = {"hash": ctx.recipe.hash, "recipe": ctx.recipe.resolved,
               "file": str(ctx.recipe.file.resolve()) if ctx.recipe.file else None,
               "overrides": list(getattr(ctx.recipe, "overrides", ()) or ()),
               "created": previous.get("created") or datetime.now().isoformat(timespec="milliseconds"),
               "evaluation": ctx.store.rel(ctx.store.path(inputs["evaluate"].folder))}
    for name, text in (("metrics.json", json.dumps(metrics, indent=2)), ("recipe.json", json.dumps(version, indent=2)),
                       ("report.md", render_markdown(metrics, ctx.recipe.model.name, ctx.recipe.hash))):
        tmp = out_dir / f"{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
    return {}


def publish_report(ctx: RunContext, unit: Unit) -> None:
    """The version's report becomes the run folder's latest; the table is shown and sent to the trackers."""
    from rich.console import Console

    from ..report import print_report
    from ..tracking import report_run
    from .context import loggers

    store = ctx.store
    metrics = store.read_json(f"{unit.folder}/metrics.json")
    for name in ("metrics.json", "recipe.json", "report.md"):
        store.write_text(name, store.path(unit.folder, name).read_text(encoding="utf-8"))
    ctx.metrics = metrics
    print_report(metrics, ctx.recipe.model.name, Console())
    lg = loggers(ctx.recipe)
    if lg:  # one tracker run per recipe version: scores, the comparison table, the report's plots
        from ..report import report_rows

        folder = store.path(unit.folder)
        plots = {p.stem: p for pattern in ("*.png", "plots/*.png") for p in sorted(folder.glob(pattern))}
        report_run(ctx.run_dir, recipe_hash=ctx.recipe.hash,
                   group=ctx.recipe.resolved["logging"]["group"] or ctx.recipe.model.name,
                   config={"recipe": ctx.recipe.resolved, "recipe_hash": ctx.recipe.hash}, loggers=lg,
                   scores=metrics["score"], table=report_rows(metrics), plots=plots)
    Console().print(f"[dim]report: {store.path(unit.folder, 'report.md')}  metrics: {store.path('metrics.json')}[/]",
                    highlight=False)
