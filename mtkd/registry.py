"""One typed registry per component kind, filled by the plugins' ``register_*`` hooks."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from .components import Registration
from .errors import DuplicateComponentError, PluginError, RecipeError, UnknownComponentError
from .params import NoParams, Params, validate

#: component kind -> the hook that fills it
KINDS = {
    "tasks": "register_tasks",
    "encoders": "register_encoders",
    "heads": "register_heads",
    "losses": "register_losses",
    "aggregators": "register_aggregators",
    "samplers": "register_samplers",
    "loggers": "register_loggers",
    "serving_formats": "register_serving_formats",
}

SINGULAR = {"tasks": "task", "encoders": "encoder", "heads": "head", "losses": "loss",
            "aggregators": "aggregator", "samplers": "sampler", "loggers": "logger",
            "serving_formats": "serving format"}


class Registry:
    """Registrations of one kind, by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Registration] = {}

    def add(self, reg: Registration) -> None:
        if reg.name in self._entries:
            old = self._entries[reg.name]
            raise DuplicateComponentError(
                f"{SINGULAR[self.kind]} {reg.name!r} is registered twice: by plugin {old.plugin!r} "
                f"({old.distribution or 'local'}) and by plugin {reg.plugin!r} ({reg.distribution or 'local'})",
                hint="uninstall or disable one of them (MTKD_DISABLE_PLUGINS=name)",
            )
        self._entries[reg.name] = reg

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, *, file=None, path: str | None = None) -> Registration:
        try:
            return self._entries[name]
        except KeyError:
            # One suggestion, the closest: "mean-prob" -> "mean-probs", not also "median".
            close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
            suggestion = f"did you mean {close[0]!r}?" if close else None
            known = ", ".join(self.names()) or "(none registered)"
            raise UnknownComponentError(
                f"unknown {SINGULAR[self.kind]} {name!r}" + (f"; {suggestion}" if suggestion else ""),
                file=file, path=path, expected=f"one of: {known}", found=name,
                hint="is the plugin that provides it installed, or named with --plugin / the recipe's `plugins:`?",
            ) from None

    def validate_params(self, name: str, params: dict | None, *, file=None, path: str = "",
                        context: dict | None = None):
        """Second validation pass: ``params`` against the schema the plugin registered."""
        reg = self.get(name, file=file, path=f"{path}.type" if path else None)
        return validate(reg.params, params or {}, file=file, prefix=path, context=context)

    def create(self, name: str, params: dict | Params | None = None, *args, file=None, path: str = "", **kwargs) -> Any:
        reg = self.get(name, file=file, path=f"{path}.type" if path else None)
        if not isinstance(params, reg.params):
            params = self.validate_params(name, params if not isinstance(params, Params) else params.model_dump(),
                                          file=file, path=path)
        return reg.factory(params, *args, **kwargs)


class Registries:
    """All registries, filled once per plugin manager (see ``mtkd.plugins.get_registries``)."""

    def __init__(self):
        self.by_kind = {kind: Registry(kind) for kind in KINDS}

    def __getitem__(self, kind: str) -> Registry:
        return self.by_kind[kind]

    def __getattr__(self, kind: str) -> Registry:
        try:
            return self.__dict__["by_kind"][kind]
        except KeyError:
            raise AttributeError(kind) from None

    def all(self):
        for kind, reg in self.by_kind.items():
            for entry in reg:
                yield kind, entry


def split_spec(spec, *, file=None, path: str = "", default_type: str | None = None) -> tuple[str, dict]:
    """``{type: x, a: 1}`` or ``"x"`` -> ``("x", {"a": 1})``."""
    if isinstance(spec, str):
        return spec, {}
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump(exclude_none=False)
    if not isinstance(spec, dict):
        raise RecipeError("invalid component", file=file, path=path, expected="a name or a mapping with `type:`",
                          found=spec)
    spec = dict(spec)
    kind = spec.pop("type", default_type)
    if not kind:
        raise RecipeError("missing `type`", file=file, path=path, expected="a registered component name", found=None)
    return kind, spec


def make_register(registry: Registry, plugin: str, distribution: str | None, version: str | None):
    """The ``register`` callback handed to one plugin's hook."""

    def register(name: str, factory, params: type[Params] | None = None, description: str | None = None, **extra):
        what = f"plugin {plugin!r} registers {SINGULAR[registry.kind]} {name!r}"
        # A plugin's mistakes are reported when it registers, not when a recipe first uses the component.
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registers a {SINGULAR[registry.kind]} without a name",
                              expected="a non-empty string", found=name)
        if not callable(factory):
            raise PluginError(f"{what} with a factory that cannot be called", expected="a class or function",
                              found=factory)
        if params is None:
            params = getattr(factory, "Params", None) or NoParams
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise PluginError(f"{what} with params that are not a pydantic model",
                              expected="a subclass of mtkd.params.Params", found=params)
        doc = description or (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
        registry.add(Registration(kind=registry.kind, name=name, factory=factory, params=params, plugin=plugin,
                                  distribution=distribution, version=version, description=doc, extra=extra))

    return register
