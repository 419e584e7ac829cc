"""RWKV-4 ("x040": Pile, Raven, World v4) in RNN mode, in numpy: the oracle for wkv4.wgsl and for
the v4 graph, in the style of reference.py's RWKV7 (whose Reference base gives loading, the layer
loop, embed and logits; the channel mix is reference.classic_channel_mix, shared with 5.2 and 6).

Follows BlinkDL/ChatRWKV `RWKV_in_150_lines.py` (`time_mixing`) and the `rwkv` package's v4 path,
in float32 like the GPU kernels. Shapes: C = n_embd. Per channel c, with u = time_first and
w = −exp(time_decay) (the real decay is e^w = exp(−exp(time_decay)) per token):

  wkv_t = (Σ_{i<t} e^{(t−1−i)·w + k_i}·v_i + e^{u + k_t}·v_t) / (Σ_{i<t} e^{(t−1−i)·w + k_i} + e^{u + k_t})

The sums are the state: aa (numerator) and bb (denominator), both kept divided by e^pp, pp being
the largest exponent seen, so no exp ever overflows (a trained model's k reaches the tens; e^89
is already infinite in float32).

State per layer (State.to_bytes order, config4.STATE_ROWS): att_shift [C] | aa [C] | bb [C] | pp [C] |
ffn_shift [C]; State.wkv holds aa | bb | pp as [L, 3, C].
"""

from __future__ import annotations

import numpy as np

from .config4 import FRESH_PP
from .reference import Reference, State, classic_channel_mix, shift_mix, sigmoid

# A fresh state's pp is FRESH_PP, "minus infinity" as in the official code, so the first token's
# e^{pp − q} is exactly 0. (pp = 0 would also represent the empty sums aa = bb = 0, but then
# e^{u + k − 0} underflows to 0 for u + k < −104 and the first wkv is 0/0.)
AA, BB, PP = range(3)  # rows of a layer's WKV state [3, C]


def decay(time_decay: np.ndarray) -> np.ndarray:
    """w = −exp(time_decay): the log of the per-token decay, as checkpoints store it before the official
    loader's `-torch.exp(w)`."""
    return -np.exp(time_decay.astype(np.float32))


def wkv4(time_first: np.ndarray, w: np.ndarray, k: np.ndarray, v: np.ndarray, abp: np.ndarray) -> np.ndarray:
    """One token's wkv [C]; `abp` ([3, C]: aa | bb | pp) advances in place past this token."""
    aa, bb, pp = abp
    ww = time_first + k  # this token's own weight, boosted by time_first
    q = np.maximum(pp, ww)
    e1, e2 = np.exp(pp - q), np.exp(ww - q)
    wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)
    ww = pp + w  # the past decays one step; this token joins it with weight e^k
    q = np.maximum(ww, k)
    e1, e2 = np.exp(ww - q), np.exp(k - q)
    abp[AA], abp[BB], abp[PP] = e1 * aa + e2 * v, e1 * bb + e2, q
    return wkv


def time_mix(p, x: np.ndarray, att_shift: np.ndarray, abp: np.ndarray) -> np.ndarray:
    """The attention half of a v4 block on x = LayerNorm(x; ln1) [C]; `p(name)` gives the layer's
    `att.` tensors as float32, mixing vectors flattened to [C]. att_shift [C] and abp [3, C] advance
    in place; returns W_o·(sigmoid(W_r·xr) ⊙ wkv)."""
    prev = att_shift.copy()
    att_shift[:] = x
    xk, xv, xr = (shift_mix(x, prev, p(f"time_mix_{m}"), current=True) for m in "kvr")
    r = sigmoid(p("receptance.weight") @ xr)
    k = p("key.weight") @ xk
    v = p("value.weight") @ xv
    wkv = wkv4(p("time_first"), decay(p("time_decay")), k, v, abp)
    return p("output.weight") @ (r * wkv)


class RWKV4(Reference):
    """RWKV-4: the numerator/denominator WKV with time_first and time_decay; the classic channel mix."""

    def time_mix(self, i: int, x, state: State, v_first):
        p = lambda name: self.w[f"blocks.{i}.att.{name}"]  # noqa: E731
        return time_mix(p, x, state.att_shift[i], state.wkv[i]), v_first

    def channel_mix(self, i: int, x, state: State):
        prev = state.ffn_shift[i].copy()
        state.ffn_shift[i] = x
        return classic_channel_mix(self.w, f"blocks.{i}.ffn.", x, prev, ("time_mix_k", "time_mix_r"), current=True)


def fresh_wkv_state(n_layer: int, n_embd: int) -> np.ndarray:
    """[L, 3, C]: aa = bb = 0 and pp = FRESH_PP in every layer."""
    state = np.zeros((n_layer, 3, n_embd), np.float32)
    state[:, PP] = FRESH_PP
    return state
