"""The student set-ups of a run: the recipe's one ``student:`` section, or each of ``student.variants``
(a compression sweep) over it.

A variant is a whole student set-up -- encoder, heads, training, the teacher it starts from, the
objective -- trained for every seed of ``student.seeds``, with its own hard-label control. The units
of a variant carry no name in their key: a variant is keyed by what it trains, so a variant identical
to the plain student reuses that student, and two variants that differ only in the soft objective
key (and share) one control, since a control's key holds nothing but what changes the hard-label model.

Addressing (``mtkd predict/evaluate/export --model``): ``student`` / ``control`` is the first
variant (the report's headline student); ``student:NAME`` / ``control:NAME`` a named one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import RecipeError
from ..recipe import Recipe, variation_config


@dataclass(frozen=True)
class Variant:
    """One student set-up; ``name`` None: the recipe has no ``variants`` (ids and labels as before them)."""

    name: str | None
    config: dict  # encoder / heads / training
    objective: dict  # the student's objective, per task type
    init_from_teacher: int | None
    index: int | None = None  # its place in student.variants

    @property
    def path(self) -> str:
        """Where the recipe sets it up (error messages)."""
        return "student" if self.index is None else f"student.variants[{self.index}]"

    def unit_id(self, kind: str, seed: int) -> str:
        return f"{kind}:{seed}" if self.name is None else f"{kind}:{self.name}:{seed}"

    def label(self, kind: str, seed: int) -> str:
        return f"{kind} seed {seed}" if self.name is None else f"{kind} {self.name} seed {seed}"

    def job_name(self, kind: str, seed: int) -> str:
        return f"{kind}-s{seed}" if self.name is None else f"{kind}-{self.name}-s{seed}"


def student_variants(recipe: Recipe) -> list[Variant]:
    """Every student set-up of the recipe, in the recipe's order ([] without a student)."""
    s = recipe.model.student
    if s is None:
        return []
    r = recipe.resolved
    entries = r["student"].get("variants")
    if not entries:
        return [Variant(None, variation_config(recipe, "student"), r["student"]["objective"], s.init_from_teacher)]
    return [Variant(e["name"], variation_config(recipe, e), e["objective"], e["init_from_teacher"], i)
            for i, e in enumerate(entries)]


def has_variants(recipe: Recipe) -> bool:
    return bool(recipe.model.student is not None and recipe.model.student.variants)


def find_variant(recipe: Recipe, name: str | None, *, path: str = "--model") -> Variant:
    """The variant called ``name`` (None: the first, the report's headline student)."""
    variants = student_variants(recipe)
    if name is None:
        return variants[0]
    for v in variants:
        if v.name == name:
            return v
    known = [v.name for v in variants if v.name]
    raise RecipeError(f"the recipe has no student variant {name!r}", file=recipe.file, path=path,
                      expected=f"one of {known}" if known else "no variant name: the recipe lists no "
                      "student.variants (use `student` or `control`)", found=name)


# ---------------------------------------------------------------- the report's frontier


def _mean_metrics(runs: list[dict]) -> dict:
    runs = [r for r in runs if r]
    return {m: float(sum(r[m] for r in runs) / len(runs)) for m in runs[0]} if runs else {}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def dominates(a: dict, b: dict, axis: str) -> bool:
    """``a`` is at least as good as ``b`` in quality and cost, and better in one (higher examples/s or fewer
    parameters)."""
    if not (_finite(a["student"]) and _finite(b["student"])):
        return False
    if axis == "examples_per_s":
        cost_ok, cost_better = a[axis] >= b[axis], a[axis] > b[axis]
    else:
        cost_ok, cost_better = a[axis] <= b[axis], a[axis] < b[axis]
    return a["student"] >= b["student"] and cost_ok and (a["student"] > b["student"] or cost_better)


def _score_interval(comparison: dict, pair: str) -> dict | None:
    """The GLUE-style delta and its interval of one of a variant's comparisons (``student_vs_control``,
    ``student_vs_variant``, which also names the variant), or None where it has none."""
    block = comparison.get(pair) or {}
    if "score" not in block:
        return None
    return {**({"variant": block["variant"]} if "variant" in block else {}),
            **{k: block["score"][k] for k in ("delta", "low", "high")}}


def variant_metrics(ev: dict, glue_score) -> tuple[dict, dict]:
    """metrics.json's ``variants`` (per variant: per-task and GLUE-style scores of its students and
    controls, its parameters, serving cost and student − control comparison) and ``frontier``: per variant
    the figures a deployment choice needs and whether it is on the quality/speed Pareto frontier.

    Speed is the serving benchmark's examples/s at its largest batch when every variant was measured,
    else the parameter count (fewer is cheaper). ``glue_score`` is the headline score over the recipe's
    score tasks.
    """
    from ..scores import mean_std

    serving = (ev.get("serving") or {}).get("variants") or {}
    out: dict = {}
    rows = []
    for name, v in ev["variants"].items():
        tasks = {}
        for task in sorted({t for r in v["students"] + v["controls"] for t in r}):
            entry = {}
            for key, runs in (("student", v["students"]), ("control", v["controls"])):
                if runs:
                    entry[f"{key}s"] = [r.get(task, {}) for r in runs]
                    entry[key] = _mean_metrics(entry[f"{key}s"])
            tasks[task] = entry
        score: dict = {}
        for key, runs in (("student", v["students"]), ("control", v["controls"])):
            if runs:
                score[f"{key}s"] = [glue_score(r) for r in runs]
                score[key], score[f"{key}_std"] = mean_std(score[f"{key}s"])
        cost = serving.get(name)
        out[name] = {"tasks": tasks, "score": score, "parameters": v["parameters"], "serving": cost,
                     "train_seconds": v["train_seconds"], "comparison": v["comparison"],
                     "control_of": v.get("control_of", name)}
        batches = sorted((int(k.split("_")[1]), b) for k, b in (cost or {}).items() if k.startswith("batch_"))
        rows.append({"variant": name, "parameters": v["parameters"],
                     "examples_per_s": batches[-1][1]["examples_per_s"] if batches else None,
                     "batch_size": batches[-1][0] if batches else None,
                     "student": score.get("student"), "student_std": score.get("student_std"),
                     "control": score.get("control"), "control_std": score.get("control_std"),
                     "control_of": v.get("control_of", name),
                     "student_minus_control": _score_interval(v["comparison"], "student_vs_control"),
                     "student_minus_variant": _score_interval(v["comparison"], "student_vs_variant")})
    axis = "examples_per_s" if rows and all(r["examples_per_s"] for r in rows) else "parameters"
    for r in rows:
        r["pareto"] = _finite(r["student"]) and not any(dominates(o, r, axis) for o in rows if o is not r)
    return out, {"axis": axis, "batch_size": rows[0]["batch_size"] if axis == "examples_per_s" else None,
                 "variants": rows}
