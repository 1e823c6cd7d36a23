"""The ``hf`` encoder: any Hugging Face encoder (BERT, RoBERTa, DeBERTa, ELECTRA, MiniLM...) via AutoModel."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from mtkd.components import EncoderOutput
from mtkd.errors import CheckpointError, RecipeError

from .params import HFEncoderParams
from .sources import MIRRORS, mirror_path, resolve_model  # noqa: F401  (re-exported: where they used to live)

#: Written by ``save_config``: marks a folder as self-contained (its own tokenizer, overrides applied).
MARKER = "mtkd_encoder.json"

#: Config attributes that hold dropout rates, across encoder families.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                "hidden_dropout", "embedding_dropout", "mlp_dropout")


def _looks_like_path(model: str) -> bool:
    windows_path = os.sep != "/" and os.sep in model
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or windows_path


def _load_error(what: str, model: str, exc: Exception) -> CheckpointError:
    """A loading failure as an error that says what to do next."""
    if Path(model).expanduser().is_dir():
        if not (Path(model).expanduser() / "config.json").is_file():
            return CheckpointError(
                f"{what}: {model!r} is not a Hugging Face model folder (no config.json)", found=model,
                expected="a folder written by save_pretrained, or a hub id such as org/name")
        return CheckpointError(f"{what}: cannot load {model!r}: {exc}", found=model,
                               hint="is the folder complete and from a compatible transformers version?")
    if _looks_like_path(model):
        return CheckpointError(f"{what}: model folder {model!r} not found", found=model,
                               expected="an existing folder, or a hub id such as org/name")
    flags = (os.environ.get(var, "") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    offline = any(flag not in ("", "0") for flag in flags)
    if offline:
        hint = ("the Hugging Face hub is unreachable offline (HF_HUB_OFFLINE is set): download the model "
                f"once where there is network (`hf download {model}`), or set `model:` to a local folder")
    else:
        hint = (f"check the hub id and your network; a local folder works too "
                f"(`hf download {model} --local-dir DIR`)")
    return CheckpointError(f"{what}: {model!r} is no local folder and not loadable from the Hugging Face hub",
                           found=str(exc).split("\n")[0], hint=hint)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the load report and progress bar: truncated layers and checkpoints' pre-training heads are
    reported as unexpected keys, which they are by design. Missing keys are reported by the caller."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _load_config(params: HFEncoderParams, source: str, hub_kwargs: dict):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error("encoder config", source, exc) from None
    for key, value in params.config_overrides.items():
        if not hasattr(config, key):
            close = difflib.get_close_matches(key, list(config.to_dict()), n=1)
            raise RecipeError(f"config_overrides: {config.model_type} configs have no key {key!r}"
                              + (f"; did you mean {close[0]!r}?" if close else ""),
                              path=f"config_overrides.{key}", found=key,
                              expected=f"a key of the {config.model_type} config (transformers' {type(config).__name__})")
        setattr(config, key, value)
    if params.num_layers is not None:
        have = config.num_hidden_layers
        if params.num_layers > have:
            raise RecipeError(f"num_layers: the model has only {have} layers", path="num_layers",
                              expected=f"at most {have}", found=params.num_layers)
        config.num_hidden_layers = params.num_layers
        # Configs that describe each layer (layer_types) must shrink with them.
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == have:
            config.layer_types = layer_types[: params.num_layers]
    if params.dropout is not None:
        rates = {k: getattr(config, k, None) for k in DROPOUT_KEYS}
        keys = [k for k, v in rates.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not keys:
            raise RecipeError(f"dropout: cannot tell which {config.model_type} config keys hold dropout",
                              path="dropout", hint="set them through config_overrides instead")
        for key in keys:
            setattr(config, key, params.dropout)
    return config


class HFEncoder(nn.Module):
    """A Hugging Face encoder with its fast tokenizer and a pooling rule."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str, source: str):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        config = model.config
        self.hidden_size = int(config.hidden_size)
        self.num_layers = int(config.num_hidden_layers)
        has_pooler = getattr(model, "pooler", None) is not None
        if pooling == "auto":
            pooling = "pooler" if has_pooler else "cls"
        if pooling == "pooler" and not has_pooler:
            raise RecipeError(f"pooling: {config.model_type} models have no pooler", path="pooling",
                              expected="cls or mean (or auto)", found="pooler")
        if pooling != "pooler" and has_pooler:
            # An unused pooler would hold parameters without gradients (DDP complains, exports mislead).
            model.pooler = None
        self.pooling = pooling
        accepts = inspect.signature(model.forward).parameters
        # RoBERTa-like models have one token type; ids from a BERT-style collator would index past it.
        self._token_types = "token_type_ids" in accepts and getattr(config, "type_vocab_size", 2) > 1

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states: bool = False):
        kwargs = {}
        if token_type_ids is not None and self._token_types:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=output_hidden_states, return_dict=True, **kwargs)
        sequence = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = sequence[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(sequence.dtype)
            pooled = (sequence * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return EncoderOutput(pooled=pooled, sequence=sequence,
                             hidden_states=tuple(out.hidden_states) if output_hidden_states else None)

    def save_config(self, directory) -> None:
        """Write config.json (overrides and truncation applied) and the tokenizer into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        marker = {"source": self.source, "pooling": self.pooling}
        (directory / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def build_hf_encoder(params: HFEncoderParams) -> HFEncoder:
    """Any Hugging Face encoder through AutoModel/AutoTokenizer."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model(params.model, params.revision)
    local = Path(source).is_dir()
    hub_kwargs: dict[str, Any] = {"trust_remote_code": params.trust_remote_code}
    if params.revision is not None and not local:
        hub_kwargs["revision"] = params.revision
    config = _load_config(params, source, hub_kwargs)

    with _quiet_transformers():
        if params.pretrained:
            try:
                model, info = AutoModel.from_pretrained(source, config=config, output_loading_info=True,
                                                        **hub_kwargs)
            except (OSError, ValueError, RuntimeError) as exc:
                if "mismatch" in str(exc).lower():
                    raise CheckpointError(
                        f"encoder weights of {params.model!r} do not fit the configured shapes",
                        found=sorted(params.config_overrides) or None,
                        hint="config_overrides that change sizes need pretrained: false") from None
                raise _load_error("encoder weights", source, exc) from None
            missing = sorted(info.get("missing_keys") or [])
            if missing:
                more = " ..." if len(missing) > 4 else ""
                warnings.warn(f"{params.model}: {len(missing)} tensor(s) not in the checkpoint start from "
                              f"random values: {', '.join(missing[:4])}{more}", stacklevel=2)
        else:
            try:
                model = AutoModel.from_config(config, trust_remote_code=params.trust_remote_code)
            except ValueError as exc:
                raise CheckpointError(f"encoder: cannot build a model from the config of {source!r}: {exc}",
                                      found=source) from None

    # A folder written by save_config carries its own tokenizer; the recipe's `tokenizer` named the original.
    tok_source = source if (local and (Path(source) / MARKER).is_file()) else resolve_model(
        params.tokenizer or params.model, params.revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, **hub_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise _load_error("tokenizer", tok_source, exc) from None
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError(f"tokenizer: {tok_source!r} has no fast (Rust) tokenizer", path="tokenizer",
                          hint="name a tokenizer with a tokenizer.json, e.g. the model's original hub id")

    if params.freeze_word_embeddings:
        embeddings = model.get_input_embeddings()
        if embeddings is None:
            raise RecipeError(f"freeze_word_embeddings: {config.model_type} models expose no input embeddings",
                              path="freeze_word_embeddings", found=True)
        embeddings.weight.requires_grad_(False)
    if params.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise RecipeError(f"gradient_checkpointing: {config.model_type} models do not support it",
                              path="gradient_checkpointing", found=True)
        # Non-reentrant checkpointing works with frozen inputs and under DDP (renamed in transformers 5).
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return HFEncoder(model, tokenizer, params.pooling, source=params.model)
