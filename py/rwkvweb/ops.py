"""One function per shader entry point: check shapes, choose constants and workgroups, emit a step.

Every function takes the plan, the program name and Views (byte ranges of buffers) with the
sizes the kernel expects; a wrong size fails here, at plan time, with the expected numbers,
instead of as garbage on the GPU. Activations are float32 (4 bytes per element).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .plan import Plan, View
from .quant import SCHEMES

F32 = 4
WG = 64
WEIGHT_DTYPES = ("f32", "f16", "int8", "nf4")  # how a weight matrix is stored (quant.py: the last two)


def weight_bytes(dtype: str, n: int) -> int:
    """Bytes of a buffer holding n weights stored as dtype."""
    if dtype in SCHEMES:
        return SCHEMES[dtype].stored_bytes(n)
    return n * {"f32": 4, "f16": 2}[dtype]


def _weight_kernel(
    plan: Plan,
    shader: str,
    constants: dict,
    dtype: str,
    elements: int,
    native_f16: bool = False,
    more=(),
    entry="main",
    needs=(),
) -> int:
    """A kernel that reads weights through a prelude (lib/weights_<dtype>.wgsl, or with `native_f16` f16
    weights as vec4<f16>: lib/weights_native_f16.wgsl); quantized preludes also need the buffer's element
    count to find the block parameters. `more`: further preludes (a reduce prelude). Directive preludes
    (lib/enable_*.wgsl) go first: WGSL wants directives before every declaration."""
    if dtype in SCHEMES:
        constants = {**constants, "WEIGHT_ELEMENTS": elements}
    native = native_f16 and dtype == "f16"
    weights = "lib/weights_native_f16.wgsl" if native else f"lib/weights_{dtype}.wgsl"
    enables = (["lib/enable_f16.wgsl"] if native else []) + (
        ["lib/enable_subgroups.wgsl"] if "lib/reduce_subgroup.wgsl" in more else []
    )
    return plan.kernel(shader, constants, entry, include=(*enables, weights, *more), needs=needs)


def weights_prelude(include) -> str:
    """The weight prelude among a kernel's preludes (numpy_exec.py widens its buffer by it)."""
    return next(name for name in include if name.startswith("lib/weights_"))


ACTIVATIONS = {"none": 0, "tanh": 1, "sigmoid": 2, "relu2": 3, "decay": 4, "silu": 5}


