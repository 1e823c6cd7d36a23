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
