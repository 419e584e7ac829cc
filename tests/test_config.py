"""Architecture detection from tensor names and shapes."""

from __future__ import annotations

import pytest

from rwkvweb.config import ModelConfig, ModelError, detect_config, tensor_shapes


@pytest.mark.parametrize(
    "layers, width, vocab", [(1, 64, 256), (2, 128, 1000), (3, 256, 65536), (12, 768, 65536), (24, 1024, 65536)]
)
def test_detects_what_tensor_shapes_describes(layers, width, vocab):
    config = ModelConfig.default_for(layers, width, vocab)
    assert detect_config(tensor_shapes(config)) == config


def test_official_lora_sizes_for_the_0_1b_shape():
    config = ModelConfig.default_for(12, 768, 65536)
    assert (config.d_decay_lora, config.d_aaa_lora, config.d_mv_lora, config.d_gate_lora) == (64, 64, 32, 128)
    assert (config.n_head, config.dim_ffn) == (12, 3072)


def test_accepts_squeezed_vectors_flat_r_k_and_block0_without_value_residual():
    config = ModelConfig.default_for(2, 128, 300)
    shapes = tensor_shapes(config)
    shapes = {name: tuple(d for d in shape if d != 1) for name, shape in shapes.items()}
    shapes["blocks.1.att.r_k"] = (128,)
    for name in ("v0", "v1", "v2"):
        del shapes[f"blocks.0.att.{name}"]
    assert detect_config(shapes) == config


def test_head_size_comes_from_r_k():
    config = ModelConfig.default_for(1, 128, 100, head_size=32)
    assert detect_config(tensor_shapes(config)).n_head == 4


def test_refuses_other_generations_by_name():
    """RWKV-5.0/5.1 (ln_x without time_faaaa) is named in the refusal, also when it has RWKV-4's
    time_first (5.0 does): ln_x is checked first, as the official package does."""
    shapes = {"emb.weight": (100, 64), "blocks.0.att.ln_x.weight": (64,), "blocks.0.att.gate.weight": (64, 64)}
    with pytest.raises(ModelError, match="RWKV-5.0/5.1 model .*runs RWKV-5.2 and later"):
        detect_config(shapes)
    shapes["blocks.0.att.time_first"] = (1,)
    with pytest.raises(ModelError, match="RWKV-5.0/5.1 model"):
        detect_config(shapes)


@pytest.mark.parametrize("layers, width, vocab", [(1, 64, 100), (2, 128, 50277), (3, 192, 65536)])
def test_detects_rwkv4(layers, width, vocab):
    """time_first without ln_x: RWKV-4; width and vocabulary from the embedding, FFN width from ffn.key."""
    config = ModelConfig.default_for(layers, width, vocab, version="x040")
    assert detect_config(tensor_shapes(config)) == config
    assert config.version == "x040" and config.dim_ffn == 4 * width
    shapes = tensor_shapes(config)
    shapes["blocks.0.att.time_first"] = (1, 1, width)  # some exports keep the (1, 1, C) of a mixing vector
    assert detect_config(shapes) == config
    del shapes["blocks.0.ffn.receptance.weight"]
    with pytest.raises(ModelError, match="not an RWKV-4 checkpoint: tensor 'blocks.0.ffn.receptance.weight'"):
        detect_config(shapes)


@pytest.mark.parametrize("version", ["x052", "x060"])
@pytest.mark.parametrize("width, head_size", [(64, 8), (128, 32), (128, 64)])
def test_detects_eagle_and_finch(version, width, head_size):
    """Version from the tensor names, head size from time_faaaa [H, N], LoRA ranks from their matrices."""
    config = ModelConfig.default_for(2, width, 300, head_size=head_size, version=version)
    assert detect_config(tensor_shapes(config)) == config
    assert config.n_head == width // head_size


def test_a_v7_file_with_a_v6_tensor_is_named():
    """Marker order as the official package: r_k says RWKV-7, and the v6 tensor is one it does not know."""
    shapes = tensor_shapes(ModelConfig.default_for(1, 64, 100))
    shapes["blocks.0.att.time_maa_x"] = (1, 1, 64)
    with pytest.raises(ModelError, match=r"does not know \(not RWKV-7\?\).*time_maa_x"):
        detect_config(shapes)


def test_a_flattened_bonus_is_refused_not_guessed():
    shapes = tensor_shapes(ModelConfig.default_for(1, 64, 100, head_size=8, version="x060"))
    shapes["blocks.0.att.time_faaaa"] = (64,)
    with pytest.raises(ModelError, match=r"time_faaaa' has shape \(64,\): expected \[n_head, head_size\]"):
        detect_config(shapes)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("blocks.1.att.key.weight"), "1 tensors missing, e.g. blocks.1.att.key.weight"),
        (lambda s: s.pop("head.weight"), "'head.weight' is missing"),
        (lambda s: s.update({"blocks.0.att.extra": (4,)}), "does not know.*blocks.0.att.extra"),
        (
            lambda s: s.update({"blocks.1.att.key.weight": (128, 64)}),
            r"'blocks.1.att.key.weight' has shape \(128, 64\), expected \(128, 128\)",
        ),
        (lambda s: s.update({"emb.weight": (300,)}), "should have 2 dimensions"),
        (lambda s: s.update({"blocks.0.att.r_k": (2, 60)}), "not a multiple of the head size 60"),
    ],
)
def test_inconsistent_tensors_are_named(change, message):
    shapes = dict(tensor_shapes(ModelConfig.default_for(2, 128, 300)))
    change(shapes)
    with pytest.raises(ModelError, match=message):
        detect_config(shapes)
