"""The hooks a plugin may implement.

Every ``register_*`` hook receives a ``register`` callback, so one plugin can register
many components and the hook signatures never need to change::

    register(name, factory, params=None, description=None)

``factory`` is called by the core with the validated ``params`` model instance (and, for
some kinds, extra arguments documented below). ``params`` is a pydantic model class of the
component's recipe parameters; leave it out for a component without parameters. The full
reference, with examples, is ``docs/plugin-hooks.md``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("mtkd")


@hookspec
def register_tasks(register):
    """Register tasks: ``factory(params, context: mtkd.components.TaskContext) -> mtkd.components.Task``."""


@hookspec
def register_encoders(register):
    """Register encoders: ``factory(params) -> mtkd.components.Encoder`` (a torch module with its tokenizer)."""


@hookspec
def register_heads(register):
    """Register task heads: ``factory(params, hidden_size, num_outputs) -> torch.nn.Module`` giving logits."""


@hookspec
def register_losses(register):
    """Register training and distillation objectives: ``factory(params) -> mtkd.components.Objective``."""


@hookspec
def register_aggregators(register):
    """Register teacher-ensemble rules: ``factory(params) -> mtkd.components.Aggregator``."""


@hookspec
def register_samplers(register):
    """Register multi-task batch samplers: ``factory(params) -> mtkd.components.TaskSampler``."""


@hookspec
def register_loggers(register):
    """Register metric trackers: ``factory(params) -> mtkd.components.Logger``."""


@hookspec
def register_serving_formats(register):
    """Register deployable model formats the report's serving section times: ``factory(params) ->
    mtkd.components.ServingFormat``."""


@hookspec
def register_commands(cli):
    """Add Click commands or groups to the ``mtkd`` command-line group ``cli``."""
