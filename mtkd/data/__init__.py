"""The data pipeline: tokenising and caching splits, batching, the multi-task loader, sharded evaluation.

The core knows no task by name: everything here works from the ``Task`` protocol
(``mtkd.components``) and ``datasets.Dataset`` objects with the columns it describes.
"""

from mtkd.data.batching import collate, make_batches
from mtkd.data.loader import MultiTaskLoader, eval_batches, gather_predictions
from mtkd.data.tokenize import (
    bootstrap,
    default_cache_root,
    fingerprint_dataset,
    subsample,
    tokenize_split,
    tokenizer_fingerprint,
)

__all__ = [
    "MultiTaskLoader",
    "bootstrap",
    "collate",
    "default_cache_root",
    "eval_batches",
    "fingerprint_dataset",
    "gather_predictions",
    "make_batches",
    "subsample",
    "tokenize_split",
    "tokenizer_fingerprint",
]
