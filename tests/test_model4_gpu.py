"""RWKV-4 generated models on WebGPU (headless Chromium, SwiftShader) against the numpy reference (reference4.py).

Each case runs 40 tokens through one GPU plan twice (run_prefill_in_browser): one decode submission per
token, then prefill chunks with the head on every row. Bounds (test_model56_gpu.py's, for the same reasons):
- decode vs the numpy reference, token by token, and the final state: ≤ 1e-4 of the logit range (of the
  state's scale). Both compute in float32 from the same weights; only the order of the sums differs,
  while a dropped time_first or the other token-shift convention moves logits by a tenth of the range.
- prefill vs decode on the same plan: ≤ 1e-5 (test_prefill_gpu.py's bound and argument).
- int8 / NF4 plans: prefill vs decode only (the reference does not quantize).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_harness import check_greedy, check_prefill_and_reference, plan_generated_model, run_model_in_browser
from rwkvweb.config import ModelConfig
from rwkvweb.model import compile_model
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
REFERENCE = 1e-4  # of the logit range; see the module docstring
SAME_PLAN = 1e-5


@pytest.mark.parametrize(
    "layers, width, precision, matvec, chunk",
    [
        (1, 64, "fp32", "cols", 16),  # 40 tokens: two full chunks and a partial one
        (2, 128, "fp32", "rows", 7),  # a chunk that is not a whole token tile
        (2, 128, "fp16", "rows-wg", 64),  # one partial chunk; the workgroup-reduction matvec
        (2, 64, "int8", "cols", 16),  # quantized ffn.receptance too
        (1, 128, "nf4", "cols", 16),
    ],
)
def test_generated_model_matches_the_reference(gpu_page, server, model_dir, layers, width, precision, matvec, chunk):
    name = f"x040-{layers}x{width}-{precision}.st"
    cfg = ModelConfig.default_for(layers, width, 300, version="x040")
    planned = plan_generated_model(model_dir / name, cfg, width + layers, precision, matvec, chunk)
    if precision in ("int8", "nf4"):
        assert planned.precisions["blocks.0.ffn.receptance.weight"] == precision
    tokens = [int(t) for t in np.random.default_rng(width).integers(0, 300, 40)]
    reference = REFERENCE if precision in ("fp32", "fp16") else None
    url = server.url + "test-models/" + name
    check_prefill_and_reference(
        gpu_page, url, model_dir / name, planned.compiled, tokens, SAME_PLAN, reference, "decode"
    )


def test_greedy_decoding_follows_the_reference(gpu_page, server, model_dir):
    """32 teacher-forced tokens then 16 greedy ones, the head and embedding split across bindings."""
    name = "x040-greedy.st"
    cfg = ModelConfig.default_for(2, 128, 1000, version="x040")
    write_test_model(str(model_dir / name), cfg, seed=11)
    compiled = compile_model(cfg, SafetensorsFile(str(model_dir / name)).tensors, max_binding=64 * 1024)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 1000, 32)]
    got = run_model_in_browser(gpu_page, compiled, server.url + "test-models/" + name, tokens, greedy=16)
    check_greedy(got, model_dir / name, tokens, 16, REFERENCE)
