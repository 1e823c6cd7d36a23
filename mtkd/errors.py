"""Errors a user can act on. The CLI renders them without a traceback (unless ``--debug``)."""

from __future__ import annotations


class MtkdError(Exception):
    """An error caused by input (a recipe, a data file, a checkpoint), not by a bug.

    ``file`` and ``path`` say where (``recipes/x.yaml``, ``teachers.members[2].seed``);
    ``expected`` and ``found`` say what was wrong; ``hint`` says what to do next.
    """

    exit_code = 2

    def __init__(self, message: str, *, file=None, path: str | None = None, expected: str | None = None,
                 found=None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.path = path
        self.expected = expected
        self.found = found
        self.hint = hint

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
        if self.path:
            where = f"{where}: {self.path}" if where else self.path
        text = f"{where}: {self.message}" if where else self.message
        if self.expected is not None:
            text += f"\n  expected: {self.expected}"
        if self.found is not None:
            text += f"\n  found: {self.found!r}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class RecipeError(MtkdError):
    """A recipe that does not validate."""

    #: pydantic's error type (``string_type``, ``missing``...) when the error came from a pydantic model
    error_type: str | None = None


class UnknownComponentError(MtkdError):
    """A component name that no plugin registered."""


class DuplicateComponentError(MtkdError):
    """Two plugins registered the same name for the same kind."""


class PluginError(MtkdError):
    """A plugin that cannot be loaded or has a misspelled hook."""


class DataError(MtkdError):
    """A data file with a bad row, a missing column, or a layout that is not recognised."""


class CheckpointError(MtkdError):
    """A checkpoint or soft-target file that does not match what the run expects."""


class ManyErrors(MtkdError):
    """Several independent problems found in one pass (``recipe validate``): all reported at once."""

    def __init__(self, errors: list[MtkdError]):
        super().__init__(f"{len(errors)} problems", file=errors[0].file if errors else None)
        self.errors = list(errors)
        self.exit_code = max((e.exit_code for e in self.errors), default=2)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class TrainingDiverged(MtkdError):
    """A loss, a gradient or the final weights became NaN or infinite: the job stopped without a model."""

    exit_code = 3
