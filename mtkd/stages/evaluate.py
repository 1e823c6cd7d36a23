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
from .context import RunContext, selection_info
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
    # "format": what evaluation.json holds (2: dev outputs of every model, the comparison block, job folders)
    fields = {"format": 2, "evaluation": r.resolved["evaluation"], "names": [m.name for m in members],
              "data": data_fields(ctx)["fingerprints"]}
    if members:
        fields["aggregation"] = {k: r.resolved["teachers"][k] for k in ("aggregation", "regression_aggregation")}
    return [Unit("evaluate", "evaluate", fields, deps=deps, folder_prefix="evaluations", label="evaluation")]


def _mean_metrics(runs: list[dict]) -> dict:
    out: dict = {}
    for task in runs[0] if runs else {}:
        out[task] = {m: float(np.mean([r[task][m] for r in runs])) for m in runs[0][task]}
    return out


def dev_outputs(ctx: RunContext, model_dir: Path, precision: str) -> dict:
    """A model's raw outputs on every eval split: ``{task: {split: [N, C] logits / [N, 1] values}}``."""
    from accelerate.utils import gather_object

    from ..data import tokenize_split
    from ..inference import predict_logits
    from ..model import load_model, recipe_allows_code

    state = ctx.state
    model = load_model(model_dir, allow_code=recipe_allows_code(ctx.recipe)).to(state.device)
    r = ctx.recipe.resolved
    out: dict = {}
    for name, tb in ctx.tasks.items():
        for split, ds in tb.evals.items():
            tok = tokenize_split(tb.task, split, model.encoder.tokenizer, max_length=r["data"]["max_length"],
                                 cache_dir=r["data"]["cache_dir"], dataset=ds)
            out.setdefault(name, {})[split] = predict_logits(
                model, tb.task.head_task or name, tok, batch_size=r["training"]["eval_batch_size"],
                pad_token_id=model.encoder.tokenizer.pad_token_id or 0, precision=precision,
                rank=state.process_index, world_size=state.num_processes, gather=gather_object)
    return out


def _metrics_of(ctx: RunContext, outputs: dict) -> dict:
    from ..training import to_predictions

    out = {}
    for name, splits in outputs.items():
        tb = ctx.tasks[name]
        labels = {s: np.asarray(tb.evals[s]["label"]) for s in splits}
        out[name] = tb.task.compute_metrics({s: to_predictions(v, tb.task.task_type) for s, v in splits.items()},
                                            labels)
    return out


def comparison_block(ctx: RunContext, teacher_names: list[str], teacher_outputs: list[dict], ensemble: dict,
                     students: list[dict], controls: list[dict], seeds: list[int]) -> dict:
    """The metrics.json ``comparison`` block (``mtkd.stats.comparison``) from every model's dev outputs."""
    from ..stats import System, comparison

    evaluated = {n: tb for n, tb in ctx.tasks.items() if tb.evals}
    labels = {n: {s: np.asarray(d["label"]) for s, d in tb.evals.items()} for n, tb in evaluated.items()}
    systems = {}
    if students:
        systems["student"] = System(students, list(seeds))
    if controls:
        systems["control"] = System(controls, list(seeds))
    if ensemble:
        systems["ensemble"] = System([ensemble], kind="probs")
    for name, outputs in zip(teacher_names, teacher_outputs):
        systems.setdefault(name, System([outputs]))
    if not systems:
        return {}
    return comparison({n: tb.task for n, tb in evaluated.items()}, labels, systems, seed=ctx.recipe.seed)


