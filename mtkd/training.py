"""The multi-task training loop (MT-DNN), on Hugging Face Accelerate.

One job trains one multi-task model: a teacher member, a student seed, or a hard-label control.
:class:`Trainer` reads top to bottom: prepare; for each epoch, for each batch: step, maybe
evaluate, maybe checkpoint; finish. Every rank runs the same loop and takes every decision that
leads to a collective (evaluate, gather, a full state dict, a save) from the same numbers; only
file writes, logging and progress are left to the main process.

A job folder holds ``checkpoint/`` (resumable state, see ``mtkd.resumable``), ``best/`` and/or
``final/`` (model folders, see ``mtkd.model``; ``training.keep`` says which stay), ``metrics.jsonl``
and ``result.json`` (written last: the job is done; its ``model`` names the kept folder).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import resumable
from .data import MultiTaskLoader, tokenize_split
from .errors import RecipeError, TrainingDiverged
from .inference import MODEL_INPUTS, predict_logits
from .model import (
    build_model,
    compile_encoder,
    copy_encoder_weights,
    load_model,
    save_model,
    spec_allows_code,
)
from .objective_hooks import attach_objectives, check_extras_supported, extra_param_group, objective_kwargs
from .plugins import get_registries
from .progress import NullProgress, RunProgress
from .scores import glue_score, task_score
from .strategies import (  # noqa: F401  (check_hardware, fsdp_plugin: re-exported)
    AbsentHeads,
    check_hardware,
    configure_deepspeed,
    fsdp_plugin,
    full_state_dict,
    is_sharded,
    linear_schedule,
    make_accelerator,
    make_optimizer,
    unwrap,
    whole_models,
)


class RunInterrupted(Exception):
    """SIGINT/SIGTERM: the step finished, a checkpoint was written; re-run the same command to resume."""


@dataclass
class TaskData:
    task: Any  # mtkd.components.Task
    train: Any = None  # the training split (a datasets.Dataset, raw text), or None
    evals: dict = field(default_factory=dict)  # split -> raw eval split (labelled)
    objective: Any = None
    loss_weight: float = 1.0
    soft: Any = None  # soft targets [N, C] aligned with `train` rows (numpy), or None


@dataclass
class Job:
    name: str  # e.g. teacher-0, student-s1, control-s1
    out_dir: Path
    spec: dict  # {"encoder": {...}, "heads": {...}}
    training: dict  # the resolved `training:` section
    seed: int
    tasks: dict[str, TaskData]
    max_length: int = 128
    cache_dir: str | None = None
    init_encoder_from: Path | None = None
    config: dict = field(default_factory=dict)  # logged as the run's config
    teacher_models: list = field(default_factory=list)  # the run's teacher model folders (hidden-state objectives)
    selection: str = "dev"  # what `evals` holds: "dev", or "holdout" (evaluation.selection); the metric keys' prefix


def tokenize_job(job: Job, tokenizer) -> dict[str, TaskData]:
    """The job's tasks with every split tokenised (cached on disk) and soft targets attached."""
    out = {}
    for name, td in job.tasks.items():
        train = None
        if td.train is not None:
            train = tokenize_split(td.task, td.task.train_split, tokenizer, max_length=job.max_length,
                                   cache_dir=job.cache_dir, dataset=td.train)
            if td.soft is not None:
                train = train.add_column("soft", [row.tolist() for row in td.soft])
        evals = {split: tokenize_split(td.task, split, tokenizer, max_length=job.max_length, cache_dir=job.cache_dir,
                                       dataset=ds) for split, ds in td.evals.items()}
        out[name] = TaskData(td.task, train, evals, td.objective, td.loss_weight, td.soft)
    return out


# ---------------------------------------------------------------- evaluation


