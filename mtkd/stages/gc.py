"""``mtkd runs gc``: free the space a run folder holds without changing what it can reuse.

Removed: the model folder a finished job does not use (``final/`` when its ``result.json`` names ``best``:
run folders from before ``training.keep``, or jobs kept with ``keep: both``), a finished job's leftover
resumable ``checkpoint/``, and what killed runs left behind (``*.staging`` and ``*.old`` unit folders,
``*.tmp`` files). A unit's marker keeps its digest and lists only the outputs that remain, so every stage
stays reusable and nothing downstream is recomputed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .store import MARKER, RunStore


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


def plan_gc(store: RunStore) -> Plan:
    """What gc would remove in one run folder (nothing is touched)."""
    import json

    plan = Plan(store.root)
    for marker_file in sorted(store.root.glob(f"*/*/{MARKER}")):
        unit = marker_file.parent
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
    for leftover in sorted([*store.root.glob("*/*.staging"), *store.root.glob("*/*.old")]):
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
            for r in plan.removals:
                if r.path.is_dir():
                    shutil.rmtree(r.path)
                elif r.path.exists():
                    r.path.unlink()
        return plan
    finally:
        store.release()
