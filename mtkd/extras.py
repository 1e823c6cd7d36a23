"""Optional dependencies: a feature that needs one says which extra to install, instead of an ImportError.

    pip install 'mtkd[deepspeed]'
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

from .errors import MtkdError

#: scaling.strategy -> (module it needs, the extra that installs it)
STRATEGY_EXTRAS = {"deepspeed": ("deepspeed", "deepspeed")}


class MissingExtraError(MtkdError):
    """A feature whose optional dependency is not installed."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module that hides itself
        return False


def require(module: str, *, extra: str, feature: str, file=None, path: str | None = None) -> None:
    """Raise a clean error naming ``pip install 'mtkd[EXTRA]'`` when ``module`` cannot be imported."""
    if not installed(module):
        raise MissingExtraError(f"{feature} needs the optional package {module!r}, which is not installed",
                                file=file, path=path, expected=f"{module} importable",
                                hint=f"pip install 'mtkd[{extra}]'")


def check_recipe_extras(resolved: dict, *, file=None) -> None:
    """What the recipe asks for that needs an extra (DeepSpeed; a serving format's runtime), checked before a run."""
    strategy = (resolved.get("scaling") or {}).get("strategy")
    if strategy in STRATEGY_EXTRAS:
        module, extra = STRATEGY_EXTRAS[strategy]
        require(module, extra=extra, feature=f"scaling.strategy: {strategy}", file=file, path="scaling.strategy")
    evaluation = resolved.get("evaluation") or {}
    if evaluation.get("serving", True):
        from .plugins import get_registries

        formats = get_registries().serving_formats
        for i, name in enumerate(evaluation.get("serving_formats") or ()):
            if name != "eager":  # each format knows its own optional dependencies
                try:
                    formats.create(name).check()
                except MissingExtraError as exc:
                    exc.file, exc.path = str(file) if file else None, f"evaluation.serving_formats[{i}]"
                    raise


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions for a bug report: mtkd, Python, torch and CUDA, the libraries mtkd runs on, the plugins."""
    import mtkd

    info: dict = {"mtkd": mtkd.__version__, "python": platform.python_version(),
                  "platform": platform.platform(terse=True)}
    try:
        import torch

        cuda = torch.cuda.is_available()
        info["torch"] = torch.__version__
        info["cuda"] = {"built_with": torch.version.cuda, "available": cuda,
                        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                        if cuda else []}
    except ImportError:
        info["torch"] = None
    for dist in ("transformers", "accelerate", "deepspeed", "datasets", "wandb", "pydantic", "pluggy"):
        info[dist] = _version(dist)
    from .plugins import plugin_info

    info["plugins"] = [{"name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
                        "source": p.source} for p in plugin_info()]
    return info
