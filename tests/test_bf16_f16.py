"""bf16 checkpoints stored as f16 on the GPU (precision fp16, or the planner's first step down).

Official checkpoints are bf16; widening them to f32 doubles their GPU bytes for no accuracy, so
bf16 -> f16 is a precision of its own: rounded to nearest (ties to even), and a finite value beyond
f16's range (65504) refused with a message rather than made infinite. The numpy executor
(safetensors.bf16_to_f16) and the browser's loader (web/gpu/bridge.js) must give the same bits
for every one of the 65536 bf16 patterns.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from conftest import run_async
from gpu_harness import blank_page, run_model_in_browser
from pth_writer import as_bf16, bf16_bytes, write_pth
from rwkvweb.api import Model
from rwkvweb.budget import plan_budget
from rwkvweb.config import ModelConfig
from rwkvweb.reference import RWKV7
from rwkvweb.pth import open_model_file
from rwkvweb.safetensors import bf16_to_f16
from rwkvweb.testmodel import random_weights

ALL_PATTERNS = np.arange(65536, dtype="<u2")
FINITE = (ALL_PATTERNS & 0x7F80) != 0x7F80  # NaN payloads need not agree; the corpus refuses NaN weights
IN_RANGE = FINITE & (np.abs((ALL_PATTERNS.astype(np.uint32) << 16).view(np.float32)) < 65520)  # 65520 rounds to inf


def test_rounding_is_to_nearest_even_and_overflow_is_refused():
    values = np.array([1.0, 1 + 2**-7, -3.5, 60000.0, 2.0**-24, 2.0**-25, 3 * 2.0**-25, -0.0], np.float32)
    half = bf16_to_f16(bf16_bytes(values))
    np.testing.assert_array_equal(half, as_bf16(values).astype(np.float16))
    # bf16 has fewer mantissa bits than f16, so ties only occur among f16's subnormals: to even
    assert half[5] == 0 and half[6] == np.float16(2.0**-23), half[5:7]
    with pytest.raises(ValueError, match="beyond float16's range: load it at precision fp32, int8 or nf4"):
        bf16_to_f16(np.array([0x4780], "<u2").tobytes(), "head.weight")  # 65536.0


NARROW_JS = """
async ([data, size]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const { requestDevice } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  const gpu = await requestDevice();
  const bridge = new Bridge(gpu.device, new URL("/shaders/", location.href), gpu.adapter);
  const plan = { buffers: [{ id: 0, name: "w", bytes: size, role: "weight" }], fills: [], kernels: [], programs: {} };
  await bridge.load(plan);
  const fill = { buffer: 0, offset: 0, start: 0, end: bytes.length, convert: "bf16-f16" };
  try {
    await bridge.fill([fill], (start, end) => bytes.slice(start, end));
  } catch (error) {
    return { error: error.message };
  }
  const out = new Uint8Array(await bridge.read(0, 0, size));
  bridge.destroy();
  return { bits: btoa(String.fromCharCode(...out)) };
}
"""


@pytest.mark.browser
def test_the_browser_narrows_every_bf16_pattern_like_numpy(browser, server):
    patterns = ALL_PATTERNS[IN_RANGE]
    page = blank_page(browser.new_page(), server)
    try:
        got = page.evaluate(NARROW_JS, [base64.b64encode(patterns.tobytes()).decode(), patterns.nbytes])
        refused = page.evaluate(NARROW_JS, [base64.b64encode(np.array([0x3F80, 0xC780], "<u2")).decode(), 4])
    finally:
        page.close()
    bits = np.frombuffer(base64.b64decode(got["bits"]), "<u2")
    np.testing.assert_array_equal(bits, bf16_to_f16(patterns.tobytes()).view("<u2"))
    assert refused["error"].startswith("w holds a value beyond float16's range (bf16 bits 0xc780)"), refused


@pytest.mark.browser
@pytest.mark.parametrize("matvec", ["cols", "rows-wg"])
def test_a_bf16_model_at_fp16_runs_like_the_numpy_plan(browser, server, model_dir, matvec):
    config = ModelConfig.default_for(2, 128, 301)
    weights = {n: as_bf16(w) for n, w in random_weights(config, seed=7).items()}
    path = model_dir / f"bf16-{matvec}.pth"
    write_pth(path, weights, bf16=True)  # an official checkpoint's layout: every tensor bf16
    tensors = open_model_file(str(path)).tensors
    planned = plan_budget(config, tensors, precision="fp16", matvec=matvec)
    assert set(planned.precisions.values()) == {"f16"}
    assert planned.compiled.weight_bytes["head.weight"] <= 304 * 128 * 2  # 2 bytes a weight (rows padded to 4)
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 301, 12)]
    page = blank_page(browser.new_page(), server)
    try:
        got = run_model_in_browser(page, planned.compiled, server.url + "test-models/" + path.name, tokens)
    finally:
        page.close()

    async def numpy_rows():
        model = await Model.load(str(path), precision="fp16", matvec=matvec, tokenizer_for=lambda c, m: None)
        return np.stack([np.frombuffer(r, np.float32) for r in await model.logits(tokens)])

    expected = run_async(numpy_rows())
    spread = expected.max() - expected.min()
    # Same f16 weights on both: float32 summation order only (test_model_gpu.py's 1e-3 of the range).
    assert np.abs(got["rows"] - expected).max() <= 1e-3 * spread
    # Against the bf16 weights in float32: f16 keeps 3 more mantissa bits than bf16 has, so the only
    # change is values under f16's normal range (< 6.1e-5) losing bits: well inside fp16's 1e-2 bound.
    reference = RWKV7(config, weights).logits(tokens)[0]
    assert np.abs(expected - reference).max() <= 1e-2 * spread
