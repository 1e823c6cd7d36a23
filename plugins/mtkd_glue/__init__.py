"""mtkd first-party plugin: the GLUE tasks, user-defined ``table`` tasks, and ``mtkd tasks``/``mtkd data`` commands.

Every GLUE task reads its data from ``source`` (per task) or the recipe's ``data.glue``:

- a Hugging Face dataset id (default ``nyu-mll/glue``), loaded with ``datasets.load_dataset``;
- a local folder in that dataset's Parquet layout (``{config}/{split}-00000-of-00001.parquet``),
  loaded through the very same ``datasets.load_dataset`` call;
- a classic ``glue_data`` folder (``<TASK>/train.tsv``, ``dev.tsv``, ``test.tsv``), parsed exactly as
  GLUE writes its files.

Both local layouts give identical rows. Splits are ``datasets.Dataset`` objects with the columns
``text_a``, [``text_b``], ``label`` (class id in ``nyu-mll/glue``'s label order; float for STS-B; -1
when unlabeled) and ``idx``.
"""

from __future__ import annotations

import mtkd

from .metrics import accuracy, f1, mcc, pearson, spearman
from .readers import BadRowsWarning
from .specs import SPECS
from .submission import GLUE_FILES, zip_submission
from .tasks import GlueParams, GlueTask, TableParams, TableTask, detect_layout, glue_factory, table_factory

__all__ = ["GLUE_FILES", "SPECS", "BadRowsWarning", "GlueParams", "GlueTask", "TableParams", "TableTask",
           "accuracy", "detect_layout", "f1", "mcc", "pearson", "spearman", "zip_submission"]


@mtkd.hookimpl
def register_tasks(register):
    for config in SPECS:
        register(config, glue_factory(config), params=GlueParams, data_sources=("glue",))
    register("table", table_factory, params=TableParams)


@mtkd.hookimpl
def register_commands(cli):
    from .commands import register

    register(cli)
