"""The one plugin manager: entry points, ``--plugin`` modules and files, allow/block lists, tracing.

Environment variables:

- ``MTKD_LOAD_PLUGINS=a,b``: load only these entry-point plugins (by entry-point name, module
  or distribution name). Set to an empty string to load none.
- ``MTKD_DISABLE_PLUGINS=a,b``: never load these.
- ``MTKD_TRACE_PLUGINS=1``: print every hook call and its result to stderr.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, Registries, make_register

ENTRY_POINT_GROUP = "mtkd"


class PluginInfo:
    def __init__(self, name: str, module: str, distribution: str | None, version: str | None, source: str):
        self.name, self.module, self.distribution, self.version, self.source = name, module, distribution, version, source


_pm: pluggy.PluginManager | None = None
_info: dict[str, PluginInfo] = {}
_registries: Registries | None = None


def _normal(name: str) -> str:
    """Names compare like distribution names (PEP 503): ``My_Plugin`` matches ``my-plugin``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _env_list(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {_normal(v) for v in value.split(",") if v.strip()}


def _selected(names: set[str], allow: set[str] | None, block: set[str] | None) -> bool:
    names = {_normal(n) for n in names if n}
    if block and names & block:
        return False
    return allow is None or bool(names & allow)


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with entry-point plugins loaded on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("mtkd")
        pm.add_hookspecs(hookspecs)
        if os.environ.get("MTKD_TRACE_PLUGINS") not in (None, "", "0"):
            pm.trace.root.setwriter(lambda text: sys.stderr.write(f"[mtkd plugins] {text}"))
            pm.enable_tracing()
        _pm = pm
        _load_entry_points(pm)
    return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allow, block = _env_list("MTKD_LOAD_PLUGINS"), _env_list("MTKD_DISABLE_PLUGINS")
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        module_name = ep.value.split(":")[0]
        if not _selected({ep.name, module_name, dist or ""}, allow, block) or pm.has_plugin(module_name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must say which one it is
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value!r} of {dist}) failed to import: {exc}",
                              hint=f"disable it with MTKD_DISABLE_PLUGINS={ep.name}") from exc
        _register(pm, module, PluginInfo(module_name, module_name, dist, version, "entry point"))


def _hook_names() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("register_"))


def _register(pm: pluggy.PluginManager, module, info: PluginInfo) -> None:
    global _registries
    try:
        pm.register(module, name=info.name)
    except pluggy.PluginValidationError as exc:  # a hook with arguments its spec does not have
        raise PluginError(f"plugin {info.name!r} has an invalid hook implementation: {exc}",
                          expected="the arguments documented in docs/plugin-hooks.md") from None
    except ValueError as exc:  # the same object registered twice
        raise PluginError(f"plugin {info.name!r} cannot be registered: {exc}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(name=info.name)
        known = _hook_names()
        unknown = [n for n in dir(module) if pm.parse_hookimpl_opts(module, n) is not None and n not in known]
        close = difflib.get_close_matches(unknown[0], known, n=1) if unknown else []
        raise PluginError(f"plugin {info.name!r} implements an unknown hook {', '.join(map(repr, unknown))}"
                          + (f"; did you mean {close[0]!r}?" if close else ""),
                          expected=f"one of: {', '.join(known)}", found=unknown[0] if unknown else None) from None
    _info[info.name] = info
    _registries = None


def _exec_file(name: str, path: Path, file):
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} cannot be loaded", file=file, path="plugins",
                          expected="a Python source file ending in .py", found=str(path))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the plugin's own bug: say which file, keep the cause for --debug
        del sys.modules[name]
        raise PluginError(f"plugin file {str(path)!r} failed to run: {type(exc).__name__}: {exc}", file=file,
                          path="plugins", hint="run with --debug to see the traceback") from exc
    return module


def load_plugins(specs=(), *, file=None) -> None:
    """Load extra plugins: importable module names or paths to ``.py`` files.

    A relative path is taken from the folder of ``file`` (the recipe that names it) when given,
    else from the working directory.
    """
    pm = get_plugin_manager()
    for spec in specs:
        spec = str(spec)
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            path = Path(spec).expanduser()
            if not path.is_absolute() and file is not None:
                path = Path(file).parent / path
            if not path.is_file():
                raise PluginError(f"plugin file {spec!r} does not exist", file=file, path="plugins",
                                  expected="a path to a .py file or an importable module name", found=str(path))
            path = path.resolve()
            name = f"mtkd_local_{path.stem}"
            if name in _info and _info[name].module != str(path):  # same stem, another folder
                name = f"{name}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            if pm.has_plugin(name):
                continue
            _register(pm, _exec_file(name, path, file), PluginInfo(name, str(path), None, None, "file"))
        else:
            if pm.has_plugin(spec):
                continue
            try:
                module = importlib.import_module(spec)
            except ImportError as exc:
                raise PluginError(f"cannot import plugin module {spec!r}: {exc}", file=file, path="plugins",
                                  expected="an importable module name or a path to a .py file", found=spec) from None
            except Exception as exc:
                raise PluginError(f"plugin module {spec!r} failed to import: {type(exc).__name__}: {exc}",
                                  file=file, path="plugins", hint="run with --debug to see the traceback") from exc
            _register(pm, module, PluginInfo(spec, spec, None, None, "module"))


def register_plugin(obj, name: str) -> None:
    """Register an object (a module, a class or an instance with hook functions) directly; for tests."""
    _register(get_plugin_manager(), obj, PluginInfo(name, name, None, None, "object"))


def unregister_plugin(name: str) -> None:
    global _registries
    get_plugin_manager().unregister(name=name)
    _info.pop(name, None)
    _registries = None


def plugin_info() -> list[PluginInfo]:
    get_plugin_manager()
    return [_info[n] for n in sorted(_info)]


def get_registries() -> Registries:
    """Registries filled by calling every plugin's hooks, one plugin at a time (so each entry knows its plugin)."""
    global _registries
    pm = get_plugin_manager()
    if _registries is None:
        registries = Registries()
        plugins = {pm.get_name(p): p for p in pm.get_plugins()}
        for kind, hook_name in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                info = _info.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name, None, None, "?")
                others = [p for n, p in plugins.items() if n != impl.plugin_name]
                caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
                caller(register=make_register(registries[kind], info.name, info.distribution, info.version))
        _registries = registries
    return _registries


def reset() -> None:
    """Forget every loaded plugin (tests use this to load only what they ask for)."""
    global _pm, _registries
    _pm, _registries = None, None
    _info.clear()
