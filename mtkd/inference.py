"""Batched inference: logits for every example of a split, exactly once, in dataset order."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .data import eval_batches, gather_predictions

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def autocast(precision: str, device: torch.device):
    """bf16/fp16 autocast on the model's device; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(model, task: str, dataset, *, batch_size: int, pad_token_id: int, precision: str = "fp32",
                   rank: int = 0, world_size: int = 1, gather=None) -> np.ndarray:
    """Logits [N, C] (float32) for ``dataset`` through ``task``'s head.

    Batches are sorted by length (little padding). Under several processes each rank predicts
    its own share and ``gather`` (a function list -> list of every rank's lists, e.g.
    ``accelerate.utils.gather_object``) collects them; every example is counted exactly once.
    Every rank runs the same number of forward passes (the last shard is padded with a repeated
    row whose output is dropped): a sharded model (FSDP, ZeRO-3) is a collective in each of them.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = []
    try:
        for batch in eval_batches(dataset, batch_size=batch_size, pad_token_id=pad_token_id, rank=rank,
                                  world_size=world_size, equal_shards=world_size > 1):
            inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
            with autocast(precision, device):
                logits = model(task, **inputs)
            parts.append((batch["positions"].cpu().numpy(), logits.float().cpu().numpy()))
    finally:
        model.train(was_training)
    if world_size > 1 and gather is not None:
        parts = gather(parts)
    return gather_predictions(parts)
