"""RWKV-7 ("x070") in RNN mode, in numpy: the oracle for every GPU result and the CPU backend.

Follows BlinkDL/RWKV-LM `RWKV-v7/rwkv_v7_numpy.py` and the `rwkv` package's
`RWKV_x070_TMix_one`. All arithmetic is float32 (weights of any stored dtype
are widened once at load), as the GPU kernels do it. `Reference` is what every version
shares (loading, the layer loop, embed, logits); RWKV-5.2 and RWKV-6 are in reference56.py,
and `load` picks the class by the file's version.

Shapes: C = n_embd, H = n_head, N = head_size (64), V = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import config4
from .config import DECAY_SCALE, GN_EPS, LN_EPS, ModelConfig, ModelError, model_config
from .quant import QuantizedInfo, fold_quantized, read_dequantized
from .pth import open_model_file


def layer_norm(x, weight, bias, eps=LN_EPS):
    return (x - x.mean()) / np.sqrt(x.var() + eps) * weight + bias


def group_norm(x, weight, bias, n_groups, eps=GN_EPS):  # x: [C], one group per head
    g = x.reshape(n_groups, -1)
    g = (g - g.mean(axis=1, keepdims=True)) / np.sqrt(g.var(axis=1, keepdims=True) + eps)
    return g.reshape(-1) * weight + bias


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def shift_mix(x, prev, mix, current: bool):
    """Token shift: the lerp between this token's x and the previous one's. RWKV-4/5's time_mix_*
    weight the current token (x·mix + prev·(1 − mix), current=True); RWKV-6's time_maa_* and
    RWKV-7's x_* weight the previous one (x + (prev − x)·mix)."""
    return x * mix + prev * (1 - mix) if current else x + (prev - x) * mix


def classic_channel_mix(w: dict, prefix: str, x, prev, mix: tuple[str, str], current: bool):
    """The channel mix of RWKV-4, 5 and 6 (one maths, three spellings): with xk, xr the token-shift
    mixes of x by the weights named `mix` = (k's, r's), e.g. ("time_mix_k", "time_mix_r") or
    ("time_maa_k", "time_maa_r"):  r = sigmoid(Wr·xr),  k = relu(Wk·xk)²,  out = r ⊙ (Wv·k).
    `prefix` is "blocks.{i}.ffn."; `prev` the previous token's ln2 output (the caller keeps the state)."""
    xk, xr = (shift_mix(x, prev, w[prefix + name], current) for name in mix)
    r = sigmoid(w[prefix + "receptance.weight"] @ xr)
    k = np.maximum(w[prefix + "key.weight"] @ xk, 0) ** 2
    return r * (w[prefix + "value.weight"] @ k)


@dataclass
class State:
    """The recurrent state of every layer; the model's whole memory of the past."""

    att_shift: np.ndarray  # [L, C]  previous token's ln1 output
    wkv: np.ndarray  # [L, *wkv_shape] float32: the WKV's memory, as wkv_shape says per version
    ffn_shift: np.ndarray  # [L, C]  previous token's ln2 output

    @staticmethod
    def wkv_shape(config: ModelConfig) -> tuple[int, ...]:
        """A layer's WKV state: [H, N, N] in the official orientation (RWKV-7 S[value, key]; 5.2 and 6
        S[key, value]); RWKV-4's aa | bb | pp [3, C] (config4.STATE_ROWS)."""
        if config.version == config4.RWKV4:
            return (3, config.n_embd)
        return (config.n_head, config.head_size, config.head_size)

    @classmethod
    def zeros(cls, config: ModelConfig) -> "State":
        """The state before any token: zeros, except RWKV-4's pp, "minus infinity" (config4.FRESH_PP)."""
        L, C = config.n_layer, config.n_embd
        wkv = np.zeros((L, *cls.wkv_shape(config)), np.float32)
        if config.version == config4.RWKV4:
            wkv[:, 2] = config4.FRESH_PP  # pp, the last row of aa | bb | pp
        return cls(np.zeros((L, C), np.float32), wkv, np.zeros((L, C), np.float32))

    def copy(self) -> "State":
        return State(self.att_shift.copy(), self.wkv.copy(), self.ffn_shift.copy())

    def to_bytes(self) -> bytes:
        """Canonical export: per layer, att_shift [C] | wkv (all of it) | ffn_shift [C], float32 little-endian."""
        L = self.att_shift.shape[0]
        parts = [np.concatenate([self.att_shift[i], self.wkv[i].ravel(), self.ffn_shift[i]]) for i in range(L)]
        return np.concatenate(parts).astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, config: ModelConfig, data: bytes) -> "State":
        L, C, shape = config.n_layer, config.n_embd, cls.wkv_shape(config)
        size = math.prod(shape)
        per_layer = 2 * C + size
        if len(data) != 4 * L * per_layer:
            raise ValueError(
                f"state is {len(data)} bytes; this model's state is {4 * L * per_layer} bytes (another model's state?)"
            )
        rows = np.frombuffer(data, "<f4").reshape(L, per_layer)
        return cls(rows[:, :C].copy(), rows[:, C : C + size].reshape(L, *shape).copy(), rows[:, C + size :].copy())


def load(path_or_source) -> "Reference":
    """The reference of a model file, of the class its version needs (RWKV7, RWKV6, RWKV5, RWKV4)."""
    return Reference.load(path_or_source)


def reference_class(version: str) -> type:
    from .reference56 import RWKV5, RWKV6  # they build on this module
    from .reference4 import RWKV4

    return {"x070": RWKV7, "x060": RWKV6, "x052": RWKV5, "x040": RWKV4}[version]


