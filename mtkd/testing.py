"""A pytest plugin for mtkd plugin authors (pytest finds it through mtkd's ``pytest11`` entry point).

Fixtures, all isolated per test:

- ``mtkd_plugins``: a fresh plugin manager holding only mtkd's first-party plugins plus what the test
  adds: ``mtkd_plugins.use("my-entry-point")`` for an installed plugin, ``mtkd_plugins.register(module)``
  for a module or class with hook functions; ``mtkd_plugins.registries`` builds components,
  ``mtkd_plugins.cli("plugins", "list")`` runs the ``mtkd`` command line in-process.
- ``mtkd_tiny_encoder``: the recipe spec of a tiny, randomly initialised BERT encoder (2 layers of
  width 32, a small word-piece vocabulary) written to a folder: no download, a step in milliseconds.
- ``mtkd_run_recipe``: runs a recipe end to end on the tiny encoder and the GLUE sample shipped
  with mtkd (RTE, 24 training rows), returning its run folder and ``metrics.json``. Pass the sections
  to change: ``mtkd_run_recipe({"objective": {"classification": {"type": "focal"}}})``.

Outside a pytest run with the plugin: ``pytest -p mtkd.testing``.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: mtkd's own plugins (entry-point names): always loaded in the sandbox, nothing else unless asked.
FIRST_PARTY = ("glue", "hf", "distill", "samplers", "loggers")

_WORDS = ("the a an and or but not no yes is was are were be it this that of to in on for with as at by from "
          "good bad great awful movie film plot story actor music one two three cat dog man woman said".split())


class PluginSandbox:
    """The plugin set of one test; everything is undone when the test ends."""

    def __init__(self, monkeypatch):
        self._monkeypatch = monkeypatch
        self._entry_points = list(FIRST_PARTY)
        self._apply()

    def _apply(self) -> None:
        from mtkd import plugins

        self._monkeypatch.setenv("MTKD_LOAD_PLUGINS", ",".join(self._entry_points))
        self._monkeypatch.delenv("MTKD_DISABLE_PLUGINS", raising=False)
        plugins.reset()

    def use(self, *entry_points: str) -> PluginSandbox:
        """Also load these installed plugins (their entry-point names in the ``mtkd`` group)."""
        self._entry_points += [e for e in entry_points if e not in self._entry_points]
        self._apply()
        return self

    def register(self, plugin, name: str | None = None) -> PluginSandbox:
        """Register a module, class or object with ``@mtkd.hookimpl`` functions for this test."""
        from mtkd.plugins import register_plugin

        register_plugin(plugin, name or getattr(plugin, "__name__", type(plugin).__name__))
        return self

    @property
    def registries(self):
        from mtkd.plugins import get_registries

        return get_registries()

    def cli(self, *args, input: str | None = None):
        """``mtkd ARGS`` in-process (click's ``Result``: ``exit_code``, ``stdout``, ``output``)."""
        from click.testing import CliRunner

        from mtkd.cli import cli

        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def mtkd_plugins(monkeypatch):
    """An isolated plugin manager: mtkd's first-party plugins, plus what the test adds."""
    from mtkd import plugins

    sandbox = PluginSandbox(monkeypatch)
    yield sandbox
    plugins.reset()


def write_tiny_encoder(folder: Path) -> dict:
    """A tiny BERT (config + word-piece tokenizer, no weights) in ``folder``; returns its encoder spec."""
    from transformers import BertConfig, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *chars, *("##" + c for c in chars)]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=128).save_pretrained(folder)
    return {"type": "hf", "model": str(folder), "pretrained": False}


@pytest.fixture(scope="session")
def mtkd_tiny_encoder(tmp_path_factory) -> dict:
    """The encoder spec of a tiny randomly initialised BERT (for ``encoder:`` in a recipe)."""
    return write_tiny_encoder(tmp_path_factory.mktemp("mtkd-tiny-encoder"))


@dataclass
class RecipeRun:
    recipe: Path  # the recipe file that ran
    run_dir: Path  # its run folder
    metrics: dict  # metrics.json: the report's numbers
    output: str  # what the command printed


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def mtkd_run_recipe(tmp_path, monkeypatch, mtkd_tiny_encoder, mtkd_plugins):
    """``run(changes: dict, *cli_args) -> RecipeRun``: a whole run (teachers, soft targets, student,
    report) on the tiny encoder and a 24-row RTE sample; ``changes`` replace sections of the default
    recipe (a section set to ``None`` drops it)."""
    import yaml

    from mtkd.recipe import shipped_recipes_dir

    sample = shipped_recipes_dir() / "data" / "glue-sample"
    counter = {"n": 0}

    def run(changes: dict | None = None, *args: str) -> RecipeRun:
        counter["n"] += 1
        recipe: dict[str, Any] = {
            "extends": "mtkd:base.yaml", "name": f"plugin-test-{counter['n']}",
            "output_dir": str(tmp_path / "runs"),
            "data": {"glue": str(sample), "max_length": 32, "cache_dir": str(tmp_path / "cache")},
            "tasks": [{"name": "rte", "max_train_examples": 24, "max_eval_examples": 16}],
            "encoder": mtkd_tiny_encoder,
            "training": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "log_every": 1, "num_threads": 1},
            "teachers": {"members": [{"seed": 1}]},
            "student": {"seeds": [2], "control": False},
            "evaluation": {"serving": False},
        }
        recipe = _merge(recipe, changes or {})
        path = tmp_path / f"{recipe['name']}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        for var in ("WANDB_SILENT", "MTKD_QUIET"):  # `-q` sets them for the process: restored after the test
            if var in os.environ:
                monkeypatch.setenv(var, os.environ[var])
            else:
                monkeypatch.delenv(var, raising=False)
        try:
            result = mtkd_plugins.cli("recipe", "run", path, "-q", *args)
        finally:
            import logging

            logging.disable(logging.NOTSET)  # `-q` turns library logging off for the process
        if result.exit_code != 0:
            raise AssertionError(f"mtkd recipe run exited with {result.exit_code}:\n{result.output}")
        run_dir = tmp_path / "runs" / recipe["name"]
        return RecipeRun(path, run_dir, json.loads((run_dir / "metrics.json").read_text()), result.output)

    return run
