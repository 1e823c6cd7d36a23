"""Helpers shared by the objectives and the aggregators."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

CLASSIFICATION = frozenset({"classification"})
REGRESSION = frozenset({"regression"})


def linear(start: float, end: float | None, progress: float) -> float:
    """``start`` moved linearly towards ``end`` as ``progress`` goes 0 -> 1 (``end=None``: constant)."""
    if end is None:
        return float(start)
    p = min(max(float(progress), 0.0), 1.0)  # a resumed or over-long run must not extrapolate
    return float(start) + (float(end) - float(start)) * p


def name_only(cls, value):
    """A part given as a loss name alone (``soft: kl``) as ``{type: kl}``: the body of the ``mode="before"``
    field validator of every loss that nests others (``field_validator(...)(name_only)``)."""
    return {"type": value} if isinstance(value, str) else value


def params_error(loc: tuple, message: str, found=None) -> ValidationError:
    """A pydantic error at ``loc`` (relative to the params being validated).

    Raised from a validator, pydantic prefixes ``loc`` with the enclosing field, so the core's
    ``RecipeError`` names the full recipe path (``objective.classification.soft.type``).
    """
    # The message goes through ctx so that braces in user input are not read as a template.
    err = PydanticCustomError("mtkd_params", "{message}", {"message": message})
    return ValidationError.from_exception_data("params", [{"type": err, "loc": loc, "input": found}])
