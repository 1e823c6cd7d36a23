"""Models addressed by role: the student, the control, the ensemble or one teacher of *one* recipe version.

``mtkd predict``, ``mtkd evaluate`` and ``mtkd export`` take a recipe file (or a run folder) and a
role; the model is the one the stage graph keys for that version, so a version that was never
trained is refused with the stage to run, never answered with another version's model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError, RecipeError
from ..recipe import Recipe

ROLE_HELP = "student, control, ensemble, teacher:NAME, or student:VARIANT / control:VARIANT (student.variants)"


def open_source(source, overrides=(), plugins=(), output=None) -> tuple[Recipe, Path]:
    """A recipe file (its run folder: --output or the recipe's) or a run folder (its latest version's recipe,
    or a ``reports/<hash>`` folder's)."""
    from ..recipe import load_recipe, validate_recipe
    from .run import run_dir_for

    source = Path(source)
    if source.is_dir():
        stored = source / "recipe.json"
        if not stored.is_file():
            raise CheckpointError("not a run folder (no recipe.json: no version of a recipe has finished in it)",
                                  file=source, hint="give the recipe file instead, or run it to the end first")
        try:
            version = json.loads(stored.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"the run folder's recipe.json is not valid JSON ({exc})", file=stored,
                                  expected="the JSON mtkd writes when a recipe version finishes") from None
        if not isinstance(version, dict) or not isinstance(version.get("recipe"), dict):
            raise CheckpointError("the run folder's recipe.json holds no recipe", file=stored, path="recipe",
                                  expected="the JSON mtkd writes when a recipe version finishes")
        run_dir = source.parent.parent if source.parent.name == "reports" else source
        named = version.get("file")
        file = Path(named) if isinstance(named, str) and Path(named).is_file() else stored
        raw = version["recipe"]
        for assignment in overrides:
            from ..recipe import apply_override

            apply_override(raw, assignment)
        # A run folder is data: its recipe imports no plugin and switches on no trust_remote_code.
        recipe = validate_recipe(raw, file=file, extra_plugins=plugins, stored=True)
        return recipe, Path(output) if output else run_dir
    recipe = load_recipe(source, overrides, extra_plugins=plugins)
    return recipe, run_dir_for(recipe, output)


@dataclass
class Chosen:
    role: str
    dirs: list[Path]  # model folders (several for the ensemble)
    names: list[str]
    ctx: object = None
    logit_units: list = field(default_factory=list)
    seed: int | None = None


def parse_role(role: str) -> tuple[str, str | None]:
    kind, colon, name = role.partition(":")
    if kind not in ("student", "control", "ensemble", "teacher") or (colon and not name) or \
            (kind == "teacher" and not name) or (kind == "ensemble" and name):
        raise RecipeError("unknown model role", path="--model", expected=ROLE_HELP, found=role)
    return kind, name or None


def choose_model(recipe: Recipe, run_dir: Path, role: str, seed: int | None = None, ctx=None) -> Chosen:
    """The model folder(s) of ``role`` for this recipe version; CheckpointError naming the stage to run if missing."""
    from ..progress import NullProgress
    from .context import RunContext, load_tasks
    from .graph import execute
    from .store import RunStore
    from .units import teacher_model_dir

    kind, name = parse_role(role)
    import shlex

    sets = "".join(f" --set {shlex.quote(o)}" for o in getattr(recipe, "overrides", ()))
    run = f"mtkd recipe run {shlex.quote(str(recipe.file)) if recipe.file else 'RECIPE'}{sets}"
    from .run import run_dir_for

    if run_dir_for(recipe, None) != Path(run_dir):
        run += f" --output {shlex.quote(str(run_dir))}"
    if kind in ("student", "control"):
        s = recipe.model.student
        if s is None or (kind == "control" and not s.control):
            raise RecipeError(f"the recipe has no {kind}", file=recipe.file, path="student" if s is None else
                              "student.control")
    elif recipe.model.teachers is None:
        raise RecipeError("the recipe has no teachers", file=recipe.file, path="teachers")
    if ctx is None:
        ctx = RunContext(recipe, RunStore(run_dir), load_tasks(recipe), NullProgress())
    if kind in ("student", "control"):
        seeds = ctx.student_seeds()
        seed = seeds[0] if seed is None else seed
        if seed not in seeds:
            raise RecipeError(f"the recipe has no {kind} seed {seed}", path="--seed",
                              expected=f"one of {seeds}", found=seed)
        from .variants import find_variant

        variant = find_variant(recipe, name)  # no name: the first variant, the report's headline student
        units = execute(ctx, resolve_only=True, until=kind)
        unit = units[variant.unit_id(kind, seed)]
        if unit.marker is None:
            what = kind if variant.name is None else f"{kind} {variant.name}"
            raise CheckpointError(f"the {what} (seed {seed}) of this recipe version has not been trained",
                                  file=ctx.store.path(unit.folder), hint=f"run `{run} --stage {kind}` "
                                  "(or without --stage: finished stages are reused)")
        from .context import job_model_dir

        folder = ctx.store.path(unit.folder)
        model = job_model_dir(folder, json.loads((folder / "result.json").read_text()))
        return Chosen(role, [model], [unit.label], ctx, seed=seed)
    members = ctx.members()
    if kind == "teacher":
        found = [m for m in members if m.name == name]
        if not found:
            raise RecipeError(f"no teacher member named {name!r}", path="--model",
                              expected=f"one of {[m.name for m in members]}", found=name)
        members = found
    units = execute(ctx, resolve_only=True, until="logits")
    missing = [m for m in members if units[f"teacher:{m.index}"].digest in ("",)]
    if missing:
        u = units[f"teacher:{missing[0].index}"]
        raise CheckpointError(f"teacher {missing[0].name} of this recipe version has not been trained",
                              file=ctx.store.path(u.folder), hint=f"run `{run} --stage teachers`")
    logit_units = [units[f"logits:{m.index}"] for m in members]
    return Chosen(role, [teacher_model_dir(ctx, units[f"teacher:{m.index}"]) for m in members],
                  [m.name for m in members], ctx, logit_units=[u for u in logit_units if u.marker is not None])
