"""The ``mtkd`` command line through Click's runner: --version, plugins list, recipe validate/show/schema.

Components come from the toy plugin of ``test_recipe.py`` (loaded with ``--plugin`` or the recipe's
``plugins:``), not from the first-party plugins.
"""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import yaml
from click.testing import CliRunner
from test_recipe import TOY_PLUGIN, base_recipe, write_toy_plugin, write_yaml

import mtkd
from mtkd import plugins
from mtkd.cli import cli
from mtkd.errors import RecipeError


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "")
    plugins.reset()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"mtkd, version {mtkd.__version__}"
    import torch
    import transformers

    assert f"torch {torch.__version__}" in lines[1] and f"transformers {transformers.__version__}" in lines[1]
    assert lines[2].startswith("plugins: ")
    assert mtkd.__version__ == importlib.metadata.version("mtkd")


# ---------------------------------------------------------------- plugins list


def test_plugins_list_json(tmp_path):
    plugin = write_toy_plugin(tmp_path)
    result = run("plugins", "list", "--json", "--plugin", plugin)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    assert all({"kind", "name", "plugin", "version", "distribution", "description"} <= set(r) for r in rows)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert set(by_name) == {
        ("tasks", "toy-cls"), ("tasks", "toy-reg"), ("encoders", "toy-encoder"), ("heads", "linear"),
        ("losses", "ce"), ("losses", "soft-ce"), ("losses", "mse"), ("aggregators", "mean-probs"),
        ("aggregators", "mean"), ("samplers", "proportional"), ("loggers", "jsonl")}
    assert by_name[("losses", "soft-ce")] == {"kind": "losses", "name": "soft-ce", "plugin": "mtkd_local_toy_plugin",
                                              "version": None, "distribution": None,
                                              "description": "Cross-entropy (or MSE for regression)."}
    assert by_name[("tasks", "toy-reg")]["description"] == "A regression task"
    # Grouped by kind in the hooks' order, sorted by name within a kind.
    assert [r["name"] for r in rows if r["kind"] == "losses"] == ["ce", "mse", "soft-ce"]


def test_plugins_list_with_nothing_loaded_is_an_empty_list():
    result = run("plugins", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_plugins_list_table_and_a_module_plugin(tmp_path, monkeypatch):
    (tmp_path / "toy_module_for_cli.py").write_text(TOY_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = run("plugins", "list", "--plugin", "toy_module_for_cli")
    assert result.exit_code == 0, result.output
    assert "toy-encoder" in result.stdout and "toy_module_for_cli" in result.stdout and "local" in result.stdout


def test_plugins_list_fits_80_columns_one_line_per_component(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "glue,hf,distill,samplers,loggers")
    plugins.reset()
    rows = json.loads(run("plugins", "list", "--json").stdout)
    monkeypatch.setenv("COLUMNS", "80")
    lines = run("plugins", "list").stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for r in rows:
        (line,) = [line for line in lines if line.split()[:1] == [r["name"]]]  # one line, not wrapped
        assert f"{r['distribution']} {r['version']}" in line
        words = r["description"].split()
        assert words[0] in line and (words[-1] in line or line.rstrip().endswith("…"))
    headings = [line.strip() for line in lines if line.strip() in {r["kind"] for r in rows}]
    assert headings == list(dict.fromkeys(r["kind"] for r in rows))


def test_plugin_with_a_misspelled_hook_exits_2(tmp_path):
    bad = tmp_path / "typo.py"
    bad.write_text("import mtkd\n\n\n@mtkd.hookimpl\ndef register_loss(register):\n    pass\n", encoding="utf-8")
    result = run("plugins", "list", "--plugin", bad)
    assert result.exit_code == 2
    assert "unknown hook 'register_loss'; did you mean 'register_losses'?" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- recipe validate


@pytest.fixture
def recipe(tmp_path):
    write_toy_plugin(tmp_path)
    return write_yaml(tmp_path / "recipe.yaml", base_recipe())


def test_validate_ok_prints_the_hash(recipe):
    result = run("recipe", "validate", recipe)
    assert result.exit_code == 0, result.output
    from mtkd.recipe import load_recipe

    assert result.stdout == f"ok {recipe} (hash {load_recipe(recipe).hash})\n"


def _broken(tmp_path, change):
    data = base_recipe()
    change(data)
    return write_yaml(tmp_path / "broken.yaml", data)


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        # pass 1: the shape
        (lambda d: d["training"].update(bogus=1), "training.bogus", "unknown key"),
        (lambda d: d["teachers"]["members"][2].update(seed="three"), "teachers.members[2].seed", "invalid value"),
        (lambda d: d["training"].update(batch_size=[32]), "training.batch_size", "invalid value"),
        # pass 2: the components
        (lambda d: d["student"]["objective"]["classification"].update(alpah=0.1),
         "student.objective.classification.alpah", "unknown key; did you mean 'alpha'?"),
        (lambda d: d["student"]["objective"]["classification"].update(alpha=-0.1),
         "student.objective.classification.alpha", "invalid value"),
        (lambda d: d["teachers"].update(aggregation={"type": "mean-prob"}), "teachers.aggregation.type",
         "unknown aggregator 'mean-prob'; did you mean 'mean-probs'?"),
    ],
    ids=["unknown-key", "member-seed", "wrong-type", "unknown-param", "bad-param", "unknown-component"],
)
def test_invalid_recipes_exit_2_naming_file_and_path(tmp_path, change, where, message):
    write_toy_plugin(tmp_path)
    f = _broken(tmp_path, change)
    result = run("recipe", "validate", f)
    assert result.exit_code == 2, result.output
    # (after the line that names the recipe's plugins before they are imported)
    first = [line for line in result.stderr.splitlines() if not line.startswith("mtkd: ")][0]
    assert first == f"Error in {f}: {where}: {message}"  # on one line, however long the path
    assert "expected:" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_validate_stops_at_the_first_invalid_file(tmp_path, recipe):
    bad = _broken(tmp_path, lambda d: d.update(seed="x"))
    result = run("recipe", "validate", recipe, bad, recipe)
    assert result.exit_code == 2
    assert result.stdout.count("ok ") == 1 and f"Error in {bad}: seed: invalid value" in result.stderr


