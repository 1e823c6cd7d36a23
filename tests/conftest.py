"""Shared fixtures. Tests load only the plugins they ask for, so installed third-party plugins
cannot change results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIRST_PARTY = "glue,hf,distill,samplers,loggers"
ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests run two at a time (pytest -n 2) on 2 cores: one thread each, also in the processes they start.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _first_party_plugins_only(monkeypatch):
    from mtkd import plugins

    monkeypatch.setenv("MTKD_LOAD_PLUGINS", FIRST_PARTY)
    monkeypatch.delenv("MTKD_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("MTKD_TRACE_PLUGINS", raising=False)
    # `-q` in an in-process CLI run sets these for the whole process: restored after each test.
    monkeypatch.delenv("MTKD_QUIET", raising=False)
    monkeypatch.setenv("WANDB_SILENT", os.environ.get("WANDB_SILENT", "false"))
    plugins.reset()
    yield
    plugins.reset()
    import logging

    logging.disable(logging.NOTSET)  # an in-process `-q` run turned library logging off


@pytest.fixture
def registries():
    from mtkd.plugins import get_registries

    return get_registries()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip with the reason."""
    if not (SHARED_DATA / "glue").is_dir():
        pytest.skip(f"real GLUE data not found at {SHARED_DATA} (see README: tests that need it are skipped)")
    return SHARED_DATA