def run_evaluate(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    from ..training import to_predictions

    members = ctx.members()
    teachers = [inputs[f"teacher:{m.index}"] for m in members]
    logit_units = [inputs[f"logits:{m.index}"] for m in members]
    evaluated = {n: tb for n, tb in ctx.tasks.items() if tb.evals}
    out: dict = {"recipe_hash": ctx.recipe.hash, "teachers": [], "teacher_names": [m.name for m in members],
                 "ensemble": {}, "students": [], "controls": [], "seeds": [], "timings": dict(ctx.timings)}
    teacher_outputs = [{name: {s: member_logits(ctx, lu, name, s) for s in tb.evals} for name, tb in evaluated.items()}
                       for lu in logit_units]
    out["teachers"] = [_metrics_of(ctx, t) for t in teacher_outputs]
    ensemble: dict = {}
    if members:
        ensemble = {name: {s: aggregate(ctx, logit_units, name, s) for s in tb.evals} for name, tb in evaluated.items()}
        out["ensemble"] = {name: tb.task.compute_metrics(
            {s: to_predictions(v, tb.task.task_type) for s, v in ensemble[name].items()},
            {s: np.asarray(d["label"]) for s, d in tb.evals.items()}) for name, tb in evaluated.items()}
    student_outputs: list[dict] = []
    control_outputs: list[dict] = []
    student_dirs = []
    if ctx.recipe.model.student is not None:
        seeds = ctx.student_seeds()
        students = [job_result(ctx, inputs[f"student:{s}"]) for s in seeds]
        controls = [job_result(ctx, inputs[f"control:{s}"]) for s in seeds] if ctx.recipe.model.student.control \
            else []
        out["seeds"] = seeds
        out["train_seconds"] = {"students": [r["train_seconds"] for r in students],
                                "controls": [r["train_seconds"] for r in controls]}
        student_dirs = [ctx.store.path(inputs[f"student:{s}"].folder) / Path(str(r.get("model") or "final")).name
                        for s, r in zip(seeds, students)]
        control_dirs = [ctx.store.path(inputs[f"control:{s}"].folder) / Path(str(r.get("model") or "final")).name
                        for s, r in zip(seeds, controls)]
        # Dev figures from the kept models' dev outputs: the jobs' own metrics are those of the selection split.
        precision = ctx.student_config()["training"]["precision"]
        student_outputs = [dev_outputs(ctx, d, precision) for d in student_dirs]
        control_outputs = [dev_outputs(ctx, d, precision) for d in control_dirs]
        out["students"] = [_metrics_of(ctx, o) for o in student_outputs]
        out["controls"] = [_metrics_of(ctx, o) for o in control_outputs]
    out["comparison"] = comparison_block(ctx, out["teacher_names"], teacher_outputs, ensemble, student_outputs,
                                         control_outputs, out["seeds"])
    out["jobs"] = {u.label or u.id: ctx.store.rel(ctx.store.path(u.folder)) for u in inputs.values()
                   if u.folder and u.stage in ("teachers", "student", "control")}
    out["selection"] = selection_info(ctx)
    out["teacher_train_seconds"] = [job_result(ctx, t)["train_seconds"] if t.folder_prefix else None
                                    for t in teachers]
    if ctx.recipe.model.evaluation.serving and ctx.main and members and student_dirs:
        from ..scores import task_score

        name = next(n for n, tb in ctx.tasks.items() if tb.evals)
        scores = {"student": task_score(out["students"][0][name]) if name in out["students"][0] else None,
                  "ensemble": task_score(out["ensemble"][name]) if name in out["ensemble"] else None}
        out["serving"] = measure_serving(ctx, [teacher_model_dir(ctx, t) for t in teachers], student_dirs[0], scores)
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "evaluation.json.tmp"
        tmp.write_text(json.dumps(out, indent=2), encoding="utf-8")
        tmp.replace(out_dir / "evaluation.json")
    return {}


def measure_serving(ctx: RunContext, teacher_dirs: list[Path], student_dir: Path, scores: dict | None = None) -> dict:
    """Parameters, size on disk, throughput and latency (p50/p95) of the K-member ensemble against the student,
    eager and in each other format of ``evaluation.serving_formats``; ``scores``: dev scores by row (x100)."""
    import torch

    from ..data import eval_batches, tokenize_split
    from ..inference import MODEL_INPUTS, autocast
    from ..model import count_parameters, load_model, recipe_allows_code

    ev = ctx.recipe.model.evaluation
    name, tb = next((n, tb) for n, tb in ctx.tasks.items() if tb.evals)
    split, ds = next(iter(tb.evals.items()))
    ds = ds.select(range(min(len(ds), ev.serving_examples)))
    precision = ctx.recipe.resolved["training"]["precision"]
    head = tb.task.head_task or name

    def batches_for(tokenizer) -> dict:
        tok = tokenize_split(tb.task, split, tokenizer, max_length=ctx.recipe.model.data.max_length,
                             cache_dir=ctx.recipe.model.data.cache_dir, dataset=ds)
        pad = tokenizer.pad_token_id or 0
        return {bs: list(eval_batches(tok, batch_size=bs, pad_token_id=pad, sort_by_length=False))
                for bs in ev.serving_batch_sizes}

    def timed(call, batches: dict) -> dict:
        result = {}
        for bs, group in batches.items():
            times = []
            for b in group[:2]:  # warm-up
                call(b)
            for b in group:
                start = time.perf_counter()
                call(b)
                times.append(time.perf_counter() - start)
            times_ms = np.array(times) * 1000
            result[f"batch_{bs}"] = {"examples_per_s": float(len(ds) / max(sum(times), 1e-9)),
                                     "p50_ms": float(np.percentile(times_ms, 50)),
                                     "p95_ms": float(np.percentile(times_ms, 95))}
        return result

    def bench(dirs: list[Path]) -> dict:
        models = [load_model(d, allow_code=recipe_allows_code(ctx.recipe)).eval() for d in dirs]

        def call(b):
            with torch.no_grad(), autocast(precision, torch.device("cpu")):
                for m in models:
                    m(head, **{k: b[k] for k in MODEL_INPUTS if k in b})
        return {"parameters": int(sum(count_parameters(m) for m in models)), "members": len(models),
                "size_bytes": sum(_folder_bytes(d) for d in dirs),
                **timed(call, batches_for(models[0].encoder.tokenizer))}

    out = {"task": name, "split": split, "examples": len(ds), "ensemble": bench(teacher_dirs),
           "student": bench([student_dir])}
    for who in ("ensemble", "student"):
        if (scores or {}).get(who) is not None:
            out[who]["dev_score"] = scores[who]
    formats = [f for f in ev.serving_formats if f != "eager"]
    if formats:
        out["formats"] = _measure_formats(ctx, formats, student_dir, name, head, split, tb, ds, batches_for, timed,
                                          out["student"]["parameters"])
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _measure_formats(ctx: RunContext, formats: list[str], student_dir: Path, name: str, head: str, split: str, tb,
                     requests, batches_for, timed, parameters: int) -> dict:
    """The student in each plugin-provided serving format: converted into a temporary folder (scored on the
    full dev split), then timed on the same requests as the eager rows. A model a format cannot convert
    (an unsupported head, say) gets a row with the reason instead of failing the run."""
    import tempfile

    import torch

    from ..components import DevData
    from ..errors import MtkdError
    from ..model import load_model, recipe_allows_code
    from ..plugins import get_registries

    reg = get_registries().serving_formats
    data = ctx.recipe.model.data
    dev = DevData(tb.task, split, tb.evals[split], max_length=data.max_length, cache_dir=data.cache_dir)
    tokenizer = load_model(student_dir, allow_code=recipe_allows_code(ctx.recipe)).encoder.tokenizer
    batches = batches_for(tokenizer)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="mtkd-serving-") as tmp:
        for fmt in formats:
            try:
                prepared = reg.create(fmt).prepare(student_dir, head, Path(tmp) / fmt, dev=dev, requests=requests,
                                                   threads=torch.get_num_threads())
            except MtkdError as exc:
                out[fmt] = {"error": exc.message}
                ctx.progress.message(f"serving format {fmt}: not measured: {exc.message}")
                continue
            row = {"parameters": parameters, "size_bytes": int(prepared.size_bytes), **timed(prepared.run, batches)}
            if prepared.dev:
                row["dev"] = prepared.dev
                row["dev_score"] = prepared.dev.get("score")
            out[fmt] = row
    return out


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
    for key in ("comparison", "selection"):
        if ev.get(key):
            out[key] = ev[key]
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
    from ..plots import plot_run

    jobs = {label: ctx.store.path(rel) for label, rel in (ev.get("jobs") or {}).items()}
    metrics["plots"] = [p.name for p in plot_run(metrics, jobs, out_dir)]
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
    for name in metrics.get("plots") or []:  # report.md links them beside it
        tmp = store.path(f".{name}.tmp")
        tmp.write_bytes(store.path(unit.folder, name).read_bytes())
        tmp.replace(store.path(name))
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
