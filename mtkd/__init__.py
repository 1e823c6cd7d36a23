"""mtkd: multi-task knowledge distillation for natural language understanding."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("mtkd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

#: Decorate a plugin's hook functions with this: ``@mtkd.hookimpl``.
hookimpl = pluggy.HookimplMarker("mtkd")

__all__ = ["__version__", "hookimpl"]
