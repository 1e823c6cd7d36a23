"""The ``mtkd`` command line. Plugins add commands through the ``register_commands(cli)`` hook."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import MtkdError
from .stages.graph import STAGE_NAMES

console = Console(stderr=True)
out = Console()


class MtkdGroup(click.Group):
    """Renders MtkdError as a short message with exit code 2; ``--debug`` shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MtkdError as exc:
            if ctx.params.get("debug") or (ctx.obj or {}).get("debug"):
                raise
            from .launch import record_worker_error

            if not record_worker_error(rendered_error(exc)):  # a worker of --nproc: the launcher shows it once
                render_error(exc)
            sys.exit(exc.exit_code)


def render_error(exc: MtkdError, target: Console | None = None) -> None:
    for each in getattr(exc, "errors", None) or [exc]:
        _render_one(each, target or console)


def rendered_error(exc: MtkdError) -> str:
    """The error as ``render_error`` prints it (colours only where stderr is a terminal), as text."""
    import io

    buffer = io.StringIO()
    render_error(exc, Console(file=buffer, force_terminal=console.is_terminal, color_system=console.color_system,
                              width=console.width))
    return buffer.getvalue()


def _render_one(exc: MtkdError, console: Console = console) -> None:
    # Escaped (a path such as ``heads[default]`` is not rich markup) and never wrapped, so a long file
    # path or key path stays on one line and can be copied.
    where = exc.file or ""
    if exc.path:
        where = f"{where}: {exc.path}" if where else exc.path
    lines = [f"[bold red]Error[/]{' in ' + escape(where) if where else ''}: {escape(exc.message)}"]
    if exc.expected is not None:
        lines.append(f"  [dim]expected:[/] {escape(str(exc.expected))}")
    if exc.found is not None:
        lines.append(f"  [dim]found:[/] {escape(repr(exc.found))}")
    if exc.hint:
        lines.append(f"  [dim]hint:[/] {escape(exc.hint)}")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def check_writable_folder(folder: Path, option: str, file=None) -> None:
    """``folder`` can be created (or exists) and written to; checked before any work starts."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not a folder" if not existing.is_dir() else "is not writable"
        raise MtkdError(f"cannot write the folder: {existing} {problem}", file=file, path=option,
                        expected="a folder you can write to (or one that can be created)", found=str(folder))


def plugin_option(f):
    return click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE",
                        help="Load an extra plugin: an importable module or a .py file (repeatable).")(f)


def set_option(f):
    return click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                        help="Override a recipe value, e.g. --set training.lr=3e-5 (repeatable).")(f)


def _print_version(ctx, param, value):
    """``--version``: mtkd's and the versions a bug report needs first (``mtkd env`` has everything)."""
    if not value or ctx.resilient_parsing:
        return
    from .extras import environment

    info = environment()
    cuda = info.get("cuda") or {}
    torch_text = f"torch {info['torch']}" if info.get("torch") else "torch not installed"
    if info.get("torch"):
        torch_text += f" (CUDA {cuda['built_with']}, {'available' if cuda['available'] else 'not available'})" \
            if cuda.get("built_with") else " (CPU build)"
    click.echo(f"mtkd, version {__version__}")
    click.echo(f"Python {info['python']}, {torch_text}, transformers {info['transformers']}, "
               f"accelerate {info['accelerate']}, deepspeed {info['deepspeed'] or 'not installed'}")
    plugins = ", ".join(f"{p['name']} {p['version'] or '(local)'}" for p in info["plugins"]) or "none"
    click.echo(f"plugins: {plugins}")
    ctx.exit()


@click.group(cls=MtkdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the versions of mtkd, Python, torch/CUDA and the main libraries, and exit.")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("--no-recipe-plugins", is_flag=True,
              help="Never import the plugins a recipe names in `plugins:` (for recipes you did not write, and CI); "
                   "the same as MTKD_NO_RECIPE_PLUGINS=1.")
@click.pass_context
def cli(ctx, debug, no_recipe_plugins):
    """mtkd: multi-task knowledge distillation (MT-DNN-KD) for natural language understanding."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if no_recipe_plugins:  # an environment variable, so processes started by --nproc refuse them too
        os.environ["MTKD_NO_RECIPE_PLUGINS"] = "1"
    # datasets' per-map progress bars drown mtkd's own progress display.
    import datasets

    datasets.disable_progress_bars()


# ---------------------------------------------------------------- plugins


@cli.group()
def plugins():
    """Installed plugins and the components they register."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of {kind, name, plugin, version, distribution, description}.")
