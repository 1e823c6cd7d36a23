"""The stage graph: every stage declared once, every key computed in one place.

A stage plans its *units* (one per teacher member, one per student seed, ...). A unit names

- ``fields``: the resolved recipe values that change its output (and only those: threads,
  logging, the data cache folder and ``-q`` are in no key),
- ``deps``: the units whose outputs it consumes,
- ``external``: digests of files from outside the run (a checkpoint teacher, a user's soft targets),

and :func:`unit_key` hashes the three, with the *content digests* of the deps' outputs. So a
changed upstream output changes every key downstream, and ``--force X`` redoes X and everything
that depends on it (:func:`descendants`). :func:`execute` walks the stages in order, reusing a
unit whose marker matches its key and whose outputs are intact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, RecipeError

#: Stages in execution order with the stages they consume. The CLI's --stage/--force choices come from here.
GRAPH: dict[str, tuple[str, ...]] = {
    "teachers": (),
    "logits": ("teachers",),
    "soft-targets": ("logits",),
    "student-search": ("soft-targets", "teachers"),  # student.search trials (mtkd.stages.search)
    "student": ("soft-targets", "teachers", "student-search"),
    "control-search": ("teachers",),
    "control": ("teachers", "control-search"),
    "evaluate": ("teachers", "logits", "student", "control", "student-search", "control-search"),
    "report": ("evaluate",),
}
STAGE_NAMES = tuple(GRAPH)

#: Training settings that cannot change a trained model: in no key.
NO_KEY_TRAINING = ("num_threads", "log_every", "save_every", "eval_batch_size")


def descendants(names) -> set[str]:
    """The stages named and every stage that consumes their outputs, directly or not."""
    out = set(names)
    changed = True
    while changed:
        changed = False
        for stage, deps in GRAPH.items():
            if stage not in out and out.intersection(deps):
                out.add(stage)
                changed = True
    return out


def ancestors(name: str) -> set[str]:
    out: set[str] = set()
    todo = list(GRAPH[name])
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo.extend(GRAPH[s])
    return out


@dataclass
class Unit:
    """One piece of a stage's work with what decides its output."""

    id: str  # "teacher:0", "student:1", "soft-targets"
    stage: str
    fields: dict
    deps: tuple[str, ...] = ()
    external: dict = field(default_factory=dict)  # name -> content digest of a file from outside the run
    folder_prefix: str = ""  # where its folder goes: "<prefix>/<key>"; "" = no folder (an outside file)
    label: str = ""  # what the user reads ("teacher-0", "student seed 1")
    data: Any = None  # whatever the run function needs (a Member, a seed)
    folder_name: Callable[[str], str] | None = None  # folder name from the key (default: the key)
    search: dict | None = None  # a search trial's setting, or a confirmation's trials (mtkd.stages.search)
    resolve: Callable | None = None  # (ctx, unit, units) just before keying: fields from finished units (a choice)

    # filled in by execute()
    key: str = ""
    folder: str = ""
    digest: str = ""
    marker: dict | None = None


def unit_key(unit: Unit, digests: dict[str, str]) -> str:
    """THE key of a unit: its stage, its recipe fields, its deps' output digests and its outside files' digests."""
    from ..recipe import content_hash

    missing = [d for d in unit.deps if d not in digests]
    if missing:
        raise RuntimeError(f"{unit.id}: deps without digests {missing}")
    return content_hash({"stage": unit.stage, "fields": unit.fields, "inputs": {d: digests[d] for d in unit.deps},
                         "external": unit.external})


@dataclass
class Stage:
    """A declared stage: how it plans its units, runs one, and which files of a unit folder are its outputs."""

    name: str
    plan: Callable  # (ctx) -> list[Unit]
    run: Callable | None  # (ctx, unit, out_dir, inputs) -> info dict; None for outside files
    outputs: Callable  # (out_dir) -> list of file names relative to it
    describe: str = ""
    always: bool = False  # redone on every run that reaches it (cheap, e.g. the report)
    on_demand: bool = False  # inference, not training: `--stage` of a later stage runs it when missing
    after: Callable | None = None  # (ctx, unit) on the main process once the unit is complete, run or reused

    @property
    def inputs(self) -> tuple[str, ...]:
        return GRAPH[self.name]


def stages() -> list[Stage]:
    from . import units

    return units.STAGES


# ---------------------------------------------------------------- the walk


def plan_all(ctx) -> dict[str, list[Unit]]:
    return {s.name: s.plan(ctx) for s in stages()}


