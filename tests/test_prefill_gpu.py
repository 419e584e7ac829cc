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

from gpu_harness import check_prefill_and_reference, plan_generated_model
from rwkvweb.config import ModelConfig

pytestmark = pytest.mark.browser
SAME_PLAN = 1e-5  # prefill vs decode on one plan; see the module docstring
REFERENCE = 1e-3  # vs the numpy reference, as in test_model_gpu.py


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
    planned = plan_generated_model(model_dir / name, cfg, width + head_size, precision, matvec, chunk)
    assert planned.compiled.chunk == chunk
    tokens = [int(t) for t in np.random.default_rng(chunk).integers(0, 300, 70)]
    reference = REFERENCE if precision in ("fp32", "fp16") else None
    url = server.url + "test-models/" + name
    check_prefill_and_reference(
        gpu_page, url, model_dir / name, planned.compiled, tokens, SAME_PLAN, reference, "prefill"
    )
