"""A minimal display of a run (stage headings, one-line messages, a bar per training job).

It implements ``mtkd.progress.RunProgress``; the workflow's displays replace it. It also answers
``add_task``/``update`` (rich's Progress calls) for a trainer that still drives a rich bar.
"""

from __future__ import annotations

from rich.markup import escape


class StageDisplay:
    def __init__(self, console, *, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self._bar = None
        self._tasks: dict = {}

    # ------------------------------------------------------------ RunProgress

    def stage(self, name, *, cached, to_run):
        self._close_bar()
        if self.quiet:
            return
        if to_run:
            reused = f"; reusing {len(cached)}" if cached else ""
            self.console.print(f"[bold]{escape(name)}[/]: running {escape(', '.join(to_run))}{reused}", highlight=False)
        elif cached:
            self.console.print(f"[bold]{escape(name)}[/]: reusing {len(cached)} (done before)", highlight=False)

    def message(self, text):
        self.console.print(escape(text), highlight=False, soft_wrap=True)

    def job_started(self, job, *, total_steps, start_step):
        if start_step:
            self.message(f"{job}: resuming from step {start_step}")
        self._tasks[job] = self.add_task(job, total=total_steps, completed=start_step, loss=float("nan"))

    def job_step(self, job, *, step, loss, samples):
        if job in self._tasks:
            fields = {"loss": loss} if loss is not None else {}
            self.update(self._tasks[job], completed=step, **fields)

    def job_finished(self, job, *, step):
        self._tasks.pop(job, None)

    def work_started(self, name, *, total, unit):
        pass

    def work_advanced(self, name, *, done):
        pass

    def work_finished(self, name):
        pass

    # ------------------------------------------------------------ rich's Progress calls

    def add_task(self, description, **fields):
        if self.quiet:
            return None
        if self._bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} steps"),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                                 console=self.console, transient=False)
            self._bar.start()
        return self._bar.add_task(description, **fields)

    def update(self, task_id, **fields):
        if self._bar is not None and task_id is not None:
            self._bar.update(task_id, **fields)

    def _close_bar(self):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self):
        self._close_bar()
