"""Recipes through the real loader: two-pass validation, ``--set``, ``extends:`` and the content hash.

The components come from a small plugin file written by these tests (``TOY_PLUGIN``), never from
the first-party plugins, so the core is tested on its own. ``test_cli_core.py`` and
``test_example_plugin.py`` reuse ``TOY_PLUGIN``, ``base_recipe`` and ``write_yaml`` from here.
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml

from mtkd import plugins
from mtkd.errors import RecipeError, UnknownComponentError
from mtkd.recipe import load_recipe

#: One component of every kind the recipe schema needs, with pydantic params.
TOY_PLUGIN = textwrap.dedent('''
    """Toy components for the core's tests: one of every kind, each with a params model."""
    from typing import Literal

    import torch
    from pydantic import Field

    import mtkd
    from mtkd.params import Params


    class ToyTaskParams(Params):
        num_labels: int = Field(2, ge=2)
        text_column: str = "sentence"


    class ToyTask:
        """A classification task named by the recipe."""

        task_type = "classification"

        def __init__(self, params, context):
            self.name = context.name
            self.labels = [f"label{i}" for i in range(params.num_labels)]
            self.sources = context.sources

        @property
        def num_outputs(self):
            return len(self.labels)


    class ToyEncoderParams(Params):
        model: str = "tiny"
        hidden_size: int = Field(8, gt=0)
        dropout: float = Field(0.1, ge=0, le=1)
        pretrained: bool = True


    class ToyEncoder(torch.nn.Module):
        """A bag of embeddings."""

        def __init__(self, params):
            super().__init__()
            self.hidden_size = params.hidden_size
            self.embed = torch.nn.EmbeddingBag(100, params.hidden_size)


    class LinearParams(Params):
        dropout: float = Field(0.1, ge=0, le=1)


    def linear_head(params, hidden_size, num_outputs):
        """Dropout and a linear layer."""
        return torch.nn.Sequential(torch.nn.Dropout(params.dropout), torch.nn.Linear(hidden_size, num_outputs))


    class SoftCEParams(Params):
        alpha: float = Field(0.5, ge=0, le=1)
        temperature: float = Field(1.0, gt=0)


    class Loss:
        """Cross-entropy (or MSE for regression)."""

        def __init__(self, params):
            self.params = params


    class MeanProbsParams(Params):
        temperature: float = Field(1.0, gt=0)


    class Mean:
        """Mean of the members' probabilities."""

        def __init__(self, params):
            self.params = params


    class ProportionalParams(Params):
        temperature: float = Field(1.0, gt=0)


    class Sampler:
        """Batches in proportion to the data sizes."""

        def __init__(self, params):
            self.params = params


    class JsonlParams(Params):
        project: str | None = None
        mode: Literal["online", "offline"] = "offline"


    class Tracker:
        """Metrics as JSON lines."""

        def __init__(self, params):
            self.params = params


    @mtkd.hookimpl
    def register_tasks(register):
        register("toy-cls", ToyTask, params=ToyTaskParams)
        register("toy-reg", ToyTask, params=ToyTaskParams, description="A regression task")


    @mtkd.hookimpl
    def register_encoders(register):
        register("toy-encoder", ToyEncoder, params=ToyEncoderParams)


    @mtkd.hookimpl
    def register_heads(register):
        register("linear", linear_head, params=LinearParams)


    @mtkd.hookimpl
    def register_losses(register):
        register("ce", Loss)
        register("soft-ce", Loss, params=SoftCEParams)
        register("mse", Loss)


    @mtkd.hookimpl
    def register_aggregators(register):
        register("mean-probs", Mean, params=MeanProbsParams)
        register("mean", Mean)


    @mtkd.hookimpl
    def register_samplers(register):
        register("proportional", Sampler, params=ProportionalParams)


    @mtkd.hookimpl
    def register_loggers(register):
        register("jsonl", Tracker, params=JsonlParams)
