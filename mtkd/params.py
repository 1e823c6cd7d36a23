"""Base class for component parameters, and turning pydantic errors into recipe errors."""

from __future__ import annotations

import difflib
from typing import ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from .errors import RecipeError


class Params(BaseModel):
    """Parameters of a component, as written in a recipe. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: Fields a plugin added after its first release. While one holds its default it is left out of the
    #: resolved recipe, so recipes that do not set it keep their hashes and their runs' stage keys (an
    #: upgrade does not retrain every teacher).
    later_fields: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        return omit_at_default(self, handler(self), self.later_fields)


def omit_at_default(model: BaseModel, data, keys) -> dict:
    """``model``'s dump ``data`` without those of ``keys`` that hold their default: fields added after a release
    stay out of the resolved recipe until a recipe sets them, so earlier recipes keep their hashes and stage keys.
    """
    if isinstance(data, dict):
        fields = type(model).model_fields
        for key in keys:
            if key in data and getattr(model, key) == fields[key].get_default(call_default_factory=True):
                data.pop(key)
    return data


class NoParams(Params):
    """For components that take no parameters."""


#: The ``json_schema_extra`` key that marks a parameter as a local file or folder (see :func:`path_field`).
PATH_MARK = "mtkd_path"


def path_field(default=..., **kwargs):
    """A ``Field`` holding a file or folder (or a hub id that may also be a folder).

    The pipeline resolves a relative value before the component is built: from the working directory if it
    exists there, else from the recipe's folder — as it does for data paths. The recipe's hash keeps the value
    as written, so moving a checkout does not invalidate its runs.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    return Field(default, json_schema_extra={**extra, PATH_MARK: True}, **kwargs)


#: The ``json_schema_extra`` key that marks a parameter as an opt-in to running code from outside mtkd.
TRUST_MARK = "mtkd_trust"


def trust_field(**kwargs):
    """A ``bool`` field (default false) that lets a component run code it loads (``trust_remote_code``).

    Only the user sets it, in the recipe or on the command line: when a checkpoint is loaded, the value
    stored in the checkpoint is never taken, and a checkpoint that asks for it is refused unless the
    user opted in (see ``mtkd.model.load_model``).
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    return Field(False, json_schema_extra={**extra, TRUST_MARK: True}, **kwargs)


def trust_params(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s parameters declared with :func:`trust_field`."""
    return [name for name, field in model.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(TRUST_MARK)]


def path_params(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s parameters declared with :func:`path_field`."""
    return [name for name, field in model.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(PATH_MARK)]


def resolve_paths(params: dict, model: type[BaseModel], resolve) -> dict:
    """``params`` with each path parameter (a string) passed through ``resolve``."""
    return {**params, **{name: resolve(params[name]) for name in path_params(model)
                         if isinstance(params.get(name), str)}}


def join_path(prefix: str, loc) -> str:
    """``("members", 2, "seed")`` under ``teachers`` -> ``teachers.members[2].seed``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


#: How pydantic names the scalar members of a union in an error's ``loc``: ``(eval_every, int)``.
_SCALAR_TAGS = {"int", "float", "str", "bool", "bytes", "none", "decimal", "date", "datetime", "time",
                "timedelta", "uuid"}


def _is_tag(part, index: int) -> bool:
    """Whether ``part`` is a tag pydantic put in ``loc``: a union member (``int``, ``literal['epoch']``) or a
    validator (``function-after[...]``), not a key of the recipe."""
    if not isinstance(part, str):
        return False
    return ("[" in part or part.startswith(("function-", "constrained-"))
            or (index > 0 and part in _SCALAR_TAGS))


def _clean_loc(loc) -> list:
    return [p for i, p in enumerate(loc) if not _is_tag(p, i)]


def _collapse_union(errors: list[dict]) -> tuple[list, list[dict]]:
    """The first error's location without union tags, and every error at that same location.

    A value that fits no member of ``int | Literal["epoch"]`` gives one error per member, at
    ``(eval_every, int)`` and ``(eval_every, "literal['epoch']")``: one problem, several accepted forms.
    """
    loc = _clean_loc(errors[0].get("loc", ()))
    return loc, [e for e in errors if _clean_loc(e.get("loc", ())) == loc]


def _model_at(model, loc):
    """The pydantic model that holds the last key of ``loc`` (for did-you-mean on unknown keys), or None."""
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation):
    """``Teachers | None``, ``list[Member]``, ``dict[str, Component]`` -> the model class inside, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):  # dict[str, M]: the value type is last
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def recipe_error(exc: ValidationError, *, file=None, prefix: str = "", model=None) -> RecipeError:
    """The first error of a pydantic ``ValidationError``, as a RecipeError naming file and path.

    ``model`` (the class that was validated) lets an unknown key get a "did you mean" suggestion.
    The error's ``error_type`` attribute keeps pydantic's error type (``string_type``, ``missing``...);
    its ``errors`` attribute holds every problem (one per location), for the CLI to show them all.
    """
    remaining = exc.errors()
    every = []
    while remaining:
        loc, group = _collapse_union(remaining)
        every.append(_one_error(remaining, file=file, prefix=prefix, model=model))
        remaining = [e for e in remaining if e not in group]
    first = every[0]
    if len(every) > 1:
        first.errors = every
    return first


def _one_error(errors: list[dict], *, file, prefix: str, model) -> RecipeError:
    loc, group = _collapse_union(errors)
    err = errors[0]
    path = join_path(prefix, loc) or "(top level)"
    kind = err.get("type", "")
    found = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1] if loc else found
        message, expected, found = "unknown key", "one of the documented keys (see `mtkd recipe schema`)", key
        holder = _model_at(model, loc) if model is not None and loc else None
        if holder is not None:
            close = difflib.get_close_matches(str(key), list(holder.model_fields), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            expected = "one of: " + ", ".join(holder.model_fields)
    elif kind == "missing":
        message, expected, found = "missing required key", "a value (this key has no default)", None
    else:
        # A validator's ValueError reads "Value error, <what was expected>"; keep what was expected.
        message, expected = "invalid value", " or ".join(dict.fromkeys(e.get("msg", "").removeprefix("Value error, ")
                                                                       for e in group))
    more = len(errors) - len(group)
    hint = f"{more} more problem(s) after this one" if more > 0 else None
    error = RecipeError(message, file=file, path=path, expected=expected, found=found, hint=hint)
    error.error_type = kind
    return error


def validate(model: type[BaseModel], data, *, file=None, prefix: str = "", context: dict | None = None):
    """``model.model_validate(data)``, raising a RecipeError that names ``file`` and ``prefix.key``.

    ``context`` is pydantic's validation context: facts of the recipe a parameter may be checked against
    (``teacher_members``: the number of teachers, for aggregator parameters), read by validators through
    ``info.context``; absent when a component is built outside a recipe.
    """
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise recipe_error(exc, file=file, prefix=prefix, model=model) from None
