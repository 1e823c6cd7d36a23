"""The report of a run: a metrics dictionary (``metrics.json``) rendered as markdown or a rich table.

Rendering only: the figures come from the evaluate stage (``mtkd.stages.evaluate.build_metrics``).
"""

from __future__ import annotations

from .scores import mean_std, task_score


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


def rich_table(metrics: dict, recipe_name: str):
    from rich.table import Table

    header, rows = report_rows(metrics)
    table = Table(title=f"{recipe_name}: dev scores (x100)",
                  caption="control = same set-up on hard labels only; student = distilled; ± over members/seeds")
    for h in header:
        table.add_column(h, justify="left" if h == "task" else "right")
    for r in rows:
        table.add_row(*r)
    return table


def print_report(metrics: dict, recipe_name: str, console) -> None:
    """The table, and the serving cost in one line, on ``console``."""
    console.print(rich_table(metrics, recipe_name))
    serving = metrics.get("serving")
    if serving:
        e, s = serving["ensemble"], serving["student"]
        bs = max(int(k.split("_")[1]) for k in s if k.startswith("batch_"))
        console.print(f"serving: ensemble {e['parameters']:,} params, student {s['parameters']:,}; "
                      f"batch {bs}: {e[f'batch_{bs}']['examples_per_s']:.1f} vs "
                      f"{s[f'batch_{bs}']['examples_per_s']:.1f} examples/s", highlight=False)
