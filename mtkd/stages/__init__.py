"""The pipeline as a declared stage graph over a portable run store (see ``graph``, ``units``, ``store``).

Importing this package is cheap (the CLI reads :data:`STAGE_NAMES` for its choices); the stages'
work imports torch and friends when it runs.
"""

from __future__ import annotations

from .graph import GRAPH, STAGE_NAMES

__all__ = ["GRAPH", "STAGE_NAMES", "run_pipeline", "run_dir_for"]


def run_pipeline(*args, **kwargs):
    from .run import run_pipeline as run

    return run(*args, **kwargs)


def run_dir_for(recipe, output=None):
    from .run import run_dir_for as where

    return where(recipe, output)
