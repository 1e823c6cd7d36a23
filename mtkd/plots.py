"""The run's pictures (PNG through matplotlib's Agg canvas: no display, no pyplot state).

Every function takes what the run already wrote (``metrics.json``'s content, job folders) and an
output folder, writes its PNG(s) atomically and returns their paths; one with nothing to draw
returns ``[]``. ``report.md`` links the files; trackers log them as images.

- :func:`plot_scores`: per task (and the GLUE-style score) each teacher, the ensemble, the control and
  the student, the last two as the mean over seeds with a ±1 std error bar and every seed as a dot.
- :func:`plot_deltas`: student − control and student − ensemble per task with their bootstrap
  intervals (from ``metrics["comparison"]``, see ``mtkd.stats``); per student variant, its GLUE-style
  student − control (``metrics["frontier"]``).
- :func:`plot_serving_cost`: quality against parameters and against examples/s, one point per model (per
  student variant: its student and control, and the variants' Pareto frontier as a line).
- :func:`plot_learning_curves`: training loss and dev score over steps, one line per job.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .scores import task_score

ROLE_COLOURS = {"teacher": "#8c8c8c", "ensemble": "#1f77b4", "control": "#ff7f0e", "student": "#2ca02c"}


def _figure(**kwargs):
    """A figure on the Agg canvas, outside pyplot: no window, no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write the figure to ``path`` through a temporary file, so a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


# ---------------------------------------------------------------- scores per task


def score_groups(metrics: dict) -> dict[str, list[tuple[str, str, list[float]]]]:
    """Per task (and ``GLUE-style``): ``[(label, role, values)]`` with one value per seed or model."""
    names = metrics.get("teacher_names") or []
    out: dict = {}
    for task, e in metrics.get("tasks", {}).items():
        bars = []
        for i, t in enumerate(e.get("teachers", [])):
            if t:
                bars.append((names[i] if i < len(names) else f"teacher {i}", "teacher", [task_score(t)]))
        if e.get("ensemble"):
            bars.append(("ensemble", "ensemble", [task_score(e["ensemble"])]))
        variants = metrics.get("variants") or {}
        for name, v in variants.items() or [(None, {"tasks": {task: e}})]:
            for role, key in (("control", "controls"), ("student", "students")):
                if role == "control" and v.get("control_of", name) != name:
                    continue  # a control shared with an earlier variant: drawn once
                values = _finite(task_score(r) for r in v["tasks"].get(task, {}).get(key, []) if r)
                if values:
                    bars.append((role if name is None else f"{role} {name}", role, values))
        if bars:
            out[task] = bars
    s = metrics.get("score", {})
    bars = [(names[i] if i < len(names) else f"teacher {i}", "teacher", [v]) for i, v in enumerate(s.get("teachers", []))]
    if "ensemble" in s:
        bars.append(("ensemble", "ensemble", [s["ensemble"]]))
    for name, v in (metrics.get("variants") or {}).items() or [(None, {"score": s})]:
        for role in ("control", "student"):
            if v["score"].get(f"{role}s") and (role == "student" or v.get("control_of", name) == name):
                bars.append((role if name is None else f"{role} {name}", role, _finite(v["score"][f"{role}s"])))
    if bars:
        out["GLUE-style"] = bars
    return out


def plot_scores(metrics: dict, out_dir, name: str = "scores.png") -> list[Path]:
    """One panel per task: teachers, ensemble, control and student (mean ± std over seeds, seeds as dots)."""
    groups = score_groups(metrics)
    if not groups:
        return []
    rows, cols = _grid(len(groups))
    fig = _figure(figsize=(3.4 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (task, bars) in zip(axes.flat, groups.items()):
        for x, (_label, role, values) in enumerate(bars):
            values = _finite(values)
            if not values:
                continue
            mean = float(np.mean(values))
            err = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ax.bar(x, mean, color=ROLE_COLOURS[role], yerr=err if len(values) > 1 else None, capsize=3)
            if len(values) > 1:
                ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=45, ha="right", fontsize=7)
        low = min(min(_finite(b[2]), default=0.0) for b in bars)
        high = max(max(_finite(b[2]), default=0.0) for b in bars)
        pad = max(1.0, 0.15 * (high - low))
        ax.set_ylim(min(0.0, low - pad) if low < 0 else max(0.0, low - pad), high + pad)
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("dev score (x100); control and student: mean ± std over seeds, dots = seeds", fontsize=9)
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / name)]


# ---------------------------------------------------------------- deltas with intervals


