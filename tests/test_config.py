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
    shapes = tensor_shapes(ModelConfig.default_for(1, 64, 100))
    shapes["blocks.0.att.time_maa_x"] = (1, 1, 64)
    with pytest.raises(ModelError, match="RWKV-6"):
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
