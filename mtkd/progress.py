"""What a run tells its user while it works: the contract between the stages, the trainer and the display.

The trainer and the stages call these methods on the main process only; a display (a rich bar on a
terminal, plain log lines when stderr is a file) implements them. ``NullProgress`` is the silent default.
"""

from __future__ import annotations

from typing import Protocol


class RunProgress(Protocol):
    def stage(self, name: str, *, cached: list[str], to_run: list[str]) -> None:
        """A stage begins: which of its units are reused and which will run."""

    def message(self, text: str) -> None:
        """One line for the user (e.g. "resuming teacher-0 from step 18")."""

    def job_started(self, job: str, *, total_steps: int, start_step: int) -> None:
        """A training job starts (``start_step`` > 0 when it resumes)."""

    def job_step(self, job: str, *, step: int, loss: float | None, samples: int) -> None:
        """An optimizer step finished; ``loss`` is set on logging steps, ``samples`` counts this step's examples."""

    def job_finished(self, job: str, *, step: int) -> None:
        """The job ended (done, or stopped at ``step``)."""

    def work_started(self, name: str, *, total: int, unit: str) -> None:
        """A long non-training task starts (inference over ``total`` ``unit``s)."""

    def work_advanced(self, name: str, *, done: int) -> None:
        """``done`` more units of the named task are finished."""

    def work_finished(self, name: str) -> None:
        """The named task ended."""


class NullProgress:
    """Says nothing (non-main ranks, library use, tests)."""

    def stage(self, name, *, cached, to_run):
        pass

    def message(self, text):
        pass

    def job_started(self, job, *, total_steps, start_step):
        pass

    def job_step(self, job, *, step, loss, samples):
        pass

    def job_finished(self, job, *, step):
        pass

    def work_started(self, name, *, total, unit):
        pass

    def work_advanced(self, name, *, done):
        pass

    def work_finished(self, name):
        pass
