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
    assert len(specs) == 8


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