@plugin_option
def plugins_list(as_json, plugins):
    """List every registered component with the distribution (or local module) that registered it."""
    from .plugins import get_registries, load_plugins

    load_plugins(plugins)
    rows = [{"kind": kind, "name": e.name, "plugin": e.plugin, "version": e.version,
             "distribution": e.distribution, "description": e.description}
            for kind, e in get_registries().all()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich import box

    # One line per component at any width: names are copied into recipes and never cut; the description
    # is cut to the terminal (in full with --json); the distribution says what to pip install or upgrade.
    table = Table(title="mtkd components", box=box.SIMPLE_HEAD, padding=(0, 1))
    cells = [(r["kind"], r["name"], f"{r['distribution']} {r['version']}" if r["distribution"]
              else f"{r['plugin']} (local)", r["description"] or "") for r in rows]
    widths = [max([len(col)] + [len(c[i]) for c in cells]) for i, col in ((1, "name"), (2, "from"))]
    room = max(12, out.width - sum(widths) - 10)  # what the other columns, padding and edges leave
    for col in ("name", "from", "description"):
        table.add_column(col, no_wrap=True)
    kind = None
    for k, name, source, text in cells:
        if k != kind:  # a heading line per kind (tasks, encoders, ...) instead of a column
            table.add_row(f"[bold]{k}[/]", "", "")
            kind = k
        table.add_row(escape(name), escape(source), escape(text if len(text) <= room else text[: room - 1] + "…"))
    out.print(table)


@cli.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the same as JSON.")
def env(as_json):
    """Versions for a bug report: mtkd, Python, torch, CUDA, transformers, accelerate, DeepSpeed, the plugins."""
    from .extras import environment

    info = environment()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    cuda = info.get("cuda") or {}
    lines = [("mtkd", info["mtkd"]), ("Python", f"{info['python']} ({info['platform']})"),
             ("torch", info["torch"] or "not installed")]
    if info["torch"]:
        devices = ", ".join(cuda["devices"]) or "none visible"
        lines.append(("CUDA", f"built with {cuda['built_with']}; devices: {devices}" if cuda["built_with"]
                      else "CPU-only build of torch"))
    for dist in ("transformers", "accelerate", "deepspeed", "datasets", "wandb", "pydantic", "pluggy"):
        hint = " (pip install 'mtkd[deepspeed]')" if dist == "deepspeed" else ""
        lines.append((dist, info[dist] or f"not installed{hint}"))
    for p in info["plugins"]:
        where = f"{p['distribution']} {p['version']}" if p["distribution"] else p["source"]
        lines.append((f"plugin {p['name']}", f"{where} ({p['module']})"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}")


# ---------------------------------------------------------------- recipes


@cli.group()
def recipe():
    """Validate, inspect and run recipes."""


@recipe.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@set_option
@plugin_option
def recipe_validate(files, overrides, plugins):
    """Check recipes (both passes) and that their data sources, checkpoints and model folders exist;
    every problem found is reported, exit code 2 on the first invalid recipe."""
    from .recipe import load_recipe

    for f in files:
        r = load_recipe(f, overrides, extra_plugins=plugins, check_files=True)
        out.print(f"[green]ok[/] {escape(str(f))} [dim](hash {r.hash})[/]", highlight=False, soft_wrap=True)
        from .stages.search import recipe_notes

        for note in recipe_notes(r):  # the search's cost; a student trained less than its teachers
            console.print(f"[yellow]note[/]: {escape(note)}", highlight=False, soft_wrap=True)
        from .extras import MissingExtraError, check_recipe_extras

        try:
            check_recipe_extras(r.resolved, file=r.file)
        except MissingExtraError as exc:  # valid, but `run` needs the extra first
            console.print(f"[yellow]note[/]: {escape(exc.message)}; {escape(exc.hint)} before `mtkd recipe run`",
                          highlight=False, soft_wrap=True)


@recipe.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@set_option
@plugin_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved recipe as JSON.")
def recipe_show(file, overrides, plugins, as_json):
    """Print the resolved recipe (extends, overrides and defaults applied) and its hash."""
    import yaml

    from .recipe import load_recipe

    r = load_recipe(file, overrides, extra_plugins=plugins)
    if as_json:
        click.echo(json.dumps({"hash": r.hash, "recipe": r.resolved}, indent=2))
        return
    click.echo(f"# hash: {r.hash}")
    click.echo(yaml.safe_dump(r.resolved, sort_keys=False))


@recipe.command("schema")
@plugin_option
@click.option("--resolved", is_flag=True, help="The recipe after extends and defaults (every section required), "
                                               "not the file a user writes.")
def recipe_schema(plugins, resolved):
    """Print the JSON Schema of a recipe file, including each registered component's parameters.

    Point an editor's YAML language server at it (e.g. a `# yaml-language-server: $schema=mtkd-recipe.json`
    first line) to check and complete recipes as you type.
    """
    from .plugins import load_plugins
    from .recipe import json_schema

    load_plugins(plugins)
    click.echo(json.dumps(json_schema(resolved=resolved), indent=2))


INIT_TEMPLATE = """\
# A starting recipe. Check it with `mtkd recipe validate {file}`, run it with `mtkd recipe run {file}`.
# Every key below overrides the recipe it extends; `mtkd recipe show {file}` prints the full result, and
# `mtkd recipe schema` describes every key. Shipped recipes: {shipped}.
extends: mtkd:{parent}
name: {name}
{body}"""

INIT_BODIES = {
    "quickstart": """\
# The quickstart's task and data (SST-2 rows shipped with mtkd). Your own data instead:
# data:
#   glue: path/to/glue_data      # a glue_data TSV folder, a Parquet folder, or a hub id such as nyu-mll/glue
# tasks: [cola, sst2, rte]       # GLUE task names, or a `table` task for your own CSV/TSV/JSON-lines files
#   (a task entry's `transfer_split: unlabelled` gives the student inputs without labels, labelled by the teachers)
training:
  epochs: 2                      # passes over the training data (the student's section may ask for more)
teachers:
  members:                       # each member: a variation of the base set-up (seed, heads, training...)
    - {name: teacher-linear, seed: 1}
    - {name: teacher-san, seed: 2, heads: {sst2: {type: san}}}
student:
  seeds: [3]                     # one student per seed
  control: true                  # also train the student on hard labels only, to see what distillation adds
  encoder: {num_layers: 3, freeze_word_embeddings: true}  # a smaller student: the pretrained model's first 3
                                 # layers, its word embeddings kept as loaded (faster steps)
  # init_from_teacher: 0         # or start from teacher 0's lower layers (then the control starts there too)
# logging:
#   trackers: [{type: wandb, project: my-project}]   # offline when no W&B API key is set
""",
    "base": """\
data:
  glue: nyu-mll/glue             # a glue_data TSV folder, a Parquet folder, or a hub id
tasks: [rte]                     # GLUE task names, or a `table` task for your own files
teachers:
  members:
    - {seed: 1}
student:
  seeds: [2]
  control: true
""",
}


@recipe.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--from", "start", type=click.Choice(sorted(INIT_BODIES)), default="quickstart", show_default=True,
              help="The shipped recipe to start from.")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def recipe_init(path, start, force):
    """Write a starting recipe, with comments, that extends a recipe shipped with mtkd."""
    from .recipe import shipped_recipes

    if path.exists() and not force:
        raise MtkdError("the file exists", file=path, hint="pick another name, or add --force to overwrite it")
    name = path.stem.replace("_", "-") or "my-recipe"
    text = INIT_TEMPLATE.format(file=path, shipped=", ".join("mtkd:" + n for n in shipped_recipes()),
                                parent=f"{start}.yaml", name=name, body=INIT_BODIES[start])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    out.print(f"[green]wrote[/] {escape(str(path))} [dim](extends mtkd:{start}.yaml)[/]", highlight=False,
              soft_wrap=True)


@recipe.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@set_option
@plugin_option
@click.option("--stage", type=click.Choice(STAGE_NAMES),
              help="Run only this stage (the stages it consumes must have run).")
@click.option("--force", multiple=True, type=click.Choice(STAGE_NAMES),
              help="Redo this stage and every stage that consumes it (repeatable).")
@click.option("--output", type=click.Path(), help="Run folder (default: <output_dir>/<recipe name>).")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Start this many processes (torchrun-style, gloo on CPU).")
@click.option("--quiet", "-q", is_flag=True,
              help="Only errors and the final table (no headings, bars, progress lines or wandb output).")
def recipe_run(file, overrides, plugins, stage, force, output, nproc, quiet):
    """Run a recipe: teachers -> logits -> soft targets -> student, control -> evaluation -> report.

    Every stage unit is keyed by the recipe settings that change it and the content of what it
    consumes; re-running reuses finished, intact work, and a stopped run resumes from its last checkpoint.
    """
    from .launch import maybe_relaunch
    from .recipe import load_recipe
    from .stages import run_pipeline
    from .training import RunInterrupted

    if quiet:  # wandb prints its banner and sync lines itself: its own switch, inherited by workers
        from .progress import silence_libraries

        silence_libraries()
    r = load_recipe(file, overrides, extra_plugins=plugins, check_files=True)  # every problem at once
    from .extras import check_recipe_extras

    check_recipe_extras(r.resolved, file=r.file)  # DeepSpeed asked for, not installed: name the extra
    if output:
        check_writable_folder(Path(output), "--output")
    else:
        check_writable_folder(Path(r.resolve_path(r.model.output_dir) or "runs"), "output_dir", file=r.file)
    if r.model.data.cache_dir:
        check_writable_folder(Path(r.model.data.cache_dir).expanduser(), "data.cache_dir", file=r.file)
    nproc = nproc or r.model.scaling.nproc
    if maybe_relaunch(nproc):
        return
    try:
        run_pipeline(r, output=output, stage=stage, force=force, console=console, quiet=quiet)
    except RunInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # one message, not one per worker
            console.print(f"[yellow]Interrupted[/]: {exc}. Re-run the same command to resume.", highlight=False)
        sys.exit(130)


def model_options(f):
    f = click.option("--seed", type=int, default=None,
                     help="Which student/control seed (default: the recipe's first).")(f)
    f = click.option("--model", "role", default="student", show_default=True, metavar="ROLE",
                     help="student, control, ensemble or teacher:NAME of this recipe version; student:VARIANT or "
                          "control:VARIANT with student.variants (plain student/control: the first variant).")(f)
    return click.option("--output", type=click.Path(),
                        help="The recipe's run folder (default: <output_dir>/<recipe name>).")(f)


def chosen_model(source, role, seed, output, overrides, plugins):
    """The model of ``role`` in the recipe version SOURCE names (a recipe file or a run folder)."""
    from .stages.models import choose_model, open_source

    recipe, run_dir = open_source(source, overrides, plugins, output)
    return choose_model(recipe, run_dir, role, seed)


@cli.command("predict")
@click.argument("source", type=click.Path(path_type=Path))
@model_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write submission files (default: RUN/submission-<model>).")
@click.option("--allow-incomplete", is_flag=True,
              help="Write the submission even if bad test rows were skipped (data.on_bad_rows: skip).")
@set_option
@plugin_option
def predict(source, role, seed, output, out_dir, allow_incomplete, overrides, plugins):
    """Write GLUE-style submission files (and a zip) for the test splits.

    SOURCE is a recipe file or a run folder; the model is that recipe version's.
    """
    from .predict import write_predictions

    if out_dir is not None:
        check_writable_folder(out_dir, "--out")
    chosen = chosen_model(source, role, seed, output, overrides, plugins)
    zip_path = write_predictions(chosen, out_dir=out_dir, allow_incomplete=allow_incomplete)
    out.print(f"[green]wrote[/] {zip_path}", highlight=False)


@cli.command("evaluate")
@click.argument("source", type=click.Path(path_type=Path))
@model_options
@click.option("--split", default="validation", show_default=True,
              help="Any split with labels (a labelled test split too).")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable; default: every task with SPLIT).")
