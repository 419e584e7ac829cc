"""Prefill on WebGPU (headless Chromium, SwiftShader): a prompt in chunks gives the logits and state
of the same tokens fed one decode step at a time, for every weight format and chunk size.

Two comparisons per case, on the same GPU plan (so quantized weights are the same codes on both paths):
- prefill vs token-by-token decode: ≤ 1e-5 of the logit range and of the state's scale. Both read
  the same weights and sum each dot product over K in the same order; what differs is float32
  rounding in the fused chunk kernels (LayerNorm rows, the WKV walk), ~1e-7 relative per layer.
- prefill vs the numpy reference (fp32/fp16 files only: the reference does not quantize): the
  bound of test_model_gpu.py, 1e-3 of the range (float32 in another order; observed ~1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_harness import blank_page, run_prefill_in_browser
from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import ModelConfig
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
SAME_PLAN = 1e-5  # prefill vs decode on one plan; see the module docstring
REFERENCE = 1e-3  # vs the numpy reference, as in test_model_gpu.py


@pytest.fixture(scope="module")
def gpu_page(browser, server):
    page = blank_page(browser.new_page(), server)
    yield page
    page.close()


@pytest.mark.parametrize(
    "width, head_size, precision, matvec, chunk",
    [
        (256, 64, "fp32", "cols", 64),  # 4 heads; 70 tokens: a full chunk and a partial one
        (256, 64, "fp16", "cols", 16),
        (128, 32, "fp32", "rows", 7),  # 4 heads of 32; a chunk that is not a whole token tile
        (192, 64, "int8", "cols", 16),  # 3 heads; quantized matrices are row-major whatever the variant
        (128, 64, "nf4", "cols", 7),
        (64, 64, "fp16", "rows-wg", 16),  # one head; the workgroup-reduction variant (one token per workgroup row)
        (128, 64, "fp32", "cols", 1),  # 1 = token by token through the prefill kernels
    ],
)
def test_prefill_equals_decode(gpu_page, server, model_dir, width, head_size, precision, matvec, chunk):
    name = f"prefill-{width}-{head_size}-{precision}.st"
    cfg = ModelConfig.default_for(2, width, 300, head_size=head_size)
    write_test_model(
        str(model_dir / name), cfg, seed=width + head_size, dtype="fp32" if precision == "fp32" else "fp16"
    )
    tensors = SafetensorsFile(str(model_dir / name)).tensors
    planned = plan_budget(
        cfg, tensors, parse_bytes("1GB"), precision, max_binding=64 * 1024, matvec=matvec, chunk=chunk
    )
    assert planned.compiled.chunk == chunk
    tokens = [int(t) for t in np.random.default_rng(chunk).integers(0, 300, 70)]
    got = run_prefill_in_browser(gpu_page, planned.compiled, server.url + "test-models/" + name, tokens)

    scale = got["decode"].max() - got["decode"].min()
    print(f"prefill vs decode: {np.abs(got['prefill'] - got['decode']).max() / scale:.1e} of the range")
    assert np.abs(got["prefill"] - got["decode"]).max() <= SAME_PLAN * scale
    state_scale = max(1.0, np.abs(got["decodeState"]).max())
    assert np.abs(got["prefillState"] - got["decodeState"]).max() <= SAME_PLAN * state_scale
    if precision in ("fp32", "fp16"):
        expected, state = RWKV7.load(str(model_dir / name)).logits(tokens)
        assert np.abs(got["prefill"] - expected).max() <= REFERENCE * (expected.max() - expected.min())
        assert (
            np.abs(got["prefillState"] - np.frombuffer(state.to_bytes(), np.float32)).max() <= REFERENCE * state_scale
        )
