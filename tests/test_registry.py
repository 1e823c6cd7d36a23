"""Typed registries: what ``register`` records, duplicates, did-you-mean, params validation, factories."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, Field

import mtkd
from mtkd import plugins
from mtkd.components import TaskContext
from mtkd.errors import DuplicateComponentError, PluginError, RecipeError, UnknownComponentError
from mtkd.params import NoParams, Params, validate
from mtkd.plugins import get_registries, register_plugin
from mtkd.recipe import Training
from mtkd.registry import KINDS, split_spec


@pytest.fixture(autouse=True)
def _no_installed_plugins(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "")
    plugins.reset()


class TemperatureParams(Params):
    temperature: float = Field(1.0, gt=0)


class MeanProbs:
    """Average of the members' probabilities.

    More text that is not the summary.
    """

    def __init__(self, params: TemperatureParams):
        self.params = params

    def __call__(self, outputs, *, weights=None):
        return torch.softmax(outputs / self.params.temperature, dim=-1).mean(dim=0)


class Median:
    """Median of the members' values."""

    def __init__(self, params):
        self.params = params


class HeadParams(Params):
    dropout: float = Field(0.0, ge=0, le=1)


class TaskParams(Params):
    num_labels: int = Field(2, ge=2)


class Ensembles:
    """A plugin written as a class, the way tests (and some plugins) register objects."""

    @mtkd.hookimpl
    def register_aggregators(self, register):
        register("mean-probs", MeanProbs, params=TemperatureParams)
        register("median", Median)

    @mtkd.hookimpl
    def register_heads(self, register):
        register("linear", lambda params, hidden_size, num_outputs: torch.nn.Linear(hidden_size, num_outputs),
                 params=HeadParams, description="One linear layer")

    @mtkd.hookimpl
    def register_tasks(self, register):
        register("toy", lambda params, context: (params, context), params=TaskParams)


def test_registrations_record_plugin_params_and_description():
    register_plugin(Ensembles(), "ensembles")
    reg = get_registries()
    assert reg.aggregators.names() == ["mean-probs", "median"]
    entry = reg.aggregators.get("mean-probs")
    assert (entry.kind, entry.name, entry.plugin, entry.params) == ("aggregators", "mean-probs", "ensembles",
                                                                     TemperatureParams)
    assert entry.description == "Average of the members' probabilities."  # the docstring's first line
    assert reg.aggregators.get("median").params is NoParams  # no params: nothing may be given
    assert reg.heads.get("linear").description == "One linear layer"
    assert len(reg.losses) == 0 and "mean-probs" in reg.aggregators and "mean" not in reg.aggregators
    assert set(reg.by_kind) == set(KINDS)
    assert [(kind, e.name) for kind, e in reg.all()] == [
        ("tasks", "toy"), ("heads", "linear"), ("aggregators", "mean-probs"), ("aggregators", "median")]


def test_create_calls_the_factory_with_validated_params_and_extra_arguments():
    register_plugin(Ensembles(), "ensembles")
    reg = get_registries()
    agg = reg.aggregators.create("mean-probs", {"temperature": 2})
    assert isinstance(agg.params, TemperatureParams) and agg.params.temperature == 2.0
    # logits log(0.8), log(0.2) at T=2 -> sqrt(0.8), sqrt(0.2) renormalised: 2/3, 1/3; two equal members.
    logits = torch.tensor([0.8, 0.2]).log().expand(2, 1, 2)
    assert torch.allclose(agg(logits), torch.tensor([[2 / 3, 1 / 3]]))
    # Heads get (params, hidden_size, num_outputs); tasks get (params, context).
    head = reg.heads.create("linear", {}, 8, 3)
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (8, 3)
    context = TaskContext(name="rte", sources={"glue": "data/glue"})
    params, got = reg.tasks.create("toy", {"num_labels": 3}, context)
    assert params.num_labels == 3 and got is context
    # An already validated model is passed through unchanged.
    given = TemperatureParams(temperature=0.5)
    assert reg.aggregators.create("mean-probs", given).params is given


@pytest.mark.parametrize(
    ("params", "path", "message"),
    [
        ({"temprature": 2}, "teachers.aggregation.temprature", "unknown key; did you mean 'temperature'?"),
        ({"temperature": 0}, "teachers.aggregation.temperature", "invalid value"),
        ({"temperature": "hot"}, "teachers.aggregation.temperature", "invalid value"),
    ],
)
def test_params_are_validated_against_the_plugins_model(params, path, message):
    register_plugin(Ensembles(), "ensembles")
    with pytest.raises(RecipeError) as info:
        get_registries().aggregators.create("mean-probs", params, file="r.yaml", path="teachers.aggregation")
    assert (info.value.file, info.value.path, info.value.message) == ("r.yaml", path, message)


