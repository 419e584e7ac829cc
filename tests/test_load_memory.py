"""Loading a 380 MB model never puts the model in the page's memory.

Weights travel file -> a fetched chunk (a few MiB, read into reused lane memory) -> a GPU buffer
(or int8 / NF4 codes), and into the OPFS cache. Two measurements while the page loads a model
of the 0.1B shape (365 MiB at fp16):
- the JavaScript memory of the page and its engine worker, ArrayBuffers included, as
  performance.measureUserAgentSpecificMemory() reports it (live bytes after a collection;
  the test browser answers at once: conftest's ForceEagerMeasureMemory), sampled every 100 ms;
- Pyodide's wasm memory, which only grows: the worker reports its size (info.wasmBytes).
Chromium's own buffers behind fetch() and writeBuffer() are not JavaScript memory and are not
counted; SwiftShader's GPU buffers live in the GPU process: the model's destination, not a copy.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import write_test_model
from gpu_harness import blank_page
from rwkvweb.headless import CALL_JS
from test_page import wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# The loader runs 4 lanes, each with reusable scratch memory: an 8 MiB read buffer, and at most
# as much again for a transposed or realigned chunk (f16 widened to f32 doubles a 4 MiB fill).
JS_BOUND = 4 * 24 << 20
WASM_BOUND = 16 << 20  # the plan's Python objects; no weight byte passes through Pyodide

SAMPLE_JS = """
async () => (await performance.measureUserAgentSpecificMemory()).bytes
"""


@pytest.mark.parametrize(
    "precision", ["int8", "auto"]
)  # the first fetches, quantizes and caches; the second reads the cache
def test_loading_a_380_mb_model_keeps_the_page_small(page, server, model_dir, precision):
    name = "memory-0.1b-shape-fp16.st"
    if not (model_dir / name).exists():
        write_test_model(str(model_dir / name), ModelConfig.default_for(12, 768, 65536), seed=2, dtype="fp16")
    size = (model_dir / name).stat().st_size
    assert size > 300 * 10**6
    wait_ready(page, server)
    baseline = page.evaluate(SAMPLE_JS)
    samples = []

    page.fill("#model-url", "test-models/" + name)
    page.select_option("#precision", precision)
    page.click("#load")
    while not page.locator("#model-info", has_text=name).count():
        samples.append(page.evaluate(SAMPLE_JS))
        page.wait_for_timeout(100)
        assert len(samples) < 3000, "the load did not finish"
    expect(page.locator("#error")).to_be_hidden()
    grown = max(samples) - baseline
    print(
        f"{precision}: {size / 2**20:.0f} MiB model; JS memory (page + worker) peaked {grown / 2**20:.1f} MiB above "
        f"its {baseline / 2**20:.1f} MiB start over {len(samples)} samples"
    )
    assert len(samples) >= 5  # the load was watched, not just its end
    assert grown < JS_BOUND


def test_no_weight_byte_passes_through_pyodide(browser, server, model_dir):
    name = "memory-0.1b-shape-fp16.st"
    if not (model_dir / name).exists():
        write_test_model(str(model_dir / name), ModelConfig.default_for(12, 768, 65536), seed=2, dtype="fp16")
    page = blank_page(browser.new_page(), server)
    try:
        before = page.evaluate(CALL_JS, ["info", {}])["wasmBytes"]
        page.evaluate(CALL_JS, ["load", {"url": "/test-models/" + name, "cache": False}])
        after = page.evaluate(CALL_JS, ["info", {}])["wasmBytes"]
        print(f"Pyodide's wasm memory: {before / 2**20:.0f} MiB before the load, {after / 2**20:.0f} MiB after")
        assert after - before < WASM_BOUND
        page.evaluate(CALL_JS, ["unload", {}])
    finally:
        page.close()
        (model_dir / name).unlink()
