"""An example third-party mtkd plugin.

It registers one loss, ``focal``, and one teacher-ensemble rule, ``trimmed-mean-probs``. mtkd
finds it through the entry point declared in this package's ``pyproject.toml``::

    [project.entry-points.mtkd]
    example = "mtkd_example_plugin"

Only mtkd's public modules are used: ``mtkd.hookimpl`` to mark the hook functions and
``mtkd.params.Params`` for the parameter models (unknown keys in a recipe are errors).
"""

import mtkd

from .components import FocalLoss, FocalParams, TrimmedMeanParams, TrimmedMeanProbs

__all__ = ["FocalLoss", "FocalParams", "TrimmedMeanProbs", "TrimmedMeanParams"]


@mtkd.hookimpl
def register_losses(register):
    register("focal", FocalLoss, params=FocalParams)


@mtkd.hookimpl
def register_aggregators(register):
    register("trimmed-mean-probs", TrimmedMeanProbs, params=TrimmedMeanParams)
