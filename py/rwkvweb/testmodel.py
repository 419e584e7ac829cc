"""Random RWKV checkpoints (7, 6, 5.2, 4: the config's version) with official names and shapes, for tests
and benchmarks.

The scales are chosen so a forward pass looks like a trained model's, not a
saturated or vanishing one: decays spread over (0.6, 1) (5.2/6: (0.55, 0.998) before v6's LoRA
moves them; 4: (2e-9, 0.993), RWKV-4's own init spread), in-context learning rates `a` mostly
inside (0.1, 0.9), bonuses u of both signs, LoRA and bias terms non-zero (so a kernel that drops
them fails its test), and logits with a spread of a few units. Same (shape, seed) -> same bytes.
"""

from __future__ import annotations

import numpy as np

from .config import ModelConfig, tensor_shapes
from .safetensors import write_safetensors


def random_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: _init(name, shape, config, rng) for name, shape in tensor_shapes(config).items()}


def _normal(rng, shape, std):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _uniform(rng, shape, low, high):
    return rng.uniform(low, high, shape).astype(np.float32)


def _init(name: str, shape: tuple[int, ...], config: ModelConfig, rng) -> np.ndarray:
    C = config.n_embd
    leaf = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    if leaf.endswith(".weight") and len(shape) == 1:  # LayerNorm / GroupNorm gains
        return 1 + _normal(rng, shape, 0.1)
    if leaf.endswith(".bias"):
        return _normal(rng, shape, 0.1)
    if leaf in ("att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "ffn.x_k"):
        return _uniform(rng, shape, 0.0, 1.0)  # token-shift lerp coefficients
    if ".time_mix_" in leaf or (".time_maa_" in leaf and not leaf.endswith(("w1", "w2"))):
        return _uniform(rng, shape, 0.0, 1.0)  # 5.2 / 6 token-shift lerp coefficients
    if leaf == "att.time_decay" and config.version == "x040":  # RWKV-LM v4's init: -5 + 8·(c/C)^…
        return _uniform(rng, shape, -5.0, 3.0)  # -> decay exp(-exp(·)) in (2e-9, 0.993): fast and slow channels
    if leaf == "att.time_first":
        return _uniform(rng, shape, -2.0, 1.0)  # RWKV-4's bonus u of the current token, both signs
    if leaf == "att.time_decay":
        return _uniform(rng, shape, -6.0, -0.5)  # -> decay exp(-exp(·)) in (0.55, 0.998)
    if leaf == "att.time_faaaa":
        return _uniform(rng, shape, -0.5, 1.0)  # the current token's bonus u
    if leaf in ("att.time_maa_w1", "att.time_decay_w1"):  # v6 LoRA down: C -> rank (·5), O(1) outputs
        return _normal(rng, shape, 1 / np.sqrt(C))
    if leaf in ("att.time_maa_w2", "att.time_decay_w2"):  # v6 LoRA up: moves mixes and log-decays by ~0.3
        return _normal(rng, shape, 0.5 / np.sqrt(shape[-2]))
    if leaf == "att.w0":
        return _uniform(rng, shape, -5.0, 2.0)  # -> decay exp(-0.6 sigmoid(w)) in (0.59, 0.996)
    if leaf in ("att.a0", "att.v0"):
        return _normal(rng, shape, 0.5)
    if leaf in ("att.k_k", "att.k_a"):
        return _uniform(rng, shape, 0.5, 1.5)
    if leaf == "att.r_k":
        return _normal(rng, shape, 0.5)
    if leaf in ("att.w1", "att.a1", "att.v1", "att.g1"):  # LoRA down: C -> rank, O(1) outputs
        return _normal(rng, shape, 1 / np.sqrt(C))
    if leaf in ("att.w2", "att.a2", "att.v2", "att.g2"):  # LoRA up: rank -> C, visible but not dominant
        return _normal(rng, shape, 0.5 / np.sqrt(shape[0]))
    if leaf in ("att.output.weight", "ffn.value.weight"):  # residual branches: keep the stream bounded
        return _normal(rng, shape, 0.5 / np.sqrt(shape[1]))
    if leaf == "emb.weight":
        return _normal(rng, shape, 1.0)
    if leaf == "head.weight":
        return _normal(rng, shape, 2 / np.sqrt(C))
    return _normal(rng, shape, 1 / np.sqrt(shape[1]))  # r, k, v projections and ffn.key


def write_test_model(path: str, config: ModelConfig, seed: int = 0, dtype: str = "fp32") -> None:
    """Generate and write a model; dtype "fp32" or "fp16" for every tensor."""
    numpy_dtype = {"fp32": np.float32, "fp16": np.float16}[dtype]
    weights = {name: w.astype(numpy_dtype) for name, w in random_weights(config, seed).items()}
    metadata = {"generator": f"rwkvweb.testmodel seed={seed}", "version": config.version}
    write_safetensors(path, weights, metadata)


def tensor_table(config: ModelConfig, dtype: str = "fp16") -> dict:
    """The header a written model of this shape would have (names -> TensorInfo), without the weights:
    enough to plan a 0.4B model in milliseconds."""
    from .safetensors import TensorInfo

    itemsize, safetensors_dtype = {"fp32": (4, "F32"), "fp16": (2, "F16")}[dtype]
    table, offset = {}, 0
    for name, shape in tensor_shapes(config).items():
        size = int(np.prod(shape)) * itemsize
        table[name] = TensorInfo(name, safetensors_dtype, tuple(shape), offset, offset + size)
        offset += size
    return table
