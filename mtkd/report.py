"""Evaluation and the report: teachers, their ensemble, the student and the control, side by side.

``evaluation.json`` (the evaluate stage) holds the raw figures; ``metrics.json`` and
``report.md`` (the report stage) are derived from it, so re-running a finished recipe only
re-renders the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .scores import glue_score, mean_std, task_score
from .training import to_predictions, write_json_atomic


def _mean_metrics(runs: list[dict]) -> dict:
    """Per-task metric means over several runs (student seeds)."""
    out: dict = {}
    for task in runs[0] if runs else {}:
        out[task] = {m: float(np.mean([r[task][m] for r in runs])) for m in runs[0][task]}
    return out


def _result_metrics(result: dict) -> dict:
    """The dev metrics of the model a job kept (its best evaluation)."""
    return result.get("metrics") or {}


def stage_evaluate(ctx, members, students) -> dict:
    from .pipeline import aggregate, data_hash, member_logits, student_seeds
    from .recipe import content_hash

    state = ctx.state
    # The same recipe and the same trained models: the figures (serving cost included) are reused.
    inputs = content_hash({"recipe": ctx.recipe.hash, "data": data_hash(ctx), "students": students,
                           "members": [m.result or str(m.model_dir) for m in members]})
    path = ctx.run_dir / "evaluation.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("inputs") == inputs:
            return previous
    evaluated = {n: tb for n, tb in ctx.tasks.items() if tb.evals}
    out: dict = {"recipe_hash": ctx.recipe.hash, "inputs": inputs, "teachers": [],
                 "teacher_names": [m.name for m in members], "ensemble": {}, "students": [],
                 "controls": [], "seeds": [], "timings": dict(ctx.timings)}
    for m in members:
        per_task = {}
        for name, tb in evaluated.items():
            preds = {s: to_predictions(member_logits(ctx, m, name, s), tb.task.task_type) for s in tb.evals}
            labels = {s: np.asarray(d["label"]) for s, d in tb.evals.items()}
            per_task[name] = tb.task.compute_metrics(preds, labels)
        out["teachers"].append(per_task)
    if members:
        for name, tb in evaluated.items():
            preds = {}
            for s in tb.evals:
                targets = aggregate(ctx, members, name, s)
                preds[s] = to_predictions(targets, tb.task.task_type)
            labels = {s: np.asarray(d["label"]) for s, d in tb.evals.items()}
            out["ensemble"][name] = tb.task.compute_metrics(preds, labels)
    if ctx.recipe.model.student is not None:
        out["students"] = [_result_metrics(r) for r in students["students"]]
        out["controls"] = [_result_metrics(r) for r in students["controls"]]
        out["seeds"] = student_seeds(ctx)
        out["student_models"] = [r["model"] for r in students["students"]]
        out["train_seconds"] = {"students": [r["train_seconds"] for r in students["students"]],
                                "controls": [r["train_seconds"] for r in students["controls"]]}
    out["teacher_train_seconds"] = [m.result["train_seconds"] if m.result else None for m in members]
    if ctx.recipe.model.evaluation.serving and state.is_main_process and members and out.get("student_models"):
        out["serving"] = measure_serving(ctx, [m.model_dir for m in members], Path(out["student_models"][0]))
    if state.is_main_process:
        write_json_atomic(path, out)
    state.wait_for_everyone()
    return out


# ---------------------------------------------------------------- serving cost


def measure_serving(ctx, teacher_dirs: list[Path], student_dir: Path) -> dict:
    """Parameters, throughput and latency (p50/p95) of the K-member ensemble against the student."""
    from .data import eval_batches, tokenize_split
    from .inference import MODEL_INPUTS, autocast
    from .model import count_parameters, load_model

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


# ---------------------------------------------------------------- report


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


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    m, s = mean_std(values)
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {s:.2f}"


def report_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Rows of the comparison table: one per task (its score) and the GLUE-style score."""
    k = len(metrics["teacher_names"])
    header = ["task"] + [f"T{i}" for i in range(k)] + (["teachers"] if k else [])
    any_task = next(iter(metrics["tasks"].values()), {})
    if "ensemble" in any_task:
        header.append("ensemble")
    if "control" in any_task:
        header.append("control")
    if "student" in any_task:
        header.append("student")
    rows = []
    for task, e in metrics["tasks"].items():
        ts = [task_score(t) for t in e["teachers"] if t]
        row = [task] + [f"{v:.2f}" for v in ts] + ([_fmt(ts)] if k else [])
        if "ensemble" in any_task:
            row.append(f"{task_score(e['ensemble']):.2f}" if e.get("ensemble") else "—")
        if "control" in any_task:
            row.append(_fmt([task_score(c) for c in e.get("controls", []) if c]))
        if "student" in any_task:
            row.append(_fmt([task_score(c) for c in e.get("students", []) if c]))
        rows.append(row)
    s = metrics["score"]
    row = ["GLUE-style"] + [f"{v:.2f}" for v in s.get("teachers", [])] + ([_fmt(s["teachers"])] if k else [])
    if "ensemble" in any_task:
        row.append(f"{s['ensemble']:.2f}")
    if "control" in any_task:
        row.append(_fmt(s.get("controls", [])))
    if "student" in any_task:
        row.append(_fmt(s.get("students", [])))
    rows.append(row)
    return header, rows


