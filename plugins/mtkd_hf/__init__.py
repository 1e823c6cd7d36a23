"""mtkd first-party plugin ``hf``: Hugging Face encoders, the linear and SAN heads, and ``mtkd export``.

torch and transformers are imported when a component is built, not when the plugin loads, so
``mtkd --help`` and recipe validation stay fast.
"""

from __future__ import annotations

import mtkd

from .params import HFEncoderParams, LinearHeadParams, SANHeadParams

__all__ = ["HFEncoderParams", "LinearHeadParams", "SANHeadParams", "hf_encoder", "linear_head", "san_head"]


def hf_encoder(params: HFEncoderParams):
    """Any Hugging Face encoder (BERT, RoBERTa, DeBERTa, ELECTRA, MiniLM...) through AutoModel."""
    from .encoder import build_hf_encoder

    return build_hf_encoder(params)


def linear_head(params: LinearHeadParams, hidden_size: int, num_outputs: int):
    """Dropout + a linear layer on the pooled vector (classification or regression)."""
    from .heads import LinearHead

    return LinearHead(params, hidden_size, num_outputs)


def san_head(params: SANHeadParams, hidden_size: int, num_outputs: int):
    """MT-DNN's stochastic answer network for pair classification."""
    from .heads import SANHead

    return SANHead(params, hidden_size, num_outputs)


@mtkd.hookimpl
def register_encoders(register):
    from .sources import max_input_length  # light: reads the tokenizer's JSON, imports no torch

    register("hf", hf_encoder, params=HFEncoderParams, max_input_length=max_input_length)


@mtkd.hookimpl
def register_heads(register):
    register("linear", linear_head, params=LinearHeadParams)
    register("san", san_head, params=SANHeadParams)


@mtkd.hookimpl
def register_serving_formats(register):
    from .serving import int8_format, onnx_format, pipeline_format  # light: imports happen when one is used

    register("onnx", onnx_format)
    register("int8", int8_format)
    register("hf-pipeline", pipeline_format)


@mtkd.hookimpl
def register_commands(cli):
    from .export import export_command

    cli.add_command(export_command)
