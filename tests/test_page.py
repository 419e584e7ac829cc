"""End to end: the built site, served by serve.py, in headless Chromium, offline, driven as a person would."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser


def wait_ready(page, server):
    page.goto(server.url)
    page.wait_for_selector("#status[data-state='ready'], #status[data-state='failed']", timeout=120_000)
    assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")


@pytest.fixture(scope="module")
def world_model(model_dir):
    """A random model with the World vocabulary (so text comes out), small enough for SwiftShader."""
    write_test_model(str(model_dir / "world-2x64.st"), ModelConfig.default_for(2, 64, 65536), seed=11, dtype="fp16")
    return "models/world-2x64.st"


def test_page_starts_python_tokenizes_and_finds_webgpu(page, server):
    from rwkvweb.tokenizer import WorldTokenizer

    wait_ready(page, server)
    assert "Python 3.14" in page.text_content("#status")
    # the vendored pure-Python wheels import in Pyodide (markupsafe without its C speedups)
    assert page.text_content("#packages") == "rwkvweb 0.1.0, micropip 0.11.1, jinja2 3.1.6, markupsafe 3.0.3"

    text = "Hello, world! 你好，世界 — naïve café 🌍\n\tdef f(x): return x**2"
    page.fill("#prompt", text)
    page.click("#tokenize")
    page.wait_for_selector("#ids[data-count]")
    assert json.loads(page.text_content("#ids")) == WorldTokenizer.from_file().encode(text)
    assert page.get_attribute("#gpu", "data-found") == "true", page.text_content("#gpu")
    assert page.outside_requests == []


def test_load_generate_stream_and_stop(page, server, world_model):
    wait_ready(page, server)
    page.fill("#model-url", world_model)
    page.click("#load")
    page.wait_for_selector("#model-info[data-loaded]", timeout=60_000)
    assert "2 layers × 64 wide, 65536 tokens" in page.text_content("#model-info")

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


def test_a_wrong_model_url_is_explained(page, server):
    wait_ready(page, server)
    page.fill("#model-url", "models/no-such-model.st")
    page.click("#load")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "HTTP 404 (no such model file)" in page.text_content("#error")
