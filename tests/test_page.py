"""End to end: the built site, served by serve.py, in headless Chromium, offline."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser


def test_page_starts_python_tokenizes_and_finds_webgpu(page, server):
    from rwkvweb.tokenizer import WorldTokenizer

    page.goto(server.url)
    page.wait_for_selector("#status[data-state='ready'], #status[data-state='failed']", timeout=120_000)
    assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")
    assert "Python 3.14" in page.text_content("#status")
    # the vendored pure-Python wheels import in Pyodide (markupsafe without its C speedups)
    assert page.text_content("#packages") == "rwkvweb 0.1.0, micropip 0.11.1, jinja2 3.1.6, markupsafe 3.0.3"

    text = "Hello, world! 你好，世界 — naïve café 🌍\n\tdef f(x): return x**2"
    page.fill("#text", text)
    page.click("#tokenize")
    page.wait_for_selector("#ids[data-count]")
    assert json.loads(page.text_content("#ids")) == WorldTokenizer.from_file().encode(text)

    assert page.get_attribute("#gpu", "data-found") == "true", page.text_content("#gpu")
    assert page.outside_requests == []
