"""What the trainer refuses to keep: NaN losses and weights, a NaN "best" dev score, pickles in a checkpoint,
damaged checkpoints; and what a finished job keeps on disk (``training.keep``).

Runs are real (tiny encoder, the GLUE sample); two small plugins registered here make a run do something
on cue: a loss that turns NaN at its k-th call, a logger that sends this process SIGTERM at step k (the
trainer then saves a resumable checkpoint and stops, as on Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from helpers import job_result, only_job, pipeline_recipe, requires_minilm, run_cli, run_mtkd

import mtkd
from mtkd.params import Params

pytestmark = requires_minilm

TRAINING = {"epochs": 2, "batch_size": 8, "eval_batch_size": 32, "log_every": 1, "num_threads": 1,
            "save_every": 2}  # 24 + 24 rows: 6 steps an epoch, 12 in all


class NanAtParams(Params):
    at: int = 3


class NanAt:
    """Cross-entropy, except that its ``at``-th call returns NaN."""

    task_types = frozenset({"classification"})
    uses_soft_targets = False

    def __init__(self, params: NanAtParams):
        self.at, self.calls = params.at, 0

    def __call__(self, logits, labels, soft=None, *, progress=0.0):
        import torch.nn.functional as F

        self.calls += 1
        loss = F.cross_entropy(logits, labels.long())
        return loss * float("nan") if self.calls == self.at else loss


class StopAtParams(Params):
    at: int = 4


class StopAt:
    """A logger that sends its own process SIGTERM when step ``at`` is logged."""

    def __init__(self, params: StopAtParams):
        self.at = params.at

    def start(self, **kwargs):
        pass

    def log(self, metrics, *, step):
        if step == self.at and any(k.endswith("train/loss") for k in metrics):
            os.kill(os.getpid(), signal.SIGTERM)

    def summary(self, values):
        pass

    def finish(self):
        pass


class Cues:
    @mtkd.hookimpl
    def register_losses(self, register):
        register("nan-at", NanAt, params=NanAtParams)

    @mtkd.hookimpl
    def register_loggers(self, register):
        register("stop-at", StopAt, params=StopAtParams)


@pytest.fixture
def cues():
    from mtkd.plugins import register_plugin

    register_plugin(Cues(), "cues")


def _recipe(tmp_path: Path, **changes) -> Path:
    training = {**TRAINING, **changes.pop("training", {})}
    return pipeline_recipe(tmp_path, teachers={"members": [{"seed": 1}]}, student=None, training=training,
                           **changes)


def _run(recipe: Path):
    return run_cli("recipe", "run", recipe, "--stage", "teachers", "--quiet")


def _job_dir(tmp_path: Path) -> Path:
    return only_job(tmp_path / "runs" / "tiny")


# ---------------------------------------------------------------- NaN and divergence


def test_a_divergent_learning_rate_stops_the_job_with_a_clear_error(tmp_path):
    recipe = _recipe(tmp_path, training={"lr": 1.0e3, "epochs": 4})
    done = run_mtkd(["recipe", "run", recipe, "--stage", "teachers", "-q"], timeout=240)
    assert done.returncode == 3, done.stderr[-3000:]
    flat = " ".join(done.stderr.split())
    assert "teacher-0: non-finite loss" in flat and "at step" in flat and "task '" in flat, flat[-2000:]
    assert "resumable checkpoint" in flat and "lower training.lr" in flat
    assert "Traceback" not in done.stderr
    job = _job_dir(tmp_path)
    assert not (job / "result.json").exists() and not (job / "final").exists()


def test_nan_loss_names_the_step_task_and_last_checkpoint(tmp_path, cues):
    recipe = _recipe(tmp_path, objective={"classification": {"type": "nan-at", "at": 4}, "regression": {"type": "mse"}})
    result = _run(recipe)
    assert result.exit_code == 3, result.output
    flat = " ".join(result.output.split())
    job = _job_dir(tmp_path)
    # Each task has 3 batches an epoch: its 4th loss is in the second epoch, after checkpoints at steps 2, 4, 6.
    assert "teacher-0: non-finite loss (nan on this rank) at step" in flat
    assert "(task 'rte')" in flat or "(task 'sst2')" in flat
    state = json.loads((job / "checkpoint" / "trainer_state.json").read_text())
    assert f"{job / 'checkpoint'} (step {state['step']})" in flat
    assert not (job / "result.json").exists()


def test_skip_drops_the_nan_step_and_counts_it(tmp_path, cues):
    import torch
    from safetensors.torch import load_file

    recipe = _recipe(tmp_path, objective={"classification": {"type": "nan-at", "at": 5}, "regression": {"type": "mse"}},
                     training={"on_nonfinite": "skip", "keep": "final"})
    result = _run(recipe)
    assert result.exit_code == 0, result.output
    out = job_result(tmp_path / "runs" / "tiny")
    assert out["steps"] == 12 and out["skipped_steps"] == 2  # one NaN call in rte's loss, one in sst2's
    weights = load_file(str(_job_dir(tmp_path) / "final" / "model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


def test_a_nan_dev_score_is_never_the_best():
    from mtkd.training import TrainState, improves

    state = TrainState()
    assert not improves(float("nan"), state.best)
    assert improves(50.0, None) and not improves(float("nan"), 50.0) and not improves(49.0, 50.0)
    assert not improves(float("inf"), 50.0)


def test_the_logged_score_is_the_mean_of_the_tasks_that_choose(tmp_path):
    recipe = _recipe(tmp_path, training={"best_metric": "score", "best_tasks": ["rte"]})
    assert _run(recipe).exit_code == 0
    rows = [json.loads(x) for x in (_job_dir(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "dev/score" in r]
    assert len(evals) == 2 and all("dev/sst2/accuracy" in r for r in evals)  # every task still logged
    assert all(r["dev/score"] == r["dev/rte/accuracy"] for r in evals)


# ---------------------------------------------------------------- what a finished job keeps


@pytest.mark.parametrize("keep, folders, model", [
    (None, {"best"}, "best"), ("final", {"final"}, "final"), ("both", {"best", "final"}, "best")])
def test_keep_leaves_only_the_asked_model_folders(tmp_path, keep, folders, model):
    from mtkd.model import load_model
    from mtkd.training import model_dir

    recipe = _recipe(tmp_path, training={"keep": keep} if keep else {})
    assert _run(recipe).exit_code == 0
    job = _job_dir(tmp_path)
    result = json.loads((job / "result.json").read_text())
    assert {p.name for p in job.iterdir() if p.is_dir()} == folders  # no checkpoint/ either
    assert result["model"] == model
    # Epochs done at each evaluation, the last one (after the final step) included.
    assert [(h["step"], h["epoch"]) for h in result["history"]] == [(6, 1.0), (12, 2.0)]
    load_model(model_dir(job, result))  # the folder readers resolve is a loadable model
    if model == "best":
        assert result["metrics"] == [h for h in result["history"] if h["step"] == result["best_step"]][0]["metrics"]


def test_keep_best_keeps_final_when_nothing_picks_a_best(tmp_path):
    recipe = _recipe(tmp_path, training={"best_metric": "final"})
    assert _run(recipe).exit_code == 0
    job = _job_dir(tmp_path)
    assert {p.name for p in job.iterdir() if p.is_dir()} == {"final"}
    assert json.loads((job / "result.json").read_text())["model"] == "final"


def test_save_dtype_stores_the_kept_folders_in_half_precision(tmp_path):
    from safetensors import safe_open

    recipe = _recipe(tmp_path, training={"keep": "both", "save_dtype": "bf16"})
    assert _run(recipe).exit_code == 0
    job = _job_dir(tmp_path)
    for folder in ("best", "final"):
        with safe_open(str(job / folder / "model.safetensors"), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert "BF16" in dtypes and "F32" not in dtypes, (folder, dtypes)


def test_model_dir_reads_old_results_with_paths(tmp_path):
    from mtkd.training import model_dir

    (tmp_path / "best").mkdir()
    assert model_dir(tmp_path, {"model": "final"}) == tmp_path / "final"
    assert model_dir(tmp_path, {"model": "/elsewhere/gone/best"}) == tmp_path / "best"
    assert model_dir(tmp_path, {"model": str(tmp_path / "best")}) == tmp_path / "best"


# ---------------------------------------------------------------- the resumable checkpoint holds no pickle


PAYLOAD_MARKER = "pwned.txt"


def _pickle_payload(marker: Path) -> bytes:
    import pickle

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    return pickle.dumps(Payload())


@pytest.fixture
def stopped(tmp_path, cues):
    """A run stopped (as by SIGTERM) at step 4: its job folder holds a resumable checkpoint."""
    recipe = _recipe(tmp_path, logging={"trackers": [{"type": "stop-at", "at": 4}]}, training={"keep": "final"})
    result = _run(recipe)
    assert result.exit_code == 130, result.output
    job = _job_dir(tmp_path)
    assert json.loads((job / "checkpoint" / "trainer_state.json").read_text())["step"] == 4
    return recipe, job


def test_the_checkpoint_is_safetensors_and_json_only(stopped):
    _, job = stopped
    names = sorted(p.name for p in (job / "checkpoint").iterdir())
    assert names == ["model.safetensors", "optimizer.json", "optimizer.safetensors", "rng-0.json",
                     "rng-0.safetensors", "trainer_state.json"]


def test_planted_pickles_in_the_checkpoint_never_run(stopped, tmp_path):
    recipe, job = stopped
    marker = tmp_path / PAYLOAD_MARKER
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin",
                 "pytorch_model.bin"):
        (job / "checkpoint" / name).write_bytes(_pickle_payload(marker))
    result = run_cli("recipe", "run", recipe, "--stage", "teachers", "--quiet",
                     "--set", "logging.trackers=[]")
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert json.loads((job / "result.json").read_text())["steps"] == 12


@pytest.mark.parametrize("damage", ["pickle-as-optimizer", "truncated-model", "garbage-state"])
def test_a_damaged_checkpoint_is_a_clean_error(stopped, tmp_path, damage):
    recipe, job = stopped
    ckpt = job / "checkpoint"
    marker = tmp_path / PAYLOAD_MARKER
    if damage == "pickle-as-optimizer":
        (ckpt / "optimizer.safetensors").write_bytes(_pickle_payload(marker))
        bad = "optimizer.safetensors"
    elif damage == "truncated-model":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
        bad = "model.safetensors"
    else:
        (ckpt / "trainer_state.json").write_text('{"step": 4, "epoch"', encoding="utf-8")
        bad = "trainer_state.json"
    result = run_cli("recipe", "run", recipe, "--stage", "teachers", "--quiet", "--set", "logging.trackers=[]")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "the resumable checkpoint is damaged or incomplete" in flat and bad in flat
    assert f"delete {ckpt}" in flat and "Traceback" not in result.output
    assert not marker.exists()


# ---------------------------------------------------------------- evaluation shards


@pytest.mark.parametrize("n, world, batch", [(5, 3, 1), (7, 2, 3), (2, 3, 4), (9, 3, 2)])
def test_equal_eval_shards_give_every_rank_the_same_passes_and_each_example_once(n, world, batch):
    import datasets

    from mtkd.data import eval_batches, gather_predictions

    ds = datasets.Dataset.from_dict({"input_ids": [[1] * (i % 4 + 1) for i in range(n)], "label": list(range(n)),
                                     "length": [i % 4 + 1 for i in range(n)]})
    shards = [list(eval_batches(ds, batch_size=batch, pad_token_id=0, rank=r, world_size=world, equal_shards=True))
              for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # the same number of forward passes on every rank
    assert len({tuple(len(b["positions"]) for b in s) for s in shards}) == 1
    parts = [(b["positions"], b["labels"]) for s in shards for b in s]
    assert gather_predictions(parts).tolist() == list(range(n))  # each example once, padding dropped


# ---------------------------------------------------------------- what the trainer tells a RunProgress


class Recorder:
    """A RunProgress that writes down every call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def _job(out_dir: Path, training: dict, registries):
    from helpers import classification_task, tiny_spec

    from mtkd.recipe import load_recipe
    from mtkd.training import Job, TaskData

    base = load_recipe(pipeline_recipe(out_dir.parent)).resolved["training"]
    task = classification_task("pair")
    ce = registries.losses.create("ce", {})
    data = TaskData(task, task.load_split("train"), {"validation": task.load_split("validation")}, ce)
    return Job(name="teacher-0", out_dir=out_dir, spec=tiny_spec(), training={**base, **training}, seed=1,
               tasks={"pair": data}, max_length=32, cache_dir=str(out_dir.parent / "cache"))


