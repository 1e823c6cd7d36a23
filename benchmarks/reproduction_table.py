"""Print the reproduction tables of docs/results.md from runs' metrics.json files.

    python benchmarks/reproduction_table.py A=runs/minilm-glue-kd-A/metrics-A.json B=runs/.../metrics.json
    python benchmarks/reproduction_table.py --summary A=... B=...

Per task (its score: the mean of its metrics) and GLUE-style score: each teacher, their mean ± std, the
ensemble, the hard-label control and the distilled student (mean ± std over seeds), then every metric.
``--summary``: one row per run (GLUE-style scores, and student − control per task); with ``--exclude TASK``
also the GLUE-style scores recomputed without that task (e.g. WNLI, whose dev set has 71 examples).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mtkd.scores import mean_std, task_score


def fmt(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f}" if len(values) == 1 else f"{m:.2f} ± {s:.2f}"


def table(label: str, metrics: dict) -> str:
    names = metrics["teacher_names"]
    head = ["task", *names, "teachers", "ensemble", "control", "student", "student − control"]
    lines = [f"### {label}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, e in metrics["tasks"].items():
        t = [task_score(x) for x in e["teachers"]]
        c = [task_score(x) for x in e.get("controls", [])]
        s = [task_score(x) for x in e.get("students", [])]
        diff = mean_std(s)[0] - mean_std(c)[0] if c and s else float("nan")
        lines.append("| " + " | ".join([task, *(f"{v:.2f}" for v in t), fmt(t), f"{task_score(e['ensemble']):.2f}",
                                        fmt(c), fmt(s), f"{diff:+.2f}"]) + " |")
    sc = metrics["score"]
    diff = sc["student"] - sc["control"]
    lines.append("| **GLUE-style** | " + " | ".join(f"{v:.2f}" for v in sc["teachers"]) +
                 f" | {fmt(sc['teachers'])} | {sc['ensemble']:.2f} | {fmt(sc['controls'])} | "
                 f"{fmt(sc['students'])} | {diff:+.2f} |")
    lines += ["", "| task | metric | teachers | ensemble | control (per seed) | student (per seed) |",
              "|---|---|---|---|---|---|"]
    for task, e in metrics["tasks"].items():
        for m in e["ensemble"]:
            lines.append(f"| {task} | {m} | " + ", ".join(f"{x[m]:.2f}" for x in e["teachers"]) +
                         f" | {e['ensemble'][m]:.2f} | " + ", ".join(f"{x[m]:.2f}" for x in e["controls"]) +
                         " | " + ", ".join(f"{x[m]:.2f}" for x in e["students"]) + " |")
    serving = metrics.get("serving")
    if serving:
        lines += ["", f"Serving ({serving['task']} {serving['split']}, {serving['examples']} examples):", "",
                  "| model | parameters | batch 1 ex/s (p50 / p95 ms) | batch 32 ex/s (p50 / p95 ms) |",
                  "|---|---|---|---|"]
        for who in ("ensemble", "student"):
            r = serving[who]
            cells = [f"{r[k]['examples_per_s']:.1f} ({r[k]['p50_ms']:.1f} / {r[k]['p95_ms']:.1f})"
                     for k in ("batch_1", "batch_32") if k in r]
            lines.append(f"| {who} | {r['parameters']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(runs: list[tuple[str, dict]]) -> str:
    tasks = list(dict.fromkeys(t for _, m in runs for t in m["tasks"]))
    head = ["run", "teachers", "ensemble", "control", "student", "student − control",
            *(f"{t} Δ" for t in tasks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, m in runs:
        sc = m["score"]
        deltas = []
        for t in tasks:
            e = m["tasks"].get(t, {})
            c = [task_score(x) for x in e.get("controls", [])]
            s = [task_score(x) for x in e.get("students", [])]
            deltas.append(f"{mean_std(s)[0] - mean_std(c)[0]:+.2f}" if c and s else "")
        lines.append(f"| {label} | {fmt(sc['teachers'])} | {sc['ensemble']:.2f} | {fmt(sc['controls'])} | "
                     f"{fmt(sc['students'])} | {sc['student'] - sc['control']:+.2f} | " + " | ".join(deltas) + " |")
    return "\n".join(lines) + "\n"


def without(metrics: dict, excluded: set[str]) -> dict:
    """``metrics`` with the excluded tasks dropped and the GLUE-style scores recomputed per model and seed."""
    tasks = {t: e for t, e in metrics["tasks"].items() if t not in excluded}

    def scores(key: str) -> list[float]:
        n = len(next(iter(tasks.values()))[key])
        return [sum(task_score(e[key][i]) for e in tasks.values()) / len(tasks) for i in range(n)]

    score = {"teachers": scores("teachers"), "controls": scores("controls"), "students": scores("students"),
             "ensemble": sum(task_score(e["ensemble"]) for e in tasks.values()) / len(tasks)}
    score["control"], score["student"] = mean_std(score["controls"])[0], mean_std(score["students"])[0]
    return {**metrics, "tasks": tasks, "score": score}


def main(argv: list[str]) -> None:
    args = list(argv)
    brief = "--summary" in args
    excluded = set()
    while "--exclude" in args:
        i = args.index("--exclude")
        excluded.add(args[i + 1])
        del args[i:i + 2]
    runs = []
    for arg in (a for a in args if a != "--summary"):
        label, _, path = arg.rpartition("=")  # labels may hold "=" (α=0.8), paths rarely do
        runs.append((label, json.loads(Path(path).read_text())))
    if brief:
        print(summary(runs))
        if excluded:
            print(f"Without {', '.join(sorted(excluded))}:\n")
            print(summary([(label, without(m, excluded)) for label, m in runs]))
        return
    for label, metrics in runs:
        print(table(label, metrics))


if __name__ == "__main__":
    main(sys.argv[1:])
