"""RWKV-5.2 and RWKV-6 generated models on WebGPU (headless Chromium, SwiftShader) against reference56.py.

Each case runs 40 tokens through one GPU plan twice (run_prefill_in_browser): one decode submission per
token, then prefill chunks with the head on every row. Bounds:
- decode vs the numpy reference, token by token, and the final state: ≤ 1e-4 of the logit range (of the
  state's scale). Both compute in float32 from the same weights; only the order of the sums differs
  (~1e-6 of the range observed), while a dropped term (the bonus u, a LoRA, the gate) moves logits by
  10% or more of the range. 1e-4 is ten times tighter than test_model_gpu.py's RWKV-7 bound.
- prefill vs decode on the same plan: ≤ 1e-5 (test_prefill_gpu.py's bound and argument).
- int8 / NF4 plans: prefill vs decode only (the reference does not quantize; test_budget.py bounds the
  quantization error itself).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_harness import check_prefill_and_reference, plan_generated_model
from rwkvweb.config import ModelConfig

pytestmark = pytest.mark.browser
REFERENCE = 1e-4  # of the logit range; see the module docstring
SAME_PLAN = 1e-5


@pytest.mark.parametrize("version", ["x052", "x060"])
@pytest.mark.parametrize(
    "layers, width, head_size, precision, matvec, chunk",
    [
        (2, 128, 32, "fp32", "cols", 16),  # 4 heads of 32; 40 tokens: two full chunks and a partial one
        (1, 64, 8, "fp32", "rows", 7),  # 8 heads of 8; a chunk that is not a whole token tile
        (2, 128, 64, "fp16", "rows-wg", 64),  # 2 heads of 64 (released models' head size); one partial chunk
        (2, 64, 64, "int8", "cols", 16),  # quantized att.gate and ffn.receptance too
        (1, 128, 32, "nf4", "cols", 16),
    ],
)
def test_generated_model_matches_the_reference(
    gpu_page, server, model_dir, version, layers, width, head_size, precision, matvec, chunk
):
    name = f"{version}-{layers}x{width}-h{head_size}-{precision}.st"
    cfg = ModelConfig.default_for(layers, width, 300, head_size=head_size, version=version)
    planned = plan_generated_model(model_dir / name, cfg, width + head_size, precision, matvec, chunk)
    if precision in ("int8", "nf4"):
        assert planned.precisions["blocks.0.att.gate.weight"] == planned.precisions["blocks.0.ffn.receptance.weight"]
        assert planned.precisions["blocks.0.att.gate.weight"] == precision
    tokens = [int(t) for t in np.random.default_rng(width).integers(0, 300, 40)]
    reference = REFERENCE if precision in ("fp32", "fp16") else None
    url = server.url + "test-models/" + name
    check_prefill_and_reference(
        gpu_page, url, model_dir / name, planned.compiled, tokens, SAME_PLAN, reference, "decode"
    )
