"""mtkd first-party plugin: distillation objectives and teacher-ensemble rules.

Losses: ``ce``, ``soft-ce`` (the paper), ``kl`` (Hinton, T² scaling explicit), ``mse-logits``,
``mse``, ``mse-soft``, ``mixture`` (alpha * soft + (1 - alpha) * hard) and ``hidden-states`` (a logit
loss plus the MSE between chosen student and teacher layers). Aggregators:
``mean-probs`` (the paper), ``mean-logits``, ``geometric-mean``, ``weighted``, ``majority-vote``
for classification; ``mean`` and ``median`` for regression. See ``objectives`` and
``aggregators`` for the exact formulas.
"""

import mtkd

from .aggregators import AGGREGATORS
from .hidden import HiddenStates, HiddenStatesParams
from .objectives import OBJECTIVES


@mtkd.hookimpl
def register_losses(register):
    for name, (factory, params) in OBJECTIVES.items():
        register(name, factory, params=params)
    register("hidden-states", HiddenStates, params=HiddenStatesParams)


@mtkd.hookimpl
def register_aggregators(register):
    for name, (factory, params) in AGGREGATORS.items():
        register(name, factory, params=params)
