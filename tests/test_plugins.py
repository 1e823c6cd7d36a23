"""The plugin manager: entry points, ``--plugin`` files and modules, allow/block lists, tracing, hook checks.

Entry-point discovery is tested with a real distribution: a ``.dist-info`` folder (METADATA and
entry_points.txt, exactly what pip writes) on ``sys.path``, found by ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import mtkd
from mtkd import plugins
from mtkd.errors import PluginError
from mtkd.plugins import get_plugin_manager, get_registries, load_plugins, plugin_info, register_plugin

FIRST_PARTY = {"glue": "mtkd_glue", "hf": "mtkd_hf", "distill": "mtkd_distill", "samplers": "mtkd_samplers",
               "loggers": "mtkd_loggers"}


def plugin_source(loss: str, *, extra: str = "") -> str:
    """A plugin module registering one loss named ``loss``."""
    return textwrap.dedent(f'''
        import mtkd


        class Loss:
            """The {loss} loss."""

            def __init__(self, params):
                self.params = params


        @mtkd.hookimpl
        def register_losses(register):
            register({loss!r}, Loss)
    ''') + textwrap.dedent(extra)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "")
    plugins.reset()
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:  # plugin modules written by one test must not leak into the next
        if name.startswith(("mtkd_fake", "mtkd_local_", "loose_plugin")):
            del sys.modules[name]


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path where ``install`` puts modules with their .dist-info, as pip would."""
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def install(site: Path, *, dist: str, version: str, entry_point: str, module: str, source: str) -> None:
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[mtkd]\n{entry_point} = {module}\n", encoding="utf-8")
    importlib.invalidate_caches()


def losses() -> list[str]:
    return get_registries().losses.names()


# ---------------------------------------------------------------- entry points


def test_first_party_plugins_are_entry_points_of_mtkd():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="mtkd") if ep.dist and ep.dist.name == "mtkd"}
    assert {name: ep.value for name, ep in eps.items()} == FIRST_PARTY
    for module in FIRST_PARTY.values():
        assert importlib.util.find_spec(module) is not None, module


def test_an_installed_distribution_is_discovered_through_its_entry_point(site, monkeypatch):
    install(site, dist="mtkd-fake-plugin", version="1.2.3", entry_point="fake", module="mtkd_fake_plugin",
            source=plugin_source("fake-loss"))
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "fake")
    entry = get_registries().losses.get("fake-loss")
    assert (entry.plugin, entry.distribution, entry.version) == ("mtkd_fake_plugin", "mtkd-fake-plugin", "1.2.3")
    assert entry.description == "The fake-loss loss."
    [info] = plugin_info()
    assert (info.name, info.distribution, info.version, info.source) == (
        "mtkd_fake_plugin", "mtkd-fake-plugin", "1.2.3", "entry point")


@pytest.mark.parametrize(
    ("allow", "block", "expected"),
    [
        ("fake,other", None, ["fake-loss", "other-loss"]),
        ("fake", None, ["fake-loss"]),  # by entry-point name
        ("mtkd-other-plugin", None, ["other-loss"]),  # by distribution name
        ("mtkd_fake_other", None, ["other-loss"]),  # by module name
        ("MTKD_Other_Plugin", None, ["other-loss"]),  # names compare like distribution names
        (" fake , other ", None, ["fake-loss", "other-loss"]),  # spaces are ignored
        ("", None, []),  # an empty allow-list loads nothing
        ("nothing-by-that-name", None, []),
        ("fake,other", "other", ["fake-loss"]),
        ("fake,other", "mtkd-fake-plugin", ["other-loss"]),  # the block-list wins, by any of the names
        ("fake,other", "fake,other", []),
    ],
)
def test_allow_and_block_lists(site, monkeypatch, allow, block, expected):
    install(site, dist="mtkd-fake-plugin", version="1.0", entry_point="fake", module="mtkd_fake_plugin",
            source=plugin_source("fake-loss"))
    install(site, dist="mtkd-other-plugin", version="2.0", entry_point="other", module="mtkd_fake_other",
            source=plugin_source("other-loss"))
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", allow)
    if block is not None:
        monkeypatch.setenv("MTKD_DISABLE_PLUGINS", block)
    assert losses() == expected


def test_a_plugin_that_fails_to_import_is_named_and_can_be_disabled(site, monkeypatch):
    install(site, dist="mtkd-fake-broken", version="0.1", entry_point="broken", module="mtkd_fake_broken",
            source="raise RuntimeError('needs a GPU driver')\n")
    install(site, dist="mtkd-fake-plugin", version="1.0", entry_point="fake", module="mtkd_fake_plugin",
            source=plugin_source("fake-loss"))
    monkeypatch.setenv("MTKD_LOAD_PLUGINS", "broken,fake")
    with pytest.raises(PluginError) as info:
        get_registries()
    assert "plugin 'broken'" in info.value.message and "needs a GPU driver" in info.value.message
    assert info.value.hint == "disable it with MTKD_DISABLE_PLUGINS=broken"
    plugins.reset()
    monkeypatch.setenv("MTKD_DISABLE_PLUGINS", "broken")
    assert losses() == ["fake-loss"]


# ---------------------------------------------------------------- --plugin: files and modules