@click.option("--json", "as_json", is_flag=True, help="Print {task: {metric: value}} as JSON.")
@set_option
@plugin_option
def evaluate(source, role, seed, output, split, tasks, as_json, overrides, plugins):
    """Score a model of a recipe version on a labelled split (metrics x100)."""
    from .predict import evaluate_split
    from .scores import task_score

    chosen = chosen_model(source, role, seed, output, overrides, plugins)
    metrics = evaluate_split(chosen, split, list(tasks) or None)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"{role}{f' seed {chosen.seed}' if chosen.seed is not None else ''} on {split}")
    for col in ("task", "score", "metrics"):
        table.add_column(col)
    for task, m in metrics.items():
        table.add_row(task, f"{task_score(m):.2f}", ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    out.print(table)


# ---------------------------------------------------------------- runs


@cli.group()
def runs():
    """The recipe versions kept in run folders."""


def _fmt_score(v):
    return "—" if v is None else f"{v:.2f}"


@runs.command("list")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def runs_list(run_dir, as_json):
    """List the versions in RUN_DIR (default: every run folder under ./runs) with their scores."""
    from .stages.versions import find_run_dirs, read_versions, scores

    dirs = find_run_dirs(run_dir or Path("runs"))
    if not dirs:
        raise MtkdError("no run folder with finished versions", file=run_dir or "runs",
                        hint="run a recipe to the end first (mtkd recipe run RECIPE)")
    rows = [{**{k: v for k, v in version.items() if k not in ("recipe", "metrics")},
             "scores": scores(version["metrics"])} for d in dirs for version in read_versions(d)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="recipe versions (GLUE-style scores, x100)")
    for col in ("run", "hash", "date", "differs", "student", "control", "ensemble", "teachers"):
        table.add_column(col, no_wrap=col in ("hash", "run"))
    for r in rows:
        differs = "; ".join(f"{k}={v}" for k, v in r["differs"].items()) or " ".join(r["overrides"]) or "—"
        table.add_row(Path(r["run_dir"]).name, r["hash"] + (" *" if r["latest"] else ""), r["created"] or "—",
                      escape(differs), *(_fmt_score(r["scores"][k]) for k in ("student", "control", "ensemble",
                                                                              "teachers")))
    out.print(table)
    out.print("[dim]* the run folder's latest version (its top-level report)[/]")


@runs.command("gc")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def runs_gc(run_dirs, dry_run):
    """Free space in run folders (default: every one under ./runs) without losing anything a run reuses.

    Removes the model folder a finished job does not use (final/ when it keeps best/), finished jobs'
    resumable checkpoints, what stopped runs left (*.staging, *.old, *.tmp), and stage units that neither a
    finished recipe version nor the latest one run uses (e.g. teachers of a version changed before it finished).
    """
    from .stages.gc import run_gc
    from .stages.versions import find_run_dirs

    dirs = list(run_dirs) or find_run_dirs(Path("runs"))
    if not dirs:
        raise MtkdError("no run folder found", file="runs", hint="give the run folder: mtkd runs gc RUN_DIR")
    for d in dirs:
        if not d.is_dir():
            raise MtkdError("run folder not found", file=d, expected="a folder written by mtkd recipe run")
    total = 0
    for d in dirs:
        plan = run_gc(d, dry_run=dry_run)
        for r in plan.removals:
            out.print(f"{'would remove' if dry_run else 'removed'} {escape(str(r.path))} "
                      f"[dim]({r.bytes / 1e6:.1f} MB; {escape(r.why)})[/]", highlight=False, soft_wrap=True)
        total += plan.bytes
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {total / 1e6:.1f} MB in {len(dirs)} run folder(s)", highlight=False)


@runs.command("compare")
@click.argument("versions", nargs=-1, required=True)
@click.option("--model", "role", default="student", show_default=True, metavar="ROLE",
              help="student, control, ensemble or teachers; student:VARIANT or control:VARIANT with student.variants.")
@click.option("--json", "as_json", is_flag=True, help="Print scores and deltas as JSON.")
def runs_compare(versions, role, as_json):
    """Per-task scores of two or more versions and their deltas to the first.

    Each VERSION is a run folder (its latest version), RUN_DIR@HASH (a hash prefix) or RUN_DIR/reports/HASH.
    """
    from .stages.versions import compare

    if len(versions) < 2:
        raise MtkdError("give two or more versions to compare", expected="RUN_DIR[@HASH] RUN_DIR[@HASH] ...",
                        found=list(versions))
    result = compare(list(versions), role)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    labels = [v["label"] for v in result["versions"]]
    table = Table(title=f"{role} scores (x100); deltas against {labels[0]}")
    table.add_column("task")
    for i, label in enumerate(labels):
        table.add_column(label + ("" if i == 0 else " (Δ)"), justify="right")
    for task, values in result["scores"].items():
        cells = [_fmt_score(values[0])]
        for v, d in zip(values[1:], result["deltas"][task][1:]):
            cells.append(_fmt_score(v) + ("" if d is None else f" ({d:+.2f})"))
        table.add_row(task, *cells)
    out.print(table)
    for v in result["versions"]:
        if v["differs"]:
            out.print(f"[dim]{escape(v['label'])}: " + escape("; ".join(f"{k}={x}" for k, x in v["differs"].items()))
                      + "[/]", highlight=False)


def _register_plugin_commands() -> None:
    from .plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except MtkdError as exc:  # a broken plugin must not take the whole CLI down
        render_error(exc)


_register_plugin_commands()
