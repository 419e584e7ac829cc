"""Run a plan with numpy: a twin of every WGSL entry point, and an executor over plan data.

This is how the graph (model.py) is checked against the reference without a browser, and
the oracle the browser kernel tests compare against. The twins follow the shaders' contracts
(bindings, constants) and compute in float32 like them.
"""

from __future__ import annotations

import numpy as np

from .config import DECAY_SCALE
from .ops import SAMPLER_FORMAT
from .plan import Plan
from .quant import SCHEMES, dequantize, quantize


def _f32(raw, count=None):
    view = raw.view(np.float32)
    return view if count is None else view[:count]


def _weights(raw, dtype_prelude):
    return raw.view(np.float16 if dtype_prelude.endswith("f16.wgsl") else np.float32).astype(np.float32)


def widen_weights(raw, prelude: str, constants: dict) -> np.ndarray:
    """A weight buffer as the float32 values its prelude's weight4() returns."""
    dtype = prelude.removeprefix("lib/weights_").removesuffix(".wgsl")
    if dtype in SCHEMES:
        return dequantize(raw, dtype, constants["WEIGHT_ELEMENTS"])
    return _weights(raw, prelude)


def _activate(t, act):
    if act == 1:
        return np.tanh(t)
    if act == 2:
        return 1 / (1 + np.exp(-t))
    if act == 3:
        return np.maximum(t, 0) ** 2
    if act == 4:
        return np.exp(np.float32(-DECAY_SCALE) * (1 / (1 + np.exp(-t))))
    return t


