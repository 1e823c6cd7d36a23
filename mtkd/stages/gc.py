"""``mtkd runs gc``: free the space a run folder holds without changing what it can reuse.

Removed: the model folder a finished job does not use (``final/`` when its ``result.json`` names ``best``:
run folders from before ``training.keep``, or jobs kept with ``keep: both``), a finished job's leftover
resumable ``checkpoint/``, and what killed runs left behind (``*.staging`` and ``*.old`` unit folders,
``*.tmp`` files). A unit's marker keeps its digest and lists only the outputs that remain, so every stage
stays reusable and nothing downstream is recomputed.

Also removed: whole stage units that no recipe version still uses -- e.g. the teachers of a recipe version
that was changed before it finished. Each run records the units its version uses (``versions/<hash>.json``);
the units of every finished version (one with a report) and of the latest version run (finished or not: a
stopped run resumes) are kept, with everything those versions' reports name. A unit made before versions
were recorded (its marker names no recipe) is never removed: which version uses it cannot be told.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .store import MARKER, VERSIONS, RunStore


@dataclass
class Removal:
    path: Path
    bytes: int
    why: str


@dataclass
class Plan:
    run_dir: Path
    removals: list[Removal] = field(default_factory=list)
    markers: dict[str, dict] = field(default_factory=dict)  # unit folder -> its marker without the removed outputs

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def unreferenced_units(store: RunStore) -> tuple[list[Removal], list[Path]]:
    """Unit folders no finished or latest recipe version uses, and the records of versions left with none."""
    records = {p.stem: _read(p) for p in sorted(store.root.glob(f"{VERSIONS}/*.json"))}
    finished = {p.parent.name: _read(p) for p in store.root.glob("reports/*/recipe.json")}
    latest = max(records, key=lambda h: records[h].get("updated_ns") or 0) if records else None
    keep: set[str] = set()
    for h, rec in records.items():
        if h in finished or h == latest:
            keep.update(rec.get("units") or ())
    for version in finished.values():  # what a report names is kept whatever the records say
        evaluation = version.get("evaluation")
        if isinstance(evaluation, str):
            keep.add(evaluation)
            keep.update(v for v in (_read(store.root / evaluation / "evaluation.json").get("jobs") or {}).values()
                        if isinstance(v, str))
    removals = []
    for marker_file in sorted(store.root.glob(f"*/*/{MARKER}")):
        unit = marker_file.parent
        folder = store.rel(unit)
        made_by = _read(marker_file).get("recipe")
        if not made_by or folder in keep or folder.startswith("reports/"):
            continue
        removals.append(Removal(unit, _size(unit), f"{folder}: no finished or latest recipe version uses it "
                                                   f"(made by version {made_by})"))
    stale = [store.root / VERSIONS / f"{h}.json" for h in records if h not in finished and h != latest]
    return removals, stale


def plan_gc(store: RunStore) -> Plan:
    """What gc would remove in one run folder (nothing is touched)."""
    import json

    plan = Plan(store.root)
    units, stale = unreferenced_units(store)
    plan.removals.extend(units)
    plan.removals.extend(Removal(p, p.stat().st_size, "the record of a recipe version that never finished and is "
                                 "not the latest run") for p in stale)
    gone = {r.path for r in units}
    for marker_file in sorted(store.root.glob(f"*/*/{MARKER}")):
        unit = marker_file.parent
        if unit in gone:
            continue
        folder = store.rel(unit)
        result_file = unit / "result.json"
        if not result_file.is_file():
            continue  # not a training job
        result = json.loads(result_file.read_text(encoding="utf-8"))
        kept = Path(str(result.get("model") or "final")).name  # older runs stored a path
        marker = json.loads(marker_file.read_text(encoding="utf-8"))
        outputs = dict(marker.get("outputs", {}))
        for name in ("best", "final"):
            if name != kept and (unit / name).is_dir() and (unit / kept).is_dir():
                plan.removals.append(Removal(unit / name, _size(unit / name),
                                             f"{folder}: the job uses {kept}/, not {name}/"))
                outputs = {k: v for k, v in outputs.items() if not k.startswith(f"{name}/")}
        if (unit / "checkpoint").is_dir():
            plan.removals.append(Removal(unit / "checkpoint", _size(unit / "checkpoint"),
                                         f"{folder}: a finished job's resumable state"))
        if outputs != marker.get("outputs", {}):
            plan.markers[folder] = {**marker, "outputs": outputs}  # the digest stays: downstream keys hold
    for leftover in sorted([*store.root.glob("*/*.staging"), *store.root.glob("*/*.old"), *store.root.glob("*/*.gc")]):
        plan.removals.append(Removal(leftover, _size(leftover), "left by a run that was stopped"))
    for tmp in sorted(store.root.rglob("*.tmp")):
        if tmp.is_file() and not any(tmp.is_relative_to(r.path) for r in plan.removals):
            plan.removals.append(Removal(tmp, tmp.stat().st_size, "a half-written file"))
    return plan


def run_gc(run_dir: Path, *, dry_run: bool = False) -> Plan:
    """Plan and (unless ``dry_run``) remove, holding the run folder's lock (never under a running run)."""
    store = RunStore(Path(run_dir))
    store.acquire()
    try:
        store.recover()  # a unit moved aside by a killed swap goes back first: only true leftovers remain
        plan = plan_gc(store)
        if not dry_run:
            for folder, marker in plan.markers.items():  # first: a marker never lists a removed file
                store.write_json(f"{folder}/{MARKER}", marker)
            units = {r.path for r in plan.removals if r.path.parent.parent == store.root
                     and (r.path / MARKER).is_file()}
            for r in plan.removals:
                if r.path in units:  # renamed first (atomic): a stopped gc never leaves half a unit that looks whole
                    aside = r.path.with_name(r.path.name + ".gc")
                    os.replace(r.path, aside)
                    shutil.rmtree(aside)
                elif r.path.is_dir():
                    shutil.rmtree(r.path)
                elif r.path.exists():
                    r.path.unlink()
        return plan
    finally:
        store.release()
