"""docs/plugin-hooks.md must document every hook of mtkd/hookspecs.py with its exact signature."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from mtkd import hookspecs
from mtkd.registry import Registry, make_register

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugin-hooks.md"
HEADING = re.compile(r"^### `(\w+)(\(.*\))`\s*$", re.MULTILINE)


def hookspec_signatures() -> dict[str, str]:
    """``{"register_tasks": "register_tasks(register)", ...}`` from the code."""
    return {name: f"{name}{inspect.signature(fn)}" for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "mtkd_spec")}  # pluggy marks hookspecs with <project>_spec


def sections(text: str) -> dict[str, str]:
    """Hook name -> the section's text, from the ``### `hook(args)` `` headings."""
    matches = list(HEADING.finditer(text))
    return {m.group(1): text[m.start():matches[i + 1].start() if i + 1 < len(matches) else len(text)]
            for i, m in enumerate(matches)}


def problems(text: str) -> list[str]:
    """Everything wrong with the doc's hook sections, as messages."""
    documented = {m.group(1): m.group(1) + m.group(2) for m in HEADING.finditer(text)}
    out = []
    for name, signature in hookspec_signatures().items():
        if name not in documented:
            out.append(f"{name} is not documented (add a section headed ### `{signature}`)")
        elif documented[name] != signature:
            out.append(f"{name}: the doc says {documented[name]}, the code says {signature}")
    out += [f"{name} is documented but is not a hook" for name in documented if name not in hookspec_signatures()]
    return out


def test_hookspecs_are_found():
    specs = hookspec_signatures()
    assert specs["register_tasks"] == "register_tasks(register)" and specs["register_commands"] == "register_commands(cli)"
    assert len(specs) == 9


def test_every_hook_is_documented_with_its_signature():
    assert problems(DOC.read_text(encoding="utf-8")) == []


def test_the_check_catches_a_missing_or_changed_hook():
    text = DOC.read_text(encoding="utf-8")
    assert problems(text.replace("### `register_samplers(register)`", "### Samplers")) == [
        "register_samplers is not documented (add a section headed ### `register_samplers(register)`)"]
    assert problems(text.replace("### `register_losses(register)`", "### `register_losses(register, cli)`")) == [
        "register_losses: the doc says register_losses(register, cli), the code says register_losses(register)"]
    assert problems(text + "\n### `register_metrics(register)`\n") == ["register_metrics is documented but is not a hook"]


def test_the_register_callback_is_documented_with_its_signature():
    register = make_register(Registry("losses"), "p", None, None)
    parameters = [p for p in inspect.signature(register).parameters.values() if p.kind is not p.VAR_KEYWORD]
    rendered = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in parameters)
    assert rendered == "name, factory, params=None, description=None"
    assert f"register({rendered})" in DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", sorted(hookspec_signatures()))
def test_each_section_has_a_working_example(hook):
    section = sections(DOC.read_text(encoding="utf-8"))[hook]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, f"{hook}: no example"
    example = blocks[-1]
    ast.parse(example)  # the example is valid Python
    assert "@mtkd.hookimpl" in example and f"def {hook}(" in example
    if hook != "register_commands":
        assert "**factory**" in section and "**returns**" in section


def doc_task_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- runnable: task-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/plugin-hooks.md lost its runnable task example"
    return match.group(1)


def test_the_documented_task_example_runs(tmp_path, mtkd_plugins, mtkd_run_recipe):
    """The task of docs/plugin-hooks.md, as written: a plugin file that lists, shows its data and trains."""
    import json

    from mtkd.components import Task, TaskContext

    plugin = tmp_path / "lines_task.py"
    plugin.write_text(doc_task_example(), encoding="utf-8")
    data = tmp_path / "my-folder"
    data.mkdir()
    for split, n in (("train", 24), ("dev", 8), ("test", 4)):
        rows = [f"the movie was {'great' if i % 2 else 'awful'}\t{'positive' if i % 2 else 'negative'}"
                for i in range(n)]
        (data / f"{split}.tsv").write_text("\n".join(r if split != "test" else r.split("\t")[0] for r in rows) + "\n")

    listed = mtkd_plugins.cli("tasks", "list", "--json", "--plugin", plugin)
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "lines"]
    assert row["type"] == "classification" and row["metrics"] == ["accuracy"]  # built with no parameters
    shown = mtkd_plugins.cli("data", "show", "lines", "--source", data, "--json", "--plugin", plugin)
    assert shown.exit_code == 0, shown.output
    splits = json.loads(shown.stdout)["splits"]
    assert {s: v["rows"] for s, v in splits.items()} == {"train": 24, "dev": 8, "test": 4}
    task = mtkd_plugins.registries.tasks.create("lines", {"source": str(data)}, TaskContext(name="reviews"))
    assert isinstance(task, Task)
    assert task.compute_metrics({"dev": [1, 0]}, {"dev": [1, 1]}) == {"accuracy": 50.0}
    assert task.write_submission({"test": [0, 1]}, {"test": [0, 1]}, tmp_path / "sub")[0].read_text() == \
        "index\tprediction\n0\tnegative\n1\tpositive\n"

    run = mtkd_run_recipe({"plugins": [str(plugin)], "tasks": [{"name": "reviews", "type": "lines",
                                                                 "source": str(data)}]})
    assert "reviews" in json.dumps(run.metrics)
    missing = mtkd_plugins.cli("recipe", "validate", run.recipe, "--set", f"tasks[0].source={tmp_path / 'nope'}")
    assert missing.exit_code == 2 and "data file not found" in missing.output
