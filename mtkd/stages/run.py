"""Running a recipe: the run folder, its lock, then the stage graph."""

from __future__ import annotations

import time
from pathlib import Path

from ..recipe import Recipe
from .context import RunContext, check_before_training, load_tasks
from .graph import execute
from .store import RunStore


def run_dir_for(recipe: Recipe, output: str | None) -> Path:
    if output:
        return Path(output)
    return Path(recipe.resolve_path(recipe.model.output_dir) or "runs") / recipe.model.name


def _lock(store: RunStore, state) -> None:
    """The main process takes the lock; every process learns whether it got it."""
    from accelerate.utils import broadcast_object_list

    error = [None]
    if state.is_main_process:
        try:
            store.acquire()
        except Exception as exc:  # noqa: BLE001 - passed on to every rank, raised there
            error = [exc]
    if state.num_processes > 1:
        broadcast_object_list(error)
    if error[0] is not None:
        raise error[0]


def run_pipeline(recipe: Recipe, *, output: str | None = None, stage: str | None = None, force=(),
                 console=None, quiet: bool = False, progress=None) -> dict | None:
    """Run every stage (or one), reusing whatever is done and intact. Returns the version's metrics."""
    from accelerate import PartialState
    from rich.console import Console

    from ..progress import make_progress

    console = console or Console(stderr=True)
    state = PartialState()
    store = RunStore(run_dir_for(recipe, output))
    quiet = quiet or recipe.model.logging.quiet
    if progress is None:  # bars on a terminal, plain lines in a file, nothing with -q or on other ranks
        pace = recipe.resolved["logging"]
        progress = make_progress(console, quiet, every_steps=pace.get("progress_every_steps"),
                                 every_seconds=pace.get("progress_every_seconds"),
                                 main_process=state.is_main_process)
    _lock(store, state)
    try:
        if state.is_main_process:
            store.recover()
        state.wait_for_everyone()
        t0 = time.perf_counter()
        ctx = RunContext(recipe, store, load_tasks(recipe), progress)
        ctx.timings["load"] = time.perf_counter() - t0
        check_before_training(ctx)
        execute(ctx, only=stage, force=force)
        return ctx.metrics
    finally:
        if hasattr(progress, "close"):
            progress.close()
        if state.is_main_process:
            store.release()
