"""The model's architecture, inferred from tensor names and shapes (no config file needed).

`tensor_shapes(config)` is the one description of a checkpoint's tensors for its version: the tensors
every version has, plus each block's own (RWKV-7 here; RWKV-5.2 and RWKV-6 in config56.py, RWKV-4 in
config4.py, each a `block_shapes`). Detection checks a file against it, and the test-model generator
builds from it. Names keep the official spelling (`att.x_r`, `ln_x`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import config4, config56


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
    version: str = "x070"  # VERSIONS: x070 (RWKV-7), x060 (RWKV-6 Finch), x052 (RWKV-5.2 Eagle), x040 (RWKV-4)
    d_mix_lora: int = 0  # RWKV-6's ddlerp LoRA rank D (time_maa_w1 [C, 5D]); 0 for other versions

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def default_for(
        cls, n_layer: int, n_embd: int, vocab_size: int, head_size: int = 64, version: str = "x070"
    ) -> "ModelConfig":
        """Official sizes for a width, as in RWKV-LM's training code (RWKV-7: C=768 -> LoRAs 64, 64, 32, 128)."""
        if version == config4.RWKV4:
            return config4.default_for(n_layer, n_embd, vocab_size)
        if version != "x070":
            return config56.default_for(version, n_layer, n_embd, vocab_size, head_size)

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
    """Every tensor of an official checkpoint of this config's version with its shape, in checkpoint order
    (testmodel draws its random weights in this order). Every version has the embedding, block 0's ln0,
    each block's ln1/ln2, ln_out and the head; its own block tensors come from its module."""
    if config.version == config4.RWKV4:
        own_block = config4.block_shapes
    elif config.version != "x070":
        own_block = config56.block_shapes
    else:
        own_block = _block_shapes
    C, V = config.n_embd, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"emb.weight": (V, C)}
    for i in range(config.n_layer):
        b = f"blocks.{i}."
        if i == 0:
            shapes[b + "ln0.weight"], shapes[b + "ln0.bias"] = (C,), (C,)
        for ln in ("ln1", "ln2"):
            shapes[b + ln + ".weight"], shapes[b + ln + ".bias"] = (C,), (C,)
        shapes.update(own_block(config, b))
    shapes["ln_out.weight"], shapes["ln_out.bias"] = (C,), (C,)
    shapes["head.weight"] = (V, C)
    return shapes


def _block_shapes(config: ModelConfig, b: str) -> dict[str, tuple[int, ...]]:
    """RWKV-7's own tensors of the block whose names start with `b` (`blocks.{i}.`)."""
    C, F = config.n_embd, config.dim_ffn
    H, N = config.n_head, config.head_size
    shapes: dict[str, tuple[int, ...]] = {}
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
    return shapes


def wkv_state_floats(config: ModelConfig) -> int:
    """Floats of one layer's WKV state: [H, N, N] matrices (5.2, 6, 7); RWKV-4's aa | bb | pp [3, C]."""
    return 3 * config.n_embd if config.version == config4.RWKV4 else config.n_head * config.head_size**2


def fresh_state(config: ModelConfig) -> bytes:
    """Every layer's state before any token, float32 (reference.State.zeros's bytes): zeros, except
    RWKV-4's pp (config4.FRESH_PP)."""
    if config.version == config4.RWKV4:
        return config4.fresh_state(config)
    return bytes(config.n_layer * (2 * config.n_embd + wkv_state_floats(config)) * 4)


# Block 0 takes v_first = v, so checkpoints may omit its value-residual LoRA.
OPTIONAL = {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}

# The large matrices: projections, FFN, the embedding and the head (not LoRA, not vectors).
# Only these may be stored quantized (budget.py lowers them; build/quantize.py writes them).
LARGE_MATRIX = re.compile(
    r"(emb|head)\.weight|blocks\.\d+\.(att\.(receptance|key|value|output|gate)|ffn\.(key|value|receptance))\.weight"
)
# What every loader reads: float weights it widens (reference.py, web/gpu) and, for the large
# matrices, pre-quantized codes (quant.fold_quantized names their dtype after the scheme).
FLOAT_DTYPES = ("F32", "F16", "BF16")
QUANTIZED_DTYPES = ("int8", "nf4")
# Every buffer row the kernels bind starts on a 256-byte boundary (WebGPU's offset alignment):
# 64 float32s, so the width is a whole number of them; matvecs read K in vec4s.
WIDTH_UNIT, INNER_UNIT = 64, 4

