"""RWKV-5.2 ("x052", Eagle) and RWKV-6 ("x060", Finch) checkpoints: their tensors, and their
architecture inferred from names and shapes (config.py's detect_config dispatches here).

Names and shapes are the official ones (BlinkDL/RWKV-LM `RWKV-v5` / `RWKV-v6` training code, as
the `rwkv` package loads them): per layer, time mixing `att.*` and channel mixing `ffn.*`.
No numpy here (it is imported by the header reader, which runs where numpy may be absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config.py imports this module; the class is only named in annotations here
    from .config import ModelConfig

EAGLE, FINCH = "x052", "x060"
DDLERP = ("w", "k", "v", "r", "g")  # the order of RWKV-6's five ddlerp LoRAs in time_maa_w2, as in the official code


def default_for(version: str, n_layer: int, n_embd: int, vocab_size: int, head_size: int = 64) -> "ModelConfig":
    """Official sizes for a width, as in RWKV-LM's v5/v6 training code: FFN int(3.5·C) rounded down to
    32s; v6's ddlerp LoRA 32 (64 from C = 4096 on) and decay LoRA 64 (128)."""
    from .config import ModelConfig

    wide = n_embd >= 4096
    return ModelConfig(
        n_layer=n_layer,
        n_embd=n_embd,
        vocab_size=vocab_size,
        head_size=head_size,
        dim_ffn=int(n_embd * 3.5) // 32 * 32,
        d_decay_lora=(128 if wide else 64) if version == FINCH else 0,
        d_aaa_lora=0,
        d_mv_lora=0,
        d_gate_lora=0,
        d_mix_lora=(64 if wide else 32) if version == FINCH else 0,
        version=version,
    )


def block_shapes(config: "ModelConfig", b: str) -> dict[str, tuple[int, ...]]:
    """A v5.2 or v6 block's own tensors with their shapes (names start with `b`, `blocks.{i}.`);
    config.tensor_shapes adds those every version has."""
    C, F = config.n_embd, config.dim_ffn
    H, N = config.n_head, config.head_size
    finch = config.version == FINCH
    shapes: dict[str, tuple[int, ...]] = {}
    if finch:  # ddlerp: x_maa then five data-dependent mixes; the decay from its own LoRA
        D, Dw = config.d_mix_lora, config.d_decay_lora
        for mix in ("x", "w", "k", "v", "r", "g"):
            shapes[b + f"att.time_maa_{mix}"] = (1, 1, C)
        shapes[b + "att.time_maa_w1"], shapes[b + "att.time_maa_w2"] = (C, 5 * D), (5, D, C)
        shapes[b + "att.time_decay"] = (1, 1, C)
        shapes[b + "att.time_decay_w1"], shapes[b + "att.time_decay_w2"] = (C, Dw), (Dw, C)
    else:
        for mix in ("k", "v", "r", "g"):
            shapes[b + f"att.time_mix_{mix}"] = (1, 1, C)
        shapes[b + "att.time_decay"] = (H, N)
    shapes[b + "att.time_faaaa"] = (H, N)
    for proj in ("receptance", "key", "value", "output", "gate"):
        shapes[b + f"att.{proj}.weight"] = (C, C)
    shapes[b + "att.ln_x.weight"], shapes[b + "att.ln_x.bias"] = (C,), (C,)
    for mix in ("k", "r"):
        shapes[b + (f"ffn.time_maa_{mix}" if finch else f"ffn.time_mix_{mix}")] = (1, 1, C)
    shapes[b + "ffn.key.weight"], shapes[b + "ffn.value.weight"] = (F, C), (C, F)
    shapes[b + "ffn.receptance.weight"] = (C, C)
    return shapes


def infer(version: str, shapes: dict[str, tuple[int, ...]], layers: int, dims) -> "ModelConfig":
    """The config of a v5.2 / v6 file. The head count is time_faaaa's first axis ([H, N]), as the
    official code takes it (`n_head = w['blocks.0.att.time_faaaa'].shape[0]`); `dims` is config._dims."""
    from .config import ModelConfig, ModelError

    vocab_size, n_embd = dims(shapes, "emb.weight", 2)
    faaaa = tuple(shapes["blocks.0.att.time_faaaa"])
    if len(faaaa) not in (2, 3) or (len(faaaa) == 3 and faaaa[2] != 1):  # [H, N], or [H, N, 1] as the package holds it
        raise ModelError(
            f"tensor 'blocks.0.att.time_faaaa' has shape {faaaa}: expected [n_head, head_size], "
            f"from which the head size is read (re-export the checkpoint without flattening it)"
        )
    n_head = faaaa[0]
    if n_embd % n_head:
        raise ModelError(f"width {n_embd} is not a multiple of the head count {n_head} (time_faaaa's first axis)")
    finch = version == FINCH
    return ModelConfig(
        n_layer=layers,
        n_embd=n_embd,
        vocab_size=vocab_size,
        head_size=n_embd // n_head,
        dim_ffn=dims(shapes, "blocks.0.ffn.key.weight", 2)[0],
        d_decay_lora=dims(shapes, "blocks.0.att.time_decay_w1", 2)[1] if finch else 0,
        d_aaa_lora=0,
        d_mv_lora=0,
        d_gate_lora=0,
        d_mix_lora=dims(shapes, "blocks.0.att.time_maa_w1", 2)[1] // 5 if finch else 0,
        version=version,
    )