''')


def base_recipe(plugin: str = "toy_plugin.py") -> dict:
    """A recipe that uses every component of ``TOY_PLUGIN``, loaded through the recipe's ``plugins:``."""
    return {
        "name": "toy",
        "plugins": [plugin],
        "tasks": ["toy-cls", {"name": "sts", "type": "toy-reg"}],
        "encoder": {"type": "toy-encoder", "model": "tiny"},
        "heads": {"default": {"type": "linear"}},
        "objective": {"classification": {"type": "ce"}, "regression": {"type": "mse"}},
        "training": {"lr": 3.0e-5, "sampling": {"type": "proportional"}},
        "teachers": {
            "members": [{"seed": 1}, {"seed": 2}, {"seed": 3}],
            "aggregation": {"type": "mean-probs"},
            "regression_aggregation": {"type": "mean"},
        },
        "student": {
            "objective": {"classification": {"type": "soft-ce", "alpha": 0.3}, "regression": {"type": "mse"}},
        },
        "logging": {"trackers": [{"type": "jsonl"}]},
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_toy_plugin(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "toy_plugin.py"
    path.write_text(TOY_PLUGIN, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch):
    # Only the toy plugin: the first-party ones register some of the same names.
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "")
    plugins.reset()


@pytest.fixture
def recipe_file(tmp_path) -> Path:
    write_toy_plugin(tmp_path)
    return write_yaml(tmp_path / "recipe.yaml", base_recipe())


def edited(tmp_path, change) -> Path:
    """The base recipe after ``change(data)``, written to tmp_path (beside the toy plugin)."""
    write_toy_plugin(tmp_path)
    data = base_recipe()
    change(data)
    return write_yaml(tmp_path / "edited.yaml", data)


# ---------------------------------------------------------------- a valid recipe


def test_valid_recipe_is_resolved_with_every_default(recipe_file):
    r = load_recipe(recipe_file)
    res = r.resolved
    # Pass 1 defaults (the core's schema) ...
    assert res["training"]["batch_size"] == 32 and res["training"]["lr"] == 3.0e-5
    assert [t["name"] for t in res["tasks"]] == ["toy-cls", "sts"]
    assert res["tasks"][0]["type"] == "toy-cls" and res["tasks"][1]["type"] == "toy-reg"
    # ... and pass 2 defaults (each plugin's params model).
    assert res["tasks"][0]["num_labels"] == 2 and res["tasks"][0]["text_column"] == "sentence"
    assert res["encoder"] == {"type": "toy-encoder", "model": "tiny", "hidden_size": 8, "dropout": 0.1,
                              "pretrained": True}
    assert res["heads"]["default"] == {"type": "linear", "dropout": 0.1}
    assert res["student"]["objective"]["classification"] == {"type": "soft-ce", "alpha": 0.3, "temperature": 1.0}
    assert res["teachers"]["aggregation"] == {"type": "mean-probs", "temperature": 1.0}
    assert res["training"]["sampling"] == {"type": "proportional", "temperature": 1.0}
    assert res["logging"]["trackers"] == [{"type": "jsonl", "project": None, "mode": "offline"}]
    assert r.model.teachers.members[2].seed == 3
    assert r.file == recipe_file and r.base_dir == recipe_file.parent


def test_a_headline_without_a_task_chooses_checkpoints_without_it(tmp_path, recipe_file):
    """exclude_from_score / score_tasks become training.best_tasks (so every job's key holds them) unless the
    recipe names best_tasks itself; a member's own training keeps its own."""
    def change(excluded=None, scored=None, best=None, member_best=None):
        def edit(data):
            data["evaluation"] = {k: v for k, v in (("exclude_from_score", excluded), ("score_tasks", scored)) if v}
            if best:
                data["training"]["best_tasks"] = best
            if member_best:
                data["teachers"]["members"][0]["training"] = {"best_tasks": member_best}
        return edit

    plain = load_recipe(recipe_file)
    assert "best_tasks" not in plain.resolved["training"]
    excluded = load_recipe(edited(tmp_path, change(excluded=["sts"])))
    assert excluded.resolved["training"]["best_tasks"] == ["toy-cls"] and excluded.hash != plain.hash
    assert load_recipe(edited(tmp_path, change(scored=["sts"]))).resolved["training"]["best_tasks"] == ["sts"]
    assert load_recipe(edited(tmp_path, change(excluded=["sts"], best=["sts"]))).resolved["training"]["best_tasks"] == ["sts"]
    member = load_recipe(edited(tmp_path, change(excluded=["sts"], member_best=["sts"])))
    assert member.resolved["training"]["best_tasks"] == ["toy-cls"]
    assert member.resolved["teachers"]["members"][0]["training"]["best_tasks"] == ["sts"]
    # Checkpoints not chosen by the tasks' mean: nothing to write, so the exclusion keeps every training key.
    final = load_recipe(edited(tmp_path, lambda d: (change(excluded=["sts"])(d), d["training"].update(best_metric="final"))))
    assert "best_tasks" not in final.resolved["training"]
    # ... unless a search scores its trials by that mean.
    searched = load_recipe(edited(tmp_path, lambda d: (change(excluded=["sts"])(d), d["training"].update(
        best_metric="final"), d["student"].update(search={"lr": [1e-4, 5e-5], "seeds": [7]}),
        d["evaluation"].update(selection={"holdout": 0.2}))))
    assert searched.resolved["training"]["best_tasks"] == ["toy-cls"]
    # Every task in the headline: nothing to write.
    assert "best_tasks" not in load_recipe(edited(tmp_path, change(scored=["sts", "toy-cls"]))).resolved["training"]


def test_recipe_plugins_are_found_relative_to_the_recipe(tmp_path, monkeypatch):
    write_toy_plugin(tmp_path / "lib")
    recipe = write_yaml(tmp_path / "recipes" / "r.yaml", base_recipe("../lib/toy_plugin.py"))
    monkeypatch.chdir(tmp_path / "lib")  # the working directory must not matter
    assert load_recipe(recipe).resolved["encoder"]["type"] == "toy-encoder"


# ---------------------------------------------------------------- pass 1: the recipe's shape


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d.update(traning={"lr": 1}), "traning", "unknown key; did you mean 'training'?"),
        (lambda d: d["training"].update(batch_size="big"), "training.batch_size", "invalid value"),
        (lambda d: d["teachers"]["members"][2].update(seed="x"), "teachers.members[2].seed", "invalid value"),
        (lambda d: d["teachers"]["members"][1].update(sed=4), "teachers.members[1].sed",
         "unknown key; did you mean 'seed'?"),
        (lambda d: d["training"].update(eval_every="often"), "training.eval_every", "invalid value"),
        (lambda d: d.pop("encoder"), "encoder", "missing required key"),
        (lambda d: d["logging"]["trackers"][0].pop("type"), "logging.trackers[0].type", "missing required key"),
    ],
    ids=["unknown-top-level-key", "wrong-type", "member-seed", "unknown-member-key", "union", "missing",
         "missing-type"],
)
def test_shape_errors_name_file_and_path(tmp_path, change, path, message):
    f = edited(tmp_path, change)
    with pytest.raises(RecipeError) as info:
        load_recipe(f)
    err = info.value
    assert (err.file, err.path, err.message) == (str(f), path, message)
    assert f"{f}: {path}: {message}" in str(err)


def test_union_error_lists_every_accepted_form(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(edited(tmp_path, lambda d: d["training"].update(eval_every="often")))
    assert "valid integer" in info.value.expected and "'epoch'" in info.value.expected
    assert info.value.found == "often"


# ---------------------------------------------------------------- pass 2: components


@pytest.mark.parametrize(
    ("change", "path", "message", "error"),
    [
        (lambda d: d["student"]["objective"]["classification"].update(alpa=0.5),
         "student.objective.classification.alpa", "unknown key; did you mean 'alpha'?", RecipeError),
        (lambda d: d["student"]["objective"]["classification"].update(alpha=1.5),
         "student.objective.classification.alpha", "invalid value", RecipeError),
        (lambda d: d["teachers"]["aggregation"].update(type="mean-prob"),
         "teachers.aggregation.type", "unknown aggregator 'mean-prob'; did you mean 'mean-probs'?",
         UnknownComponentError),
        (lambda d: d["tasks"].__setitem__(0, {"name": "toy-cls", "num_labels": 1}), "tasks[0].num_labels",
         "invalid value", RecipeError),
        (lambda d: d["teachers"]["members"][1].update(encoder={"dropout": 2}), "teachers.members[1].encoder.dropout",
         "invalid value", RecipeError),
        (lambda d: d["logging"]["trackers"][0].update(mode="sometimes"), "logging.trackers[0].mode",
         "invalid value", RecipeError),
        (lambda d: d["heads"].update(stss={"type": "linear"}), "heads.stss", "unknown task 'stss'; did you mean 'sts'?",
         RecipeError),
    ],
    ids=["unknown-param", "bad-param-value", "unknown-component", "task-param", "member-encoder", "tracker",
         "head-for-unknown-task"],
)
def test_component_errors_name_file_and_path(tmp_path, change, path, message, error):
    f = edited(tmp_path, change)
    with pytest.raises(error) as info:
        load_recipe(f)
    assert (info.value.file, info.value.path, info.value.message) == (str(f), path, message)


def test_unknown_component_lists_the_registered_ones(tmp_path):
    with pytest.raises(UnknownComponentError) as info:
        load_recipe(edited(tmp_path, lambda d: d["encoder"].update(type="bert")))
    assert info.value.expected == "one of: toy-encoder"
    assert "did you mean" not in info.value.message


# ---------------------------------------------------------------- --set


def test_set_values_are_typed_by_the_schema(recipe_file):
    r = load_recipe(recipe_file, [
        "training.lr=1e-4",  # YAML would read 1e-4 as a string; the float field takes it
        "training.batch_size=8",
        "training.group_by_length=false",
        "student.seeds=[1, 2, 3]",
        "name=123",  # a string field given a number-looking value keeps it as text
        "teachers.members[1].seed=7",
        "tasks[1].name=2024",
        "teachers.tasks=[2024]",  # the items of a list of strings, too
        "logging.trackers[0].project=007",  # a plugin's string param: the text exactly as given
        "objective.classification.type=soft-ce",
        "objective.classification.alpha=0.25",
    ])
    res = r.resolved
    assert res["training"]["lr"] == pytest.approx(1e-4) and res["training"]["batch_size"] == 8
    assert res["training"]["group_by_length"] is False
    assert res["student"]["seeds"] == [1, 2, 3]
    assert res["name"] == "123"
    assert [m["seed"] for m in res["teachers"]["members"]] == [1, 7, 3]
    assert res["tasks"][1]["name"] == "2024" and res["teachers"]["tasks"] == ["2024"]
    assert res["logging"]["trackers"][0]["project"] == "007"
    assert res["objective"]["classification"] == {"type": "soft-ce", "alpha": 0.25, "temperature": 1.0}


def test_set_reaches_a_task_given_by_name_only(recipe_file):
    r = load_recipe(recipe_file, ["tasks[0].num_labels=3", "tasks[0].max_train_examples=100"])
    assert r.resolved["tasks"][0]["num_labels"] == 3 and r.resolved["tasks"][0]["max_train_examples"] == 100


@pytest.mark.parametrize(
    ("assignment", "path", "message"),
    [
        ("teachers.members[1].seed=abc", "teachers.members[1].seed", "invalid value"),
        ("teachers.members[5].seed=1", "teachers.members[5].seed", "--set index out of range"),
        ("training.lr", "training.lr", "invalid --set"),
        ("training.sampling.temperature=0", "training.sampling.temperature", "invalid value"),
    ],
)
def test_bad_set_values_are_recipe_errors(recipe_file, assignment, path, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, [assignment])
    assert (info.value.path, info.value.message) == (path, message)


# ---------------------------------------------------------------- extends


def test_extends_relative_paths_and_several_levels(tmp_path):
    write_toy_plugin(tmp_path / "base")
    write_yaml(tmp_path / "base" / "base.yaml", base_recipe())
    write_yaml(tmp_path / "base" / "longer.yaml", {"extends": "base.yaml", "name": "longer",
                                                   "training": {"epochs": 10}})
    child = write_yaml(tmp_path / "exp" / "child.yaml", {
        "extends": "../base/longer.yaml",
        "name": "child",
        "training": {"lr": 1.0e-4},  # merged key by key with the parents' training
        "teachers": {"aggregation": {"temperature": 2.0}},  # same type: merged
        "student": {"objective": {"classification": {"temperature": 2.0}}},  # one temperature for both
        "encoder": {"type": "toy-encoder", "hidden_size": 16},
        "objective": {"classification": {"type": "soft-ce"}},  # another type: replaced, no stale params
    })
    res = load_recipe(child).resolved
    assert res["name"] == "child"
    assert res["training"]["epochs"] == 10 and res["training"]["lr"] == 1.0e-4
    assert res["training"]["sampling"]["type"] == "proportional"
    assert res["teachers"]["aggregation"] == {"type": "mean-probs", "temperature": 2.0}
    assert res["encoder"]["model"] == "tiny" and res["encoder"]["hidden_size"] == 16
    assert res["objective"]["classification"] == {"type": "soft-ce", "alpha": 0.5, "temperature": 1.0}
    # `plugins: [toy_plugin.py]` came from base.yaml and is found beside it, not beside child.yaml.
    assert res["plugins"] == ["../base/toy_plugin.py"]


def test_extends_adds_the_childs_plugins_to_the_parents(tmp_path):
    write_toy_plugin(tmp_path / "base")
    write_yaml(tmp_path / "base" / "base.yaml", base_recipe())
    (tmp_path / "more.py").write_text(
        "import mtkd\n\n\n@mtkd.hookimpl\ndef register_losses(register):\n"
        "    register('focal-ish', lambda params: None, description='another loss')\n", encoding="utf-8")
    child = write_yaml(tmp_path / "child.yaml", {"extends": "base/base.yaml", "plugins": ["more.py"],
                                                 "objective": {"classification": {"type": "focal-ish"}}})
    r = load_recipe(child)
    assert r.resolved["plugins"] == ["base/toy_plugin.py", "more.py"]
    assert r.resolved["objective"]["classification"] == {"type": "focal-ish"}


def test_extends_a_list_of_parents_later_wins(tmp_path):
    write_toy_plugin(tmp_path)
    write_yaml(tmp_path / "base.yaml", base_recipe())
    write_yaml(tmp_path / "fast.yaml", {"training": {"epochs": 1, "batch_size": 8}})
    write_yaml(tmp_path / "big.yaml", {"training": {"batch_size": 64}})
    child = write_yaml(tmp_path / "child.yaml", {"extends": ["base.yaml", "fast.yaml", "big.yaml"]})
    training = load_recipe(child).resolved["training"]
    assert (training["epochs"], training["batch_size"]) == (1, 64)


def test_extends_cycle_is_an_error(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"extends": "b.yaml", "name": "a"})
    write_yaml(tmp_path / "b.yaml", {"extends": "sub/c.yaml"})
    write_yaml(tmp_path / "sub" / "c.yaml", {"extends": "../a.yaml"})
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "a.yaml")
    assert info.value.message == "`extends` forms a cycle" and info.value.path == "extends"
    assert "a.yaml -> " in info.value.found and info.value.found.count("a.yaml") == 2


def test_extends_missing_parent_names_the_file(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"extends": "nowhere.yaml"})
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "a.yaml")
    assert info.value.message == "recipe file not found" and info.value.file.endswith("nowhere.yaml")


def test_invalid_yaml_gives_line_and_column(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ntraining: {lr: 1\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(f)
    assert info.value.message.startswith("not valid YAML") and info.value.path.startswith("line ")


# ---------------------------------------------------------------- hash


def _reordered(value):
    """The same mapping with its keys in reverse order, all the way down."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_hash_is_stable_across_key_order_and_extends(tmp_path):
    write_toy_plugin(tmp_path)
    data = base_recipe()
    h = load_recipe(write_yaml(tmp_path / "a.yaml", data)).hash
    assert len(h) == 16 and int(h, 16) >= 0
    assert load_recipe(write_yaml(tmp_path / "b.yaml", _reordered(data))).hash == h
    # Split over two files with extends: the same resolved recipe, the same hash.
    parent = copy.deepcopy(data)
    del parent["logging"]
    write_yaml(tmp_path / "parent.yaml", parent)
    assert load_recipe(write_yaml(tmp_path / "c.yaml", {"extends": "parent.yaml",
                                                        "logging": data["logging"]})).hash == h
    # Spelling out a default changes nothing either.
    data_with_default = copy.deepcopy(data)
    data_with_default["training"]["batch_size"] = 32
    assert load_recipe(write_yaml(tmp_path / "d.yaml", data_with_default)).hash == h


def test_hash_changes_with_the_content(tmp_path):
    write_toy_plugin(tmp_path)
    data = base_recipe()
    f = write_yaml(tmp_path / "a.yaml", data)
    h = load_recipe(f).hash
    assert load_recipe(f, ["teachers.members[0].seed=11"]).hash != h
    assert load_recipe(f, ["objective.classification.type=soft-ce"]).hash != h
    data["training"]["lr"] = 4.0e-5
    assert load_recipe(write_yaml(tmp_path / "b.yaml", data)).hash != h



def test_a_parameter_a_plugin_added_later_is_left_out_while_at_its_default():
    from mtkd.params import Params

    class Later(Params):
        later_fields = ("extra",)
        size: int = 1
        extra: bool = False

    assert Later().model_dump() == {"size": 1}
    assert Later(size=2, extra=False).model_dump() == {"size": 2}
    assert Later(extra=True).model_dump() == {"size": 1, "extra": True}