def test_the_trainer_reports_start_steps_resume_and_end(tmp_path, registries):
    from mtkd.training import RunInterrupted, train

    scaling = {"strategy": "auto"}
    # 8 rows, batch 2: 4 steps an epoch, 8 in all; stop (SIGTERM) once step 3 is reported.
    training = {"epochs": 2, "batch_size": 2, "save_every": 100, "log_every": 2, "num_threads": 1}

    class StopAtThree(Recorder):
        def job_step(self, job, **kwargs):
            self.calls.append(("job_step", (job,), kwargs))
            if kwargs["step"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # as Ctrl-C would: finish the step, checkpoint, stop

    first = StopAtThree()
    with pytest.raises(RunInterrupted):
        train(_job(tmp_path / "job", training, registries), scaling=scaling, progress=first)
    assert first.calls[0] == ("job_started", ("teacher-0",), {"total_steps": 8, "start_step": 0})
    steps = [c[2] for c in first.calls if c[0] == "job_step"]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["samples"] == 2 for s in steps)
    assert [s["loss"] is not None for s in steps] == [False, True, False]  # a loss on logging steps
    assert first.calls[-1] == ("job_finished", ("teacher-0",), {"step": 3})

    again = Recorder()
    result = train(_job(tmp_path / "job", training, registries), scaling=scaling, progress=again)
    assert result["steps"] == 8
    names = [c[0] for c in again.calls]
    assert again.calls[0] == ("message", ("resuming teacher-0 from step 3",), {})
    assert again.calls[1] == ("job_started", ("teacher-0",), {"total_steps": 8, "start_step": 3})
    assert names.count("job_step") == 5 and names[-1] == "job_finished"


