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

from ..recipe import content_hash
from ..scores import glue_score as _glue_score
from ..scores import mean_std
from .context import RunContext, selection_info
from .graph import Unit
from .search import evaluation_block, training_budget, trial_ids
from .units import aggregate, data_fields, job_result, member_logits, stage_compute, teacher_model_dir
from .variants import has_variants, student_variants


def plan_evaluate(ctx: RunContext) -> list[Unit]:
    r = ctx.recipe
    members = ctx.members()
    deps = tuple(f"teacher:{m.index}" for m in members) + tuple(f"logits:{m.index}" for m in members)
    for v in student_variants(r):
        deps += tuple(v.unit_id("student", s) for s in ctx.student_seeds())
        if r.model.student.control:
            deps += tuple(v.unit_id("control", s) for s in ctx.student_seeds())
    deps += trial_ids(ctx)  # the report's table of tried settings
    # "format": what evaluation.json holds (2: dev outputs of every model, the comparison block, job folders)
    fields = {"format": 2, "evaluation": r.resolved["evaluation"], "names": [m.name for m in members],
              "data": data_fields(ctx)["fingerprints"]}
    if members:
        fields["aggregation"] = {k: r.resolved["teachers"][k] for k in ("aggregation", "regression_aggregation")}
    if has_variants(r):
        fields["variants"] = [v.name for v in student_variants(r)]
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
                     students: list[dict], controls: list[dict], seeds: list[int],
                     score_tasks: list[str] | None = None) -> dict:
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
    return comparison({n: tb.task for n, tb in evaluated.items()}, labels, systems, seed=ctx.recipe.seed,
                      score_tasks=score_tasks)


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
    student_dirs: list[Path] = []
    score_tasks = ctx.recipe.score_tasks()
    variants = student_variants(ctx.recipe)
    per_variant: dict = {}
    predicted: dict = {}  # model folder -> dev outputs: a control that variants share is predicted once
    for v in variants:
        seeds = ctx.student_seeds()
        s_units = [inputs[v.unit_id("student", s)] for s in seeds]
        c_units = [inputs[v.unit_id("control", s)] for s in seeds] if ctx.recipe.model.student.control else []
        students = [job_result(ctx, u) for u in s_units]
        controls = [job_result(ctx, u) for u in c_units]
        s_dirs = [ctx.store.path(u.folder) / Path(str(r.get("model") or "final")).name for u, r in zip(s_units, students)]
        c_dirs = [ctx.store.path(u.folder) / Path(str(r.get("model") or "final")).name for u, r in zip(c_units, controls)]
        # Dev figures from the kept models' dev outputs: the jobs' own metrics are those of the selection split.
        precision = v.config["training"]["precision"]
        for d in s_dirs + c_dirs:
            if d not in predicted:
                predicted[d] = dev_outputs(ctx, d, precision)
        shared = next((n for n, pv in per_variant.items() if c_dirs and pv["control_dirs"] == c_dirs), v.name)
        per_variant[v.name] = {"seeds": seeds, "dirs": s_dirs, "students": [predicted[d] for d in s_dirs],
                               "control_dirs": c_dirs, "control_of": shared,
                               "controls": [predicted[d] for d in c_dirs],
                               "train_seconds": {"students": [r["train_seconds"] for r in students],
                                                 "controls": [r["train_seconds"] for r in controls]}}
    if variants:  # the first variant is the run's student: the headline table and comparison
        first = per_variant[variants[0].name]
        student_outputs, control_outputs, student_dirs = first["students"], first["controls"], first["dirs"]
        out["seeds"] = first["seeds"]
        out["train_seconds"] = first["train_seconds"]
        out["students"] = [_metrics_of(ctx, o) for o in student_outputs]
        out["controls"] = [_metrics_of(ctx, o) for o in control_outputs]
    out["comparison"] = comparison_block(ctx, out["teacher_names"], teacher_outputs, ensemble, student_outputs,
                                         control_outputs, out["seeds"], score_tasks)
    transfer = {n: tb.transfer_info for n, tb in ctx.tasks.items() if tb.transfer_info}
    if transfer:
        out["transfer"] = transfer
        if out["comparison"].get("sentence"):  # what the control never saw belongs in the sentence people quote
            out["comparison"]["sentence"] += " " + transfer_sentence(transfer)
    if has_variants(ctx.recipe):
        out["variants"] = {}
        for i, v in enumerate(variants):
            pv = per_variant[v.name]
            if i == 0:  # the main comparison's, less what involves the ensemble (other variants have none)
                main = out["comparison"]
                comp = {k: main[k] for k in ("method", "student_vs_control", "seed_spread", "sentence") if k in main}
                if "student_vs_control" in main.get("calibration_deltas", {}):
                    comp["calibration_deltas"] = {"student_vs_control": main["calibration_deltas"]["student_vs_control"]}
            else:
                comp = comparison_block(ctx, [], [], {}, pv["students"], pv["controls"], pv["seeds"], score_tasks)
            if pv["control_of"] != v.name and pv["students"]:
                # Variants that share a control differ only in the soft objective: this one's students against
                # the other's, paired by seed, is that objective's own effect (the same bootstrap).
                other = per_variant[pv["control_of"]]
                vs = comparison_block(ctx, [], [], {}, pv["students"], other["students"], pv["seeds"], score_tasks)
                comp["student_vs_variant"] = {"variant": pv["control_of"], **vs["student_vs_control"]}
                if "student_vs_control" in vs.get("calibration_deltas", {}):
                    comp.setdefault("calibration_deltas", {})["student_vs_variant"] = \
                        vs["calibration_deltas"]["student_vs_control"]
            out["variants"][v.name] = {
                "students": [_metrics_of(ctx, o) for o in pv["students"]],
                "controls": [_metrics_of(ctx, o) for o in pv["controls"]],
                "train_seconds": pv["train_seconds"], "comparison": comp,
                "control_of": pv["control_of"],  # the variant whose control models these are (shared by key)
                "parameters": parameter_count(ctx, pv["dirs"][0])}
    out["jobs"] = {}
    for u in inputs.values():
        rel = ctx.store.rel(ctx.store.path(u.folder)) if u.folder else None
        if rel and u.stage in ("teachers", "student", "control") and rel not in out["jobs"].values():
            out["jobs"][u.label or u.id] = rel  # a control that variants share: once, by its first label
    out["selection"] = selection_info(ctx)
    for key, block in (("search", evaluation_block(ctx, inputs)), ("budget", training_budget(ctx, inputs))):
        if block:
            out[key] = block
    out["teacher_train_seconds"] = [job_result(ctx, t)["train_seconds"] if t.folder_prefix else None
                                    for t in teachers]
    if ctx.recipe.model.evaluation.serving and ctx.main and members and student_dirs:
        from ..scores import task_score

        name = next(n for n, tb in ctx.tasks.items() if tb.evals)
        scores = {"student": task_score(out["students"][0][name]) if name in out["students"][0] else None,
                  "ensemble": task_score(out["ensemble"][name]) if name in out["ensemble"] else None}
        # One benchmark per architecture: variants that differ only in training or objective cost the same, and
        # timing them apart would let measurement noise rank them on the frontier.
        arch = {v.name: content_hash({k: v.config[k] for k in ("encoder", "heads")}) for v in variants}
        first_of = {}
        for v in variants:
            first_of.setdefault(arch[v.name], v.name)
        out["serving"] = measure_serving(ctx, [teacher_model_dir(ctx, t) for t in teachers], student_dirs[0],
                                         {n: per_variant[n]["dirs"][0] for n in first_of.values()
                                          if n != variants[0].name} if "variants" in out else None, scores=scores)
        if "variants" in out:
            measured = {variants[0].name: out["serving"]["student"], **out["serving"].pop("others")}
            out["serving"]["variants"] = {v.name: measured[first_of[arch[v.name]]] for v in variants}
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "evaluation.json.tmp"
        tmp.write_text(json.dumps(out, indent=2), encoding="utf-8")
        tmp.replace(out_dir / "evaluation.json")
    return {}