def matvec(c, include, weight, x, bias, out):
    M, K = c["M"], c["K"]
    if c["ROW_MAJOR"]:
        t = _weights(weight, include[0])[: M * K].reshape(M, K) @ _f32(x, K)
    else:
        m_pad = -(-M // 4) * 4
        t = _f32(x, K) @ _weights(weight, include[0])[: K * m_pad].reshape(K, m_pad)[:, :M]
    if c["HAS_BIAS"]:
        t = t + _f32(bias, M)
    t = _activate(t.astype(np.float32), c["ACT"])
    rows = _f32(out)[c["ROW_OFFSET"] : c["ROW_OFFSET"] + M]
    rows[:] = rows + t if c["ACCUMULATE"] else t


def norm(c, include, x, weight, bias, out):
    G = c["GROUP"]
    n = _f32(out).size // G
    xs = _f32(x, n * G).reshape(-1, G)
    mean = xs.mean(axis=1, keepdims=True)
    var = ((xs - mean) ** 2).mean(axis=1, keepdims=True)
    y = (xs - mean) / np.sqrt(var + np.float32(c["EPS"]))
    _f32(out, n * G)[:] = y.reshape(-1) * _f32(weight, n * G) + _f32(bias, n * G)


def token_shift(c, include, x, prev, mix, out):
    C, n = c["C"], c["N_MIX"]
    now, before = _f32(x, C).copy(), _f32(prev, C)
    _f32(out, n * C)[:] = (now + (before - now) * _f32(mix, n * C).reshape(n, C)).reshape(-1)
    before[:] = now


def wkv7(c, include, vecs, params, state, out):
    C, N = c["C"], c["N"]
    H = C // N
    r, w, k, v, a = _f32(vecs, 5 * C).reshape(5, H, N)
    k_k, k_a, r_k = _f32(params, 3 * C).reshape(3, H, N)
    kk = k * k_k
    kk = kk / np.maximum(np.sqrt((kk * kk).sum(axis=1, keepdims=True)), np.float32(1e-12))
    k_mod = k * (1 + (a - 1) * k_a)
    S = _f32(state, H * N * N).reshape(H, N, N)
    sa = (S @ -kk[:, :, None])  # [H, N, 1]
    S[:] = S * w[:, None, :] + sa * (kk * a)[:, None, :] + v[:, :, None] * k_mod[:, None, :]
    y = (S @ r[:, :, None])[:, :, 0]
    bonus = (r * k_mod * r_k).sum(axis=1, keepdims=True) * v
    _f32(out, 2 * C)[:] = np.concatenate([y.reshape(-1), bonus.reshape(-1)])


def lerp(c, include, a, b, t):
    n = c["LEN"]
    A = _f32(a, n)
    A[:] = A + (_f32(b, n) - A) * _f32(t, n)


def add_mul(c, include, a, b, t, out):
    n = c["LEN"]
    _f32(out, n)[:] = (_f32(a, n) + _f32(b, n)) * _f32(t, n)


def embed(c, include, weight, token, out):
    C, start = c["C"], c["ROW_START"]
    row = int(token.view(np.uint32)[0])
    if start <= row < start + c["ROWS"]:
        _f32(out, C)[:] = _weights(weight, include[0])[(row - start) * C : (row - start + 1) * C]


def pcg(value: int) -> int:
    """The sampler's hash (PCG), on 32-bit unsigned integers as in sample.wgsl."""
    state = (value * 747796405 + 2891336453) & 0xFFFFFFFF
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & 0xFFFFFFFF
    return (word >> 22) ^ word


SAMPLER_NAMES = ("temperature", "top_p", "top_k", "presence", "frequency", "repetition", "seed", "step")
SAMPLER_FIELDS = np.dtype([(name, "<" + code) for name, code in zip(SAMPLER_NAMES, SAMPLER_FORMAT[1:])])  # f4/u4 as in the struct


def sample(c, include, logits, counts, params, probs, token):
    """sample.wgsl's contract with exact top-k / top-p (a sort instead of bisection)."""
    V = c["V"]
    p = params.view(SAMPLER_FIELDS)[0]
    seen = counts.view(np.uint32)
    l = _f32(logits, V).copy()
    hit = seen > 0
    l[hit] = np.where(l[hit] > 0, l[hit] / p["repetition"], l[hit] * p["repetition"])
    l[hit] -= p["presence"] + p["frequency"] * seen[hit].astype(np.float32)
    choice = int(np.argmax(l))
    if p["temperature"] > 0 and p["top_k"] != 1:
        probs_ = np.exp((l - l[choice]) / p["temperature"])
        order = np.argsort(-probs_, kind="stable")
        keep = np.ones(V, bool)
        if 1 < p["top_k"] < V:
            keep[probs_ < probs_[order[p["top_k"] - 1]]] = False
        if p["top_p"] < 1:
            cumulative = np.cumsum(probs_[order])
            last = int(np.searchsorted(cumulative, p["top_p"] * probs_.sum()))
            keep[probs_ < probs_[order[min(last, V - 1)]]] = False
        kept = np.where(keep, probs_, 0)
        u = (pcg(int(p["seed"]) ^ pcg(int(p["step"]))) >> 8) / 16777216.0
        choice = int(min(np.searchsorted(np.cumsum(kept), u * kept.sum(), side="right"), V - 1))
    token.view(np.uint32)[0] = choice
    seen[choice] += 1
    params.view(SAMPLER_FIELDS)["step"][0] = p["step"] + 1


KERNELS = {
    ("matvec.wgsl", "main"): matvec,
    ("norm.wgsl", "main"): norm,
    ("token_shift.wgsl", "main"): token_shift,
    ("wkv7.wgsl", "main"): wkv7,
    ("elementwise.wgsl", "lerp"): lerp,
    ("elementwise.wgsl", "add_mul"): add_mul,
    ("embed.wgsl", "main"): embed,
    ("sample.wgsl", "main"): sample,
}


class NumpyBackend:
    """The engine's backend interface over a NumpyExecutor (CPython: the CPU fallback and tests)."""

    async def load(self, plan: dict) -> None:
        self.executor = NumpyExecutor(plan)

    async def fill(self, fills: list[dict], source) -> None:
        self.executor.fill(fills, source.read)

    async def write(self, buffer: int, offset: int, data: bytes) -> None:
        self.executor.write(buffer, offset, data)

    async def run(self, programs: list[str], writes) -> None:
        for buffer, offset, data in writes:
            self.executor.write(buffer, offset, data)
        for program in programs:
            self.executor.run(program)

    async def read(self, buffer: int, offset: int, size: int) -> bytes:
        return self.executor.read(buffer, offset, size)


class NumpyExecutor:
    """Holds the plan's buffers as byte arrays and runs its programs step by step."""

    def __init__(self, plan: Plan | dict):
        self.plan = plan.to_json() if isinstance(plan, Plan) else plan
        total = sum(b["bytes"] for b in self.plan["buffers"] if b["role"] != "host")  # Plan.gpu_bytes
        budget = self.plan.get("budget")
        if budget is not None and total > budget:
            raise MemoryError(f"the plan needs {total} bytes but its budget is {budget}")
        self.memory = [np.zeros(b["bytes"], np.uint8) for b in self.plan["buffers"]]
        self.widened: dict[tuple, np.ndarray] = {}  # f16 weights as float32, made once: weights change only by fill

    def fill_from(self, file_bytes: bytes) -> None:
        self.fill(self.plan["fills"], lambda start, end: file_bytes[start:end])

    def fill(self, fills: list[dict], read_range) -> None:
        """Weights: file bytes [start, end) from read_range into buffers, converted as each fill says
        (plan.Plan.fill: widen, transpose into a k-major matrix, or quantize)."""
        self.widened.clear()
        for f in fills:
            chunk = np.frombuffer(read_range(f["start"], f["end"]), np.uint8)
            if f["convert"] == "f16-f32":
                chunk = chunk.view(np.float16).astype(np.float32).view(np.uint8)
            elif f["convert"] == "bf16-f32":
                chunk = (chunk.view("<u2").astype(np.uint32) << 16).view(np.uint8)
            memory = self.memory[f["buffer"]]
            if f.get("quantize"):
                codes, params = quantize(chunk.view(np.float32), f["quantize"])
                memory[f["offset"] : f["offset"] + len(codes)] = np.frombuffer(codes, np.uint8)
                memory[f["params_offset"] : f["params_offset"] + len(params)] = np.frombuffer(params, np.uint8)
            elif f.get("transpose"):
                rows, cols, padded = f["transpose"]
                element = chunk.size // (rows * cols)
                columns = np.ascontiguousarray(chunk.view(f"u{element}").reshape(rows, cols).T)
                for k in range(cols):  # column k of these rows lands in row k of the k-major matrix
                    at = f["offset"] + k * padded * element
                    memory[at : at + rows * element] = columns[k].view(np.uint8)
            else:
                memory[f["offset"] : f["offset"] + chunk.size] = chunk

    def view(self, buffer: int, offset: int, size: int) -> np.ndarray:
        return self.memory[buffer][offset : offset + size]

    def write(self, buffer: int, offset: int, data: bytes) -> None:
        self.memory[buffer][offset : offset + len(data)] = np.frombuffer(data, np.uint8)

    def read(self, buffer: int, offset: int, size: int) -> bytes:
        return self.view(buffer, offset, size).tobytes()

    def run(self, program: str) -> None:
        for step in self.plan["programs"][program]:
            if "copy" in step:
                src, src_offset, dst, dst_offset, size = step["copy"]
                self.view(dst, dst_offset, size)[:] = self.view(src, src_offset, size)
                continue
            kernel = self.plan["kernels"][step["kernel"]]
            views = [self.view(*binding) for binding in step["bindings"]]
            include = kernel["include"]
            if include and not include[0].endswith("f32.wgsl"):  # binding 0 is a weight buffer to widen
                key = tuple(step["bindings"][0])
                if key not in self.widened:
                    self.widened[key] = widen_weights(views[0], include[0], kernel["constants"]).view(np.uint8)
                views[0], include = self.widened[key], ["lib/weights_f32.wgsl"]
            KERNELS[(kernel["shader"], kernel["entry"])](kernel["constants"], include, *views)