class Reference:
    """Weights plus the forward pass. `forward(token, state)` -> (logits [V], next state).
    A version defines time_mix and channel_mix (and which weights stay matrices)."""

    def __init__(self, config: ModelConfig, weights: dict[str, np.ndarray]):
        self.config = config
        # Mixing vectors come as (1, 1, C) and per-head ones as (H, N): flatten them all to [C].
        self.w = {name: (w if self.keeps_shape(name, w) else w.reshape(-1)) for name, w in weights.items()}

    @staticmethod
    def keeps_shape(name: str, w: np.ndarray) -> bool:
        return w.ndim == 2 and not name.endswith("r_k")

    @classmethod
    def load(cls, path_or_source) -> "Reference":
        """Whatever the class it is called on, the model comes back as its file's version's class."""
        file = open_model_file(path_or_source)
        tensors = fold_quantized(file.tensors, file.metadata)  # pre-quantized matrices: their dequantized values
        config = model_config(tensors)
        weights = {
            name: read_dequantized(file.source.read, info)
            if isinstance(info, QuantizedInfo)
            else file.read_array(name, "float32")
            for name, info in tensors.items()
        }
        damaged = next((name for name, w in weights.items() if not np.isfinite(w).all()), None)
        if damaged is not None:
            raise ModelError(
                f"tensor {damaged!r} holds NaN or infinite values: the file is damaged "
                f"(or was exported with an overflow)"
            )
        return reference_class(config.version)(config, weights)

    def forward(self, token: int, state: State) -> tuple[np.ndarray, State]:
        hidden, state = self.hidden(token, state)
        return self.w["head.weight"] @ hidden, state

    def hidden(self, token: int, state: State) -> tuple[np.ndarray, State]:
        """The last layer's output after ln_out (what the head reads; embed()'s vector) and the new state."""
        cfg, w = self.config, self.w
        if not 0 <= token < cfg.vocab_size:
            raise ModelError(f"token id {token} is outside the vocabulary [0, {cfg.vocab_size})")
        state = state.copy()
        x = layer_norm(w["emb.weight"][token], w["blocks.0.ln0.weight"], w["blocks.0.ln0.bias"])
        v_first = None
        for i in range(cfg.n_layer):
            b = f"blocks.{i}."
            xx = layer_norm(x, w[b + "ln1.weight"], w[b + "ln1.bias"])
            dx, v_first = self.time_mix(i, xx, state, v_first)
            x = x + dx
            xx = layer_norm(x, w[b + "ln2.weight"], w[b + "ln2.bias"])
            x = x + self.channel_mix(i, xx, state)
        return layer_norm(x, w["ln_out.weight"], w["ln_out.bias"]), state

    def embed(self, tokens: list[int], pooling: str = "last") -> np.ndarray:
        """api.Model.embed's reference: ln_out hidden states from a fresh state, the last or the mean."""
        state, rows = State.zeros(self.config), []
        for token in tokens:
            hidden, state = self.hidden(token, state)
            rows.append(hidden)
        return rows[-1] if pooling == "last" else np.mean(rows, axis=0)

    def logits(self, tokens: list[int], state: State | None = None) -> tuple[np.ndarray, State]:
        """Run tokens one by one; logits [T, V] for every position, and the final state."""
        state = state or State.zeros(self.config)
        rows = []
        for token in tokens:
            logits, state = self.forward(token, state)
            rows.append(logits)
        return np.stack(rows), state


class RWKV7(Reference):
    """RWKV-7: the WKV with in-context learning rate `a`, value residual from block 0."""

    def time_mix(self, i: int, x, state: State, v_first):
        H, N = self.config.n_head, self.config.head_size
        p = lambda name: self.w[f"blocks.{i}.att.{name}"]  # noqa: E731
        dx = state.att_shift[i] - x
        state.att_shift[i] = x
        xr, xw, xk, xv, xa, xg = (x + dx * p(m) for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))

        r = p("receptance.weight") @ xr
        k = p("key.weight") @ xk
        v = p("value.weight") @ xv
        w = p("w0") + np.tanh(xw @ p("w1")) @ p("w2")
        a = sigmoid(p("a0") + (xa @ p("a1")) @ p("a2"))
        g = sigmoid(xg @ p("g1")) @ p("g2")

        kk = (k * p("k_k")).reshape(H, N)
        kk = (kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)).reshape(-1)
        k = k * (1 + (a - 1) * p("k_a"))
        if i == 0:
            v_first = v
        else:
            v = v + (v_first - v) * sigmoid(p("v0") + (xv @ p("v1")) @ p("v2"))
        w = np.exp(-DECAY_SCALE * sigmoid(w))

        # S[h] : [N value, N key].  S = S·diag(w) + (S·(-kk))·(kk⊙a)ᵀ + v·kᵀ ;  y = S·r
        r_, w_, k_, v_, kk_, a_ = (t.reshape(H, N) for t in (r, w, k, v, kk, a))
        S = state.wkv[i]
        S = S * w_[:, None, :] - (S @ kk_[:, :, None]) * (kk_ * a_)[:, None, :] + v_[:, :, None] * k_[:, None, :]
        state.wkv[i] = S
        y = (S @ r_[:, :, None]).reshape(-1)

        y = group_norm(y, p("ln_x.weight"), p("ln_x.bias"), H)
        y = y + ((r_ * k_ * p("r_k").reshape(H, N)).sum(axis=1, keepdims=True) * v_).reshape(-1)
        return p("output.weight") @ (y * g), v_first

    def channel_mix(self, i: int, x, state: State):
        p = lambda name: self.w[f"blocks.{i}.ffn.{name}"]  # noqa: E731
        dx = state.ffn_shift[i] - x
        state.ffn_shift[i] = x
        k = np.maximum(p("key.weight") @ (x + dx * p("x_k")), 0) ** 2
        return p("value.weight") @ k
