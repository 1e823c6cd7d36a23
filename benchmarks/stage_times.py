"""Compute per stage of a recipe version in a run folder: each training job's own ``result.json``, else the
wall time a unit's marker recorded (``mtkd.stages.units.unit_seconds``; the report's "Compute per stage").

    python benchmarks/stage_times.py recipes/minilm-glue-kd.yaml runs/minilm-glue-kd [--set KEY=VALUE ...]

A job's ``train_seconds`` adds up across resumes, so a run that was stopped and resumed still gets its true
training time (wall-clock gaps between invocations are not in it). Units shared with another recipe version
(reused from the same folder) are listed, marked ``reused``: their time was spent once. Prints one line per
job and a total per stage; units not finished are listed as such.
"""

from __future__ import annotations

import argparse

from mtkd.progress import NullProgress
from mtkd.recipe import load_recipe
from mtkd.stages.context import RunContext, load_tasks
from mtkd.stages.graph import execute
from mtkd.stages.store import RunStore
from mtkd.stages.units import stage_compute, unit_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("run_dir")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, args.sets)
    ctx = RunContext(recipe, RunStore(args.run_dir), load_tasks(recipe), NullProgress())
    units = {**execute(ctx, resolve_only=True, until="student"), **execute(ctx, resolve_only=True, until="control")}
    seen: set[str] = set()
    print(f"recipe {recipe.name} version {recipe.hash}")
    for uid, u in units.items():
        if not u.folder:
            continue
        if u.marker is None:
            print(f"  {u.stage:15s} {uid:32s} not finished")
            continue
        seconds = unit_seconds(ctx, u)
        shared = u.folder in seen
        seen.add(u.folder)
        mark = "  (the same unit as above)" if shared else ("  (reused)" if u.marker.get("recipe") != recipe.hash
                                                         else "")
        shown = f"{seconds:8.1f} s" if seconds is not None else "       - s (not recorded)"
        print(f"  {u.stage:15s} {uid:32s} {shown}{mark}")
    for stage, c in stage_compute(ctx, units.values()).items():
        each = f" ({c['min']:.0f}-{c['max']:.0f} s each)" if c["min"] is not None else ""
        unknown = f", {c['unknown']} not recorded" if c["unknown"] else ""
        print(f"{stage:15s} {c['units']} units, {c['seconds']:8.1f} s{each}{unknown}")

if __name__ == "__main__":
    main()
