"""Base class for component parameters, and turning pydantic errors into recipe errors."""

from __future__ import annotations

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


def recipe_error(exc: ValidationError, *, file=None, prefix: str = "") -> RecipeError:
    """The first error of a pydantic ``ValidationError``, as a RecipeError naming file and path."""
    err = exc.errors()[0]
    loc = [p for p in err.get("loc", ()) if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    path = join_path(prefix, loc) or "(top level)"
    kind = err.get("type", "")
    found = err.get("input")
    if kind == "extra_forbidden":
        message, expected, found = "unknown key", "one of the documented keys (see `mtkd recipe schema`)", loc[-1] if loc else found
    elif kind == "missing":
        message, expected, found = "missing required key", err.get("msg", "a value"), None
    else:
        message, expected = "invalid value", err.get("msg", "")
    more = len(exc.errors()) - 1
    hint = f"{more} more problem(s) after this one" if more > 0 else None
    return RecipeError(message, file=file, path=path, expected=expected, found=found, hint=hint)


def validate(model: type[BaseModel], data, *, file=None, prefix: str = ""):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise recipe_error(exc, file=file, prefix=prefix) from None
