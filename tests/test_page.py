"""End to end: the built site, served by serve.py, in headless Chromium, offline, driven as a person would."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from rwkvweb.config import ModelConfig
from rwkvweb.tokenizer import WorldTokenizer
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser


def wait_ready(page, server):
    """The worker started and the default (first shipped) model loaded."""
    page.goto(server.url)
    page.wait_for_selector("#model-info[data-loaded], #status[data-state='failed']", timeout=120_000)
    assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")


@pytest.fixture(scope="module")
def world_model(model_dir):
    """A random model with the World vocabulary (so text comes out), small enough for SwiftShader."""
    write_test_model(str(model_dir / "world-2x64.st"), ModelConfig.default_for(2, 64, 65536), seed=11, dtype="fp16")
    return "test-models/world-2x64.st"


TEXT = "Hello, world! 你好，世界 — naïve café 🌍\n\tdef f(x): return x**2"


def test_page_starts_python_tokenizes_and_finds_webgpu(page, server):
    wait_ready(page, server)
    assert "Python 3.14" in page.text_content("#runtime")
    # the vendored pure-Python wheels import in Pyodide (markupsafe without its C speedups)
    assert page.text_content("#packages") == "rwkvweb 0.1.0, micropip 0.11.1, jinja2 3.1.6, markupsafe 3.0.3"

    page.fill("#prompt", TEXT)
    page.click("#tokenize")
    page.wait_for_selector("#ids[data-count]")
    assert json.loads(page.text_content("#ids")) == list(TEXT.encode())  # the shipped model's byte tokenizer
    assert page.get_attribute("#gpu", "data-found") == "true", page.text_content("#gpu")
    assert page.outside_requests == []


def test_load_generate_stream_and_stop(page, server, world_model):
    wait_ready(page, server)
    page.fill("#model-url", world_model)
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text(
        "world-2x64.st: 2 layers × 64 wide, 65536 tokens", timeout=60_000
    )
    assert page.get_attribute("#load-progress", "data-done") == "true"  # the progress bar reached the end
    assert re.search(r"\d+/\d+ tensors, [\d.]+ MB/s", page.text_content("#load-detail"))
    page.click("#mode-completion")  # a World-vocabulary model opens in chat mode; this test is about completion

    # the World tokenizer, in Pyodide, gives the ids CPython's gives
    page.fill("#prompt", TEXT)
    page.click("#tokenize")
    expect(page.locator("#ids")).to_have_text(
        json.dumps(WorldTokenizer.from_file().encode(TEXT)).replace(", ", ","), timeout=10_000
    )

    # a short generation runs to its length
    page.fill("#prompt", "<b>not bold</b> Once upon a time")
    page.fill("#max-tokens", "12")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=60_000)
    assert page.get_attribute("#output", "data-done") == "length"
    assert "12 tokens" in page.text_content("#speed") and "tokens/s" in page.text_content("#speed")
    assert page.locator("#output b").count() == 0  # text, never HTML

    # a long one streams, and Stop ends it early
    page.fill("#max-tokens", "4000")
    page.click("#generate")
    expect(page.locator("#output")).to_have_text(re.compile(r"[\s\S]{20,}"), timeout=60_000)  # streamed, still running
    assert page.get_attribute("#output", "data-done") is None
    page.click("#stop")
    page.wait_for_selector("#output[data-done]", timeout=60_000)
    assert page.get_attribute("#output", "data-done") == "abort"
    assert not page.is_visible("#error")

    # and the engine is still usable afterwards
    page.fill("#max-tokens", "5")
    page.click("#generate")
    page.wait_for_selector("#output[data-done='length']", timeout=60_000)
    assert page.outside_requests == []


def test_the_shipped_model_loads_by_default_and_writes_words(page, server):
    wait_ready(page, server)
    assert "rwkv7-tiny-wordnet.st: 4 layers × 192 wide, 256 tokens" in page.text_content("#model-info")
    assert page.input_value("#prompt") == "garden (noun): "  # the model card's example prompt
    page.fill("#max-tokens", "40")
    page.fill("#temperature", "0")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=60_000)
    words = page.text_content("#output").split()
    assert len(words) >= 5 and sum(w.isalpha() for w in words) >= 0.6 * len(words), words


def test_a_wrong_model_url_is_explained(page, server):
    wait_ready(page, server)
    page.fill("#model-url", "test-models/no-such-model.st")
    page.click("#load")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "HTTP 404 (no such model file)" in page.text_content("#error")


def test_budget_precision_and_the_cache_list(page, server, model_dir):
    """The budget and precision chosen on the page reach the planner; the loaded model is listed
    under Cached models, and Delete removes it."""
    write_test_model(str(model_dir / "page-cache.st"), ModelConfig.default_for(2, 128, 4096), seed=12, dtype="fp16")
    wait_ready(page, server)
    page.fill("#model-url", "test-models/page-cache.st")
    page.select_option("#precision", "nf4")
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text("page-cache.st: 2 layers", timeout=60_000)
    assert "matrices: 14 nf4" in page.text_content("#model-info")
    page.click("#cache-section summary")
    item = page.locator("#cache-list li", has_text="page-cache.st")
    expect(item).to_have_count(1, timeout=10_000)
    item.get_by_role("button", name="Delete").click()
    expect(item).to_have_count(0, timeout=10_000)

    page.select_option("#precision", "fp32")
    page.select_option("#budget", "700000000")
    page.fill("#model-url", "models/rwkv7-tiny-wordnet.st")
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text("rwkv7-tiny-wordnet.st", timeout=60_000)
    assert "matrices: 26 f32" in page.text_content("#model-info")
    assert not page.is_visible("#error")


def test_a_local_file_loads_from_the_picker_and_by_drag_and_drop(page, server, model_dir):
    """Local files are read through Blob.slice like URLs are read by Range: picked, or dropped."""
    path = model_dir / "local-1x64.st"
    write_test_model(str(path), ModelConfig.default_for(1, 64, 256), seed=13, dtype="fp16")
    wait_ready(page, server)
    page.set_input_files("#model-file", str(path))
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text("local-1x64.st: 1 layers × 64 wide, 256 tokens", timeout=60_000)

    page.set_input_files("#model-file", [])
    dropped = page.evaluate_handle(
        """async (url) => {
      const data = new DataTransfer();
      data.items.add(new File([await (await fetch(url)).blob()], "dropped.st"));
      return data;
    }""",
        "test-models/local-1x64.st",
    )
    page.dispatch_event("#model-section", "drop", {"dataTransfer": dropped})
    expect(page.locator("#model-info")).to_contain_text("dropped.st: 1 layers × 64 wide", timeout=60_000)
    assert not page.is_visible("#error")