# The versions this runtime runs, and the one each is told apart by: a tensor of block 0 only it has,
# checked in this order as the official `rwkv` package does (r_k: 7; time_maa: 6; time_faaaa: 5.2;
# ln_x without those: 5.0/5.1, refused; time_first without ln_x: 4).
VERSIONS = {"x070": "att.r_k", "x060": "att.time_maa_x", "x052": "att.time_faaaa", "x040": "att.time_first"}
VERSION_NAMES = {"x070": "RWKV-7", "x060": "RWKV-6 (Finch)", "x052": "RWKV-5.2 (Eagle)", "x040": "RWKV-4"}
# Tell-tale tensors of generations it does not run (yet), for a helpful refusal.
OTHER_VERSIONS = {
    "att.ln_x.weight": "an RWKV-5.0/5.1 model (ln_x without time_faaaa); rwkvweb runs RWKV-5.2 and later",
}
SUPPORTED = "RWKV-4 (x040), RWKV-5.2 (x052), RWKV-6 (x060) and RWKV-7 (x070)"


def model_config(tensors: dict) -> ModelConfig:
    """The architecture of a file's tensors ({name: TensorInfo}, pre-quantized ones folded): each
    tensor's dtype checked against what the loaders read, then detect_config on the shapes."""
    for name, info in tensors.items():
        if info.dtype in FLOAT_DTYPES or (info.dtype in QUANTIZED_DTYPES and LARGE_MATRIX.fullmatch(name)):
            continue
        what = "quantized" if info.dtype in QUANTIZED_DTYPES else info.dtype
        raise ModelError(
            f"tensor {name!r} is {what}: rwkvweb reads {', '.join(FLOAT_DTYPES)} weights"
            f"{' (quantized codes only for the large matrices)' if what == 'quantized' else ''}; "
            f"convert the file to float16 or float32"
        )
    return detect_config({name: info.shape for name, info in tensors.items()})


def detect_version(names) -> str:
    """The RWKV generation of a file from its tensor names (VERSIONS), or a ModelError saying which
    generation it is when this runtime does not run it."""
    for version, marker in VERSIONS.items():
        if version == config4.RWKV4:  # RWKV-5.0/5.1 have time_first too: their ln_x is told apart first
            _refuse_other_versions(names)
        if f"blocks.0.{marker}" in names:
            return version
    _refuse_other_versions(names)
    return "x070"  # no marker at all: checked as RWKV-7, whose required tensors name what is missing


def _refuse_other_versions(names) -> None:
    for marker, what in OTHER_VERSIONS.items():
        if f"blocks.0.{marker}" in names:
            raise ModelError(f"this is {what}")


REQUIRED = {  # checked first, so a file of something else is refused with one clear line
    "x070": ("emb.weight", "blocks.0.att.k_k", "blocks.0.att.w1", "head.weight"),
    "x060": ("emb.weight", "blocks.0.att.time_maa_w1", "blocks.0.att.time_decay_w1", "head.weight"),
    "x052": ("emb.weight", "blocks.0.att.time_decay", "blocks.0.att.gate.weight", "head.weight"),
    "x040": ("emb.weight", "blocks.0.att.time_decay", "blocks.0.ffn.receptance.weight", "head.weight"),
}