def _groups(n: int, per_group: int = WG) -> tuple[int, int, int]:
    return (-(-n // per_group), 1, 1)


def _expect(view: View, nbytes: int, what: str) -> View:
    """The first nbytes of the view (bindings are exact), or a ValueError naming the mismatch."""
    if view.size < nbytes:
        raise ValueError(f"{what}: needs {nbytes} bytes, bound view has {view.size}")
    return View(view.buffer, view.offset, nbytes)


def _counted(count: View | None, fallback: View) -> tuple[View, dict]:
    """The count binding and constant of a chunked kernel: with `count`, only its first count[0]
    tokens are real (a prefill's last chunk); without, all T_PAD are and `fallback` stands in
    for the unread binding (WebGPU needs every declared binding bound)."""
    if count is None:
        return View(fallback.buffer, fallback.offset, 4), {"COUNTED": False}
    return _expect(count, 4, "token count"), {"COUNTED": True}


MAX_TILE = 16  # matvec.wgsl's MAX_TILE: tokens whose sums one invocation keeps in registers


def token_tile(tokens: int) -> int:
    """Tokens per matvec invocation for a chunk of `tokens` rows (T_PAD must be a multiple of it)."""
    return min(MAX_TILE, tokens)


def matvec(
    plan: Plan,
    program: str,
    weight: View,
    dtype: str,
    x: View,
    out: View,
    M: int,
    K: int,
    *,
    row_major: bool = True,
    row_threads: int = 1,
    subgroups: bool = False,
    native_f16: bool = False,
    act: str = "none",
    bias: View | None = None,
    accumulate: bool = False,
    row_offset: int = 0,
    out_stride: int | None = None,
    tokens: int = 1,
    count: View | None = None,
    toward: View | None = None,
    gate: View | None = None,
    x_offset: int = 0,
    x_stride: int | None = None,
    m_pad: int | None = None,
    xq: View | None = None,
) -> None:
    """out[t, row_offset + m] (+)= act(W·x[t] + bias) for the `tokens` rows of x (1: a decode step).

    row_major: W is [M, K], read by `row_threads` invocations per row (1, or a power of two up to
    the workgroup size, reduced in workgroup memory, or with `subgroups` by subgroupAdd: the adapter must
    offer the feature). Otherwise W is k-major [K, M_pad], M_pad = M
    rounded up to a multiple of 4 (x @ W, or a matrix transposed at load) unless `m_pad` says (k-major
    quantized weights pad to whole blocks so that none straddles two k). Rows of `out` are
    `out_stride` floats apart (default row_offset + M); `count` marks how many tokens are real;
    with `toward`, out moves toward it by the activation instead: out += (toward − out)·act(W·x + bias);
    with `gate`, act(W·x + bias) is multiplied by gate[t, m] first. Token t's inputs are x[t·x_stride +
    x_offset:][:K] (default x_stride = K: rows of exactly K; x_offset may pass x_stride: a later slot of x).
    `native_f16`: f16 weights are read as vec4<f16> (the adapter must offer shader-f16); the sums stay f32
    either way. `xq` (int8 rows-wg only, K a multiple of 128): x is quantized into this scratch first
    (quantize_x) and multiplied by packed int8 dot products (lib/matvec_dp4a.wgsl; the WGSL language feature
    packed_4x8_integer_dot_product)."""
    layout = _MatvecLayout.check("matvec", weight, dtype, bias, M, K, tokens, row_major, row_threads, m_pad)
    m_pad, tile = layout.m_pad, layout.tile
    stride = row_offset + M if out_stride is None else out_stride
    x_stride = K if x_stride is None else x_stride
    assert x_offset % 4 == 0 and x_stride % 4 == 0 and K <= x_stride, (x_offset, x_stride, K)  # offset: any row
    x = _expect(x, ((tokens - 1) * x_stride + x_offset + K) * F32, "matvec x")
    out = _expect(out, ((tokens - 1) * stride + row_offset + M) * F32, "matvec out")
    count, counted = _counted(count, x)
    assert toward is None or not accumulate, "a matvec either accumulates or moves toward a target"
    assert toward is None or gate is None, "toward and gate share a binding"
    other = toward if gate is None else gate
    other = x if other is None else _expect(other, out.size, "matvec toward" if gate is None else "matvec gate")
    constants = {
        "M": M,
        "K": K,
        "ROW_MAJOR": row_major,
        **({"LERP": True} if toward is not None else {}),
        **({"GATED": True} if gate is not None else {}),
        **({"X_OFFSET": x_offset} if x_offset else {}),
        **({"X_STRIDE": x_stride} if x_stride != K else {}),
        "ROW_THREADS": row_threads if row_major else 1,
        **({"M_PAD": m_pad} if not row_major and m_pad != -(-M // 4) * 4 else {}),
        "ACT": ACTIVATIONS[act],
        "HAS_BIAS": layout.bias is not None,
        "ACCUMULATE": accumulate,
        "ROW_OFFSET": row_offset,
        "WG": WG,
        **_chunk(tokens, counted, OUT_STRIDE=stride, TILE_T=tile),
    }
    read = x
    if xq is not None:
        _check_dp4a(dtype, row_major, row_threads, K)
        read = quantize_x(plan, program, x, xq, K, [x_offset], x_stride, tokens, count if counted["COUNTED"] else None)
    layout.dispatch(plan, program, constants, subgroups, native_f16, xq is not None, read, out, count, x, other)


@dataclass(frozen=True)
class _MatvecLayout:
    """What matvec and matvec_group share: the checked weight and bias, the rows stored (k-major: M padded to
    whole vec4s at least, or to `m_pad`), the token rows one invocation keeps, and the dispatch."""

    weight: View
    bias: View | None
    dtype: str
    M: int
    K: int
    m_pad: int
    tile: int
    tokens: int
    row_major: bool
    row_threads: int

    @classmethod
    def check(cls, what, weight, dtype, bias, M, K, tokens, row_major, row_threads, m_pad=None) -> "_MatvecLayout":
        assert K % 4 == 0, f"K={K} must be a multiple of 4"
        assert row_threads >= 1 and WG % row_threads == 0 and row_threads & (row_threads - 1) == 0, row_threads
        tile = 1 if row_major and row_threads > 1 else token_tile(tokens)
        assert tokens % tile == 0, f"{tokens} token rows are not whole tiles of {tile}"
        m_pad = M if row_major else -(-M // 4) * 4 if m_pad is None else m_pad
        assert row_major or (m_pad >= M and m_pad % 4 == 0), f"m_pad={m_pad} for M={M}"
        weight = _expect(weight, weight_bytes(dtype, m_pad * K), f"{what} weight [{M}x{K}] {dtype}")
        bias = None if bias is None else _expect(bias, M * F32, f"{what} bias")
        return cls(weight, bias, dtype, M, K, m_pad, tile, tokens, row_major, row_threads)

    def dispatch(self, plan, program, constants, subgroups, native_f16, dp4a, x, out, count, stand_in, other=None):
        """matvec.wgsl over x (or its quantized copy) into out; `stand_in` fills the bindings left unread."""
        kernel = _matvec_kernel(plan, constants, self.dtype, self.m_pad * self.K, subgroups, native_f16, dp4a)
        rows = _groups(self.m_pad // 4) if not self.row_major else _groups(self.M, WG // self.row_threads)
        bindings = [self.weight, x, self.bias or stand_in, out, count, other or stand_in]
        plan.dispatch(program, kernel, bindings, (rows[0], self.tokens // self.tile, 1))


def _matvec_kernel(
    plan: Plan, constants: dict, dtype: str, elements: int, subgroups: bool, native_f16: bool, dp4a: bool = False
) -> int:
    """matvec.wgsl with its weight prelude and its reduce prelude (rows-wg sums a row's lanes in workgroup
    memory, or with `subgroups` by subgroupAdd: the adapter must offer the feature); with `dp4a`, its
    entry point `dp4a` (lib/matvec_dp4a.wgsl) over quantized x. The layouts with one invocation per row or
    column get a prelude with no barrier: SwiftShader runs any shader that holds one slower, even where the
    barrier's branch never runs (the README's performance section has the numbers)."""
    shared_rows = constants["ROW_MAJOR"] and constants["ROW_THREADS"] > 1
    assert not subgroups or shared_rows, "subgroups reduce the rows-wg layout's rows"
    reduce = f"lib/reduce_{'subgroup' if subgroups else 'workgroup' if shared_rows else 'none'}.wgsl"
    more, entry, needs = (reduce,), "main", ()
    if dp4a:
        more, entry, needs = (reduce, "lib/matvec_dp4a.wgsl"), "dp4a", (DP4A_FEATURE,)
    return _weight_kernel(plan, "matvec.wgsl", constants, dtype, elements, native_f16, more, entry, needs)


# --- packed int8 dot products (+dp4a): x quantized per token per block, then lib/matvec_dp4a.wgsl ---------------

DP4A_FEATURE = "packed_4x8_integer_dot_product"  # the WGSL language feature of dot4I8Packed and pack4xI8
XQ_BLOCK = 128  # quantize_x.wgsl's block: int8 weights' (quant.py), so a block of x meets one block of a row


def _check_dp4a(dtype: str, row_major: bool, row_threads: int, K: int) -> None:
    assert dtype == "int8" and row_major and row_threads > 1, "dp4a multiplies int8 weights in the rows-wg layout"
    assert K % XQ_BLOCK == 0, f"dp4a needs K a multiple of {XQ_BLOCK} (K={K}): whole blocks of x and of the rows"


def quantized_x_bytes(K: int, tokens: int, slices: int = 1) -> int:
    """Bytes of quantize_x's output for `slices` inputs of `tokens` rows of K: per row K codes and, per block,
    four f32 (sx, Σx, Σq, 0)."""
    return slices * tokens * (K + K // XQ_BLOCK * 16)


def quantize_x(
    plan: Plan,
    program: str,
    x: View,
    xq: View,
    K: int,
    x_offsets: list[int],
    x_stride: int,
    tokens: int = 1,
    count: View | None = None,
) -> View:
    """xq = each slice x[t, x_offsets[s]:][:K] of the `tokens` rows (x_stride floats apart) quantized to int8
    per block of 128 (quantize_x.wgsl); returns the part of xq written, which lib/matvec_dp4a.wgsl reads."""
    assert K % XQ_BLOCK == 0 and 1 <= len(x_offsets) <= MAX_PARTS, (K, x_offsets)
    assert all(o % 4 == 0 for o in x_offsets) and x_stride % 4 == 0, (x_offsets, x_stride)
    x = _expect(x, ((tokens - 1) * x_stride + max(x_offsets) + K) * F32, "quantize_x x")
    xq = _expect(xq, quantized_x_bytes(K, tokens, len(x_offsets)), "quantize_x xq (the dp4a scratch)")
    count, counted = _counted(count, x)
    constants = {
        "K": K,
        **({"X_STRIDE": x_stride} if x_stride != K else {}),
        **{f"X_OFFSET{i or ''}": o for i, o in enumerate(x_offsets) if o},
        **({"T_PAD": tokens} if tokens > 1 else {}),
        **({"COUNTED": True} if counted["COUNTED"] else {}),
    }
    kernel = plan.kernel("quantize_x.wgsl", constants, needs=(DP4A_FEATURE,))
    plan.dispatch(program, kernel, [x, count, xq], (K // XQ_BLOCK, tokens, len(x_offsets)))
    return xq


@dataclass(frozen=True)
class Part:
    """One matrix of a grouped matvec: M rows reading x from float x_offset, writing out from float out_offset."""

    M: int
    x_offset: int
    out_offset: int
    act: str = "none"


MAX_PARTS = 4  # matvec.wgsl's groups (START1..3)


def matvec_group(
    plan: Plan,
    program: str,
    weight: View,
    dtype: str,
    x: View,
    out: View,
    parts: list[Part],
    K: int,
    *,
    x_stride: int,
    out_stride: int,
    row_major: bool = True,
    row_threads: int = 1,
    subgroups: bool = False,
    native_f16: bool = False,
    tokens: int = 1,
    count: View | None = None,
    bias: View | None = None,
    xq: View | None = None,
) -> None:
    """Several matrices with the same K in one dispatch: for each part p,
    out[t, p.out_offset + m] = p.act(W_p·x[t, p.x_offset:][:K] + bias_p[m])  (`bias`: every part's biases one
    after another, ΣM floats), token t's rows x_stride floats apart in x and out_stride in out. The weight
    buffer holds the parts one after another, each as matvec stores it alone (row-major [M, K] rows, or a
    k-major [K, M] block; quantized: all codes in order, then all block parameters), so k-major parts before
    the last have M % 4 == 0 (model.py `_Builder.store_group`). `xq`: as matvec's, one quantize_x dispatch for
    all the parts (parts reading the same x share its slice)."""
    assert 1 <= len(parts) <= MAX_PARTS, f"a grouped matvec takes 1 to {MAX_PARTS} matrices, not {len(parts)}"
    assert x_stride % 4 == 0, x_stride
    assert row_major or all(p.M % 4 == 0 for p in parts[:-1]), "k-major parts before the last need M % 4 == 0"
    M = sum(p.M for p in parts)
    layout = _MatvecLayout.check("grouped matvec", weight, dtype, bias, M, K, tokens, row_major, row_threads)
    for p in parts:
        assert p.x_offset % 4 == 0, p
        _expect(x, ((tokens - 1) * x_stride + p.x_offset + K) * F32, "grouped matvec x")
        _expect(out, ((tokens - 1) * out_stride + p.out_offset + p.M) * F32, "grouped matvec out")
    count, counted = _counted(count, x)
    starts = [sum(p.M for p in parts[:i]) for i in range(1, len(parts))]
    constants = {
        "M": M,
        "K": K,
        "ROW_MAJOR": row_major,
        "X_STRIDE": x_stride,
        "X_OFFSET": parts[0].x_offset,
        "ROW_OFFSET": parts[0].out_offset,
        "OUT_STRIDE": out_stride,
        "ACT": ACTIVATIONS[parts[0].act],
        **{f"START{i}": start for i, start in enumerate(starts, 1)},
        **{f"X_OFFSET{i}": p.x_offset for i, p in enumerate(parts[1:], 1)},
        **{f"ROW_OFFSET{i}": p.out_offset for i, p in enumerate(parts[1:], 1)},
        **{f"ACT{i}": ACTIVATIONS[p.act] for i, p in enumerate(parts[1:], 1)},
        "ROW_THREADS": row_threads if row_major else 1,
        "HAS_BIAS": bias is not None,
        "ACCUMULATE": False,
        "WG": WG,
        **_chunk(tokens, counted, TILE_T=layout.tile),
    }
    read = x
    if xq is not None:
        _check_dp4a(dtype, row_major, row_threads, K)
        offsets = list(dict.fromkeys(p.x_offset for p in parts))  # each distinct x once, in order
        slices = {f"XQ_SLICE{i or ''}": offsets.index(p.x_offset) for i, p in enumerate(parts)}
        constants.update({name: s for name, s in slices.items() if s})
        read = quantize_x(plan, program, x, xq, K, offsets, x_stride, tokens, count if counted["COUNTED"] else None)
    layout.dispatch(plan, program, constants, subgroups, native_f16, xq is not None, read, out, count, x)


def _chunk(tokens: int, counted: dict, **more) -> dict:
    """The override constants of a chunked kernel, left out at their WGSL defaults for a decode step
    (so the decode plan's kernels are the ones it always had)."""
    if tokens == 1 and not counted["COUNTED"]:
        return {}
    return {"T_PAD": tokens, **counted, **more}


def norm(
    plan: Plan,
    program: str,
    x: View,
    weight: View,
    bias: View,
    out: View,
    group: int,
    n_groups: int,
    eps: float,
    tokens: int = 1,
    add: View | None = None,
    gate: View | None = None,
) -> None:
    """LayerNorm (n_groups 1) or GroupNorm (one group per head) with affine weight and bias, for
    each of `tokens` rows; with `add` and `gate`: out = (norm + add) · gate (RWKV-7's (GN(y) + bonus) ⊙ g);
    with `gate` alone: out = norm · gate (RWKV-5.2/6's GN(y) ⊙ silu(g))."""
    size = group * n_groups * F32
    x, out = (_expect(v, tokens * size, f"norm {what}") for v, what in ((x, "x"), (out, "out")))
    weight, bias = (_expect(v, size, f"norm {what}") for v, what in ((weight, "weight"), (bias, "bias")))
    assert add is None or gate is not None, "an added term comes with the gated epilogue"
    gated, added = gate is not None, add is not None
    add, gate = (
        _expect(v, tokens * size, f"norm {what}") if v is not None else x for v, what in ((add, "add"), (gate, "gate"))
    )
    constants = {
        "GROUP": group,
        "EPS": eps,
        "WG": WG,
        **({"PARAM_GROUPS": n_groups} if n_groups > 1 else {}),
        **({"GATED": True} if gated else {}),
        **({"ADD": False} if gated and not added else {}),
    }
    plan.dispatch(
        program, plan.kernel("norm.wgsl", constants), [x, weight, bias, out, add, gate], (n_groups * tokens, 1, 1)
    )


def token_shift(
    plan: Plan,
    program: str,
    x: View,
    prev: View,
    mix: View,
    out: View,
    C: int,
    n_mix: int,
    tokens: int = 1,
    count: View | None = None,
    current: bool = False,
    mix_per_token: bool = False,
    keep_prev: bool = False,
) -> None:
    """out[j, t] = x[t] + (x[t−1] − x[t])·mix[j] for each of n_mix coefficient vectors, x[−1] = prev;
    then prev = the last real token's x (unless keep_prev). `current`: out[j, t] = x[t−1] + (x[t] − x[t−1])·mix[j]
    (RWKV-4/5's time_mix_*); `mix_per_token`: mix is [n_mix, tokens, C] (RWKV-6's ddlerp)."""
    x = _expect(x, tokens * C * F32, "token_shift x")
    prev = _expect(prev, C * F32, "token_shift prev")
    mix = _expect(mix, n_mix * (tokens if mix_per_token else 1) * C * F32, "token_shift mix")
    out = _expect(out, n_mix * tokens * C * F32, "token_shift out")
    count, counted = _counted(count, x)
    flags = {"CURRENT": current, "MIX_PER_TOKEN": mix_per_token, "KEEP_PREV": keep_prev}
    constants = {"C": C, "N_MIX": n_mix, "WG": WG, **_chunk(tokens, counted), **{k: v for k, v in flags.items() if v}}
    kernel = plan.kernel("token_shift.wgsl", constants)
    plan.dispatch(program, kernel, [x, prev, mix, out, count], _groups(C))


def _recurrence(
    plan: Plan,
    program: str,
    shader: str,
    bindings: list[tuple[View, int, str]],
    constants: dict,
    tokens: int,
    count: View | None,
    workgroups: tuple[int, int, int],
    flags: dict | None = None,
) -> None:
    """One WKV kernel over a chunk: each (view, float32s, what) of vecs | params | state | out checked to
    its size, the token count bound after them, and `flags` (switches left out when off) after the chunk
    constants."""
    views = [_expect(view, floats * F32, what) for view, floats, what in bindings]
    count, counted = _counted(count, views[0])
    kernel = plan.kernel(shader, {**constants, **_chunk(tokens, counted), **(flags or {})})
    plan.dispatch(program, kernel, [*views, count], workgroups)


def norm_shift(
    plan: Plan,
    program: str,
    x: View,
    params: View,
    prev: View,
    mix: View,
    out: View,
    C: int,
    n_mix: int,
    eps: float,
    tokens: int = 1,
    count: View | None = None,
) -> None:
    """LayerNorm (params: weight | bias [2, C]) of each row of x, then token_shift of the normalised rows:
    out[j, t] = y[t] + (y[t−1] − y[t])·mix[j], y[−1] = prev; then prev = the last real token's y
    (norm_shift.wgsl: RWKV-7's ln1 and ln2 with the shifts after them, one dispatch each)."""
    x = _expect(x, tokens * C * F32, "norm_shift x")
    params = _expect(params, 2 * C * F32, "norm_shift params (weight | bias)")
    prev = _expect(prev, C * F32, "norm_shift prev")
    mix = _expect(mix, n_mix * C * F32, "norm_shift mix")
    out = _expect(out, n_mix * tokens * C * F32, "norm_shift out")
    count, counted = _counted(count, x)
    constants = {"C": C, "N_MIX": n_mix, "EPS": eps, "WG": WG, **_chunk(tokens, counted)}
    kernel = plan.kernel("norm_shift.wgsl", constants)
    plan.dispatch(program, kernel, [x, params, prev, mix, out, count], (tokens, 1, 1))


def wkv7(
    plan: Plan,
    program: str,
    vecs: View,
    params: View,
    state: View,
    out: View,
    C: int,
    head_size: int,
    tokens: int = 1,
    count: View | None = None,
) -> None:
    """The WKV-7 recurrence over a chunk: vecs r|w|k|v|a [5, T, C], params k_k|k_a|r_k -> out y|bonus [2, T, C]."""
    assert C % head_size == 0
    bindings = [
        (vecs, 5 * tokens * C, "wkv7 vecs (r|w|k|v|a)"),
        (params, 3 * C, "wkv7 params (k_k|k_a|r_k)"),
        (state, C * head_size, "wkv7 state [H, N, N]"),
        (out, 2 * tokens * C, "wkv7 out (y|bonus)"),
    ]
    constants = {"C": C, "N": head_size}
    _recurrence(plan, program, "wkv7.wgsl", bindings, constants, tokens, count, (C // head_size, 1, 1))


def wkv4(
    plan: Plan,
    program: str,
    vecs: View,
    params: View,
    state: View,
    out: View,
    C: int,
    tokens: int = 1,
    count: View | None = None,
) -> None:
    """The WKV-4 recurrence over a chunk: vecs r|k|v [3, T, C] (r after its sigmoid), params
    time_first|time_decay [2, C], state aa|bb|pp [3, C] -> out r ⊙ wkv [T, C]."""
    bindings = [
        (vecs, 3 * tokens * C, "wkv4 vecs (r|k|v)"),
        (params, 2 * C, "wkv4 params (time_first|time_decay)"),
        (state, 3 * C, "wkv4 state (aa|bb|pp)"),
        (out, tokens * C, "wkv4 out (r ⊙ wkv)"),
    ]
    _recurrence(plan, program, "wkv4.wgsl", bindings, {"C": C, "WG": WG}, tokens, count, _groups(C))


def wkv5(
    plan: Plan,
    program: str,
    vecs: View,
    params: View,
    state: View,
    out: View,
    C: int,
    head_size: int,
    per_token_decay: bool,
    tokens: int = 1,
    count: View | None = None,
) -> None:
    """The RWKV-5.2/6 WKV over a chunk: vecs r|d|k|v [4, T, C], params time_decay|time_faaaa [2, C] -> y [T, C].
    The decay is exp(−exp(d)) of time_decay (5.2) or, per_token_decay, of vecs' d slot (6)."""
    assert C % head_size == 0
    bindings = [
        (vecs, 4 * tokens * C, "wkv5 vecs (r|d|k|v)"),
        (params, 2 * C, "wkv5 params (time_decay|time_faaaa)"),
        (state, C * head_size, "wkv5 state [H, N, N]"),
        (out, tokens * C, "wkv5 out (y)"),
    ]
    flags = {"PER_TOKEN_DECAY": True} if per_token_decay else {}
    constants = {"C": C, "N": head_size}
    _recurrence(plan, program, "wkv5.wgsl", bindings, constants, tokens, count, (C // head_size, 1, 1), flags)


def embed(
    plan: Plan,
    program: str,
    table: View,
    dtype: str,
    token: View,
    out: View,
    rows: int,
    C: int,
    row_start: int = 0,
    tokens: int = 1,
) -> None:
    """out[t] = table[token[t]] when row_start <= token[t] < row_start + rows (the table may come in parts)."""
    assert C % 4 == 0
    table = _expect(table, weight_bytes(dtype, rows * C), f"embedding table [{rows}x{C}] {dtype}")
    token = _expect(token, tokens * 4, "embed token")
    out = _expect(out, tokens * C * F32, "embed out")
    constants = {"C": C, "ROW_START": row_start, "ROWS": rows, "WG": WG, **({"T_PAD": tokens} if tokens > 1 else {})}
    kernel = _weight_kernel(plan, "embed.wgsl", constants, dtype, rows * C)
    plan.dispatch(program, kernel, [table, token, out], (_groups(C // 4)[0], tokens, 1))


def rows(plan: Plan, program: str, entry: str, x: View, count: View, out: View, C: int, tokens: int) -> None:
    """entry "last": out = x[count − 1];  "sum": out += Σ_{t < count} x[t]  (rows.wgsl)."""
    assert entry in ("last", "sum"), entry
    views = [
        _expect(x, tokens * C * F32, f"rows.{entry} x"),
        _expect(count, 4, "token count"),
        _expect(out, C * F32, f"rows.{entry} out"),
    ]
    plan.dispatch(
        program, plan.kernel("rows.wgsl", {"C": C, "T_PAD": tokens, "WG": WG}, entry=entry), views, _groups(C)
    )


# sample.wgsl's Params struct: temperature, top_p, top_k, presence, frequency, repetition, seed, step
SAMPLER_FORMAT = "<ffIfffII"
SAMPLER_PARAMS = struct.calcsize(SAMPLER_FORMAT)  # 32 bytes
NOT_FINITE = 0xFFFFFFFF  # what sample.wgsl writes instead of a token when a logit is NaN or infinite


def sample(
    plan: Plan, program: str, logits: View, counts: View, params: View, probs: View, token: View, V: int
) -> None:
    """token = a draw from softmax(penalised logits / T) restricted by top-k / top-p (greedy at T = 0)."""
    logits = _expect(logits, V * F32, "sample logits")
    counts = _expect(counts, V * 4, "sample counts")
    params = _expect(params, SAMPLER_PARAMS, "sample params")
    probs = _expect(probs, V * F32, "sample probs")
    token = _expect(token, 4, "sample token")
    kernel = plan.kernel("sample.wgsl", {"V": V, "WG": 256})
    plan.dispatch(program, kernel, [logits, counts, params, probs, token], (1, 1, 1))
