"""mtkd first-party plugin: distillation objectives and teacher-ensemble rules.

Losses: ``ce``, ``soft-ce`` (the paper), ``kl`` (Hinton, T² scaling explicit), ``mse-logits``,
``mse``, ``mse-soft`` and ``mixture`` (alpha * soft + (1 - alpha) * hard). Aggregators:
``mean-probs`` (the paper), ``mean-logits``, ``geometric-mean``, ``weighted``, ``majority-vote``
for classification; ``mean`` and ``median`` for regression. See ``objectives`` and
``aggregators`` for the exact formulas.
"""

import mtkd

from .aggregators import AGGREGATORS
from .objectives import OBJECTIVES


@mtkd.hookimpl
def register_losses(register):
    for name, (factory, params) in OBJECTIVES.items():
        register(name, factory, params=params)


@mtkd.hookimpl
def register_aggregators(register):
    for name, (factory, params) in AGGREGATORS.items():
        register(name, factory, params=params)
