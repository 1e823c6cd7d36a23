"""How a job is spread over processes: the Accelerator for the recipe's ``scaling``, the optimizer and
the schedule, and the checks that refuse set-ups this machine (or this model) cannot run as asked.

What runs where (see docs/architecture.md, "Scaling"): DDP over gloo on CPU and NCCL on GPUs;
DeepSpeed ZeRO 1-3 (one task head, see :func:`check_strategy`); FSDP only on GPUs (Accelerate does
not shard on CPU), and untested here.
"""

from __future__ import annotations

import torch

from .errors import RecipeError
from .launch import check_world_size, world_of_one


def trained_heads(tasks: dict) -> set[str]:
    """The heads that get gradients: one per task with training data (a task may borrow another's head)."""
    return {getattr(task, "head_task", None) or name for name, task in tasks.items()
            if getattr(task, "train_split", None)}


def check_hardware(scaling: dict, training: dict, *, file=None, training_path: str = "training",
                   tasks: dict | None = None) -> None:
    """Refuse set-ups that this machine (or ``tasks``, name -> Task) cannot run as asked, before any work."""
    deepspeed = scaling.get("strategy") == "deepspeed"
    if deepspeed and (training.get("on_nonfinite") or "stop") == "skip":
        raise RecipeError("on_nonfinite: skip cannot drop a step under DeepSpeed (its engine steps inside "
                          "backward)", file=file, path=f"{training_path}.on_nonfinite", found="skip",
                          expected="stop, or scaling.strategy ddp")
    if deepspeed and tasks is not None and len(trained_heads(tasks)) > 1:
        # ZeRO keeps flat fp32 partitions and hands a parameter without a gradient a zero one, so momentum
        # and weight decay move the heads of tasks absent from a step; DDP and one process leave them alone.
        raise RecipeError("DeepSpeed ZeRO would move the heads of tasks that are absent from a step "
                          f"({len(trained_heads(tasks))} trained heads here), so multi-task training under "
                          "ZeRO differs from DDP", file=file, path="scaling.strategy", found="deepspeed",
                          expected="ddp (or auto) for multi-task jobs; deepspeed for a job with one task head")
    if torch.cuda.is_available():
        return
    if training["precision"] == "fp16":
        raise RecipeError("fp16 on a CPU is about 100x slower than fp32", file=file,
                          path=f"{training_path}.precision", found="fp16",
                          expected="fp32 or bf16 on CPU (bf16 autocast is 1.3-1.6x faster here)")
    if scaling.get("strategy") == "fsdp":
        # Accelerate runs FSDP only on accelerators; on CPU it would silently wrap the model in plain DDP.
        raise RecipeError("FSDP needs GPUs: on a CPU Accelerate does not shard the model", file=file,
                          path="scaling.strategy", found="fsdp",
                          expected="ddp (or auto) on CPU, or deepspeed (ZeRO has a CPU backend)")


#: the recipe's ``scaling.fsdp_sharding`` -> torch's ShardingStrategy name
FSDP_SHARDING = {"full": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "no_shard": "NO_SHARD"}


def fsdp_plugin(scaling: dict):
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(sharding_strategy=FSDP_SHARDING[scaling["fsdp_sharding"]])


def make_accelerator(scaling: dict, training: dict):
    """An Accelerator for this job's precision and the recipe's scaling strategy."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs

    precision = training["precision"]
    strategy = scaling.get("strategy", "auto")
    # Each job may differ in precision; Accelerate keeps it in a process-wide singleton.
    AcceleratorState._reset_state()
    kwargs: dict = {"mixed_precision": {"fp32": "no"}.get(precision, precision),
                    "gradient_accumulation_steps": training["grad_accum"], "cpu": not torch.cuda.is_available()}
    if strategy == "deepspeed":
        kwargs["cpu"] = False  # Accelerate turns DeepSpeed off under cpu=True; DeepSpeed has a CPU backend
        world_of_one()
        stage3 = scaling["zero_stage"] == 3
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(
            zero_stage=scaling["zero_stage"], gradient_accumulation_steps=training["grad_accum"],
            gradient_clipping=training["grad_clip"] or 0.0,
            offload_optimizer_device="cpu" if scaling["offload"] else "none",
            offload_param_device="cpu" if scaling["offload"] and stage3 else "none",
            # ZeRO-3 shards every weight: saving the best and final models gathers them (a collective).
            zero3_save_16bit_model=stage3)
    elif strategy == "fsdp":
        kwargs["fsdp_plugin"] = fsdp_plugin(scaling)
    else:
        # A batch holds one task: the other tasks' heads get no gradient in that step.
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    accelerator = Accelerator(**kwargs)
    check_world_size(accelerator.num_processes)
    return accelerator


def is_sharded(accelerator) -> bool:
    return accelerator.distributed_type.value in ("DEEPSPEED", "FSDP")


def full_state_dict(accelerator, model):
    """The full (unsharded) weights on the main process; a collective under FSDP/ZeRO, so every rank calls it.
    None where the unwrapped model already holds them."""
    return accelerator.get_state_dict(model) if is_sharded(accelerator) else None


def make_optimizer(model, training: dict):
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    decay, other = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (other if any(name.endswith(n) for n in no_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": training["weight_decay"]}, {"params": other, "weight_decay": 0.0}]
    if training["optimizer"] == "adamax":
        return torch.optim.Adamax(groups, lr=training["lr"], foreach=True)
    # The fused kernel: ~7x faster per step than the default on CPU (22 vs 157 ms for MiniLM-L6).
    return torch.optim.AdamW(groups, lr=training["lr"], fused=True)


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
