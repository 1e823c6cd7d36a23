"""The training-budget search (``student.search``), tried for the student and its control alike.

The grid (lists of values for scalar ``training`` fields) and the trial seeds are the same for both roles, so
each role gets the same number of tried settings and the same training budget to find its best one. Each
setting trains once per trial seed as a unit of the ``student-search`` / ``control-search`` stage (its key: the
role's key with the setting applied and the trial seed), scored on the selection split (the holdout: the recipe
refuses a search chosen on dev). The choice is a cheap function of those scores (the best mean over trial
seeds; a tie goes to the setting listed first), made just before the confirmation units are keyed: a
confirmation (``student.seeds``, disjoint from the trial seeds) trains with the chosen values in its
``config.training``, so its key changes exactly when the choice does. The evaluate stage consumes the trials too,
so the report's table of tried settings is never stale.

Trials keep only ``result.json`` (their kept model is deleted): no later stage uses a trial's weights.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
from pathlib import Path

from ..errors import CheckpointError
from .context import HOLDOUT, RunContext
from .graph import Unit

#: role -> the stage of its trials
TRIAL_STAGES = {"student": "student-search", "control": "control-search"}


def search_spec(ctx: RunContext) -> dict | None:
    """``student.search`` as resolved: ``{FIELD: [values], ..., "seeds": [...]}``, or None."""
    return (ctx.recipe.resolved.get("student") or {}).get("search")


def settings(spec: dict) -> list[dict]:
    """Every setting of the grid, fields in the order written, the last field varying fastest."""
    fields = [k for k in spec if k != "seeds"]
    return [dict(zip(fields, combo)) for combo in itertools.product(*(spec[f] for f in fields))]


def describe(setting: dict) -> str:
    from ..report import describe_setting

    return describe_setting(setting)


def _prefix(unit: Unit) -> str:
    """A role's unit id without its seed (``student:11`` -> ``student``): the family its trials belong to."""
    return unit.id.rsplit(":", 1)[0]


def _trial_id(prefix: str, index: int, seed: int) -> str:
    return f"{prefix}-trial:{index}:{seed}"


def plan_trials(ctx: RunContext, role: str) -> list[Unit]:
    """The trials of ``role``: for every family of its units (today one), every setting times every trial seed."""
    spec = search_spec(ctx)
    if not spec:
        return []
    from .units import _student_units

    out, seen = [], set()
    for base in _student_units(ctx, role):
        prefix = _prefix(base)
        if prefix in seen:
            continue
        seen.add(prefix)
        for i, setting in enumerate(settings(spec)):
            for seed in spec["seeds"]:
                fields = copy.deepcopy(base.fields)
                fields["config"]["training"].update(setting)
                fields["seed"] = seed
                # the role's run function reads its seed from ``data`` (a seed, or (set-up, seed))
                data = (*base.data[:-1], seed) if isinstance(base.data, tuple) else seed
                out.append(Unit(_trial_id(prefix, i, seed), TRIAL_STAGES[role], fields, deps=base.deps,
                                folder_prefix=f"{base.folder_prefix}-search",
                                label=f"{base.label.rsplit(' seed ', 1)[0]} trial {i} ({describe(setting)}) "
                                      f"seed {seed}", data=data, search={"setting": setting, "index": i}))
    return out


def trial_ids(ctx: RunContext) -> tuple[str, ...]:
    """Every trial of both roles (the evaluate stage reports them)."""
    s = ctx.recipe.model.student
    roles = ["student"] + (["control"] if s is not None and s.control else [])
    return tuple(u.id for role in roles for u in plan_trials(ctx, role))


def confirmations(ctx: RunContext, units: list[Unit]) -> list[Unit]:
    """The role's confirmation units: each chooses its setting from its family's trials before it is keyed."""
    spec = search_spec(ctx)
    if not spec:
        return units
    grid = settings(spec)
    for u in units:
        u.search = {"trials": [_trial_id(_prefix(u), i, seed) for i in range(len(grid)) for seed in spec["seeds"]]}
        u.resolve = _choose
    return units


