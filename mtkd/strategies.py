"""How a job is spread over processes: the Accelerator for the recipe's ``scaling``, the optimizer and
the schedule, and the checks that refuse set-ups this machine (or this model) cannot run as asked.

What runs where (see docs/architecture.md, "The trainer and scaling"): DDP over gloo on CPU and NCCL
on GPUs; DeepSpeed ZeRO 1-3 (with :class:`AbsentHeads` for multi-task jobs); FSDP only on GPUs
(Accelerate does not shard on CPU), and untested here.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import RecipeError
from .launch import check_world_size, world_of_one


def check_hardware(scaling: dict, training: dict, *, file=None, training_path: str = "training",
                   tasks: dict | None = None) -> None:
    """Refuse set-ups that this machine (or these trained tasks, name -> Task) cannot run as asked, before any work."""
    deepspeed = scaling.get("strategy") == "deepspeed"
    if deepspeed and (training.get("on_nonfinite") or "stop") == "skip":
        raise RecipeError("on_nonfinite: skip cannot drop a step under DeepSpeed (its engine steps inside "
                          "backward)", file=file, path=f"{training_path}.on_nonfinite", found="skip",
                          expected="stop, or scaling.strategy ddp")
    if deepspeed and scaling.get("zero_stage") == 3 and tasks is not None and len(tasks) > 1:
        # ZeRO-1/2 leave absent tasks' heads alone (AbsentHeads); under ZeRO-3 a two-task run still drifted
        # from DDP (5e-5 after 8 steps, heads and encoder), so it is refused until that is understood.
        raise RecipeError("DeepSpeed ZeRO-3 does not yet train a multi-task job like DDP", file=file,
                          path="scaling.zero_stage", found=3,
                          expected="zero_stage 1 or 2 (or strategy ddp) for a job with several tasks")
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


def unwrap(accelerator, model):
    """The model inside the Accelerator's wrappers. ``Accelerator.unwrap_model`` imports DeepSpeed whenever it is
    installed (1.3 s, and a "Setting accelerator to CPU" warning in every run): only a DeepSpeed job asks it;
    otherwise the wrappers are DDP's and DataParallel's (mtkd compiles the encoder in place, not the model)."""
    if accelerator.distributed_type.value == "DEEPSPEED":
        return accelerator.unwrap_model(model)
    wrappers: tuple = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrappers += (FullyShardedDataParallel,)
    except ImportError:  # a torch built without distributed support
        pass
    while isinstance(model, wrappers):
        model = model.module
    return model


#: CPU flags (Linux /proc/cpuinfo) of native bf16 matmuls: x86 AVX-512 BF16 and AMX, Arm's BF16 extension
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes bf16 matmuls natively, from ``cpuinfo`` (the text of /proc/cpuinfo; read
    here on Linux when not given); ``None`` when it cannot be told (another OS, an unreadable file).

    Without native bf16, oneDNN emulates it: a bf16 matmul measured ~80x slower than fp32 (0.47 vs 39
    GFLOP/s) on an AMD EPYC without avx512_bf16.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 "flags", Arm "Features"
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & BF16_FLAGS)


def slow_bf16_warning(paths: list[str], cpuinfo: str | None = None) -> str | None:
    """One line for the run's log when ``paths`` (``training.precision`` settings that are ``bf16``) ask for
    bf16 on a CPU without native bf16; ``None`` on a GPU, a CPU with it, or when it cannot be told.
    It still runs correctly, only slowly: a warning, not a refusal."""
    if not paths or torch.cuda.is_available() or cpu_has_native_bf16(cpuinfo) is not False:
        return None
    return (f"warning: {', '.join(p + '.precision' for p in paths)}: bf16 on a CPU without native bf16 "
            "(no avx512_bf16/amx_bf16 flag): bf16 matmuls run ~80x slower than fp32 here; "
            "set training.precision: fp32 (e.g. --set training.precision=fp32)")


#: the recipe's ``scaling.fsdp_sharding`` -> torch's ShardingStrategy name
FSDP_SHARDING = {"full": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "no_shard": "NO_SHARD"}


def fsdp_plugin(scaling: dict):
    from accelerate.utils import FullyShardedDataParallelPlugin

    # Original parameters: mtkd's optimizer groups hold single parameters (decay / no decay, per head), and
    # an encoder may freeze some (FSDP's flattened parameters need one requires_grad for all they hold).
    return FullyShardedDataParallelPlugin(sharding_strategy=FSDP_SHARDING[scaling["fsdp_sharding"]],
                                          use_orig_params=True)


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
            zero3_save_16bit_model=stage3,
            # Build the model whole (the same seeded weights as DDP) and shard it in prepare; under
            # zero.Init transformers would initialise the shards with other random draws.
            zero3_init_flag=False)
    elif strategy == "fsdp":
        kwargs["fsdp_plugin"] = fsdp_plugin(scaling)
    else:
        # A batch holds one task: the other tasks' heads get no gradient in that step.
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    accelerator = Accelerator(**kwargs)
    check_world_size(accelerator.num_processes)
    return accelerator


@contextlib.contextmanager
def whole_models():
    """Models built inside are whole: transformers builds them sharded (``deepspeed.zero.Init``, other random
    draws than one process) while an Accelerator for ZeRO-3 has registered its DeepSpeed config."""
    try:
        from transformers.integrations import unset_hf_deepspeed_config
    except ImportError:
        yield
        return
    unset_hf_deepspeed_config()
    yield


def is_sharded(accelerator) -> bool:
    return accelerator.distributed_type.value in ("DEEPSPEED", "FSDP")


def full_state_dict(accelerator, model):
    """The full (unsharded) weights on the main process; a collective under FSDP/ZeRO, so every rank calls it.
    None where the unwrapped model already holds them."""
    return accelerator.get_state_dict(model) if is_sharded(accelerator) else None


def configure_deepspeed(accelerator, training: dict) -> None:
    """What the DeepSpeed config can only learn once the job is known (before ``prepare``)."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = max(1, training["batch_size"] // accelerator.num_processes)


