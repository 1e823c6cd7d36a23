"""``python -m mtkd`` is the ``mtkd`` command (used when mtkd starts its own worker processes)."""

from .cli import cli

cli(prog_name="mtkd")
