"""Budgets and quantized weights on WebGPU (headless Chromium, SwiftShader).

1. Quantized plans (int8, NF4) on the GPU against the same plans on the numpy executor: both
   dequantize the same codes (the loader's JavaScript quantizer is bit-exact with quant.py,
   test_quant.py), so they differ only by float32 rounding: 1e-3 of the logit range, as for
   fp16 in test_model_gpu.py.
2. The 0.1B and 0.4B shapes loaded through the page's engine under 700 MB, 1 GB and 2 GB: the
   bridge's measured peak GPU bytes stay within the budget (and within the plan), and the
   logits stay within the precision's bound of the float32 reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_async

from gpu_harness import blank_page, run_model_in_browser
from rwkvweb.api import Model
from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import ModelConfig
from rwkvweb.headless import CALL_JS
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
SAME_CODES = 1e-3  # of the logit range: float32 in another order (test_model_gpu.py's bound)
# GPU vs the float32 reference, by the narrowest precision in the plan (test_budget.py explains
# int8's and NF4's; fp16 weights are the file's own, so only float32 order remains).
VERSUS_REFERENCE = {"f16": 1e-3, "int8": 0.03, "nf4": 0.2}


@pytest.mark.parametrize("precision", ["int8", "nf4"])
@pytest.mark.parametrize("dtype, matvec", [("fp16", "cols"), ("fp32", "rows-wg")])
def test_quantized_plan_on_the_gpu_equals_numpy(browser, server, model_dir, precision, dtype, matvec):
    name = f"q-2x128x301-{dtype}.st"
    config = ModelConfig.default_for(2, 128, 301)
    write_test_model(str(model_dir / name), config, seed=5, dtype=dtype)
    tensors = SafetensorsFile(str(model_dir / name)).tensors
    # small bindings split the embedding and the head: quantized parts hold whole blocks
    max_binding = {"int8": 32 * 1024, "nf4": 16 * 1024}[precision]
    planned = plan_budget(config, tensors, parse_bytes("1GB"), precision, max_binding=max_binding, matvec=matvec)
    assert len([b for b in planned.compiled.plan.buffers if b["name"].startswith("head.weight[")]) > 1
    tokens = [int(t) for t in np.random.default_rng(2).integers(0, 301, 24)]
    page = blank_page(browser.new_page(), server)
    try:
        got = run_model_in_browser(page, planned.compiled, server.url + "test-models/" + name, tokens)
    finally:
        page.close()

    async def numpy_rows():
        model = await Model.load(
            str(model_dir / name),
            precision=precision,
            matvec=matvec,
            max_binding=max_binding,
            tokenizer_for=lambda c, m: None,
        )
        return np.stack([np.frombuffer(r, np.float32) for r in await model.logits(tokens)])

    expected = run_async(numpy_rows())
    assert np.abs(got["rows"] - expected).max() <= SAME_CODES * (expected.max() - expected.min())


SHAPES = {"0.1B": (12, 768), "0.4B": (24, 1024)}


@pytest.fixture(scope="module")
def engine_page(browser, server):
    page = blank_page(browser.new_page(), server)
    page.evaluate(CALL_JS, ["info", {}])  # starts the worker and waits for it
    yield page
    page.close()


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_released_shapes_stay_within_each_budget(engine_page, model_dir, shape):
    name = f"rwkv7-{shape}-shape-fp16.st"
    config = ModelConfig.default_for(*SHAPES[shape], 65536)
    write_test_model(str(model_dir / name), config, seed=1, dtype="fp16")
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, 65536, 6)]
    expected = RWKV7.load(str(model_dir / name)).logits(tokens)[0]
    scale = expected.max() - expected.min()
    try:
        for budget in ("700MB", "1GB", "2GB"):
            loaded = engine_page.evaluate(
                CALL_JS, ["load", {"url": "/test-models/" + name, "budget": parse_bytes(budget)}]
            )
            rows = np.array(engine_page.evaluate(CALL_JS, ["logits", {"tokens": tokens}]), np.float32)
            engine_page.evaluate(CALL_JS, ["exportState", {}])  # the largest read-back the engine makes
            peak = engine_page.evaluate(CALL_JS, ["info", {}])["gpu"]["peakBytes"]
            narrowest = max(loaded["matrices_by_precision"], key=["f32", "f16", "int8", "nf4"].index)
            error = np.abs(rows - expected).max() / scale
            top1 = float(np.mean(rows.argmax(axis=1) == expected.argmax(axis=1)))
            print(
                f"{shape} {budget}: planned {loaded['gpu_bytes_planned']:,} peak {peak:,} bytes, "
                f"{loaded['matrices_by_precision']}, |Δlogit| {error:.2e} of the range, top-1 {top1:.2f}"
            )
            assert peak <= loaded["gpu_bytes_planned"] <= parse_bytes(budget)
            assert error <= VERSUS_REFERENCE[narrowest]
    finally:
        engine_page.evaluate(CALL_JS, ["unload", {}])
        (model_dir / name).unlink()


def test_an_embedding_off_the_gpu_runs_like_the_numpy_plan(browser, server, model_dir):
    """The budget's last resort in the browser: every matrix NF4 and the embedding table in the
    worker's memory, its rows written per token; the same plan on numpy is the oracle."""
    from test_budget import host_embedding_budget

    name = "host-emb-2x128x65536.st"
    config = ModelConfig.default_for(2, 128, 65536)
    write_test_model(str(model_dir / name), config, seed=9, dtype="fp16")
    budget = host_embedding_budget(config)
    tokens = [int(t) for t in np.random.default_rng(6).integers(0, 65536, 8)]
    page = blank_page(browser.new_page(), server)
    try:
        loaded = page.evaluate(CALL_JS, ["load", {"url": "/test-models/" + name, "budget": budget}])
        rows = np.array(page.evaluate(CALL_JS, ["logits", {"tokens": tokens}]), np.float32)
        generated = page.evaluate(
            CALL_JS, ["generate", {"prompt": tokens[:3], "options": {"max_tokens": 10, "temperature": 0}}]
        )
        peak = page.evaluate(CALL_JS, ["info", {}])["gpu"]["peakBytes"]
    finally:
        page.close()
    assert loaded["matrices_by_precision"]["host"] == 1 and loaded["host_bytes"] == 65536 * 128 * 2
    assert "nf4" in loaded["matrices_by_precision"]
    assert peak <= loaded["gpu_bytes_planned"] <= budget

    async def numpy_side():
        model = await Model.load(str(model_dir / name), budget=budget, tokenizer_for=lambda c, m: None)
        logits = np.stack([np.frombuffer(r, np.float32) for r in await model.logits(tokens)])
        return logits, (await model.generate(tokens[:3], 10, temperature=0)).tokens

    expected, expected_tokens = run_async(numpy_side())
    assert np.abs(rows - expected).max() <= SAME_CODES * (expected.max() - expected.min())
    assert generated["tokens"] == expected_tokens
