"""Base class for component parameters, and turning pydantic errors into recipe errors."""

from __future__ import annotations

import difflib
from typing import get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import RecipeError


class Params(BaseModel):
    """Parameters of a component, as written in a recipe. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class NoParams(Params):
    """For components that take no parameters."""


def join_path(prefix: str, loc) -> str:
    """``("members", 2, "seed")`` under ``teachers`` -> ``teachers.members[2].seed``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _is_tag(part) -> bool:
    """pydantic adds union-member and validator tags (``"literal['epoch']"``, ``function-after[...]``) to ``loc``."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _collapse_union(errors: list[dict]) -> tuple[list, list[dict]]:
    """The first error's location without union tags, and the errors of every member of that union.

    A value that fits no member of ``int | Literal["epoch"]`` gives one error per member, at locations
    that differ in one place only (``(eval_every, int)`` and ``(eval_every, "literal['epoch']")``).
    """
    first = list(errors[0].get("loc", ()))
    group = [errors[0]]
    tag_at = None
    for other in errors[1:]:
        loc = list(other.get("loc", ()))
        diff = [i for i, (a, b) in enumerate(zip(first, loc)) if a != b] if len(loc) == len(first) else []
        if len(diff) == 1 and isinstance(first[diff[0]], str) and tag_at in (None, diff[0]):
            tag_at = diff[0]
            group.append(other)
    loc = [p for i, p in enumerate(first) if i != tag_at and not _is_tag(p)]
    return loc, group


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
    The error's ``error_type`` attribute keeps pydantic's error type (``string_type``, ``missing``...).
    """
    errors = exc.errors()
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
        message, expected = "invalid value", " or ".join(dict.fromkeys(e.get("msg", "") for e in group))
    more = len(errors) - len(group)
    hint = f"{more} more problem(s) after this one" if more > 0 else None
    error = RecipeError(message, file=file, path=path, expected=expected, found=found, hint=hint)
    error.error_type = kind
    return error


def validate(model: type[BaseModel], data, *, file=None, prefix: str = ""):
    """``model.model_validate(data)``, raising a RecipeError that names ``file`` and ``prefix.key``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise recipe_error(exc, file=file, prefix=prefix, model=model) from None
