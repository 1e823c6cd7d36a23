"""Recipe parameters of the hf plugin's components (kept apart so the plugin loads without torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mtkd.params import Params, path_field, trust_field


class HFEncoderParams(Params):
    """Parameters of the ``hf`` encoder."""

    later_fields = ("freeze_word_embeddings",)

    model: str = path_field(description="hub id (org/name) or local folder (relative: to the working "
                                        "directory, else to the recipe's folder)")
    pretrained: bool = Field(True, description="load the weights; false = random init from the config")
    config_overrides: dict[str, Any] = Field(default_factory=dict,
                                             description="config values to change, e.g. {hidden_size: 32}")
    num_layers: int | None = Field(None, gt=0, description="keep only the first N transformer layers")
    pooling: Literal["auto", "pooler", "cls", "mean"] = Field(
        "auto", description="auto = the model's pooler when it has one (BERT's pooled [CLS]), else cls")
    dropout: float | None = Field(None, ge=0, lt=1, description="hidden and attention dropout")
    gradient_checkpointing: bool = False
    freeze_word_embeddings: bool = Field(
        False, description="keep the token embedding matrix as loaded (most of a small encoder's weights): "
                           "steps skip its gradient and optimizer update, and words the training data lacks "
                           "keep their pretrained vectors")
    trust_remote_code: bool = trust_field(description="run the Python code a model folder or hub repository "
                                                      "ships (only if you trust it); never taken from a checkpoint")
    revision: str | None = Field(None, description="hub branch, tag or commit")
    tokenizer: str | None = path_field(None, description="tokenizer hub id or folder; default: the model's")


class LinearHeadParams(Params):
    """Parameters of the ``linear`` head."""

    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the pooled vector")


class SANHeadParams(Params):
    """Parameters of the ``san`` head (MT-DNN's defaults)."""

    steps: int = Field(5, ge=1, description="reasoning steps K")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the state before each GRU update and "
                                                         "on the answer features")
    step_dropout: float = Field(0.1, ge=0, le=1, description="in training, drop whole steps from the average "
                                                             "(one step per example is always kept)")
    memory_dropout: float = Field(0.1, ge=0, lt=1, description="variational dropout on the token memories")