def test_deepspeed_refusals_do_not_need_deepspeed_installed():
    """The recipe-level refusals are plain checks; the end-to-end tests below need the `deepspeed` extra."""
    from mtkd.errors import RecipeError
    from mtkd.strategies import check_hardware

    training = {**TRAINING, "precision": "fp32"}
    with pytest.raises(RecipeError, match="ZeRO-3 does not yet train a multi-task job") as err:
        check_hardware({"strategy": "deepspeed", "zero_stage": 3}, training, tasks={"rte": None, "sst2": None})
    assert err.value.path == "scaling.zero_stage"
    check_hardware({"strategy": "deepspeed", "zero_stage": 3}, training, tasks={"rte": None})  # one task: allowed
    check_hardware({"strategy": "deepspeed", "zero_stage": 2}, training, tasks={"rte": None, "sst2": None})
    with pytest.raises(RecipeError, match="on_nonfinite: skip cannot drop a step under DeepSpeed") as err:
        check_hardware({"strategy": "deepspeed", "zero_stage": 2}, {**training, "on_nonfinite": "skip"},
                       training_path="student.training")
    assert err.value.path == "student.training.on_nonfinite"


def test_zero3_for_a_multi_task_job_is_refused_before_training(tmp_path):
    pytest.importorskip("deepspeed")
    recipe = pipeline_recipe(tmp_path, scaling={"strategy": "deepspeed", "zero_stage": 3})
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "scaling.zero_stage" in flat and "does not yet train a multi-task job like DDP" in flat
    assert "expected: zero_stage 1 or 2" in flat and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "teachers").exists()