def evaluate(model, tasks: dict[str, TaskData], *, batch_size: int, pad_token_id: int, precision: str,
             accelerator=None) -> tuple[dict, dict]:
    """Dev metrics of every task (x100) and the raw logits per task and split."""
    from accelerate.utils import gather_object

    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    metrics, logits = {}, {}
    for name, td in tasks.items():
        if not td.evals:
            continue
        preds, labels, logits[name] = {}, {}, {}
        for split, ds in td.evals.items():
            out = predict_logits(model, td.task.head_task or name, ds, batch_size=batch_size,
                                 pad_token_id=pad_token_id, precision=precision, rank=rank, world_size=world,
                                 gather=gather_object)
            logits[name][split] = out
            preds[split] = to_predictions(out, td.task.task_type)
            labels[split] = ds["label"]
        metrics[name] = td.task.compute_metrics(preds, labels)
    return metrics, logits


def to_predictions(outputs, task_type: str):
    """Class ids from logits or probabilities; values for regression."""
    return outputs[:, 0] if task_type == "regression" else outputs.argmax(-1)


def select_metric(metrics: dict, best_metric: str, best_tasks=None) -> float:
    """The value that ranks dev checkpoints (higher is better)."""
    if best_metric == "score":
        chosen = {k: v for k, v in metrics.items() if best_tasks is None or k in best_tasks}
        if not chosen:
            raise RecipeError("training.best_tasks names no evaluated task", path="training.best_tasks",
                              expected=f"some of {sorted(metrics)}", found=best_tasks)
        return glue_score(chosen)
    task, _, metric = best_metric.partition(".")
    if task not in metrics:
        raise RecipeError("best_metric names no evaluated task", path="training.best_metric",
                          expected="`score` or TASK.METRIC", found=best_metric)
    return metrics[task][metric] if metric else task_score(metrics[task])


def improves(value: float, best: float | None) -> bool:
    """Whether a dev selection value beats the best so far; NaN and infinities never do."""
    return math.isfinite(value) and (best is None or value > best)


def check_selection(training: dict, tasks: dict, *, file=None, training_path: str = "training") -> None:
    """``best_metric`` and ``best_tasks`` name tasks (and metrics) of the run, checked before training."""
    best, names = training["best_metric"], sorted(tasks)
    if best not in ("score", "final"):
        task, _, metric = best.partition(".")
        if task not in tasks:
            raise RecipeError(f"best_metric names task {task!r}, which is not in the run", file=file,
                              path=f"{training_path}.best_metric", found=best,
                              expected=f"score, final, TASK or TASK.METRIC with TASK one of {names}")
        known = getattr(tasks[task], "metric_names", None)
        if metric and known and metric not in known:
            raise RecipeError(f"task {task!r} has no metric {metric!r}", file=file,
                              path=f"{training_path}.best_metric", found=best, expected=f"one of {list(known)}")
    unknown = [t for t in training.get("best_tasks") or () if t not in tasks]
    if unknown:
        raise RecipeError(f"best_tasks names tasks that are not in the run: {unknown}", file=file,
                          path=f"{training_path}.best_tasks", found=unknown, expected=f"some of {names}")




# ---------------------------------------------------------------- files


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float), encoding="utf-8")
    os.replace(tmp, path)


def model_dir(job_dir, result: dict) -> Path:
    """The model folder a finished job kept: ``result["model"]`` (``best`` or ``final``) in ``job_dir``.

    Results written before 0.2 held a path; it is used when it still exists, else the job's own
    ``best``/``final`` folder (in that order)."""
    job_dir = Path(job_dir)
    named = Path(str(result.get("model") or ""))
    if named.name and not named.is_absolute() and len(named.parts) == 1:
        return job_dir / named
    if named.name and named.is_dir():
        return named
    for name in ("best", "final"):
        if (job_dir / name).is_dir():
            return job_dir / name
    return job_dir / (named.name or "final")