def plot_deltas(metrics: dict, out_dir, name: str = "deltas.png") -> list[Path]:
    """Student − control and student − ensemble per task and overall, with their 95 % intervals; with student
    variants, a panel of each variant's GLUE-style student − control."""
    comp = metrics.get("comparison") or {}
    panels = []
    for key in ("student_vs_control", "student_vs_ensemble"):
        block = comp.get(key)
        if block:
            rows = list(block["tasks"].items()) + ([("GLUE-style", block["score"])] if "score" in block else [])
            panels.append((f"student − {key.split('_vs_')[1]} (95 % paired bootstrap)", rows))
    variants = [(r["variant"], r["student_minus_control"]) for r in (metrics.get("frontier") or {}).get("variants", [])
                if r.get("student_minus_control")]
    if variants:
        panels.append(("GLUE-style student − control per variant", variants))
    if not panels:
        return []
    fig = _figure(figsize=(4.2 * len(panels), 0.45 * (max(len(rows) for _, rows in panels) + 1) + 1))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels):
        for y, (_label, d) in enumerate(rows):
            lo, hi = d["low"], d["high"]
            excludes = (lo > 0 or hi < 0) if not (math.isnan(lo) or math.isnan(hi)) else False
            colour = ROLE_COLOURS["student"] if excludes else "#555555"
            ax.errorbar(d["delta"], y, xerr=[[max(0.0, d["delta"] - lo)], [max(0.0, hi - d["delta"])]],
                        fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("points (x100)")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / name)]


# ---------------------------------------------------------------- quality against serving cost


def cost_points(metrics: dict) -> list[dict]:
    """``[{name, score, parameters, examples_per_s}]`` for every model whose serving cost was measured.

    ``serving`` holds ``{who: {"parameters", "batch_<n>": {"examples_per_s"}}}`` per model; the control
    has the student's architecture, so it is placed at the student's cost.
    """
    serving = metrics.get("serving") or {}
    score = metrics.get("score") or {}
    names = metrics.get("teacher_names") or []
    measured = {k: v for k, v in serving.items() if isinstance(v, dict) and "parameters" in v}
    quality = {"ensemble": score.get("ensemble"), "student": score.get("student"), "control": score.get("control")}
    for i, v in enumerate(score.get("teachers", [])):
        quality[names[i] if i < len(names) else f"teacher-{i}"] = v
    if "student" in measured and "control" not in measured and score.get("control") is not None:
        measured["control"] = measured["student"]
    variants = metrics.get("variants") or {}
    if variants:  # every variant's student and control (the first is the plain student: not drawn twice)
        measured.pop("student", None)
        measured.pop("control", None)
        for name, v in variants.items():
            if v.get("serving"):
                for role in ("student", "control"):
                    if v["score"].get(role) is not None and (role == "student" or v.get("control_of", name) == name):
                        sharing = [n for n, o in variants.items() if n != name and o.get("control_of") == name]
                        label = f"{role}:{name}" + (f" (= {', '.join(sharing)})" if role == "control" and sharing
                                                    else "")
                        measured[label] = v["serving"]
                        quality[label] = v["score"][role]
    points = []
    for who, cost in measured.items():
        q = quality.get(who)
        if q is None or (isinstance(q, float) and math.isnan(q)):
            continue
        batches = sorted((int(k.split("_")[1]), v) for k, v in cost.items() if k.startswith("batch_"))
        speed = batches[-1][1]["examples_per_s"] if batches else None
        points.append({"name": who, "score": float(q), "parameters": int(cost["parameters"]),
                       "examples_per_s": speed, "batch_size": batches[-1][0] if batches else None})
    return points


def _role(name: str) -> str:
    role = name.split(":")[0]  # student:VARIANT, control:VARIANT
    return role if role in ROLE_COLOURS else "teacher"