def test_skip_under_deepspeed_is_refused_before_training(tmp_path):
    pytest.importorskip("deepspeed")
    recipe = pipeline_recipe(tmp_path, tasks=[{"name": "rte", "max_train_examples": 24, "max_eval_examples": 16}],
                             scaling={"strategy": "deepspeed"}, training={**TRAINING, "on_nonfinite": "skip"})
    result = run_cli("recipe", "run", recipe, "--quiet")
    assert result.exit_code == 2, result.output
    assert "training.on_nonfinite" in result.output and "Traceback" not in result.output


def test_the_optimizer_has_a_group_per_head_so_zero_can_leave_absent_heads_alone(registries):
    from helpers import tiny_model

    from mtkd.strategies import make_optimizer

    model = tiny_model()
    optimizer = make_optimizer(model, {"weight_decay": 0.01, "lr": 1e-3, "optimizer": "adamw"})
    groups = {(g["mtkd_head"], g["weight_decay"]): {id(p) for p in g["params"]} for g in optimizer.param_groups}
    for head in (None, "nli", "sent", "sts"):
        assert (head, 0.01) in groups and (head, 0.0) in groups  # weights decay, biases and norms do not
    for name, p in model.named_parameters():
        head = name.split(".")[1] if name.startswith("heads.") else None
        assert sum(id(p) in params for (h, _), params in groups.items() if h == head) == 1, name
    assert sum(len(params) for params in groups.values()) == len(list(model.parameters()))
