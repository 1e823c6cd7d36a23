"""``mtkd tasks list`` and ``mtkd data show``."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import click
import numpy as np

from mtkd.errors import MtkdError, RecipeError

from .readers import BadRowsWarning


def _plugins_option(f):
    return click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE",
                        help="Load an extra plugin: an importable module or a .py file (repeatable).")(f)


def _group(cli, name: str, help_text: str) -> click.Group:
    """The CLI's group of this name, made when no other plugin made it first."""
    existing = cli.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    group = click.Group(name, help=help_text)
    cli.add_command(group)
    return group


def describe_task(reg) -> dict:
    """Name, type, metrics and plugin of a registered task; tasks that need parameters are built with none."""
    from mtkd.components import TaskContext

    row = {"name": reg.name, "type": None, "metrics": [], "plugin": reg.plugin, "description": reg.description}
    try:
        task = reg.factory(reg.params.model_validate({}), TaskContext(name=reg.name))
        row["type"], row["metrics"] = task.task_type, list(task.metric_names)
    except (MtkdError, ValueError):  # a user-defined task (table) needs its files first: report what it is, not a failure
        row["type"] = "user-defined"
    return row


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, type, metrics, plugin}.")
@_plugins_option
def tasks_list(as_json, plugins):
    """List the registered tasks with their type, metrics and plugin."""
    from rich.console import Console
    from rich.table import Table

    from mtkd.plugins import get_registries, load_plugins

    load_plugins(plugins)
    rows = [describe_task(reg) for reg in get_registries().tasks]
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("name", "type", "metrics", "plugin")} for r in rows], indent=2))
        return
    table = Table(title="mtkd tasks")
    for col in ("name", "type", "metrics", "plugin", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["type"], ", ".join(r["metrics"]) or "-", r["plugin"], r["description"])
    Console().print(table)


def _parse_params(items) -> dict:
    import yaml

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError("invalid --param", path="--param", expected="KEY=VALUE", found=item)
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise RecipeError("the --param value is not valid YAML", path=f"--param {key}",
                              expected="a YAML value, as in a recipe (quote text that holds YAML syntax)",
                              found=f"{value} ({getattr(exc, 'problem', exc)})") from None
    return params


def label_distribution(task, ds) -> dict:
    """Rows per label name (``unlabeled`` for -1); for regression min/mean/max of the labeled rows."""
    values = np.asarray(ds.with_format("numpy")["label"])
    if task.task_type == "regression":
        scored = values[values != -1].astype(float)
        out = {}
        if scored.size:
            out = {"min": round(float(scored.min()), 4), "mean": round(float(scored.mean()), 4),
                   "max": round(float(scored.max()), 4)}
        if scored.size < values.size:
            out["unlabeled"] = int(values.size - scored.size)
        return out
    counts = Counter(values.tolist())
    out = {name: counts[i] for i, name in enumerate(task.labels) if counts.get(i)}
    if counts.get(-1):
        out["unlabeled"] = counts[-1]
    return out


@click.command("show")
@click.argument("task_name", metavar="TASK")
@click.option("--source", help="Data source for the task: a hub id, a Parquet folder or a glue_data TSV folder.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A task parameter, as in a recipe (repeatable), e.g. --param train=data/train.csv.")
@click.option("--on-bad-rows", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print {task, splits: {split: {rows, labels}}} as JSON.")
@_plugins_option
def data_show(task_name, source, params, on_bad_rows, as_json, plugins):
    """Show a task's splits with their row counts and label distribution."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mtkd.components import TaskContext
    from mtkd.plugins import get_registries, load_plugins

    load_plugins(plugins)
    reg = get_registries().tasks.get(task_name)
    values = _parse_params(params)
    if source is not None:
        if "source" not in reg.params.model_fields:
            raise RecipeError(f"task {task_name!r} takes no --source", path="--source",
                              expected="--param KEY=VALUE for its own parameters: "
                                       + (", ".join(reg.params.model_fields) or "(none)"), found=source)
        values["source"] = source
    task = get_registries().tasks.create(task_name, values, TaskContext(name=task_name, on_bad_rows=on_bad_rows),
                                         path="--param")
    splits = [s for s in (task.train_split, *task.eval_splits, *task.test_splits) if s]
    available = task.available_splits() if hasattr(task, "available_splits") else splits
    if splits and not any(s in available for s in splits):
        task.load_split(splits[0])  # raises a DataError naming the file it expected
    result = {"task": task_name, "splits": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadRowsWarning)
        for split in splits:
            if split not in available:
                continue
            ds = task.load_split(split)
            result["splits"][split] = {"rows": len(ds), "labels": label_distribution(task, ds)}
    err = Console(stderr=True)
    for w in caught:  # skipped rows, one line each, on stderr (stdout stays clean for --json)
        if issubclass(w.category, BadRowsWarning):
            err.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    missing = [s for s in splits if s not in available]
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console = Console()
    table = Table(title=f"{task_name} ({task.task_type})")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("labels")
    for split, info in result["splits"].items():
        labels = "  ".join(f"{k}: {v}" for k, v in info["labels"].items())
        table.add_row(split, str(info["rows"]), labels)
    console.print(table)
    if missing:
        console.print(f"[dim]not in this source: {', '.join(missing)}[/]")


def register(cli) -> None:
    _group(cli, "tasks", "Registered tasks.").add_command(tasks_list)
    _group(cli, "data", "Inspect task data.").add_command(data_show)