def _detail_rows(metrics: dict) -> list[str]:
    lines = ["| task | metric | teachers | ensemble | control | student |", "|---|---|---|---|---|---|"]
    for task, e in metrics["tasks"].items():
        names = next((list(x) for x in [e.get("ensemble"), e.get("student")] + e["teachers"] if x), [])
        for metric in names:
            teachers = ", ".join(f"{t[metric]:.2f}" for t in e["teachers"] if metric in t) or "—"
            ens = f"{e['ensemble'][metric]:.2f}" if e.get("ensemble") else "—"
            ctl = _fmt([c[metric] for c in e.get("controls", []) if metric in c])
            stu = _fmt([c[metric] for c in e.get("students", []) if metric in c])
            lines.append(f"| {task} | {metric} | {teachers} | {ens} | {ctl} | {stu} |")
    return lines


def render_markdown(metrics: dict, recipe_name: str, recipe_hash: str) -> str:
    header, rows = report_rows(metrics)
    lines = [f"# mtkd report: {recipe_name}", "", f"Recipe hash `{recipe_hash}`. Scores on the leaderboard's x100 "
             "scale; a task's score is the mean of its metrics. T0… are the teachers, `teachers` their mean ± std; "
             "`ensemble` aggregates them as the soft targets do; `control` is the student's exact set-up trained on hard "
             "labels only; `student` is distilled (± over seeds).",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Every metric", ""] + _detail_rows(metrics)
    serving = metrics.get("serving")
    if serving:
        lines += ["", f"## Serving cost ({serving['task']} {serving['split']}, {serving['examples']} examples)", "",
                  "| model | parameters | " + " | ".join(
                      f"batch {k.split('_')[1]}: ex/s, p50 ms, p95 ms" for k in serving["student"] if k.startswith("batch_"))
                  + " |", "|---|---|" + "---|" * sum(1 for k in serving["student"] if k.startswith("batch_"))]
        for who in ("ensemble", "student"):
            s = serving[who]
            cells = [f"{v['examples_per_s']:.1f}, {v['p50_ms']:.1f}, {v['p95_ms']:.1f}" for k, v in s.items()
                     if k.startswith("batch_")]
            label = f"ensemble ({s['members']} members)" if who == "ensemble" else "student"
            lines.append(f"| {label} | {s['parameters']:,} | " + " | ".join(cells) + " |")
    if metrics.get("timings"):
        lines += ["", "## Wall time per stage (the run that evaluated; stages it reused take ~0 s)", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in metrics["timings"].items()]
    return "\n".join(lines) + "\n"


def stage_report(ctx) -> dict:
    from rich.table import Table

    from .tracking import report_run

    ev = json.loads((ctx.run_dir / "evaluation.json").read_text())
    metrics = build_metrics(ev)
    metrics["recipe_hash"] = ctx.recipe.hash
    if ctx.state.is_main_process:
        write_json_atomic(ctx.run_dir / "metrics.json", metrics)
        md = render_markdown(metrics, ctx.recipe.model.name, ctx.recipe.hash)
        tmp = ctx.run_dir / "report.md.tmp"
        tmp.write_text(md, encoding="utf-8")
        tmp.replace(ctx.run_dir / "report.md")
        header, rows = report_rows(metrics)
        table = Table(title=f"{ctx.recipe.model.name}: dev scores (x100)",
                      caption="control = same set-up on hard labels only; student = distilled; ± over members/seeds")
        for h in header:
            table.add_column(h, justify="left" if h == "task" else "right")
        for r in rows:
            table.add_row(*r)
        from rich.console import Console

        Console().print(table)
        serving = metrics.get("serving")
        if serving:
            e, s = serving["ensemble"], serving["student"]
            bs = max(int(k.split("_")[1]) for k in s if k.startswith("batch_"))
            Console().print(f"serving: ensemble {e['parameters']:,} params, student {s['parameters']:,}; "
                            f"batch {bs}: {e[f'batch_{bs}']['examples_per_s']:.1f} vs "
                            f"{s[f'batch_{bs}']['examples_per_s']:.1f} examples/s", highlight=False)
        from .pipeline import _loggers

        loggers = _loggers(ctx)
        plots = {p.stem: p for pattern in ("*.png", "plots/*.png") for p in sorted(ctx.run_dir.glob(pattern))}
        report_run(ctx.run_dir, recipe_hash=ctx.recipe.hash,
                   group=ctx.recipe.resolved["logging"]["group"] or ctx.recipe.model.name,
                   config={"recipe": ctx.recipe.resolved, "recipe_hash": ctx.recipe.hash}, loggers=loggers,
                   scores=metrics["score"], table=(header, rows), plots=plots)
        Console().print(f"[dim]report: {ctx.run_dir / 'report.md'}  metrics: {ctx.run_dir / 'metrics.json'}[/]")
    return metrics
