"""The RWKV-4 ("x040") block of the graph (model.py builds everything around it).

It reads like its reference (reference4.py): LayerNorm, the token shift by the static time_mix_r/k/v
(weighting the current token), r = sigmoid(W_r·xr), k, v, the WKV (wkv4.wgsl, which also applies r),
the output projection; then the classic channel mix. Slots of `Activations.mixed` and `.vecs`: r k v
side by side (slots 0-2), which is wkv4's [3, T, C] input as it stands.
"""

from __future__ import annotations

from . import ops
from .config import LN_EPS
from .model import F32, Activations, _Builder, classic_channel_mix
from .plan import View

RKV = ("r", "k", "v")  # the order of the mixes and of wkv4's input slots


def rwkv4_block(b: _Builder, p: str, a: Activations, i: int, att_shift: View, wkv_state: View, ffn_shift: View):
    """reference4.RWKV4's block: time mixing, then the classic channel mix; wkv_state is aa | bb | pp [3, C]."""
    cfg, plan = b.cfg, b.plan
    C, T = cfg.n_embd, a.tokens
    att, ln = f"blocks.{i}.att.", f"blocks.{i}."
    chunk = {"tokens": T, "count": a.count}

    ln1 = b.vectors(ln + "ln1", [ln + "ln1.weight", ln + "ln1.bias"])
    ops.norm(plan, p, a.x, ln1.slot(0, C * F32), ln1.slot(1, C * F32), a.xx, C, 1, LN_EPS, tokens=T)
    mixes = b.vectors(att + "time_mix", [att + f"time_mix_{m}" for m in RKV])
    ops.token_shift(plan, p, a.xx, att_shift, mixes, a.mixed, C, len(RKV), current=True, **chunk)
    for s, (proj, act) in enumerate((("receptance", "sigmoid"), ("key", "none"), ("value", "none"))):
        b.linear(p, att + proj + ".weight", a.slot(a.mixed, s), a.slot(a.vecs, s), act=act, **chunk)
    params = b.vectors(att + "wkv4_params", [att + "time_first", att + "time_decay"])
    rkv = View(a.vecs.buffer, a.vecs.offset, len(RKV) * T * C * F32)
    ops.wkv4(plan, p, rkv, params, wkv_state, a.y_gated, C, **chunk)  # y_gated = r ⊙ wkv
    b.linear(p, att + "output.weight", a.y_gated, a.x, accumulate=True, **chunk)

    classic_channel_mix(b, p, a, i, ffn_shift, ("time_mix_k", "time_mix_r"), current=True)