def _choose(ctx: RunContext, unit: Unit, units: dict) -> None:
    trials = [units.get(t) for t in unit.search["trials"]]
    if any(t is None or t.marker is None for t in trials):
        # Resolving a version whose trials are not done: the key must match no finished unit.
        unit.fields["search"] = "not chosen: trials missing"
        return
    table = trial_table(ctx, trials)
    unit.search.update(setting=table["chosen"], table=table)
    unit.fields["config"]["training"].update(table["chosen"])


# ---------------------------------------------------------------- running and scoring trials


def run_trial(ctx: RunContext, unit: Unit, out_dir: Path, inputs: dict) -> dict:
    """One trial: the role's training job with the setting; only its result (the selection score) is kept."""
    from . import units as stage_units

    role = "student" if unit.stage == TRIAL_STAGES["student"] else "control"
    (stage_units.run_student if role == "student" else stage_units.run_control)(ctx, unit, out_dir, inputs)
    if ctx.main:
        for name in ("best", "final"):
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
    result = json.loads((out_dir / "result.json").read_text())
    return {"seed": unit.fields["seed"], "setting": unit.search["setting"],
            "selection_score": trial_score(result, unit.fields["config"]["training"], unit.label)}


def trial_outputs(out_dir: Path) -> list[str]:
    return ["result.json"]


def trial_score(result: dict, training: dict, label: str) -> float:
    """A trial's figure: the selection metric its checkpoint choice uses (``best_metric``, or the score when
    that is ``final``), of the model it kept, on the selection split."""
    from ..training import select_metric

    metrics = result.get("metrics")
    if not metrics:
        raise CheckpointError(f"{label} recorded no selection metrics", hint="a searched job must be evaluated on "
                              "the holdout: check that its tasks have evaluation splits")
    metric = training.get("best_metric", "score")
    return float(select_metric(metrics, "score" if metric == "final" else metric, training.get("best_tasks")))


def unit_config(cfg: dict, unit: Unit) -> dict:
    """The role's set-up for ``unit``: a trial's setting, or the chosen one, on top of ``cfg``."""
    setting = (unit.search or {}).get("setting")
    if not setting:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg["training"].update(setting)
    return cfg


def job_name(name: str, unit: Unit) -> str:
    """The role's job name (``student-s101``), with the setting's index for a trial (``student-s101-trial1``)."""
    search = unit.search or {}
    return f"{name}-trial{search['index']}" if "index" in search else name


def trial_table(ctx: RunContext, trials: list[Unit]) -> dict:
    """Every tried setting with its selection scores (per trial seed, and their mean) and the chosen one."""
    from .units import job_result

    rows: dict[int, dict] = {}
    for t in trials:
        result = job_result(ctx, t)
        row = rows.setdefault(t.search["index"], {"setting": t.search["setting"], "seeds": [], "scores": []})
        row["seeds"].append(t.fields["seed"])
        row["scores"].append(trial_score(result, t.fields["config"]["training"], t.label))
    ordered = [rows[i] for i in sorted(rows)]
    for row in ordered:
        row["score"] = sum(row["scores"]) / len(row["scores"])
    finite = [i for i, row in enumerate(ordered) if math.isfinite(row["score"])]
    if not finite:
        raise CheckpointError("every trial of the search scored NaN or infinity on the selection split",
                              hint="lower the searched learning rates, or check the data")
    best = max(finite, key=lambda i: (ordered[i]["score"], -i))  # a tie: the setting listed first
    for i, row in enumerate(ordered):
        row["chosen"] = i == best
    return {"split": HOLDOUT, "trials": ordered, "chosen": ordered[best]["setting"]}


# ---------------------------------------------------------------- what the evaluate stage records


def evaluation_block(ctx: RunContext, inputs: dict) -> dict | None:
    """evaluation.json's ``search``: per role its tried settings with their holdout scores and the choice."""
    spec = search_spec(ctx)
    if not spec:
        return None
    out: dict = {"fields": [k for k in spec if k != "seeds"], "trial_seeds": list(spec["seeds"]),
                 "confirmation_seeds": list(ctx.student_seeds()), "settings": len(settings(spec)), "roles": {}}
    for stage in TRIAL_STAGES.values():
        families: dict[str, list[Unit]] = {}  # "student" (or one entry per set-up of a role that has several)
        for u in inputs.values():
            if u.stage == stage:
                families.setdefault(u.id.rsplit("-trial:", 1)[0], []).append(u)
        for family, trials in families.items():
            out["roles"][family] = {**trial_table(ctx, trials),
                                    "confirmations": confirmation_scores(ctx, inputs, family)}
    return out


