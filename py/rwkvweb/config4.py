"""RWKV-4 ("x040": Pile, Raven, World v4) checkpoints: their tensors, their architecture inferred
from names and shapes (config.py's detect_config dispatches here), and their recurrent state.

Names and shapes are the official ones (BlinkDL/RWKV-LM `RWKV-v4` and ChatRWKV's
`RWKV_in_150_lines.py`): per layer, time mixing `att.*` with time_decay / time_first [C] and
static token-shift mixes, and the classic channel mix `ffn.*` with its receptance.
No numpy here (the header reader and the engine use it in the browser, where numpy is absent).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config.py imports this module; the class is only named in annotations here
    from .config import ModelConfig

RWKV4 = "x040"
# A layer's state, in State.to_bytes() order, each [C] float32: the previous token's ln1 output, the
# WKV's numerator and denominator (both divided by e^pp) and pp, the previous token's ln2 output.
STATE_ROWS = ("att_shift", "aa", "bb", "pp", "ffn_shift")
# A fresh state's pp, "minus infinity" as in the official code (state[5*i+4] = -1e30): the empty past
# then weighs e^(pp - q) = 0 exactly (reference4.py says why pp = 0 will not do).
FRESH_PP = -1e30


def default_for(n_layer: int, n_embd: int, vocab_size: int) -> "ModelConfig":
    """Official sizes for a width: the channel mix is 4C wide; no LoRA, no heads."""
    from .config import ModelConfig

    return ModelConfig(
        n_layer=n_layer,
        n_embd=n_embd,
        vocab_size=vocab_size,
        dim_ffn=4 * n_embd,
        d_decay_lora=0,
        d_aaa_lora=0,
        d_mv_lora=0,
        d_gate_lora=0,
        version=RWKV4,
    )


def block_shapes(config: "ModelConfig", b: str) -> dict[str, tuple[int, ...]]:
    """An RWKV-4 block's own tensors with their shapes (names start with `b`, `blocks.{i}.`);
    config.tensor_shapes adds those every version has."""
    C, F = config.n_embd, config.dim_ffn
    shapes: dict[str, tuple[int, ...]] = {}
    shapes[b + "att.time_decay"], shapes[b + "att.time_first"] = (C,), (C,)
    for mix in ("k", "v", "r"):
        shapes[b + f"att.time_mix_{mix}"] = (1, 1, C)
    for proj in ("key", "value", "receptance", "output"):
        shapes[b + f"att.{proj}.weight"] = (C, C)
    for mix in ("k", "r"):
        shapes[b + f"ffn.time_mix_{mix}"] = (1, 1, C)
    shapes[b + "ffn.key.weight"], shapes[b + "ffn.value.weight"] = (F, C), (C, F)
    shapes[b + "ffn.receptance.weight"] = (C, C)
    return shapes


def infer(shapes: dict[str, tuple[int, ...]], layers: int, dims) -> "ModelConfig":
    """The config of an RWKV-4 file: width and vocabulary from the embedding, the channel mix's width
    from ffn.key; `dims` is config._dims."""
    from .config import ModelConfig

    vocab_size, n_embd = dims(shapes, "emb.weight", 2)
    return ModelConfig(
        n_layer=layers,
        n_embd=n_embd,
        vocab_size=vocab_size,
        dim_ffn=dims(shapes, "blocks.0.ffn.key.weight", 2)[0],
        d_decay_lora=0,
        d_aaa_lora=0,
        d_mv_lora=0,
        d_gate_lora=0,
        version=RWKV4,
    )


def fresh_state(config: "ModelConfig") -> bytes:
    """Every layer's state before any token, float32 little-endian: zeros but pp = FRESH_PP."""
    C = config.n_embd
    layer = struct.pack(f"<{3 * C}f", *[0.0] * (3 * C)) + struct.pack(f"<{C}f", *[FRESH_PP] * C)
    layer += struct.pack(f"<{C}f", *[0.0] * C)
    return layer * config.n_layer
