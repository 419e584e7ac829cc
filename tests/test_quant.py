"""The int8 / NF4 formats (quant.py): sizes, error bounds and the JavaScript quantizer's bit-exactness.

The numpy functions are the oracle for the loader (web/gpu/quantize.js) and the shader preludes
(lib/weights_int8.wgsl, lib/weights_nf4.wgsl); these tests pin the oracle to the formats' maths.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from rwkvweb.quant import NF4_LEVELS, SCHEMES, dequantize, quantize


def roundtrip(values, scheme):
    codes, params = quantize(values, scheme)
    buffer = codes + params
    assert len(buffer) == SCHEMES[scheme].stored_bytes(len(values))
    return dequantize(buffer, scheme, len(values))


@pytest.mark.parametrize("n", [128, 1000, 4, 129, 64 * 7 + 3])
def test_int8_error_is_at_most_half_a_step(n):
    """Rounding to the nearest of 256 levels spanning the block: |error| <= range/510 (+ f32 rounding)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    y = roundtrip(x, "int8")
    for first in range(0, n, 128):
        block = x[first : first + 128]
        step = float(block.max() - block.min()) / 255
        assert np.abs(y[first : first + 128] - block).max() <= step / 2 * (1 + 1e-5) + 1e-6
        assert y[first : first + 128].min() == pytest.approx(block.min(), abs=1e-6)  # the extremes are exact levels
        assert y[first : first + 128].max() == pytest.approx(block.max(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("n", [64, 640, 8, 65, 333])
def test_nf4_picks_the_nearest_level(n):
    """Every code is the level nearest to w/absmax, and the block's largest |w| is exact."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    y = roundtrip(x, "nf4")
    levels = np.array(NF4_LEVELS)
    for first in range(0, n, 64):
        block = x[first : first + 64].astype(np.float64)
        absmax = np.abs(block).max()
        nearest = levels[np.abs(block[:, None] / absmax - levels[None, :]).argmin(axis=1)] * absmax
        np.testing.assert_allclose(y[first : first + 64], nearest, rtol=1e-6, atol=1e-7)
        assert np.abs(y[first : first + 64]).max() == pytest.approx(absmax, rel=1e-6)


def test_constant_and_zero_blocks():
    for scheme in SCHEMES:
        for value in (0.0, 2.5, -1.0):
            x = np.full(200, value, np.float32)
            np.testing.assert_array_equal(roundtrip(x, scheme), x)


def test_sizes():
    assert SCHEMES["int8"].stored_bytes(768 * 768) == 768 * 768 + 768 * 768 // 128 * 8  # 1.0625 bytes per weight
    assert SCHEMES["nf4"].stored_bytes(768 * 768) == 768 * 768 // 2 + 768 * 768 // 64 * 4  # 0.5625 bytes per weight
    assert SCHEMES["nf4"].code_bytes(3) == 4  # codes padded to a whole word


JS_QUANTIZE = """
async ({values, scheme}) => {
  const { quantize } = await import("/gpu/quantize.js");
  const raw = Uint8Array.from(atob(values), (c) => c.charCodeAt(0));
  const { codes, params } = quantize(new Float32Array(raw.buffer), scheme);
  const b64 = (u) => {
    let s = "";
    for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
    return btoa(s);
  };
  return [b64(codes), b64(new Uint8Array(params.buffer))];
}
"""


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_javascript_quantizer_matches_numpy_bit_for_bit(page, server, scheme):
    """The loader's quantizer and the oracle agree on every code and parameter, including
    ties (values on a level midpoint), constant blocks, f16-exact inputs and a partial block."""
    from rwkvweb.headless import open_blank

    open_blank(page, server.url)
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            rng.standard_normal(64 * 300).astype(np.float16).astype(np.float32),  # what an f16 file widens to
            np.full(128, 0.25, np.float32),  # a constant block
            np.array(NF4_LEVELS * 8, np.float32) * 0.5 + 0.0,  # levels and, below, midpoints
            (np.array([(a + b) / 2 for a, b in zip(NF4_LEVELS, NF4_LEVELS[1:])] * 4 + [1.0], np.float32)),
            (np.arange(256 * 3, dtype=np.float32) / 7),  # evenly spaced: int8 codes land on .5 boundaries
            rng.standard_normal(77).astype(np.float32),  # a partial last block
        ]
    )
    codes, params = page.evaluate(JS_QUANTIZE, {"values": base64.b64encode(x.tobytes()).decode(), "scheme": scheme})
    expected_codes, expected_params = quantize(x, scheme)
    assert base64.b64decode(codes) == expected_codes
    assert base64.b64decode(params) == expected_params


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_k_major_blocks_filled_in_chunks_equal_one_fill(scheme):
    """A [M, K] matrix stored k-major with blocks along its k-major rows (Plan.fill with transpose and
    quantize), filled in chunks of whole blocks of rows as the loader does, holds the same bytes as one
    fill of all rows; each stored row k dequantizes to column k of the matrix within the format's error,
    its blocks' parameters taken from real values only (the padding repeats the column's last value)."""
    from rwkvweb.numpy_exec import NumpyExecutor
    from rwkvweb.plan import Plan

    M, K = 300, 8
    block = SCHEMES[scheme].block
    padded = -(-M // block) * block
    w = np.random.default_rng(7).standard_normal((M, K)).astype(np.float32)
    buffers = []
    for chunk in (M, 2 * block):
        plan = Plan()
        view = plan.buffer("w", SCHEMES[scheme].stored_bytes(padded * K), "weight")
        params = SCHEMES[scheme].param_offset(padded * K)
        for r0 in range(0, M, chunk):
            n = min(chunk, M - r0)
            at = view.offset + SCHEMES[scheme].code_bytes(r0)
            to = params + r0 // block * SCHEMES[scheme].param_bytes
            plan.fill(plan_view(view, at), r0 * K * 4, (r0 + n) * K * 4, None, (n, K, padded), scheme, to)
        executor = NumpyExecutor(plan)
        executor.fill_from(w.tobytes())
        buffers.append(executor.memory[0])
    assert np.array_equal(buffers[0], buffers[1])
    stored = dequantize(buffers[0], scheme, padded * K).reshape(K, padded)
    step = {"int8": np.ptp(w) / 255, "nf4": np.abs(w).max() * 0.2}[scheme]  # a coarse bound: a code's step
    assert np.abs(stored[:, :M] - w.T).max() <= step
    last = stored[:, M - 1 : padded]  # the padding repeats the last real value's code
    assert np.array_equal(last, np.repeat(last[:, :1], last.shape[1], axis=1))


def plan_view(view, at):
    from rwkvweb.plan import View

    return View(view.buffer, at, view.offset + view.size - at)
