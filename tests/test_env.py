"""`mtkd env` and `--version` for bug reports; a missing optional dependency is a clean error naming the extra."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import torch
import yaml
from helpers import run_cli

import mtkd
from mtkd.extras import MissingExtraError, require


def test_env_json_has_the_versions_of_everything_a_bug_report_needs():
    result = run_cli("env", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["mtkd"] == mtkd.__version__ and info["python"] == sys.version.split()[0]
    assert info["torch"] == torch.__version__
    assert info["cuda"]["built_with"] == torch.version.cuda and info["cuda"]["available"] == torch.cuda.is_available()
    for dist in ("transformers", "accelerate", "datasets", "wandb"):
        assert info[dist] == importlib.metadata.version(dist), dist
    plugins = {p["module"]: p for p in info["plugins"]}
    assert plugins["mtkd_glue"]["distribution"] == "mtkd" and plugins["mtkd_glue"]["version"] == mtkd.__version__
    text = run_cli("env").output
    assert any(line.split()[:2] == ["torch", torch.__version__] for line in text.splitlines())
    assert any(line.startswith("plugin mtkd_glue") and "mtkd " + mtkd.__version__ in line
               for line in text.splitlines())


def test_a_missing_extra_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # how Python marks a module as not importable
    monkeypatch.chdir(tmp_path)  # the quickstart's run folder would be ./runs
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"extends": "mtkd:quickstart.yaml", "scaling": {"strategy": "deepspeed"}}))
    valid = run_cli("recipe", "validate", path)  # a valid recipe: ok, with a note on what `run` needs
    assert valid.exit_code == 0 and "pip install 'mtkd[deepspeed]'" in valid.output
    result = run_cli("recipe", "run", path)
    assert result.exit_code == 2
    assert "scaling.strategy" in result.output and "pip install 'mtkd[deepspeed]'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    try:
        require("mtkd_no_such_module_anywhere", extra="onnx", feature="mtkd export --onnx")
    except MissingExtraError as exc:
        assert exc.hint == "pip install 'mtkd[onnx]'" and "mtkd export --onnx" in exc.message
    else:
        raise AssertionError("require() accepted a module that does not exist")
