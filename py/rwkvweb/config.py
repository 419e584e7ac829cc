"""The model's architecture, inferred from tensor names and shapes (no config file needed).

`tensor_shapes(config)` is the one description of an RWKV-7 checkpoint's
tensors: detection checks a file against it, and the test-model generator
builds from it. Names keep the official spelling (`att.x_r`, `ln_x`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


# RWKV-7 constants, shared by the numpy reference and the GPU graph (no numpy needed here).
LN_EPS = 1e-5  # LayerNorm epsilon of the official models
GN_EPS = 64e-5  # ln_x GroupNorm epsilon: 1e-5 * head_size**2 / 64 as in RWKV-LM
DECAY_SCALE = 0.606531  # exp(-0.5): w = exp(-exp(-0.5) * sigmoid(w_raw))


class ModelError(ValueError):
    """The tensors do not describe a model this runtime can run; the message says why."""


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    n_embd: int  # C, the width
    vocab_size: int
    head_size: int = 64  # N; H = C / N heads
    dim_ffn: int = 0  # channel-mix hidden width, 4C in official models
    d_decay_lora: int = 64  # w1/w2
    d_aaa_lora: int = 64  # a1/a2
    d_mv_lora: int = 32  # v1/v2 (value residual)
    d_gate_lora: int = 128  # g1/g2
    version: str = "x070"

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def default_for(cls, n_layer: int, n_embd: int, vocab_size: int, head_size: int = 64) -> "ModelConfig":
        """Official RWKV-7 LoRA sizes for a width, as in RWKV-LM's training code (C=768 -> 64, 64, 32, 128)."""

        def lora(factor: float, power: float) -> int:
            return max(32, int(round(factor * n_embd**power / 32)) * 32)

        return cls(
            n_layer=n_layer,
            n_embd=n_embd,
            vocab_size=vocab_size,
            head_size=head_size,
            dim_ffn=4 * n_embd,
            d_decay_lora=lora(1.8, 0.5),
            d_aaa_lora=lora(1.8, 0.5),
            d_mv_lora=lora(1.3, 0.5),
            d_gate_lora=lora(0.6, 0.8),
        )


def tensor_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an official RWKV-7 checkpoint with its shape."""
    C, V, F = config.n_embd, config.vocab_size, config.dim_ffn
    H, N = config.n_head, config.head_size
    shapes: dict[str, tuple[int, ...]] = {"emb.weight": (V, C)}
    for i in range(config.n_layer):
        b = f"blocks.{i}."
        if i == 0:
            shapes[b + "ln0.weight"], shapes[b + "ln0.bias"] = (C,), (C,)
        for ln in ("ln1", "ln2"):
            shapes[b + ln + ".weight"], shapes[b + ln + ".bias"] = (C,), (C,)
        for mix in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            shapes[b + "att." + mix] = (1, 1, C)
        for name, rank in (("w", config.d_decay_lora), ("a", config.d_aaa_lora), ("v", config.d_mv_lora)):
            shapes[b + f"att.{name}0"] = (1, 1, C)
            shapes[b + f"att.{name}1"] = (C, rank)
            shapes[b + f"att.{name}2"] = (rank, C)
        shapes[b + "att.g1"], shapes[b + "att.g2"] = (C, config.d_gate_lora), (config.d_gate_lora, C)
        shapes[b + "att.k_k"], shapes[b + "att.k_a"], shapes[b + "att.r_k"] = (1, 1, C), (1, 1, C), (H, N)
        for proj in ("receptance", "key", "value", "output"):
            shapes[b + f"att.{proj}.weight"] = (C, C)
        shapes[b + "att.ln_x.weight"], shapes[b + "att.ln_x.bias"] = (C,), (C,)
        shapes[b + "ffn.x_k"] = (1, 1, C)
        shapes[b + "ffn.key.weight"], shapes[b + "ffn.value.weight"] = (F, C), (C, F)
    shapes["ln_out.weight"], shapes["ln_out.bias"] = (C,), (C,)
    shapes["head.weight"] = (V, C)
    return shapes


# Block 0 takes v_first = v, so checkpoints may omit its value-residual LoRA.
OPTIONAL = {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}

# Tell-tale tensors of the other RWKV generations, for a helpful refusal.
OTHER_VERSIONS = {"att.time_maa_x": "RWKV-6 (x060)", "att.time_faaaa": "RWKV-5 (x052)", "att.time_first": "RWKV-4"}


def detect_config(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Infer the architecture from {tensor name: shape} and check every tensor against it."""
    for marker, version in OTHER_VERSIONS.items():
        if f"blocks.0.{marker}" in shapes:
            raise ModelError(f"this is an {version} model; rwkvweb runs RWKV-7 (x070) models only")
    for required in ("emb.weight", "blocks.0.att.k_k", "blocks.0.att.w1", "head.weight"):
        if required not in shapes:
            raise ModelError(f"not an RWKV-7 checkpoint: tensor {required!r} is missing")
    config = _infer(shapes)
    _check_against(shapes, config)
    return config


def _infer(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    vocab_size, n_embd = _dims(shapes, "emb.weight", 2)
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d+)\.", name))}
    r_k = shapes["blocks.0.att.r_k"]
    head_size = r_k[-1] if len(r_k) == 2 else 64
    if n_embd % head_size:
        raise ModelError(f"width {n_embd} is not a multiple of the head size {head_size}")
    v1 = next((shapes[f"blocks.{i}.att.v1"] for i in sorted(layers) if f"blocks.{i}.att.v1" in shapes), (n_embd, 32))
    return ModelConfig(
        n_layer=max(layers) + 1,
        n_embd=n_embd,
        vocab_size=vocab_size,
        head_size=head_size,
        dim_ffn=_dims(shapes, "blocks.0.ffn.key.weight", 2)[0],
        d_decay_lora=_dims(shapes, "blocks.0.att.w1", 2)[1],
        d_aaa_lora=_dims(shapes, "blocks.0.att.a1", 2)[1],
        d_mv_lora=v1[1],
        d_gate_lora=_dims(shapes, "blocks.0.att.g1", 2)[1],
    )


def _dims(shapes: dict[str, tuple[int, ...]], name: str, rank: int) -> tuple[int, ...]:
    if name not in shapes:
        raise ModelError(f"tensor {name!r} is missing")
    if len(shapes[name]) != rank:
        raise ModelError(f"tensor {name!r} should have {rank} dimensions, has shape {shapes[name]}")
    return shapes[name]


def _check_against(shapes: dict[str, tuple[int, ...]], config: ModelConfig) -> None:
    expected = tensor_shapes(config)
    missing = [name for name in expected if name not in shapes and name not in OPTIONAL]
    if missing:
        raise ModelError(f"{len(missing)} tensors missing, e.g. {', '.join(missing[:5])}")
    unknown = [name for name in shapes if name not in expected]
    if unknown:
        raise ModelError(f"tensors this runtime does not know (not RWKV-7 x070?): {', '.join(unknown[:5])}")
    for name, shape in shapes.items():
        if not same_layout(name, shape, expected[name]):
            raise ModelError(f"tensor {name!r} has shape {tuple(shape)}, expected {expected[name]} for {config}")


def same_layout(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Equal up to size-1 axes ((1, 1, C) == (C,)); r_k may also come flattened ((H, N) == (C,))."""
    if [d for d in shape if d != 1] == [d for d in expected if d != 1]:
        return True
    return name.endswith("att.r_k") and len(shape) == 1 and math.prod(shape) == math.prod(expected)
