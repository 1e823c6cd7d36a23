"""Recipes from anywhere: shipped recipes as package data (`extends: mtkd:NAME`), parent paths read from the
parent's folder, `recipe init`, the schema of the file a user writes, and `recipe validate` checking data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml
from helpers import REPO, mtkd_env, run_cli, run_mtkd

from mtkd.recipe import load_recipe, shipped_recipes, shipped_recipes_dir


def test_recipes_in_the_clone_are_the_shipped_ones():
    assert (REPO / "recipes").resolve() == shipped_recipes_dir()
    assert {"base.yaml", "quickstart.yaml", "minilm-glue-kd.yaml", "mtdnn-kd-glue.yaml"} <= set(shipped_recipes())


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates_against_the_schema(name):
    result = run_cli("recipe", "schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((shipped_recipes_dir() / name).read_text()), schema)


def test_the_schema_still_refuses_what_the_recipe_refuses():
    schema = json.loads(run_cli("recipe", "schema").stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for bad in ({"extends": "mtkd:base.yaml", "trainig": {}},              # misspelled section
                {"training": {"lr": -1}},                                  # out of range
                {"tasks": [{"loss_weight": 0}]},                           # a task entry's field
                {"teachers": {"members": [{"seed": "x"}]}},
                {"encoder": {"type": "no-such-encoder"}},                  # a component no plugin registered
                {"objective": {"classification": {"type": "soft-ce", "temprature": 2}}},  # its params, misspelled
                {"student": {"objective": {"regression": {"type": "mixture", "alpha": 2}}}},
                {"logging": {"trackers": [{"type": "wandb", "mode": "sometimes"}]}},
                {"tasks": [{"name": "rte", "sourse": "x"}]},                # a GLUE task's params, by name
                {"tasks": [{"name": "mine", "type": "table", "train": "a.csv", "text_column": ["s"]}]}):
        assert list(validator.iter_errors(bad)), bad
    assert not list(validator.iter_errors({"extends": ["a.yaml", "mtkd:base.yaml"],
                                           "student": None, "encoder": {"model": "other/model"},
                                           "heads": {"rte": {"type": "san"}},
                                           "tasks": ["rte", {"name": "wnli", "max_train_examples": 5},
                                                     {"name": "mine", "type": "table", "train": "a.csv",
                                                      "text_columns": ["s"], "split_column": "set"}]}))
    resolved = json.loads(run_cli("recipe", "schema", "--resolved").stdout)
    assert {"name", "tasks", "encoder"} <= set(resolved["required"])


def test_extends_a_shipped_recipe_from_any_folder_with_its_data_from_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.yaml").write_text("extends: mtkd:quickstart.yaml\nname: mine\n")
    recipe = load_recipe(tmp_path / "sub" / "r.yaml")
    assert recipe.resolved["name"] == "mine" and recipe.resolved["teachers"]["members"][0]["name"] == "teacher-linear"
    assert os.path.samefile(recipe.resolve_path(recipe.resolved["data"]["glue"]), REPO / "recipes" / "data" / "sst2-2k")
    # A local parent's relative data path too, and a hub id is left alone.
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "mydata").mkdir()
    (tmp_path / "parent" / "p.yaml").write_text("extends: mtkd:base.yaml\ndata: {glue: mydata}\n")
    (tmp_path / "sub" / "c.yaml").write_text("extends: ../parent/p.yaml\nname: c\ntasks: [rte]\n")
    data = load_recipe(tmp_path / "sub" / "c.yaml").resolved["data"]
    assert data["glue"] == os.path.join("..", "parent", "mydata")
    (tmp_path / "parent" / "p.yaml").write_text("extends: mtkd:base.yaml\ndata: {glue: org/hub-id}\n")
    assert load_recipe(tmp_path / "sub" / "c.yaml").resolved["data"]["glue"] == "org/hub-id"
    (tmp_path / "sub" / "typo.yaml").write_text("extends: mtkd:quikstart.yaml\nname: x\n")
    result = run_cli("recipe", "validate", tmp_path / "sub" / "typo.yaml")
    assert result.exit_code == 2 and "no shipped recipe" in result.output and "mtkd:quickstart.yaml" in result.output


def test_validate_reports_every_missing_source_at_once(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "extends": "mtkd:base.yaml", "name": "r", "data": {"glue": "./no-such-folder"},
        "tasks": ["rte", {"name": "mine", "type": "table", "train": "missing.csv", "text_columns": ["s"]}],
        "encoder": {"type": "hf", "model": "./no-such-model"}}))
    result = run_cli("recipe", "validate", tmp_path / "r.yaml")
    assert result.exit_code == 2
    for expected in ("tasks[0]", "GLUE data folder not found", "tasks[1].train", "data file not found",
                     "encoder.model"):
        assert expected in result.output, expected


def test_init_then_validate_outside_the_clone_with_mtkd_installed_from_its_wheel(tmp_path):
    """The package data really ships: a wheel built from the tree, installed into a folder of its own."""
    wheel_dir, site, src = tmp_path / "wheel", tmp_path / "site", tmp_path / "src"
    # A copy: setuptools writes build/ and *.egg-info into the tree it builds.
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        "wandb", "logs"))
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheel_dir, src],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheel_dir.glob("mtkd-*.whl")
    installed = subprocess.run([*pip, "install", "-q", "--no-deps", "--target", site, wheel],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = mtkd_env(PYTHONPATH=str(site))  # the installed copy, not the clone
    where = subprocess.run([sys.executable, "-c", "import mtkd; print(mtkd.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    init = subprocess.run([sys.executable, "-m", "mtkd", "recipe", "init", "r.yaml"], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    assert "extends: mtkd:quickstart.yaml" in (empty / "r.yaml").read_text()
    valid = subprocess.run([sys.executable, "-m", "mtkd", "recipe", "validate", "r.yaml"], cwd=empty, env=env,
                           capture_output=True, text=True, timeout=120)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "ok r.yaml" in valid.stdout
    again = run_mtkd(["recipe", "init", empty / "r.yaml"])
    assert again.returncode == 2 and "--force" in again.stderr


def test_validate_reports_every_shape_error_at_once(tmp_path):
    (tmp_path / "r.yaml").write_text("extends: mtkd:base.yaml\nname: r\ntasks: [rte]\ntrainig: {lr: 1}\n"
                                     "training: {lr: -1, epochs: 0}\n")
    result = run_cli("recipe", "validate", tmp_path / "r.yaml")
    assert result.exit_code == 2
    assert result.output.count("Error in") == 3
    for expected in ("training.epochs", "training.lr", "did you mean 'training'"):
        assert expected in result.output, expected


def test_validate_reports_every_bad_component_at_once(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "extends: mtkd:base.yaml\nname: r\ntasks: [rte]\n"
        "objective: {classification: {type: ce, label_smoothin: 0.1}}\n"
        "teachers: {aggregation: {type: mean-probs, temperature: -1}}\n"
        "logging: {trackers: [{type: wandb, mode: sometimes}]}\n")
    result = run_cli("recipe", "validate", tmp_path / "r.yaml")
    assert result.exit_code == 2
    assert result.output.count("Error in") >= 3
    for expected in ("did you mean 'label_smoothing'", "teachers.aggregation.temperature", "logging.trackers[0].mode"):
        assert expected in result.output, expected


def test_init_from_base_writes_a_recipe_that_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("recipe", "init", "--from", "base", "mine.yaml").exit_code == 0
    text = (tmp_path / "mine.yaml").read_text()
    assert text.splitlines()[0].startswith("# A starting recipe") and "extends: mtkd:base.yaml" in text
    assert "name: mine" in text
    result = run_cli("recipe", "validate", "mine.yaml")
    assert result.exit_code == 0, result.output
    assert run_cli("recipe", "init", "mine.yaml").exit_code == 2  # never overwritten silently
    assert run_cli("recipe", "init", "--force", "mine.yaml").exit_code == 0
    assert "extends: mtkd:quickstart.yaml" in (tmp_path / "mine.yaml").read_text()
