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

from gpu_harness import blank_page, run_model_in_browser, run_prefill_in_browser
from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import ModelConfig
from rwkvweb.model import compile_model
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
    write_test_model(str(model_dir / name), cfg, seed=width + layers, dtype="fp32" if precision == "fp32" else "fp16")
    tensors = SafetensorsFile(str(model_dir / name)).tensors
    planned = plan_budget(
        cfg, tensors, parse_bytes("1GB"), precision, max_binding=64 * 1024, matvec=matvec, chunk=chunk
    )
    if precision in ("int8", "nf4"):
        assert planned.precisions["blocks.0.ffn.receptance.weight"] == precision
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


def test_greedy_decoding_follows_the_reference(gpu_page, server, model_dir):
    """32 teacher-forced tokens then 16 greedy ones, the head and embedding split across bindings."""
    name = "x040-greedy.st"
    cfg = ModelConfig.default_for(2, 128, 1000, version="x040")
    write_test_model(str(model_dir / name), cfg, seed=11)
    compiled = compile_model(cfg, SafetensorsFile(str(model_dir / name)).tensors, max_binding=64 * 1024)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 1000, 32)]
    got = run_model_in_browser(gpu_page, compiled, server.url + "test-models/" + name, tokens, greedy=16)
    reference = load(str(model_dir / name))
    expected, state = reference.logits(tokens)
    chosen, logits = [], expected[-1]
    for _ in range(16):
        chosen.append(int(np.argmax(logits)))
        logits, state = reference.forward(chosen[-1], state)
    assert np.abs(got["rows"] - expected).max() <= REFERENCE * (expected.max() - expected.min())
    assert got["greedy"] == chosen
    gpu_state = np.frombuffer(got["state"], np.float32)
    assert np.abs(gpu_state - np.frombuffer(state.to_bytes(), np.float32)).max() <= REFERENCE * max(
        1.0, np.abs(gpu_state).max()
    )
