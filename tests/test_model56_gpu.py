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

from gpu_harness import blank_page, run_prefill_in_browser
from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import ModelConfig
from rwkvweb.reference import load
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
REFERENCE = 1e-4  # of the logit range; see the module docstring
SAME_PLAN = 1e-5


@pytest.fixture(scope="module")
def gpu_page(browser, server):
    page = blank_page(browser.new_page(), server)
    yield page
    page.close()


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
    write_test_model(
        str(model_dir / name), cfg, seed=width + head_size, dtype="fp32" if precision == "fp32" else "fp16"
    )
    tensors = SafetensorsFile(str(model_dir / name)).tensors
    planned = plan_budget(
        cfg, tensors, parse_bytes("1GB"), precision, max_binding=64 * 1024, matvec=matvec, chunk=chunk
    )
    if precision in ("int8", "nf4"):
        assert planned.precisions["blocks.0.att.gate.weight"] == planned.precisions["blocks.0.ffn.receptance.weight"]
        assert planned.precisions["blocks.0.att.gate.weight"] == precision
    tokens = [int(t) for t in np.random.default_rng(width).integers(0, 300, 40)]
    got = run_prefill_in_browser(gpu_page, planned.compiled, server.url + "test-models/" + name, tokens)

    scale = got["decode"].max() - got["decode"].min()
    state_scale = max(1.0, np.abs(got["decodeState"]).max())
    print(f"prefill vs decode: {np.abs(got['prefill'] - got['decode']).max() / scale:.1e} of the range")
    assert np.abs(got["prefill"] - got["decode"]).max() <= SAME_PLAN * scale
    assert np.abs(got["prefillState"] - got["decodeState"]).max() <= SAME_PLAN * state_scale
    if precision in ("fp32", "fp16"):
        expected, state = load(str(model_dir / name)).logits(tokens)
        error = np.abs(got["decode"] - expected).max() / (expected.max() - expected.min())
        print(f"decode vs reference: {error:.1e} of the range")
        assert error <= REFERENCE
        assert np.abs(got["decodeState"] - np.frombuffer(state.to_bytes(), np.float32)).max() <= REFERENCE * state_scale