def make_optimizer(model, training: dict):
    """AdamW/Adamax with a parameter group per (encoder | task head) x (decay | no decay); each group records
    its head in ``"mtkd_head"`` (None for the encoder), so a step can leave absent heads alone under ZeRO."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            head = name.split(".")[1] if name.startswith("heads.") else None
            decays = not any(name.endswith(n) for n in no_decay)
            groups.setdefault((head, decays), []).append(p)
    param_groups = [{"params": params, "weight_decay": training["weight_decay"] if decays else 0.0,
                     "mtkd_head": head} for (head, decays), params in groups.items()]
    if training["optimizer"] == "adamax":
        return torch.optim.Adamax(param_groups, lr=training["lr"], foreach=True)
    # The fused kernel: ~7x faster per step than the default on CPU (22 vs 157 ms for MiniLM-L6).
    return torch.optim.AdamW(param_groups, lr=training["lr"], fused=True)


class AbsentHeads:
    """Under DeepSpeed ZeRO-1/2, undo what a step did to the heads of tasks absent from it.

    ZeRO hands a parameter without a gradient a zero gradient, so Adam's momentum and weight decay would still
    move those heads; DDP and one process skip them. Before the step, the tensors the step writes for each
    absent head's parameter groups on this rank (its fp32 master partition, the optimizer state, the model's
    copy) are saved; after it, they are put back, and optimizer state the step created is dropped.
    """

    def __init__(self, optimizer):
        self.zero = optimizer.optimizer  # accelerate's wrapper -> DeepSpeed's ZeRO optimizer
        if not hasattr(self.zero, "single_partition_of_fp32_groups"):
            raise RecipeError(f"multi-task training under DeepSpeed's {type(self.zero).__name__} would move the heads "
                              "of tasks absent from a step", path="scaling.strategy", found="deepspeed",
                              expected="ddp, or ZeRO stage 1 or 2 with DeepSpeed's ZeRO optimizer")
        self.groups: dict[str, list[int]] = {}
        for i, group in enumerate(self.zero.optimizer.param_groups):
            if group.get("mtkd_head") is not None:
                self.groups.setdefault(group["mtkd_head"], []).append(i)

    def _partitions(self, i: int) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """(fp32 master partition, the model's copies) of parameter group ``i`` on this rank (ZeRO-1/2:
        whole parameters on every rank; ZeRO-3 is refused for multi-task jobs by check_hardware)."""
        return [(self.zero.single_partition_of_fp32_groups[i], list(self.zero.bit16_groups[i]))]

    def save(self, present: set[str]) -> list:
        saved = []
        for head, indices in self.groups.items():
            if head in present:
                continue
            for master, params in (p for i in indices for p in self._partitions(i)):
                state = self.zero.optimizer.state.get(master)
                copies = [(t, t.detach().clone()) for t in {id(t): t for t in [master, *params]}.values()]
                saved.append((master, copies, None if not state else
                              {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}))
        return saved

    def restore(self, saved: list) -> None:
        with torch.no_grad():
            for master, tensors, state in saved:
                for tensor, copy in tensors:
                    tensor.copy_(copy)
                if state is None:
                    self.zero.optimizer.state.pop(master, None)  # as if never stepped, like DDP
                else:
                    self.zero.optimizer.state[master] = state


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