def test_plugin_files_absolute_relative_to_a_recipe_and_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "first.py").write_text(plugin_source("first"), encoding="utf-8")
    (tmp_path / "b" / "second.py").write_text(plugin_source("second"), encoding="utf-8")
    (tmp_path / "third.py").write_text(plugin_source("third"), encoding="utf-8")
    load_plugins([tmp_path / "a" / "first.py"])
    load_plugins(["../b/second.py"], file=tmp_path / "a" / "recipe.yaml")  # relative to the recipe
    monkeypatch.chdir(tmp_path)
    load_plugins(["third.py"])  # no recipe: relative to the working directory
    assert losses() == ["first", "second", "third"]
    sources = {i.name: (i.module, i.source) for i in plugin_info()}
    assert sources["mtkd_local_second"] == (str(tmp_path / "b" / "second.py"), "file")
    # Loading the same file again is a no-op, not a duplicate registration.
    load_plugins([tmp_path / "a" / "first.py", "a/first.py"])
    assert losses() == ["first", "second", "third"]


def test_two_plugin_files_with_the_same_name_in_different_folders(tmp_path):
    for folder, loss in (("x", "x-loss"), ("y", "y-loss")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plugin.py").write_text(plugin_source(loss), encoding="utf-8")
    load_plugins([tmp_path / "x" / "plugin.py", tmp_path / "y" / "plugin.py"])
    assert losses() == ["x-loss", "y-loss"]


def test_plugin_module_by_name(tmp_path, monkeypatch):
    (tmp_path / "loose_plugin_mod.py").write_text(plugin_source("module-loss"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugins(["loose_plugin_mod"])
    assert losses() == ["module-loss"]
    assert [(i.name, i.source) for i in plugin_info()] == [("loose_plugin_mod", "module")]


@pytest.mark.parametrize(
    ("spec", "source", "message"),
    [
        ("missing.py", None, "plugin file 'missing.py' does not exist"),
        ("no_such_plugin_module", None, "cannot import plugin module 'no_such_plugin_module'"),
        ("raises.py", "import mtkd\nraise ValueError('bad config')\n",
         "failed to run: ValueError: bad config"),
        ("loose_plugin_raising", "raise KeyError('x')\n", "plugin module 'loose_plugin_raising' failed to import"),
    ],
)
def test_plugins_that_cannot_load_are_plugin_errors(tmp_path, monkeypatch, spec, source, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    if source is not None:
        name = spec if spec.endswith(".py") else f"{spec}.py"
        (tmp_path / name).write_text(source, encoding="utf-8")
    with pytest.raises(PluginError) as info:
        load_plugins([spec], file=tmp_path / "r.yaml")
    assert message in info.value.message
    assert info.value.file == str(tmp_path / "r.yaml") and info.value.path == "plugins"


# ---------------------------------------------------------------- hook checks


def test_a_misspelled_hook_is_a_plugin_error_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("import mtkd\n\n\n@mtkd.hookimpl\ndef register_task(register):\n    pass\n", encoding="utf-8")
    with pytest.raises(PluginError) as info:
        load_plugins([path])
    err = info.value
    assert err.message == ("plugin 'mtkd_local_typo' implements an unknown hook 'register_task'; "
                           "did you mean 'register_tasks'?")
    assert err.found == "register_task" and "register_tasks" in err.expected and "register_commands" in err.expected
    # The bad plugin is not left half-registered: the manager still works.
    assert not get_plugin_manager().has_plugin("mtkd_local_typo")
    assert losses() == []


def test_a_misspelled_hook_on_a_registered_object():
    class Typo:
        @mtkd.hookimpl
        def register_aggregator(self, register):
            register("x", object)

    with pytest.raises(PluginError, match="did you mean 'register_aggregators'"):
        register_plugin(Typo(), "typo")


def test_a_hook_with_a_wrong_argument_is_a_plugin_error():
    class WrongArgument:
        @mtkd.hookimpl
        def register_losses(self, registry):
            pass

    with pytest.raises(PluginError) as info:
        register_plugin(WrongArgument(), "wrong-argument")
    assert "invalid hook implementation" in info.value.message and "registry" in info.value.message


def test_register_commands_adds_click_commands():
    class Commands:
        @mtkd.hookimpl
        def register_commands(self, cli):
            @cli.command()
            @click.argument("who")
            def hello(who):
                click.echo(f"hello {who}")

    register_plugin(Commands(), "commands")
    group = click.Group("test")
    get_plugin_manager().hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello", "mtkd"])
    assert result.exit_code == 0 and result.output == "hello mtkd\n"


def test_unregister_plugin_forgets_its_components(tmp_path):
    (tmp_path / "one.py").write_text(plugin_source("one"), encoding="utf-8")
    load_plugins([tmp_path / "one.py"])
    assert losses() == ["one"]
    plugins.unregister_plugin("mtkd_local_one")
    assert losses() == [] and plugin_info() == []


# ---------------------------------------------------------------- tracing


def test_trace_prints_every_hook_call_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTKD_TRACE_PLUGINS", "1")
    plugins.reset()
    (tmp_path / "traced.py").write_text(plugin_source("traced-loss"), encoding="utf-8")
    load_plugins([tmp_path / "traced.py"])
    assert losses() == ["traced-loss"]
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("[mtkd plugins]")]
    assert any("register_losses [hook]" in line for line in lines)
    assert any("finish register_losses" in line for line in lines)


def test_no_trace_without_the_variable(tmp_path, capsys):
    (tmp_path / "quiet.py").write_text(plugin_source("quiet-loss"), encoding="utf-8")
    load_plugins([tmp_path / "quiet.py"])
    assert losses() == ["quiet-loss"]
    assert "[mtkd plugins]" not in capsys.readouterr().err