def plot_serving_cost(metrics: dict, out_dir, name: str = "quality_vs_cost.png") -> list[Path]:
    """GLUE-style score against parameters (log scale) and against examples/s at the largest batch."""
    points = cost_points(metrics)
    if not points:
        return []
    fig = _figure(figsize=(8.5, 3.4))
    left, right = fig.subplots(1, 2)
    for p in points:
        colour = ROLE_COLOURS[_role(p["name"])]
        marker = "x" if _role(p["name"]) == "control" else "o"  # a control sits at its student's cost
        left.scatter(p["parameters"], p["score"], color=colour, s=30, marker=marker)
        left.annotate(p["name"], (p["parameters"], p["score"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if p["examples_per_s"]:
            right.scatter(p["examples_per_s"], p["score"], color=colour, s=30, marker=marker)
            right.annotate(p["name"], (p["examples_per_s"], p["score"]), fontsize=7, xytext=(4, 3),
                           textcoords="offset points")
    frontier = metrics.get("frontier") or {}
    on = [p for p in points if p["name"] in {f"student:{r['variant']}" for r in frontier.get("variants", [])
                                               if r["pareto"]}]
    if len(on) > 1:  # the variants' quality/speed frontier, in the panel of the cost it was chosen on
        ax, key = (right, "examples_per_s") if frontier["axis"] == "examples_per_s" else (left, "parameters")
        on = sorted(on, key=lambda p: p[key])
        ax.plot([p[key] for p in on], [p["score"] for p in on], color=ROLE_COLOURS["student"], lw=1, ls="--",
                label="Pareto frontier (student variants)")
        ax.legend(fontsize=7, loc="lower left")
    left.set_xscale("log")
    left.set_xlabel("parameters (all members for the ensemble)")
    left.set_ylabel("GLUE-style dev score")
    batch = next((p["batch_size"] for p in points if p["batch_size"]), None)
    right.set_xlabel(f"examples/s (batch {batch})" if batch else "examples/s")
    fig.suptitle("quality against serving cost", fontsize=9)
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / name)]


# ---------------------------------------------------------------- learning curves


def normalise_key(key: str) -> str | None:
    """A metrics.jsonl key as ``train/<name>``, ``dev/score`` or ``dev/<task>/<metric>`` (``holdout/...`` when
    the jobs chose their checkpoints on a holdout).

    Accepts the current keys and older files' job-prefixed ones (``student-s1/train/loss``,
    ``teacher-0/rte/accuracy``, ``teacher-0/dev/score``); ``time``/``step`` are not metrics.
    """
    parts = key.split("/")
    if key in ("time", "step") or len(parts) < 2:
        return None
    if parts[0] not in ("train", "dev", "holdout") and len(parts) == 3:
        parts = parts[1:]  # the job name an older tracker put first
    if parts[0] in ("train", "dev", "holdout"):
        return "/".join(parts)
    if len(parts) == 2:
        return f"dev/{parts[0]}/{parts[1]}"
    return None


def read_curves(metrics_file) -> dict[str, list[tuple[int, float]]]:
    """``{normalised key: [(step, value)]}`` from one job's metrics.jsonl (a torn last line is skipped)."""
    curves: dict[str, dict[int, float]] = {}
    path = Path(metrics_file)
    if not path.is_file():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if not isinstance(record, dict) or "step" not in record:
            continue
        for key, value in record.items():
            norm = normalise_key(key)
            if norm is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if math.isfinite(value):
                curves.setdefault(norm, {})[int(record["step"])] = float(value)  # a re-logged step: the last
    return {k: sorted(v.items()) for k, v in curves.items()}


def _job_role(name: str) -> str:
    for role in ("student", "control", "teacher"):
        if role in name:
            return role
    return "teacher"


def plot_learning_curves(jobs, out_dir, name: str = "learning_curves.png") -> list[Path]:
    """Training loss and dev score against the optimizer step, one line per job.

    ``jobs`` maps a label to a job folder (holding ``metrics.jsonl``), or is a list of job folders
    (labelled by their last two path parts, e.g. ``students/…/seed-1`` -> ``<hash>/seed-1``).
    """
    if not isinstance(jobs, dict):
        jobs = {"/".join(Path(j).parts[-2:]): j for j in jobs}
    curves = {label: read_curves(Path(folder) / "metrics.jsonl") for label, folder in jobs.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return []
    fig = _figure(figsize=(9, 3.6))
    loss_ax, dev_ax = fig.subplots(1, 2)
    styles = {"teacher": ":", "control": "--", "student": "-"}
    chosen_on = "dev"
    for label, c in curves.items():
        role = _job_role(label)
        kwargs = {"color": ROLE_COLOURS[role], "ls": styles[role], "lw": 1, "label": label}
        if "train/loss" in c:
            steps, values = zip(*c["train/loss"])
            loss_ax.plot(steps, values, **kwargs)
        score = "dev/score" if "dev/score" in c else "holdout/score"  # the split that chose the checkpoint
        if score in c:
            steps, values = zip(*c[score])
            dev_ax.plot(steps, values, marker="o", ms=3, **kwargs)
            chosen_on = score.split("/")[0]
    loss_ax.set_title("train/loss", fontsize=9)
    dev_ax.set_title(f"{chosen_on}/score (GLUE-style, x100): the split that chose the checkpoints", fontsize=9)
    for ax in (loss_ax, dev_ax):
        ax.set_xlabel("step")
    handles, labels = loss_ax.get_legend_handles_labels()
    if not handles:
        handles, labels = dev_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)), fontsize=7)
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / name)]


def plot_run(metrics: dict, jobs, out_dir) -> list[Path]:
    """Every picture of a run: scores, deltas, quality against cost, learning curves."""
    return [*plot_scores(metrics, out_dir), *plot_deltas(metrics, out_dir), *plot_serving_cost(metrics, out_dir),
            *plot_learning_curves(jobs, out_dir)]