def execute(ctx, *, only: str | None = None, force=(), resolve_only: bool = False,
            until: str | None = None) -> dict[str, Unit]:
    """Run (or reuse) every unit in stage order; ``only``: run that stage, require the ones before it.

    ``resolve_only``: run nothing, find which finished units belong to this recipe (``until`` a stage).
    Returns every unit by id with its key, folder and output digest.
    """
    for name in force:
        if name not in GRAPH:
            raise RecipeError("unknown stage", path="--force", expected=f"one of {', '.join(STAGE_NAMES)}",
                              found=name)
    forced = descendants(force)
    state = ctx.state
    planned = plan_all(ctx)
    units: dict[str, Unit] = {}
    ctx.units = units
    digests: dict[str, str] = {}
    order = [s for s in stages() if until is None or s.name in ancestors(until) | {until}]
    wanted = {only} if only else set(GRAPH)
    for stage in order:
        todo = planned[stage.name]
        run_it = (stage.name in wanted or (only is not None and stage.on_demand)) and not resolve_only
        needed = only is None or stage.name in ancestors(only) | {only}
        if not needed:
            continue
        cached, to_run = [], []
        first_of: dict[str, Unit] = {}  # folder -> the first unit planned with it
        aliases: list[tuple[Unit, Unit]] = []  # (unit, the unit with the same key that does its work)
        for u in todo:
            if u.resolve is not None:  # e.g. the setting a search chose, from the trials done before
                u.resolve(ctx, u, units)
            u.key = unit_key(u, digests)
            if not u.folder_prefix:  # an outside file: nothing to run or store
                u.digest = u.external["content"]
                digests[u.id] = u.digest
                units[u.id] = u
                cached.append(u)
                continue
            u.folder = f"{u.folder_prefix}/{u.folder_name(u.key) if u.folder_name else u.key}"
            first = first_of.setdefault(u.folder, u)
            if first is not u and any(x is first for x in to_run):
                # The same key twice (variants sharing a control): the same work, done once.
                aliases.append((u, first))
                units[u.id] = u
                continue
            marker, why = ctx.store.verify(u.folder, u.key)
            if marker is not None and not ((stage.name in forced or stage.always) and run_it):
                if ctx.main and not resolve_only:
                    ctx.store.refresh(u.folder, marker)
                marker.pop("refresh", None)
                u.marker, u.digest = marker, marker["digest"]
                digests[u.id] = u.digest
                cached.append(u)
            else:
                if why and ctx.main and run_it:
                    ctx.progress.message(f"{u.label or u.id}: {why}; recomputing it")
                to_run.append(u)
            units[u.id] = u
        if ctx.main and not resolve_only:  # what this version uses, so that gc never removes it
            ctx.store.record_units(ctx.recipe.hash, [u.folder for u in cached])
        if not run_it:
            if to_run and not resolve_only:
                u = to_run[0]
                raise CheckpointError(f"the {stage.name} stage has not run for this version of the recipe "
                                      f"({u.label or u.id} is not done)", file=ctx.store.path(u.folder),
                                      hint=f"run without --stage, or with --stage {stage.name} first")
            for u in to_run + [a for a, _ in aliases]:  # resolving: what depends on a missing unit matches no marker
                u.digest = ""
                digests[u.id] = f"missing {u.id}"
            continue
        if ctx.main and (cached or to_run):  # a stage this recipe does not use (no search, say) says nothing
            ctx.progress.stage(stage.name, cached=[u.label or u.id for u in cached],
                               to_run=[u.label or u.id for u in to_run])
        start = time.perf_counter()
        for u in to_run:
            # Keys may depend on units of this same stage run just before (none do today): recompute.
            u.key = unit_key(u, digests)
            u.folder = f"{u.folder_prefix}/{u.folder_name(u.key) if u.folder_name else u.key}"
            # A complete unit is rebuilt beside itself and swapped in; an unfinished one resumes in place.
            replacing = ctx.store.marker(u.folder) is not None
            out_dir = ctx.store.staging(u.folder) if replacing else ctx.store.path(u.folder)
            if replacing and ctx.main and out_dir.exists():
                import shutil

                shutil.rmtree(out_dir)  # a replacement a killed run left half-built
            state.wait_for_everyone()
            t0 = time.perf_counter()
            info = stage.run(ctx, u, out_dir, {d: units[d] for d in u.deps}) or {}
            if ctx.main:
                rel = ctx.store.rel(out_dir)
                u.marker = ctx.store.write_marker(rel, stage=stage.name, key=u.key,
                                                  outputs=stage.outputs(out_dir), info=info, recipe=ctx.recipe.hash,
                                                  seconds=time.perf_counter() - t0)
                if replacing:
                    ctx.store.swap_in(u.folder)
                ctx.store.record_units(ctx.recipe.hash, [u.folder])
            state.wait_for_everyone()
            if not ctx.main:
                u.marker = ctx.store.marker(u.folder)
            u.digest = u.marker["digest"]
            digests[u.id] = u.digest
        for u, first in aliases:
            u.key, u.folder, u.marker, u.digest = first.key, first.folder, first.marker, first.digest
            digests[u.id] = u.digest
        ctx.timings[stage.name] = ctx.timings.get(stage.name, 0.0) + time.perf_counter() - start
        if stage.after is not None and ctx.main:
            for u in todo:
                stage.after(ctx, u)
    return units
