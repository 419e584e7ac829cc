"""Whole generated models on WebGPU (headless Chromium, SwiftShader) against the numpy reference.

32 teacher-forced tokens, then greedy decoding. Tolerance: max |Δlogit| ≤ 1e-3 of the logit
range. Both sides compute in float32 from the same stored weights (f16 weights are unpacked to
the same values the reference widens them to), so the difference is only float32 rounding in a
different order, ~1e-6 relative per layer; 1e-3 is the issue's bound and leaves room for 12+
layers while a wrong op (a missing bias, a whole-vector norm instead of per head) moves logits
by 0.4 or more of the range.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_harness import blank_page, check_greedy, greedy_reference, run_model_in_browser
from rwkvweb.config import ModelConfig
from rwkvweb.model import compile_model
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
TOLERANCE = 1e-3  # of the logit range; see the module docstring


@pytest.mark.parametrize(
    "layers, width, vocab, dtype, matvec",
    [
        (2, 128, 301, "fp32", "cols"),
        (3, 256, 1000, "fp16", "cols"),
        (2, 128, 301, "fp16", "rows-wg"),
        (2, 128, 300, "fp32", "rows"),
        (1, 64, 256, "fp32", "cols"),  # one head, byte-level vocabulary
    ],
)
def test_generated_model_matches_the_reference(browser, server, model_dir, layers, width, vocab, dtype, matvec):
    name = f"m{layers}x{width}x{vocab}-{dtype}.st"
    cfg = ModelConfig.default_for(layers, width, vocab)
    write_test_model(str(model_dir / name), cfg, seed=layers, dtype=dtype)
    file = SafetensorsFile(str(model_dir / name))
    # max_binding small enough to split the head and embedding into parts: the split path runs too
    compiled = compile_model(cfg, file.tensors, max_binding=64 * 1024, matvec=matvec)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, vocab, 32)]
    page = blank_page(browser.new_page(), server)
    try:
        got = run_model_in_browser(page, compiled, server.url + "test-models/" + name, tokens, greedy=16)
    finally:
        page.close()
    check_greedy(got, model_dir / name, tokens, 16, TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_the_0_1b_shape_matches_the_reference(browser, server, model_dir, dtype):
    """12 layers x 768 x 65536 (RWKV-7 0.1B's shape): the head is split across bindings at fp32."""
    name = f"rwkv7-0.1b-shape-{dtype}.st"
    cfg = ModelConfig.default_for(12, 768, 65536)
    write_test_model(str(model_dir / name), cfg, seed=0, dtype=dtype)
    compiled = compile_model(cfg, SafetensorsFile(str(model_dir / name)).tensors)  # default 128 MiB bindings
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, 65536, 32)]
    page = blank_page(browser.new_page(), server)
    try:
        got = run_model_in_browser(page, compiled, server.url + "test-models/" + name, tokens, greedy=8)
    finally:
        page.close()
    expected, chosen, _ = greedy_reference(RWKV7.load(str(model_dir / name)), tokens, 8)
    assert np.abs(got["rows"] - expected).max() <= TOLERANCE * (expected.max() - expected.min())
    assert got["greedy"] == chosen
    (model_dir / name).unlink()  # 380-760 MB