def test_a_component_without_params_refuses_any():
    register_plugin(Ensembles(), "ensembles")
    with pytest.raises(RecipeError) as info:
        get_registries().aggregators.validate_params("median", {"temperature": 1}, path="teachers.aggregation")
    assert info.value.path == "teachers.aggregation.temperature" and info.value.message == "unknown key"


def test_unknown_name_suggests_the_closest():
    register_plugin(Ensembles(), "ensembles")
    reg = get_registries()
    with pytest.raises(UnknownComponentError) as info:
        reg.aggregators.get("mean-prob", file="r.yaml", path="teachers.aggregation.type")
    err = info.value
    assert err.message == "unknown aggregator 'mean-prob'; did you mean 'mean-probs'?"
    assert (err.file, err.path, err.found) == ("r.yaml", "teachers.aggregation.type", "mean-prob")
    assert err.expected == "one of: mean-probs, median"
    with pytest.raises(UnknownComponentError) as info:
        reg.losses.get("soft-ce")
    assert info.value.message == "unknown loss 'soft-ce'" and info.value.expected == "one of: (none registered)"


def test_duplicate_names_from_two_plugins_name_both():
    class Other:
        @mtkd.hookimpl
        def register_aggregators(self, register):
            register("mean-probs", MeanProbs)

    register_plugin(Ensembles(), "ensembles")
    register_plugin(Other(), "other-ensembles")
    with pytest.raises(DuplicateComponentError) as info:
        get_registries()
    message = info.value.message
    assert "aggregator 'mean-probs' is registered twice" in message
    assert "'ensembles'" in message and "'other-ensembles'" in message
    assert "MTKD_DISABLE_PLUGINS" in info.value.hint
    # The same name for another kind is not a clash.
    plugins.unregister_plugin("other-ensembles")
    assert "mean-probs" in get_registries().aggregators


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", MeanProbs), "registers a aggregator without a name"),
        (("x", "not callable"), "with a factory that cannot be called"),
        (("x", MeanProbs, {"temperature": 1.0}), "with params that are not a pydantic model"),
    ],
)
def test_register_rejects_bad_arguments_naming_the_plugin(args, message):
    class Bad:
        @mtkd.hookimpl
        def register_aggregators(self, register):
            register(*args)

    register_plugin(Bad(), "bad-plugin")
    with pytest.raises(PluginError) as info:
        get_registries()
    assert message in info.value.message and "'bad-plugin'" in info.value.message


def test_a_plain_pydantic_model_is_accepted_as_params():
    class Loose(BaseModel):
        size: int = 1

    class P:
        @mtkd.hookimpl
        def register_samplers(self, register):
            register("loose", lambda params: params, params=Loose)

    register_plugin(P(), "p")
    assert get_registries().samplers.create("loose", {"size": 3}).size == 3


def test_split_spec_forms():
    assert split_spec("mean-probs") == ("mean-probs", {})
    assert split_spec({"type": "kl", "temperature": 2}) == ("kl", {"temperature": 2})
    assert split_spec({"alpha": 1}, default_type="mixture") == ("mixture", {"alpha": 1})
    with pytest.raises(RecipeError, match="missing `type`"):
        split_spec({"alpha": 1}, path="objective.classification")
    with pytest.raises(RecipeError, match="invalid component"):
        split_spec(3, path="objective.classification")


def test_union_errors_name_the_field_not_the_union_member():
    # pydantic puts the union member ("int") into the location; the path must not show it.
    with pytest.raises(RecipeError) as info:
        validate(Training, {"sampling": {"type": "x"}, "eval_every": 2.5}, file="r.yaml", prefix="training")
    assert info.value.path == "training.eval_every"
    assert info.value.expected == ("Input should be a valid integer, got a number with a fractional part"
                                   " or Input should be 'epoch'")
    assert info.value.hint is None  # one problem, reported once


def test_several_problems_say_how_many_more():
    with pytest.raises(RecipeError) as info:
        validate(Training, {"sampling": {"type": "x"}, "lr": -1, "batch_size": 0, "warmup": 2})
    assert info.value.path == "batch_size" and info.value.hint == "2 more problem(s) after this one"
