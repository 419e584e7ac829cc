"""RWKV-5.2 ("x052", Eagle) and RWKV-6 ("x060", Finch) in RNN mode, in numpy, in the style of
reference.py's RWKV7 (whose Reference base gives loading, the layer loop, embed and logits).

Follows the `rwkv` package's `att_one_v5_1` (5.2) and `att_one_v6_0`, and RWKV-LM's v5/v6 models.
The time mixing of both, per head h (S[h] is [N key, N value], the official orientation):
    y = rᵀ·(S + diag(u)·k·vᵀ)          u = time_faaaa, the bonus of the current token
    S = diag(w)·S + k·vᵀ               w = exp(−exp(time_decay)): per channel (5.2) or per token (6)
    out = W_o · (GroupNorm(y; ln_x, eps 64e-5) ⊙ silu(W_g·xg))
GroupNorm's eps: RWKV-LM v5.2/v6 build ln_x with eps (1e-5)·head_size_divisor², divisor 8 -> 64e-5
(config.GN_EPS, as RWKV-7). They differ in the token shift (5.2: static time_mix_*; 6: ddlerp, the
mixes moved by a LoRA of the shifted input) and in the decay (6: time_decay + a LoRA of xw).
"""

from __future__ import annotations

import numpy as np

from .config import GN_EPS
from .config56 import DDLERP
from .reference import Reference, State, classic_channel_mix, group_norm, shift_mix, silu


class _Eagle(Reference):
    """What 5.2 and 6 share: the multi-head matrix WKV with bonus u, ln_x, the silu gate, the classic channel mix."""

    SHIFT_CURRENT = True  # token-shift convention of the mixing weights (reference.shift_mix)
    FFN_MIX = ("time_mix_k", "time_mix_r")

    @staticmethod
    def keeps_shape(name: str, w: np.ndarray) -> bool:
        """Matrices stay matrices (time_maa_w2 is [5, D, C]); vectors and [H, N] per-head ones are flattened."""
        return (w.ndim == 2 and not name.endswith(("time_decay", "time_faaaa"))) or name.endswith("time_maa_w2")

    def attend(self, i: int, state: State, xr, xk, xv, xg, w):
        """The WKV over one token: y = rᵀ(S + u·k·vᵀ), S = diag(w)·S + k·vᵀ per head; then ln_x, gate, output."""
        H, N = self.config.n_head, self.config.head_size
        p = lambda name: self.w[f"blocks.{i}.att.{name}"]  # noqa: E731
        r, k, v = (p(f"{proj}.weight") @ x for proj, x in (("receptance", xr), ("key", xk), ("value", xv)))
        g = silu(p("gate.weight") @ xg)
        r_, k_, v_, w_, u_ = (t.reshape(H, N) for t in (r, k, v, w, p("time_faaaa")))
        kv = k_[:, :, None] * v_[:, None, :]  # [H, key, value]
        S = state.wkv[i]
        y = (r_[:, None, :] @ (S + u_[:, :, None] * kv))[:, 0, :]  # [H, value]
        state.wkv[i] = S * w_[:, :, None] + kv
        y = group_norm(y.reshape(-1), p("ln_x.weight"), p("ln_x.bias"), H, eps=GN_EPS)
        return p("output.weight") @ (y * g)

    def channel_mix(self, i: int, x, state: State):
        prev = state.ffn_shift[i].copy()
        state.ffn_shift[i] = x
        return classic_channel_mix(self.w, f"blocks.{i}.ffn.", x, prev, self.FFN_MIX, self.SHIFT_CURRENT)


class RWKV5(_Eagle):
    """RWKV-5.2: static token-shift mixes, a constant decay per channel."""

    def time_mix(self, i: int, x, state: State, v_first):
        p = lambda name: self.w[f"blocks.{i}.att.{name}"]  # noqa: E731
        prev = state.att_shift[i].copy()
        state.att_shift[i] = x
        xr, xk, xv, xg = (shift_mix(x, prev, p(f"time_mix_{m}"), current=True) for m in "rkvg")
        w = np.exp(-np.exp(p("time_decay")))
        return self.attend(i, state, xr, xk, xv, xg, w), v_first


class RWKV6(_Eagle):
    """RWKV-6: data-dependent token shift (ddlerp) and a decay per token from its own LoRA."""

    SHIFT_CURRENT = False
    FFN_MIX = ("time_maa_k", "time_maa_r")

    def time_mix(self, i: int, x, state: State, v_first):
        p = lambda name: self.w[f"blocks.{i}.att.{name}"]  # noqa: E731
        D = self.config.d_mix_lora
        dx = state.att_shift[i] - x
        state.att_shift[i] = x
        xxx = np.tanh((x + dx * p("time_maa_x")) @ p("time_maa_w1")).reshape(5, D)
        moved = np.einsum("jd,jdc->jc", xxx, p("time_maa_w2"))  # [5, C]: mw, mk, mv, mr, mg
        xw, xk, xv, xr, xg = (x + dx * (p(f"time_maa_{m}") + moved[j]) for j, m in enumerate(DDLERP))
        w = np.exp(-np.exp(p("time_decay") + np.tanh(xw @ p("time_decay_w1")) @ p("time_decay_w2")))
        return self.attend(i, state, xr, xk, xv, xg, w), v_first