def confirmation_scores(ctx: RunContext, inputs: dict, family: str) -> list[dict]:
    """The confirmation seeds' selection scores on the holdout (of the checkpoints they kept there), to set beside
    their dev figures: a holdout that disagrees with dev says how far a choice made on it carries."""
    from .units import job_result

    role = family.split(":", 1)[0]
    rows = []
    for u in inputs.values():
        if u.stage == role and u.id.rsplit(":", 1)[0] == family and u.folder_prefix:
            rows.append({"seed": u.fields["seed"],
                         "score": trial_score(job_result(ctx, u), u.fields["config"]["training"], u.label)})
    return sorted(rows, key=lambda r: r["seed"])


def training_budget(ctx: RunContext, inputs: dict) -> dict | None:
    """Epochs × training examples of every trained teacher and of the student and control (their confirmation
    seeds), with a warning where the student or control trains less than some teacher."""
    from .units import job_result

    rows = sum(len(tb.train) for tb in ctx.tasks.values() if tb.train is not None)
    teachers = {}
    for m in ctx.members():
        u = inputs.get(f"teacher:{m.index}")
        if u is not None and u.folder_prefix:
            teachers[m.name] = float(job_result(ctx, u)["epochs"])
    roles = {}
    for role in ("student", "control"):
        units = [u for u in inputs.values() if u.stage == role]
        if units:
            roles[role] = min(float(job_result(ctx, u)["epochs"]) for u in units)
    if not teachers or not roles:
        return None
    top = max(teachers, key=teachers.get)
    warnings = [f"the {role} trains {e:g} epochs × {rows:,} examples = {e * rows:,.0f}, less than teacher {top} "
                f"({teachers[top]:g} × {rows:,} = {teachers[top] * rows:,.0f}): student vs teachers then mixes "
                "distillation with training budget" for role, e in roles.items() if e < teachers[top] - 1e-9]
    return {"examples": rows, "teachers": teachers, **roles, "warnings": warnings}


def recipe_notes(recipe) -> list[str]:
    """What ``recipe validate`` says about the search's cost and the training budget, before anything runs."""
    from ..recipe import content_hash, variation_config
    from .units import key_config
    from .variants import student_variants

    s = recipe.model.student
    if s is None:
        return []
    notes = []
    roles = ["student"] + (["control"] if s.control else [])
    variants = student_variants(recipe)
    # set-ups that train: every variant's student; a control per distinct hard-label set-up (variants share it)
    setups = len(variants) + (len({content_hash([key_config(v.config), v.init_from_teacher]) for v in variants})
                              if s.control else 0)
    spec = (recipe.resolved.get("student") or {}).get("search")
    epochs = max(v.config["training"]["epochs"] for v in variants)
    confirm = len(s.seeds or [recipe.seed])
    if spec:
        n, k = len(settings(spec)), len(spec["seeds"])
        notes.append(f"search: {n} setting(s) × {k} trial seed(s) for each {' and '.join(roles)} set-up = "
                     f"{n * k * setups} trial job(s), then {confirm * setups} confirmation job(s)")
        epochs = max(spec["epochs"]) if "epochs" in spec else epochs
    teachers = {m.name or f"teacher-{i}": variation_config(recipe, i)["training"]["epochs"]
                for i, m in enumerate(recipe.model.teachers.members if recipe.model.teachers else [])
                if m.checkpoint is None}
    if teachers and epochs < max(teachers.values()):
        top = max(teachers, key=teachers.get)
        notes.append(f"the {' and '.join(roles)} train{'s' if len(roles) == 1 else ''} at most {epochs:g} epochs, "
                     f"fewer than teacher {top} ({teachers[top]:g}): student vs teachers would mix distillation "
                     "with training budget (search student.search.epochs up to the teachers')")
    return notes
