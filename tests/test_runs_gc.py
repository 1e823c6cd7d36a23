"""`mtkd runs gc`: the space of unused model folders and leftovers comes back, and the run folder stays
reusable (nothing retrained, nothing downstream recomputed)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import pipeline_recipe, requires_minilm, run_cli

pytestmark = requires_minilm


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_gc_removes_unused_models_and_leftovers_and_the_run_is_still_reused(tmp_path):
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student={"seeds": [2], "control": True},
                             training={"epochs": 1, "batch_size": 8, "num_threads": 1, "keep": "both"})
    first = run_cli("recipe", "run", recipe, "-q")
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "runs" / "tiny"
    finals = sorted(run_dir.glob("*/*/final"))
    assert len(finals) == 3 and all((f.parent / "best").is_dir() for f in finals)  # keep: both
    leftover = run_dir / "teachers" / "0123abcd.staging"  # what a stopped run leaves
    (leftover / "checkpoint").mkdir(parents=True)
    (leftover / "checkpoint" / "model.safetensors").write_bytes(b"x" * 1000)
    (run_dir / "recipe.json.tmp").write_text("{")
    results = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*/result.json")}
    before = size(run_dir)

    dry = run_cli("runs", "gc", run_dir, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would remove") == 5 and size(run_dir) == before
    done = run_cli("runs", "gc", run_dir)
    assert done.exit_code == 0, done.output
    assert not list(run_dir.glob("*/*/final")) and not leftover.exists()
    assert not (run_dir / "recipe.json.tmp").exists()
    freed = before - size(run_dir)
    assert freed > 0.4 * before  # three of six model folders
    assert f"freed {freed / 1e6:.1f} MB" in done.output

    again = run_cli("recipe", "run", recipe, "-q")  # every stage reused: no job trained again
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*/result.json")} == results
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["score"]["student"] is not None
    assert run_cli("runs", "gc", run_dir).output.strip().endswith("freed 0.0 MB in 1 run folder(s)")


def test_gc_removes_the_units_only_an_abandoned_recipe_version_used(tmp_path):
    """Teachers of a version stopped before its report, after the recipe changed and the new version ran, go;
    whatever the finished version or the latest run uses stays, and nothing of it is retrained."""
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student={"seeds": [2], "control": False},
                             training={"epochs": 1, "batch_size": 8, "num_threads": 1})
    run_dir = tmp_path / "runs" / "tiny"
    assert run_cli("recipe", "run", recipe, "-q", "--stage", "teachers").exit_code == 0  # version A, stopped early
    old_teacher = only_unit(run_dir, "teachers")
    kept = run_cli("runs", "gc", run_dir, "--dry-run")  # A is the latest run: its teacher is in use
    assert kept.exit_code == 0 and "would remove" not in kept.output, kept.output

    changed = ["--set", "teachers.members[0].seed=7"]  # version B: another teacher, then the whole pipeline
    assert run_cli("recipe", "run", recipe, "-q", *changed).exit_code == 0
    teachers = set(run_dir.glob("teachers/*"))
    assert len(teachers) == 2 and old_teacher in teachers
    units_b = {p for p in run_dir.glob("*/*") if (p / "mtkd-stage.json").is_file()} - {old_teacher}
    results = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*/result.json") if old_teacher not in p.parents}
    before = size(run_dir)

    dry = run_cli("runs", "gc", run_dir, "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = [line for line in dry.output.splitlines() if line.startswith("would remove")]
    assert len(lines) == 2, dry.output  # A's teacher and A's record; nothing of B
    assert any(str(old_teacher) in line and "MB" in line and "no finished or latest recipe version" in line
               for line in lines)
    assert size(run_dir) == before and old_teacher.is_dir()
    done = run_cli("runs", "gc", run_dir)
    assert done.exit_code == 0, done.output
    assert not old_teacher.exists() and not list(run_dir.glob("teachers/*.gc"))
    assert {p for p in run_dir.glob("*/*") if (p / "mtkd-stage.json").is_file()} == units_b
    again = run_cli("recipe", "run", recipe, "-q", *changed)  # B: everything reused
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*/*/result.json")} == results


def test_gc_keeps_units_made_before_versions_were_recorded(tmp_path):
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
                             teachers={"members": [{"seed": 1}]}, student=None,
                             training={"epochs": 1, "batch_size": 8, "num_threads": 1})
    run_dir = tmp_path / "runs" / "tiny"
    assert run_cli("recipe", "run", recipe, "-q", "--stage", "teachers").exit_code == 0
    teacher = only_unit(run_dir, "teachers")
    marker = json.loads((teacher / "mtkd-stage.json").read_text())
    assert marker.pop("recipe")  # as an older mtkd wrote it
    (teacher / "mtkd-stage.json").write_text(json.dumps(marker))
    for record in run_dir.glob("versions/*.json"):
        record.unlink()  # and no version recorded it
    assert run_cli("recipe", "run", recipe, "-q", "--stage", "teachers", "--set", "teachers.members[0].seed=3"
                   ).exit_code == 0  # the latest run is now another version
    out = run_cli("runs", "gc", run_dir).output
    assert teacher.is_dir() and str(teacher) not in out, out


def only_unit(run_dir: Path, stage: str) -> Path:
    (unit,) = [p for p in run_dir.glob(f"{stage}/*") if (p / "mtkd-stage.json").is_file()]
    return unit