def parameter_count(ctx: RunContext, model_dir: Path) -> int:
    from ..model import count_parameters, load_model, recipe_allows_code

    return int(count_parameters(load_model(model_dir, allow_code=recipe_allows_code(ctx.recipe))))


def measure_serving(ctx: RunContext, teacher_dirs: list[Path], student_dir: Path,
                    others: dict[str, Path] | None = None, scores: dict | None = None) -> dict:
    """Parameters, size on disk, throughput and latency (p50/p95) of the K-member ensemble against the student
    (and ``others``: more student variants by name, under ``"others"``), eager and, for the student, in each
    other format of ``evaluation.serving_formats``; ``scores``: dev scores of the ensemble and student (x100)."""
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
    if others is not None:
        out["others"] = {n: bench([d]) for n, d in others.items()}
    # apart from the rows: a variant's row may be shared by variants of one architecture, its score is not
    out["dev_scores"] = {who: v for who, v in (scores or {}).items() if v is not None}
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


def build_metrics(ev: dict, score_tasks: list[str] | None = None) -> dict:
    """metrics.json: per task and GLUE-style score (the mean over ``score_tasks``, default all) for teachers,
    ensemble, student(s) and control(s); with student variants, each variant and the frontier."""
    def glue_score(per_task: dict) -> float:
        return _glue_score({t: m for t, m in per_task.items() if score_tasks is None or t in score_tasks})

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
    if score_tasks is not None:
        out["score_tasks"] = [t for t in score_tasks if t in tasks]
    if ev.get("variants"):
        from .variants import variant_metrics

        out["variants"], out["frontier"] = variant_metrics(ev, glue_score)
    for key in ("comparison", "selection", "transfer", "search", "budget"):
        if ev.get(key):
            out[key] = ev[key]
    if "serving" in ev:
        out["serving"] = ev["serving"]
    out["timings"] = ev.get("timings", {})
    return out


def transfer_sentence(transfer: dict) -> str:
    """What the student learned from besides the labelled rows (``tasks[].transfer_split``)."""
    total = sum(t["rows"] for t in transfer.values())
    each = ", ".join(f"{n} {t['rows']:,} from its {t['split']} split" for n, t in transfer.items())
    return (f"The student also learned the teachers' outputs on {total:,} unlabelled inputs ({each}); the control "
            "trained on the labelled rows alone.")


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
    metrics = build_metrics(ev, ctx.recipe.score_tasks())
    metrics["recipe_hash"] = ctx.recipe.hash
    metrics["compute"] = stage_compute(ctx, ctx.units.values())
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
        from ..report import frontier_rows, report_rows

        folder = store.path(unit.folder)
        plots = {p.stem: p for pattern in ("*.png", "plots/*.png") for p in sorted(folder.glob(pattern))}
        report_run(ctx.run_dir, recipe_hash=ctx.recipe.hash,
                   group=ctx.recipe.resolved["logging"]["group"] or ctx.recipe.model.name,
                   config={"recipe": ctx.recipe.resolved, "recipe_hash": ctx.recipe.hash}, loggers=lg,
                   scores=metrics["score"], table=report_rows(metrics), plots=plots,
                   tables={"frontier": frontier_rows(metrics)} if metrics.get("frontier") else None)
    Console().print(f"[dim]report: {store.path(unit.folder, 'report.md')}  metrics: {store.path('metrics.json')}[/]",
                    highlight=False)