def test_debug_shows_the_exception(tmp_path):
    write_toy_plugin(tmp_path)
    f = _broken(tmp_path, lambda d: d.update(seed="x"))
    result = run("--debug", "recipe", "validate", f)
    assert result.exit_code == 1 and isinstance(result.exception, RecipeError)


def test_missing_recipe_file(tmp_path):
    result = run("recipe", "validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "recipe file not found" in result.stderr


def test_set_overrides_on_the_command_line(recipe):
    result = run("recipe", "show", recipe, "--json", "--set", "teachers.members[1].seed=7", "--set", "name=123",
                 "--set", "training.group_by_length=false", "--set", "student.seeds=[1,2]")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["recipe"]
    assert shown["teachers"]["members"][1]["seed"] == 7 and shown["name"] == "123"
    assert shown["training"]["group_by_length"] is False and shown["student"]["seeds"] == [1, 2]
    bad = run("recipe", "validate", recipe, "--set", "teachers.members[2].seed=x")
    assert bad.exit_code == 2 and f"Error in {recipe}: teachers.members[2].seed: invalid value" in bad.stderr


def test_plugin_option_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy.py").write_text(TOY_PLUGIN, encoding="utf-8")
    data = base_recipe()
    del data["plugins"]
    recipe = write_yaml(tmp_path / "recipes" / "r.yaml", data)
    monkeypatch.chdir(tmp_path)
    result = run("recipe", "validate", "recipes/r.yaml", "--plugin", "plugins/toy.py")
    assert result.exit_code == 0, result.output
    plugins.reset()  # a new `mtkd` process
    missing = run("recipe", "validate", recipe)  # without the plugin, its components are unknown
    assert missing.exit_code == 2 and "unknown task 'toy-cls'" in missing.stderr


# ---------------------------------------------------------------- recipe show / schema


def test_show_prints_the_resolved_recipe_and_its_hash(recipe):
    from mtkd.recipe import load_recipe

    expected = load_recipe(recipe)
    plugins.reset()
    result = run("recipe", "show", recipe)
    assert result.exit_code == 0, result.output
    first, rest = result.stdout.split("\n", 1)
    assert first == f"# hash: {expected.hash}"
    assert yaml.safe_load(rest) == expected.resolved
    as_json = json.loads(run("recipe", "show", recipe, "--json").stdout)
    assert as_json == {"hash": expected.hash, "recipe": expected.resolved}


def test_schema_has_the_recipe_and_every_components_params(tmp_path):
    result = run("recipe", "schema", "--resolved", "--plugin", write_toy_plugin(tmp_path))
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert {"name", "tasks", "encoder", "heads", "objective", "training", "teachers", "student"} <= set(
        schema["properties"])
    assert set(schema["required"]) >= {"name", "tasks", "encoder", "heads", "objective", "training"}
    soft_ce = schema["x-mtkd-components"]["losses"]["soft-ce"]
    assert soft_ce["properties"]["alpha"]["maximum"] == 1 and soft_ce["additionalProperties"] is False
    assert schema["x-mtkd-components"]["loggers"]["jsonl"]["properties"]["mode"]["enum"] == ["online", "offline"]
    assert set(schema["x-mtkd-components"]) == {"tasks", "encoders", "heads", "losses", "aggregators", "samplers",
                                                "loggers"}
