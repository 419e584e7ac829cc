"""Run a plan with numpy: a twin of every WGSL entry point, and an executor over plan data.

This is how the graph (model.py) is checked against the reference without a browser, and
the oracle the browser kernel tests compare against. The twins follow the shaders' contracts
(bindings, constants) and compute in float32 like them.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .config import DECAY_SCALE
from .ops import NOT_FINITE, SAMPLER_FORMAT, quantized_x_bytes, weights_prelude
from .plan import Plan
from .quant import SCHEMES, dequantize, quantize, quantize_columns
from .safetensors import bf16_to_f16, widen


def _f32(raw, count=None):
    view = raw.view(np.float32)
    return view if count is None else view[:count]


def _weights(raw, dtype_prelude):
    return widen(raw, "F16" if dtype_prelude.endswith("f16.wgsl") else "F32")


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
    if act == 5:
        return t / (1 + np.exp(-t))
    return t


def _tokens(c, count) -> int:
    """How many token rows a chunked kernel processes (the shaders' count / T_PAD contract)."""
    t_pad = c.get("T_PAD", 1)
    return min(int(count.view(np.uint32)[0]), t_pad) if c.get("COUNTED") else t_pad


def _token_rows(v, at: int, n: int, width: int, stride: int) -> np.ndarray:
    """A float32 view of n rows of `width` floats, `stride` floats apart, from float `at` on."""
    return np.lib.stride_tricks.as_strided(_f32(v)[at:], (n, width), (stride * 4, 4))


def matvec_groups(c) -> list[dict]:
    """matvec.wgsl's groups: rows [start, start + M) of the dispatch with their own x offset, out offset, activation."""
    starts = [0] + [c[f"START{i}"] for i in (1, 2, 3) if f"START{i}" in c] + [c["M"]]
    suffixes = [""] + [str(i) for i in range(1, len(starts) - 1)]
    return [
        {
            "start": starts[i],
            "M": starts[i + 1] - starts[i],
            "x": c.get("X_OFFSET" + suffix, 0),
            "out": c.get("ROW_OFFSET" + suffix, 0),
            "act": c.get("ACT" + suffix, 0),
            "suffix": suffix,
        }
        for i, suffix in enumerate(suffixes)
    ]


def matvec(c, include, weight, x, bias, out, count, toward):
    K, n = c["K"], _tokens(c, count)
    x_stride = c.get("X_STRIDE", K)
    weights = _weights(weight, weights_prelude(include))
    for group in matvec_groups(c):
        xs = np.lib.stride_tricks.as_strided(_f32(x)[group["x"] :], (n, K), (x_stride * 4, 4))
        if c["ROW_MAJOR"]:
            t = xs @ weights[group["start"] * K : (group["start"] + group["M"]) * K].reshape(group["M"], K).T
        else:  # each group's own [K, width] block, width padded to whole vec4s (only the last group's may be)
            width = c.get("M_PAD", -(-group["M"] // 4) * 4)  # M_PAD: a single k-major quantized matrix's blocks
            t = xs @ weights[group["start"] * K : (group["start"] + width) * K].reshape(K, width)[:, : group["M"]]
        _epilogue(c, group, t, n, bias, out, toward)


def _epilogue(c, group: dict, t: np.ndarray, n: int, bias, out, toward) -> None:
    """matvec.wgsl's `finish` for one group's sums t [n, group M]: bias, activation, gate or lerp, store or add."""
    rows_of = partial(_token_rows, n=n, width=group["M"], stride=c.get("OUT_STRIDE", c["ROW_OFFSET"] + c["M"]))
    if c["HAS_BIAS"]:  # bias[m] for the dispatch's row m: every group's biases one after another
        t = t + _f32(bias, c["M"])[group["start"] : group["start"] + group["M"]]
    t = _activate(t.astype(np.float32), group["act"])
    rows = rows_of(out, group["out"])
    if c.get("GATED"):
        t = t * rows_of(toward, group["out"])
    if c.get("LERP"):
        rows[:] = rows + (rows_of(toward, group["out"]) - rows) * t
    else:
        rows[:] = rows + t if c["ACCUMULATE"] else t


INV127 = np.uint32(0x3C010204).view(np.float32)  # quantize_x.wgsl's f32(1/127)
MANTISSA16 = np.uint32(0xFFFFFF00)  # quantize_x.wgsl's: sx keeps 16 significant bits


def quantize_x_block_scale(amax: np.ndarray) -> np.ndarray:
    """quantize_x.wgsl's sx for blocks whose largest magnitude is amax (float32)."""
    return ((amax.astype(np.float32) * INV127).view(np.uint32) & MANTISSA16).view(np.float32)


def quantize_x_rows(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [n, K] of x as quantize_x.wgsl quantizes them: (codes [n, K] int8, params [n, K/128, 4] float32 of
    sx, Σx, Σq, 0). The codes are bit-exact: x / sx in float64 is the exact quotient's rounding, which cannot
    move a non-tie across a half-integer (x has 24 bits, sx 16), and np.rint rounds ties to even like the kernel."""
    n, K = xs.shape
    blocks = xs.astype(np.float32).reshape(n, K // 128, 128)
    sx = quantize_x_block_scale(np.abs(blocks).max(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(sx[..., None] > 0, np.rint(blocks.astype(np.float64) / sx[..., None].astype(np.float64)), 0)
    q = np.clip(np.nan_to_num(q), -127, 127).astype(np.int8)
    params = np.zeros((n, K // 128, 4), np.float32)
    params[..., 0], params[..., 1], params[..., 2] = sx, blocks.sum(axis=2), q.sum(axis=2, dtype=np.int32)
    return q.reshape(n, K), params


def quantize_x(c, include, x, count, xq):
    K, n = c["K"], _tokens(c, count)
    T, x_stride = c.get("T_PAD", 1), c.get("X_STRIDE", K)
    row_bytes = quantized_x_bytes(K, 1)
    offsets = [c.get("X_OFFSET" + s, 0) for s in ("", "1", "2", "3")][: xq.size // (T * row_bytes)]
    for s, offset in enumerate(offsets):
        codes, params = quantize_x_rows(_token_rows(x, offset, n, K, x_stride))
        for t in range(n):
            row = (s * T + t) * row_bytes
            xq[row : row + K] = codes[t].view(np.uint8)
            xq[row + K : row + K + params[t].nbytes] = params[t].reshape(-1).view(np.uint8)


def matvec_dp4a(c, include, weight, xq, bias, out, count, toward):
    """lib/matvec_dp4a.wgsl: per block, min·Σx + range/255 · sx · Σ c·q with the integer sums exact. Each block's
    Σ c·q is a float32 matrix product of integers: |Σ| ≤ 128·255·127 < 2^24, so every partial sum is exact."""
    M, K, T, n = c["M"], c["K"], c.get("T_PAD", 1), _tokens(c, count)
    blocks, row = K // 128, quantized_x_bytes(K, 1)
    codes = weight[: M * K].reshape(M, blocks, 128)
    at = SCHEMES["int8"].param_offset(c["WEIGHT_ELEMENTS"])
    params = weight[at : at + M * blocks * 8].view(np.float32).reshape(M, blocks, 2).astype(np.float64)
    for group in matvec_groups(c):
        rows = slice(group["start"], group["start"] + group["M"])
        first = c.get("XQ_SLICE" + group["suffix"], 0) * T * row
        tokens = xq[first : first + n * row].reshape(n, row)
        q = tokens[:, :K].view(np.int8).reshape(n, blocks, 128).astype(np.float32)
        sx, sum_x = np.moveaxis(tokens[:, K:].view(np.float32).reshape(n, blocks, 4)[..., :2].astype(np.float64), 2, 0)
        cq = np.stack([q[:, b] @ codes[rows, b].T.astype(np.float32) for b in range(blocks)], axis=2)  # [n, M, blocks]
        low, spread = params[rows, :, 0], params[rows, :, 1]
        sums = (low * sum_x[:, None] + spread / 255 * sx[:, None] * cq).sum(axis=2).astype(np.float32)
        _epilogue(c, group, sums, n, bias, out, toward)


def norm(c, include, x, weight, bias, out, add, gate):
    G, P = c["GROUP"], c.get("PARAM_GROUPS", 1)
    n = _f32(out).size // G
    xs = _f32(x, n * G).reshape(-1, G)
    mean = xs.mean(axis=1, keepdims=True)
    var = ((xs - mean) ** 2).mean(axis=1, keepdims=True)
    y = (xs - mean) / np.sqrt(var + np.float32(c["EPS"]))
    params = lambda v: np.tile(_f32(v, P * G).reshape(P, G), (n // P, 1))  # noqa: E731 - repeated for every token
    y = (y * params(weight) + params(bias)).reshape(-1)
    if c.get("GATED"):
        y = (y + _f32(add, n * G)) * _f32(gate, n * G) if c.get("ADD", True) else y * _f32(gate, n * G)
    _f32(out, n * G)[:] = y


def token_shift(c, include, x, prev, mix, out, count):
    C, m, T, n = c["C"], c["N_MIX"], c.get("T_PAD", 1), _tokens(c, count)
    now, before = _f32(x, n * C).reshape(n, C).copy(), _f32(prev, C)
    earlier = np.concatenate([before[None], now[:-1]])  # each token's predecessor
    weights = (
        _f32(mix, m * T * C).reshape(m, T, C)[:, :n] if c.get("MIX_PER_TOKEN") else _f32(mix, m * C).reshape(m, 1, C)
    )
    if c.get("CURRENT"):  # the mix weights the current token (RWKV-4/5)
        mixed = earlier[None] + (now - earlier)[None] * weights
    else:
        mixed = now[None] + (earlier - now)[None] * weights
    _f32(out, m * T * C).reshape(m, T, C)[:, :n] = mixed
    if n and not c.get("KEEP_PREV"):
        before[:] = now[-1]


def norm_shift(c, include, x, params, prev, mix, out, count):
    """norm.wgsl's LayerNorm, then token_shift.wgsl over the normalised rows (norm_shift.wgsl's contract)."""
    C, T = c["C"], c.get("T_PAD", 1)
    normed = np.zeros(T * C, np.float32).view(np.uint8)
    weight, bias = params[: C * 4], params[C * 4 : 2 * C * 4]
    norm({"GROUP": C, "EPS": c["EPS"]}, include, x[: T * C * 4], weight, bias, normed, None, None)
    token_shift(c, include, normed, prev, mix, out, count)


def wkv7(c, include, vecs, params, state, out, count):
    C, N, T, n = c["C"], c["N"], c.get("T_PAD", 1), _tokens(c, count)
    H = C // N
    r, w, k, v, a = _f32(vecs, 5 * T * C).reshape(5, T, H, N)
    k_k, k_a, r_k = _f32(params, 3 * C).reshape(3, H, N)
    S = _f32(state, H * N * N).reshape(H, N, N)
    y_out, bonus_out = _f32(out, 2 * T * C).reshape(2, T, H, N)
    for t in range(n):
        kk = k[t] * k_k
        kk = kk / np.maximum(np.sqrt((kk * kk).sum(axis=1, keepdims=True)), np.float32(1e-12))
        k_mod = k[t] * (1 + (a[t] - 1) * k_a)
        sa = S @ -kk[:, :, None]  # [H, N, 1]
        S[:] = S * w[t][:, None, :] + sa * (kk * a[t])[:, None, :] + v[t][:, :, None] * k_mod[:, None, :]
        y_out[t] = (S @ r[t][:, :, None])[:, :, 0]
        bonus_out[t] = (r[t] * k_mod * r_k).sum(axis=1, keepdims=True) * v[t]


def wkv4(c, include, vecs, params, state, out, count):
    C, T, n = c["C"], c.get("T_PAD", 1), _tokens(c, count)
    r, k, v = _f32(vecs, 3 * T * C).reshape(3, T, C)
    u, time_decay = _f32(params, 2 * C).reshape(2, C)
    w = -np.exp(time_decay)
    abp = _f32(state, 3 * C).reshape(3, C)
    aa, bb, pp = abp.copy()
    rows = _f32(out, T * C).reshape(T, C)
    for t in range(n):
        q = np.maximum(pp, u + k[t])
        e1, e2 = np.exp(pp - q), np.exp(u + k[t] - q)
        rows[t] = r[t] * ((e1 * aa + e2 * v[t]) / (e1 * bb + e2))
        q = np.maximum(pp + w, k[t])
        e1, e2 = np.exp(pp + w - q), np.exp(k[t] - q)
        aa, bb, pp = e1 * aa + e2 * v[t], e1 * bb + e2, q
    abp[:] = aa, bb, pp


def wkv5(c, include, vecs, params, state, out, count):
    """S[h] is [key j, value i]: y = rᵀ(S + u·k·vᵀ), then S = diag(w)·S + k·vᵀ, w = exp(−exp(d))."""
    C, N, T, n = c["C"], c["N"], c.get("T_PAD", 1), _tokens(c, count)
    H = C // N
    r, d, k, v = _f32(vecs, 4 * T * C).reshape(4, T, H, N)
    time_decay, u = _f32(params, 2 * C).reshape(2, H, N)
    S = _f32(state, H * N * N).reshape(H, N, N)
    y_out = _f32(out, T * C).reshape(T, H, N)
    for t in range(n):
        w = np.exp(-np.exp(d[t] if c.get("PER_TOKEN_DECAY") else time_decay))
        kv = k[t][:, :, None] * v[t][:, None, :]
        y_out[t] = (r[t][:, None, :] @ (S + u[:, :, None] * kv))[:, 0, :]
        S[:] = S * w[:, :, None] + kv


def embed(c, include, weight, token, out):
    C, start, T = c["C"], c["ROW_START"], c.get("T_PAD", 1)
    table = None
    for t, row in enumerate(token.view(np.uint32)[:T]):
        if start <= row < start + c["ROWS"]:
            table = _weights(weight, weights_prelude(include)) if table is None else table
            _f32(out, T * C)[t * C : (t + 1) * C] = table[(row - start) * C : (row - start + 1) * C]


def rows_last(c, include, x, count, out):
    C, T = c["C"], c["T_PAD"]
    n = min(max(int(count.view(np.uint32)[0]), 1), T)
    _f32(out, C)[:] = _f32(x, T * C)[(n - 1) * C : n * C]


def rows_sum(c, include, x, count, out):
    C, T = c["C"], c["T_PAD"]
    n = min(int(count.view(np.uint32)[0]), T)
    total = _f32(out, C)
    total[:] = total + _f32(x, n * C).reshape(n, C).sum(axis=0)


def pcg(value: int) -> int:
    """The sampler's hash (PCG), on 32-bit unsigned integers as in sample.wgsl."""
    state = (value * 747796405 + 2891336453) & 0xFFFFFFFF
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & 0xFFFFFFFF
    return (word >> 22) ^ word


SAMPLER_NAMES = ("temperature", "top_p", "top_k", "presence", "frequency", "repetition", "seed", "step")
SAMPLER_FIELDS = np.dtype(
    [(name, "<" + code) for name, code in zip(SAMPLER_NAMES, SAMPLER_FORMAT[1:])]
)  # f4/u4 as in the struct


def sample(c, include, logits, counts, params, probs, token):
    """sample.wgsl's contract with exact top-k / top-p (a sort instead of bisection)."""
    V = c["V"]
    p = params.view(SAMPLER_FIELDS)[0]
    seen = counts.view(np.uint32)
    adjusted = _f32(logits, V).copy()
    if not np.isfinite(adjusted).all():  # sample.wgsl's NOT_FINITE: no draw, no count
        token.view(np.uint32)[0] = NOT_FINITE
        params.view(SAMPLER_FIELDS)["step"][0] = p["step"] + 1
        return
    hit = seen > 0
    adjusted[hit] = np.where(adjusted[hit] > 0, adjusted[hit] / p["repetition"], adjusted[hit] * p["repetition"])
    adjusted[hit] -= p["presence"] + p["frequency"] * seen[hit].astype(np.float32)
    choice = int(np.argmax(adjusted))
    if p["temperature"] > 0 and p["top_k"] != 1:
        probs_ = np.exp((adjusted - adjusted[choice]) / p["temperature"])
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
    ("matvec.wgsl", "dp4a"): matvec_dp4a,
    ("quantize_x.wgsl", "main"): quantize_x,
    ("norm.wgsl", "main"): norm,
    ("token_shift.wgsl", "main"): token_shift,
    ("norm_shift.wgsl", "main"): norm_shift,
    ("wkv7.wgsl", "main"): wkv7,
    ("wkv4.wgsl", "main"): wkv4,
    ("wkv5.wgsl", "main"): wkv5,
    ("embed.wgsl", "main"): embed,
    ("rows.wgsl", "last"): rows_last,
    ("rows.wgsl", "sum"): rows_sum,
    ("sample.wgsl", "main"): sample,
}


RAW_WEIGHTS = {("matvec.wgsl", "dp4a")}  # twins that read the codes and block parameters themselves


def widened_fill(chunk: np.ndarray, convert: str | None, buffer_name: str = "a weight") -> np.ndarray:
    """A fill's file bytes after its conversion (plan.Plan.fill: f16-f32, bf16-f32, bf16-f16 or none), as bytes."""
    if convert == "bf16-f16":
        return bf16_to_f16(chunk, buffer_name).view(np.uint8)
    return chunk if convert is None else widen(chunk, {"f16-f32": "F16", "bf16-f32": "BF16"}[convert]).view(np.uint8)


def quantized_column_writes(f: dict, chunk: np.ndarray) -> list[tuple[int, int, bytes]]:
    """A fill that both transposes and quantizes (plan.Plan.fill), as (buffer, offset, bytes) writes: row k of
    the k-major matrix gets its codes at offset + k·padded_rows·bits/8 and its block parameters at
    params_offset + k·padded_rows/block·param_bytes (one write each when the fill covers whole rows)."""
    rows, cols, padded = f["transpose"]
    scheme = SCHEMES[f["quantize"]]
    codes, params = quantize_columns(chunk.view(np.float32), rows, cols, f["quantize"])
    code_stride, param_stride = padded * scheme.bits // 8, padded // scheme.block * scheme.param_bytes
    if codes.shape[1] == code_stride:  # the fill holds every stored row: the columns are contiguous
        return [(f["buffer"], f["offset"], codes.tobytes()), (f["buffer"], f["params_offset"], params.tobytes())]
    return [(f["buffer"], f["offset"] + k * code_stride, codes[k].tobytes()) for k in range(cols)] + [
        (f["buffer"], f["params_offset"] + k * param_stride, params[k].tobytes()) for k in range(cols)
    ]


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
            raw = np.frombuffer(read_range(f["start"], f["end"]), np.uint8)
            chunk = widened_fill(raw, f["convert"], self.plan["buffers"][f["buffer"]]["name"])
            memory = self.memory[f["buffer"]]
            if f.get("quantize") and f.get("transpose"):
                for _, at, data in quantized_column_writes(f, chunk):
                    memory[at : at + len(data)] = np.frombuffer(data, np.uint8)
            elif f.get("quantize"):
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
            weights = weights_prelude(include) if include else None
            raw = (kernel["shader"], kernel["entry"]) in RAW_WEIGHTS
            if weights and not weights.endswith("f32.wgsl") and not raw:  # binding 0 is a weight buffer to widen
                key = tuple(step["bindings"][0])
                if key not in self.widened:
                    self.widened[key] = widen_weights(views[0], weights, kernel["constants"]).view(np.uint8)
                views[0], include = self.widened[key], ["lib/weights_f32.wgsl"]
            KERNELS[(kernel["shader"], kernel["entry"])](kernel["constants"], include, *views)