def detect_config(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    """Infer the architecture from {tensor name: shape} and check every tensor against it."""
    version = detect_version(shapes)
    for required in REQUIRED[version]:
        if required not in shapes:
            raise ModelError(f"not an {VERSION_NAMES[version]} checkpoint: tensor {required!r} is missing")
    empty = next((name for name, shape in shapes.items() if 0 in shape), None)
    if empty is not None:
        raise ModelError(
            f"tensor {empty!r} has shape {tuple(shapes[empty])}: an empty dimension (a corrupt or truncated export)"
        )
    config = _infer(shapes)
    _check_units(config)
    _check_against(shapes, config)
    return config


def _infer(shapes: dict[str, tuple[int, ...]]) -> ModelConfig:
    layers = _layers(shapes)
    version = detect_version(shapes)
    if version == config4.RWKV4:
        return config4.infer(shapes, len(layers), _dims)
    if version != "x070":
        return config56.infer(version, shapes, len(layers), _dims)
    vocab_size, n_embd = _dims(shapes, "emb.weight", 2)
    r_k = shapes.get("blocks.0.att.r_k", ())  # if missing, _check_against names it
    head_size = r_k[-1] if len(r_k) == 2 else 64
    if n_embd % head_size:
        raise ModelError(f"width {n_embd} is not a multiple of the head size {head_size}")
    v1 = next((shapes[f"blocks.{i}.att.v1"] for i in sorted(layers) if f"blocks.{i}.att.v1" in shapes), (n_embd, 32))
    return ModelConfig(
        n_layer=len(layers),
        n_embd=n_embd,
        vocab_size=vocab_size,
        head_size=head_size,
        dim_ffn=_dims(shapes, "blocks.0.ffn.key.weight", 2)[0],
        d_decay_lora=_dims(shapes, "blocks.0.att.w1", 2)[1],
        d_aaa_lora=_dims(shapes, "blocks.0.att.a1", 2)[1],
        d_mv_lora=v1[1],
        d_gate_lora=_dims(shapes, "blocks.0.att.g1", 2)[1],
    )


def _layers(shapes: dict[str, tuple[int, ...]]) -> set[int]:
    """The block indices, which must run 0..L-1: checked here, before anything is built per layer
    (a single `blocks.9999999.` name must not make detection build ten million layers)."""
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d{1,9})\.", name))}
    if max(layers) != len(layers) - 1:
        gap = min(set(range(len(layers))) - layers)
        raise ModelError(
            f"blocks are numbered 0..{max(layers)} but block {gap} is missing ({len(layers)} blocks in the file)"
        )
    return layers


def _check_units(config: ModelConfig) -> None:
    """Widths the GPU kernels can lay out; refused here so that info, the reference and the engine agree."""
    if config.n_embd % WIDTH_UNIT:
        raise ModelError(
            f"width (n_embd) {config.n_embd} is not a multiple of {WIDTH_UNIT}: rwkvweb's GPU buffers hold whole "
            f"{WIDTH_UNIT}-float rows (every released RWKV model has such a width)"
        )
    inner = {
        "dim_ffn": config.dim_ffn,
        "d_decay_lora": config.d_decay_lora,
        "d_aaa_lora": config.d_aaa_lora,
        "d_mv_lora": config.d_mv_lora,
        "d_gate_lora": config.d_gate_lora,
        "d_mix_lora": config.d_mix_lora,  # RWKV-6's ddlerp: each of the five mixes read in groups of 4 too
    }
    for name, size in inner.items():
        if size % INNER_UNIT:
            raise ModelError(
                f"{name} {size} is not a multiple of {INNER_UNIT}: "
                f"rwkvweb's matvec kernels read rows in groups of {INNER_UNIT}"
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
        raise ModelError(
            f"tensors this runtime does not know (not {VERSION_NAMES[config.version]}?): "
            f"{', '.join(repr(n[:100]) for n in unknown[:5])}"
        )
    for name, shape in shapes.items():
        if not same_layout(name, shape, expected[name]):
            raise ModelError(f"tensor {name!r} has shape {tuple(shape)}, expected {expected[name]} for {config}")


def same_layout(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Equal up to size-1 axes ((1, 1, C) == (C,)); r_k may also come flattened ((H, N) == (C,))."""
    if [d for d in shape if d != 1] == [d for d in expected if d != 1]:
        return True
    return name.endswith("att.r_k") and len(shape) == 1 and math.prod(shape) == math.prod(expected)
