"""The RWKV-5.2 ("x052") and RWKV-6 ("x060") blocks of the graph (model.py builds everything around them).

Each reads like its reference (reference56.py): LayerNorm, the token shift (5.2: static time_mix_*;
6: ddlerp), r k v and the silu gate, (6: the decay LoRA), the WKV (wkv5.wgsl), GroupNorm ⊙ gate, the
output projection; then the classic channel mix. Slots of `Activations.vecs` as RWKV-7's: r w k v · g
(w holds RWKV-6's log-log decay d; the a slot is unused).
"""

from __future__ import annotations

from dataclasses import replace

from . import ops
from .config import GN_EPS, LN_EPS
from .config56 import DDLERP, EAGLE, FINCH
from .model import F32, G, K, R, V, W, Activations, _Builder, _lora, classic_channel_mix
from .plan import View

SLOT = {"r": R, "w": W, "k": K, "v": V, "g": G}  # where each of the ddlerp mixes lands in mixed and vecs


def _eagle_block(b: _Builder, p: str, a: Activations, i: int, att_shift: View, wkv_state: View, ffn_shift: View):
    """reference56.RWKV5 / RWKV6: time mixing, then the classic channel mix."""
    cfg, plan = b.cfg, b.plan
    C, N, T = cfg.n_embd, cfg.head_size, a.tokens
    att, ln = f"blocks.{i}.att.", f"blocks.{i}."
    finch = cfg.version == FINCH
    mixed, vecs = (lambda s: a.slot(a.mixed, s)), (lambda s: a.slot(a.vecs, s))  # noqa: E731
    chunk = {"tokens": T, "count": a.count}

    ln1 = b.vectors(ln + "ln1", [ln + "ln1.weight", ln + "ln1.bias"])
    ops.norm(plan, p, a.x, ln1.slot(0, C * F32), ln1.slot(1, C * F32), a.xx, C, 1, LN_EPS, tokens=T)
    params = b.vectors(att + "wkv5_params", [att + "time_decay", att + "time_faaaa"])
    if finch:
        _ddlerp(b, p, a, i, att_shift, chunk)
        x_of = {m: mixed(SLOT[m]) for m in "rkvgw"}
    else:  # mixed slots 0-3 = r k v g
        mixes = b.vectors(att + "time_mix", [att + f"time_mix_{m}" for m in "rkvg"])
        ops.token_shift(plan, p, a.xx, att_shift, mixes, a.mixed, C, 4, current=True, **chunk)
        x_of = {m: mixed(s) for s, m in enumerate("rkvg")}
    for m, proj in (("r", "receptance"), ("k", "key"), ("v", "value")):
        b.linear(p, att + proj + ".weight", x_of[m], vecs(SLOT[m]), **chunk)
    b.linear(p, att + "gate.weight", x_of["g"], vecs(G), act="silu", **chunk)
    if finch:  # d = time_decay + tanh(xw @ w1) @ w2; the kernel takes exp(−exp(d))
        rank = cfg.d_decay_lora
        _lora(
            b,
            p,
            att + "time_decay_w",
            x_of["w"],
            a.hidden,
            vecs(W),
            rank,
            "tanh",
            params.slot(0, C * F32),
            "none",
            chunk,
        )
    y = a.wkv_out.slot(0, T * C * F32)
    ops.wkv5(plan, p, a.vecs, params, wkv_state, y, C, N, per_token_decay=finch, **chunk)
    ln_x = b.vectors(att + "ln_x", [att + "ln_x.weight", att + "ln_x.bias"])
    gate = vecs(G)
    ops.norm(
        plan, p, y, ln_x.slot(0, C * F32), ln_x.slot(1, C * F32), a.y_gated, N, cfg.n_head, GN_EPS, tokens=T, gate=gate
    )
    b.linear(p, att + "output.weight", a.y_gated, a.x, accumulate=True, **chunk)

    mix = ("time_maa_k", "time_maa_r") if finch else ("time_mix_k", "time_mix_r")
    classic_channel_mix(b, p, a, i, ffn_shift, mix, current=not finch)


def _ddlerp(b: _Builder, p: str, a: Activations, i: int, att_shift: View, chunk: dict) -> None:
    """RWKV-6's data-dependent token shift into mixed slots r w k v g (dx = prev − x):
      xxx = x + dx·time_maa_x;  m = tanh(xxx @ w1) [5, D] @ w2 [5, D, C];  x_j = x + dx·(time_maa_j + m_j).
    The mixes (time_maa_j + m_j) are built per token in the vecs slots, then one token shift applies them."""
    cfg, plan = b.cfg, b.plan
    C, D = cfg.n_embd, cfg.d_mix_lora
    att = f"blocks.{i}.att."
    maa = b.vectors(att + "time_maa", [att + f"time_maa_{m}" for m in ("x", *DDLERP)])
    xxx = a.slot(a.mixed, 4)  # the unused slot: consumed before the second shift overwrites it
    ops.token_shift(plan, p, a.xx, att_shift, maa.slot(0, C * F32), xxx, C, 1, keep_prev=True, **chunk)
    ops.matvec(plan, p, *b.lora(att + "time_maa_w1"), xxx, a.hidden, 5 * D, C, row_major=False, act="tanh", **chunk)
    w2 = att + "time_maa_w2"
    info = b.tensors[w2]
    b.tensors[w2] = replace(info, shape=(5 * D, C))  # [5, D, C] stored as five [D, C] k-major blocks, one after another
    whole, dtype = b.lora(w2)
    block = ops.weight_bytes(dtype, D * C)
    for j, m in enumerate(DDLERP):
        ops.matvec(
            plan,
            p,
            View(whole.buffer, whole.offset + j * block, block),
            dtype,
            a.hidden,
            a.slot(a.vecs, SLOT[m]),
            C,
            D,
            row_major=False,
            bias=maa.slot(1 + j, C * F32),
            x_offset=j * D,
            x_stride=5 * D,
            **chunk,
        )
    ops.token_shift(plan, p, a.xx, att_shift, a.vecs, a.mixed, C, 6, mix_per_token=True, **chunk)


BLOCKS = {EAGLE: _eagle_block, FINCH: _eagle_block}