class _StopFlag:
    """Turns SIGINT/SIGTERM into "finish this step, checkpoint, exit"."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- the trainer


@dataclass
class TrainState:
    """Everything of a job's progress that a checkpoint keeps (besides weights, optimizer and RNG).
    Identical on every rank: each rank evaluates the same gathered predictions."""

    step: int = 0
    epoch: int = 0
    best: float | None = None  # the selection value of ``best/`` (never NaN)
    best_step: int | None = None
    best_metrics: dict | None = None
    history: list = field(default_factory=list)  # {"step", "epoch", "metrics"} per evaluation
    train_seconds: float = 0.0
    skipped_steps: int = 0  # steps dropped for a non-finite loss (training.on_nonfinite: skip)
    checkpoint_step: int | None = None  # the step of the last resumable checkpoint


def train(job: Job, *, scaling: dict, loggers=(), group: str | None = None,
          progress: RunProgress | None = None) -> dict:
    """Train one job to the end (resuming from its checkpoint if there is one); returns its result."""
    result_path = job.out_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    return Trainer(job, scaling=scaling, loggers=loggers, group=group, progress=progress).run()


class Trainer:
    """One job on every rank of the world: ``Trainer(job, ...).run()``."""

    def __init__(self, job: Job, *, scaling: dict, loggers=(), group=None, progress=None):
        self.job, self.t = job, job.training
        self.keep = self.t.get("keep") or "best"
        self.save_dtype = self.t.get("save_dtype") or "fp32"
        self.on_nonfinite = self.t.get("on_nonfinite") or "stop"
        self.ckpt = job.out_dir / "checkpoint"
        self.state = TrainState()
        self.scaling, self.loggers, self.group = scaling, loggers, group
        self.progress = progress or NullProgress()

    def run(self) -> dict:
        self.prepare()
        self.resume()
        stopped = False
        with _StopFlag() as stop:
            while self.state.step < self.total_steps and not stopped:
                self.loader.set_epoch(self.state.epoch)  # keeps a just-resumed position
                for task, batch in self.loader:
                    if not self.train_step(task, batch):
                        continue  # accumulating gradients
                    if self.eval_every != "epoch" and self.state.step % self.eval_every == 0:
                        self.evaluate()
                    stopped = self.agree(stop.requested)
                    if stopped or self.state.step % self.t["save_every"] == 0:
                        self.save_checkpoint()
                    if stopped or self.state.step >= self.total_steps:
                        break
                else:  # the epoch ran out
                    self.state.epoch += 1
                    if self.eval_every == "epoch":
                        self.evaluate()
        if stopped:
            self.interrupted()
        if self.has_evals and (not self.state.history or self.state.history[-1]["step"] != self.state.step):
            self.evaluate()
        return self.finish()

    # -- set-up ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        from accelerate.utils import set_seed

        from .tracking import Tracker

        job, t = self.job, self.t
        if t.get("num_threads"):
            torch.set_num_threads(t["num_threads"])
        check_hardware(self.scaling, t, tasks={n: td.task for n, td in job.tasks.items() if td.train is not None})
        set_seed(job.seed)
        with whole_models():  # built whole and seeded, before the Accelerator: prepare shards it
            model = build_model(job.spec, {n: td.task for n, td in job.tasks.items()})
            if job.init_encoder_from is not None:
                copy_encoder_weights(model, load_model(job.init_encoder_from, allow_code=spec_allows_code(job.spec)))
        compile_encoder(model, t.get("compile"))  # training.compile: inductor, dynamic shapes
        self.accelerator = acc = make_accelerator(self.scaling, t)
        self.main = acc.is_main_process
        if not self.main:
            self.progress = NullProgress()
        job.out_dir.mkdir(parents=True, exist_ok=True)
        self.pad_id = model.encoder.tokenizer.pad_token_id or 0
        self.tasks = tokenize_job(job, model.encoder.tokenizer)
        self.has_evals = any(td.evals for td in self.tasks.values())
        self.eval_every = t["eval_every"]

        self.loader = self.make_loader()
        self.steps_per_epoch = math.ceil(len(self.loader) / t["grad_accum"])
        self.total_steps = t["max_steps"] or max(1, math.ceil(t["epochs"] * len(self.loader) / t["grad_accum"]))

        optimizer = make_optimizer(model, t)
        # Objectives that match hidden states may bring trainable parts (projections): trained, never saved in the model.
        self.extras = attach_objectives({n: td.objective for n, td in job.tasks.items()}, model, job.teacher_models,
                                        acc.device, allow_code=spec_allows_code(job.spec))
        check_extras_supported(self.extras, acc)
        if len(self.extras):
            optimizer.add_param_group(extra_param_group(self.extras, t))
        self.scheduler = linear_schedule(optimizer, int(t["warmup"] * self.total_steps), self.total_steps)
        deepspeed, multi_task = acc.distributed_type.value == "DEEPSPEED", len(self.loader.views) > 1
        if deepspeed:
            configure_deepspeed(acc, t)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.unwrapped = unwrap(acc, self.model)
        self.absent_heads = AbsentHeads(self.optimizer) if deepspeed and multi_task else None
        self.window_heads: set[str] = set()
        self.tracker = Tracker(run_dir=job.out_dir, job=job.name, group=self.group,
                               config={**job.config, "job": job.name},
                               loggers=self.loggers if self.main else (), enabled=self.main)
        self.running_loss, self.running_n, self.step_rows, self.window_bad = 0.0, 0, 0, False

    def make_loader(self) -> MultiTaskLoader:
        t, acc = self.t, self.accelerator
        train_sets = {n: td.train for n, td in self.tasks.items() if td.train is not None and len(td.train)}
        sampling = {k: v for k, v in t["sampling"].items() if k != "type"}
        loader = MultiTaskLoader(
            train_sets, get_registries().samplers.create(t["sampling"]["type"], sampling),
            batch_size=t["batch_size"], token_budget=t["token_budget"], group_by_length=t["group_by_length"],
            seed=self.job.seed, pad_token_id=self.pad_id, rank=acc.process_index, world_size=acc.num_processes,
            task_types={n: self.tasks[n].task.task_type for n in train_sets}, epochs_hint=t["epochs"])
        loader.set_epoch(0)
        return loader

    def resume(self) -> None:
        """Continue from the job's resumable checkpoint, if it has one (the same on every rank)."""
        acc = self.accelerator
        if self.main:
            resumable.recover(self.ckpt)
        acc.wait_for_everyone()
        if (self.ckpt / resumable.STATE_NAME).exists():
            saved = resumable.load(self.ckpt, accelerator=acc, model=self.model, optimizer=self.optimizer,
                                   extras=self.extras)
            try:
                self.state = TrainState(**{f.name: saved[f.name] for f in dataclasses.fields(TrainState)})
                self.scheduler.load_state_dict(saved["scheduler"])
                self.loader.load_state_dict(saved["loader"])
            except (KeyError, TypeError, ValueError) as exc:
                raise resumable._damaged(self.ckpt / resumable.STATE_NAME, exc) from None
            self.progress.message(f"resuming {self.job.name} from step {self.state.step}")
        self.tracker.forget_after(self.state.step)  # lines a killed run logged after its checkpoint
        self.started, self.seconds_before = time.perf_counter(), self.state.train_seconds
        self.progress.job_started(self.job.name, total_steps=self.total_steps, start_step=self.state.step)
        self.model.train()

    # -- one step ----------------------------------------------------------------------------------

    def train_step(self, task: str, batch: dict) -> bool:
        """Forward and backward one micro-batch; True when it completed an optimizer step."""
        acc, td = self.accelerator, self.tasks[task]
        with acc.accumulate(self.model):
            inputs = {k: batch[k].to(acc.device) for k in MODEL_INPUTS if k in batch}
            hidden = getattr(td.objective, "uses_hidden_states", False)
            with acc.autocast():
                out = self.model(task, **inputs, output_hidden_states=True) if hidden else self.model(task, **inputs)
            logits, extra = objective_kwargs(td.objective, out, inputs)
            soft = batch.get("soft")
            loss = td.objective(logits.float(), batch["labels"].to(acc.device),
                                soft.to(acc.device) if soft is not None else None,
                                progress=self.state.step / self.total_steps, **extra) * td.loss_weight
            value = loss.detach().float().item()
            if self.agree(not math.isfinite(value)):
                self.nonfinite(f"loss ({value} on this rank)", task)  # stops, or marks the step to skip
            else:  # weighted by rows: the logged loss is the mean over the step's examples on all ranks
                rows = len(batch["labels"])
                self.running_loss, self.running_n = self.running_loss + value * rows, self.running_n + rows
            # Ranks' shares of a global batch may differ by a row; DDP averages the ranks' gradients, so each
            # mean is weighted by its share: the step is the global batch's mean, as in one process.
            share = len(batch["labels"]) * acc.num_processes / self.loader.global_rows
            self.window_heads.add(self.unwrapped.head_name(task))
            saved = self.absent_heads.save(self.window_heads) if self.absent_heads and acc.sync_gradients else None
            acc.backward(loss * share if share != 1 else loss)  # also when skipping: DDP expects a backward
            if saved is not None:  # DeepSpeed stepped inside backward
                self.absent_heads.restore(saved)
            if acc.sync_gradients:
                self.optimizer_step(task)
        self.step_rows += self.loader.global_rows
        if not acc.sync_gradients:
            return False
        self.end_step()
        return True

    def optimizer_step(self, task: str) -> None:
        if not self.window_bad and self.t["grad_clip"]:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.t["grad_clip"])
            if norm is not None and not bool(torch.isfinite(torch.as_tensor(norm))):
                self.nonfinite(f"gradient norm ({float(norm)})", task)  # the same on every rank: reduced
        if not self.window_bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def nonfinite(self, what: str, task: str) -> None:
        """A NaN/inf loss or gradient on some rank (every rank calls this at the same point)."""
        if self.on_nonfinite == "skip":
            self.window_bad = True
            return
        where = (f"the last resumable checkpoint is {self.ckpt} (step {self.state.checkpoint_step})"
                 if self.state.checkpoint_step else "no resumable checkpoint was written yet")
        self.tracker.finish()
        raise TrainingDiverged(
            f"{self.job.name}: non-finite {what} at step {self.state.step + 1} (task {task!r}); {where}",
            hint="lower training.lr (or set training.on_nonfinite: skip to drop such steps)")

    def end_step(self) -> None:
        """Bookkeeping after an optimizer step: schedule, counters, logging, progress."""
        state = self.state
        self.scheduler.step()
        self.window_heads.clear()
        state.step += 1
        if self.window_bad:
            state.skipped_steps += 1
        self.window_bad = False
        loss = None
        if state.step % self.t["log_every"] == 0 or state.step == self.total_steps:
            local = torch.tensor([self.running_loss, self.running_n], dtype=torch.float64, device=self.accelerator.device)
            total, rows = self.accelerator.reduce(local, "sum").tolist()
            loss = total / max(1.0, rows)
            self.tracker.log({"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0]}, step=state.step)
            self.running_loss, self.running_n = 0.0, 0
        self.progress.job_step(self.job.name, step=state.step, loss=loss, samples=self.step_rows)
        self.step_rows = 0

    # -- evaluation and saving ------------------------------------------------------------------------

    def evaluate(self) -> None:
        """Dev metrics on every rank (the same gathered predictions); ``best/`` when they improve."""
        if not self.has_evals:
            return
        state, t = self.state, self.t
        metrics, _ = evaluate(self.model, self.tasks, batch_size=t["eval_batch_size"], pad_token_id=self.pad_id,
                              precision=t["precision"], accelerator=self.accelerator)
        where = self.job.selection  # a holdout's figures are not logged as dev figures
        flat = {f"{where}/{task}/{m}": v for task, ms in metrics.items() for m, v in ms.items()}
        # `score` over the tasks that choose (best_tasks), so the curves show what the choice compares
        score = select_metric(metrics, "score", t.get("best_tasks"))
        self.tracker.log({**flat, f"{where}/score": score}, step=state.step)
        # Epochs done, from the step: the evaluation after the last step comes before the epoch counter moves.
        epochs = round(state.step / max(1, self.steps_per_epoch), 4)
        state.history.append({"step": state.step, "epoch": epochs, "metrics": metrics})
        if t["best_metric"] == "final":
            return
        value = select_metric(metrics, t["best_metric"], t.get("best_tasks"))
        if improves(value, state.best):
            state.best, state.best_step, state.best_metrics = value, state.step, metrics
            if self.keep != "final":
                self.save_model("best")

    def save_model(self, name: str) -> None:
        full = full_state_dict(self.accelerator, self.model)  # a collective: every rank
        if self.main:
            save_model(self.unwrapped, self.job.out_dir / name, state_dict=full, dtype=self.save_dtype)
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self) -> None:
        state = self.state
        state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        state.checkpoint_step = state.step
        tmp = self.ckpt.with_name(self.ckpt.name + ".tmp")
        resumable.save(tmp, accelerator=self.accelerator, model=self.model, optimizer=self.optimizer, extras=self.extras,
                       state={**dataclasses.asdict(state), "scheduler": self.scheduler.state_dict(),
                              "loader": self.loader.state_dict()})
        if self.main:
            resumable.replace_dir(tmp, self.ckpt)
        self.accelerator.wait_for_everyone()

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is true on any (a stop request, a non-finite loss)."""
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, "sum").item() > 0)

    # -- the end ------------------------------------------------------------------------------------

    def interrupted(self) -> None:
        self.tracker.finish()
        self.progress.job_finished(self.job.name, step=self.state.step)
        raise RunInterrupted(f"{self.job.name}: stopped at step {self.state.step}; checkpoint saved in {self.ckpt}")

    def finish(self) -> dict:
        """Check and save the final weights, keep what ``training.keep`` asks, write result.json."""
        acc, state, out = self.accelerator, self.state, self.job.out_dir
        state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        full = full_state_dict(acc, self.model)
        weights = full if full is not None else self.unwrapped.state_dict()
        bad = self.main and any(not bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point())
        if self.agree(bad):
            self.tracker.finish()
            raise TrainingDiverged(f"{self.job.name}: the final weights hold NaN or infinite values; no model saved",
                                   hint="lower training.lr")
        kept = "best" if state.best is not None and self.keep != "final" else "final"
        if self.main and (kept == "final" or self.keep == "both"):
            save_model(self.unwrapped, out / "final", state_dict=full, dtype=self.save_dtype)
        checksums = _rank_checksums(acc, self.unwrapped)
        if self.main:
            last = state.history[-1]["metrics"] if state.history else None
            write_json_atomic(out / "result.json", {
                "job": self.job.name, "steps": state.step, "epochs": round(state.step / max(1, self.steps_per_epoch), 3),
                "steps_per_epoch": self.steps_per_epoch, "train_seconds": state.train_seconds,
                "best": state.best, "best_step": state.best_step, "history": state.history,
                "metrics": state.best_metrics if kept == "best" else last,  # those of the kept model
                "model": kept, "skipped_steps": state.skipped_steps, "world_size": acc.num_processes,
                "train_rows": {n: len(td.train) for n, td in self.job.tasks.items() if td.train is not None},
                "rank_checksums": checksums})
            self.tracker.summary({"best": state.best, "train_seconds": state.train_seconds})
            dropped = [self.ckpt] + ([out / "best"] if kept == "final" and self.keep != "both" else [])
            for folder in dropped:  # the finished job no longer needs them
                if folder.exists():
                    shutil.rmtree(folder)
        self.tracker.finish()
        self.progress.job_finished(self.job.name, step=state.step)
        acc.wait_for_everyone()
        acc.free_memory()
        return json.loads((out / "result.json").read_text())


def _rank_checksums(accelerator, model) -> list[float]:
    """A checksum of the weights on every rank: replicas that drifted apart show up here."""
    from accelerate.utils import gather_object

    with torch.no_grad():
        value = float(sum(p.double().sum().item() + p.double().abs().sum().item() for p in model.parameters()))
    return gather_object([value]) if accelerator.num_processes > 1 else [value]
