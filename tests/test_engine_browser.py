"""The engine worker in the browser (Pyodide + WebGPU): state round trips, abort, and GPU memory."""

from __future__ import annotations

import os

import pytest

from rwkvweb.config import ModelConfig
from gpu_harness import blank_page
from rwkvweb.headless import CALL_JS
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def engine_page(browser, server, model_dir):
    write_test_model(str(model_dir / "engine-2x128.st"), ModelConfig.default_for(2, 128, 300), seed=4, dtype="fp16")
    (model_dir / "junk.st").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(100))
    page = blank_page(browser.new_page(), server)
    page.evaluate(CALL_JS, ["info", {}])  # starts the worker and waits for it
    yield page
    page.close()


def call(page, method, params=None):
    return page.evaluate(CALL_JS, [method, params or {}])


def test_state_exported_and_imported_continues_exactly(engine_page):
    call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})
    same = engine_page.evaluate("""async () => {
      const e = window.__engine;
      await e.call("logits", { tokens: [1, 2, 3] });
      const saved = await e.call("exportState");
      const first = await e.call("logits", { tokens: [4, 5], keepState: true });
      await e.call("logits", { tokens: [9, 9, 9], keepState: true });   // wander off
      await e.call("importState", { state: saved });
      const again = await e.call("logits", { tokens: [4, 5], keepState: true });
      return { bytes: saved.byteLength, equal: JSON.stringify(first) === JSON.stringify(again) };
    }""")
    assert same["equal"]
    assert same["bytes"] == 4 * 2 * (2 * 128 + 2 * 64 * 64)


def test_abort_mid_generation_then_generate_again(engine_page):
    call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})
    result = engine_page.evaluate("""async () => {
      const e = window.__engine;
      let pieces = 0;
      const running = e.call("generate", { prompt: [1, 2], options: { max_tokens: 100000 } });
      await new Promise((resolve) => setTimeout(resolve, 500));
      await e.abort();
      const stopped = await running;
      const next = await e.call("generate", { prompt: [1, 2], options: { max_tokens: 5 } });
      return { stopped: stopped.stopped_by, generated: stopped.generated, next: next.stopped_by, nextCount: next.tokens.length };
    }""")
    assert result["stopped"] == "abort" and 0 < result["generated"] < 100000
    assert result["next"] == "length" and result["nextCount"] == 5


def test_gpu_memory_is_the_same_after_generations_and_reloads(engine_page):
    loaded = call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})
    first = call(engine_page, "generate", {"prompt": [3], "options": {"max_tokens": 8}})
    second = call(engine_page, "generate", {"prompt": [3], "options": {"max_tokens": 8}})
    assert loaded["gpu"]["bytesAllocated"] == first["gpuBytes"] == second["gpuBytes"] > 0
    assert call(engine_page, "unload")["bytesAllocated"] == 0
    assert call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})["gpu"]["bytesAllocated"] == loaded["gpu"]["bytesAllocated"]


def test_errors_are_reported_and_lose_nothing(engine_page):
    call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})
    with pytest.raises(Exception, match="HTTP 404 \\(no such model file\\)"):
        call(engine_page, "load", {"url": "/test-models/missing.st"})
    with pytest.raises(Exception, match="header is not valid UTF-8 JSON"):
        call(engine_page, "load", {"url": "/test-models/junk.st"})
    # the model loaded before is still there and works
    assert call(engine_page, "generate", {"prompt": [1], "options": {"max_tokens": 2}})["stopped_by"] == "length"
    with pytest.raises(Exception, match="unknown sampling options"):
        call(engine_page, "generate", {"prompt": [1], "options": {"max_tokens": 2, "bogus": 1}})
    with pytest.raises(Exception, match="token id 300 is outside"):
        call(engine_page, "generate", {"prompt": [300], "options": {"max_tokens": 2}})
    call(engine_page, "unload")
    with pytest.raises(Exception, match="no model is loaded"):
        call(engine_page, "generate", {"prompt": [1], "options": {"max_tokens": 2}})


def test_a_server_without_range_support_still_loads(engine_page, server):
    """Every request for the model answered 200 with the whole file: read as one stream, in order."""
    path = "/test-models/engine-2x128.st"
    seen = []

    def whole_file(route):
        seen.append(route.request.headers.get("range"))
        response = route.fetch(headers={k: v for k, v in route.request.headers.items() if k.lower() != "range"})
        route.fulfill(response=response, status=200)

    engine_page.route(server.url + path.lstrip("/"), whole_file)
    try:
        loaded = call(engine_page, "load", {"url": path})
    finally:
        engine_page.unroute(server.url + path.lstrip("/"))
    assert "does not support Range requests" in loaded["note"]
    reference = call(engine_page, "logits", {"tokens": [1, 2, 3]})
    call(engine_page, "load", {"url": path})  # with Range again
    assert call(engine_page, "logits", {"tokens": [1, 2, 3]}) == reference
    assert len(seen) == 3  # HEAD, the 1-byte probe, one streamed GET


def test_transient_failures_are_retried(engine_page, server):
    path = "/test-models/engine-2x128.st"
    failures = {"left": 2}

    def flaky(route):
        if failures["left"] and route.request.headers.get("range", "").startswith("bytes=") and route.request.headers["range"] != "bytes=0-0":
            failures["left"] -= 1
            return route.fulfill(status=503, body="busy")
        route.continue_()

    engine_page.route(server.url + path.lstrip("/"), flaky)
    try:
        loaded = call(engine_page, "load", {"url": path})
    finally:
        engine_page.unroute(server.url + path.lstrip("/"))
    assert failures["left"] == 0 and loaded["config"]["n_layer"] == 2


def test_weights_come_by_range_requests_only(engine_page, server):
    """The server's own log: a HEAD, then GETs that each carry a Range, never the whole file."""
    path = "/test-models/engine-2x128.st"
    before = len(server.requests)
    call(engine_page, "load", {"url": path})
    mine = [r for r in server.requests[before:] if r.path == path]
    gets = [r for r in mine if r.method == "GET"]
    assert [r.method for r in mine if r.method != "GET"] == ["HEAD"]
    assert gets and all(r.range and r.range.startswith("bytes=") and r.status == 206 for r in gets)
    size = os.path.getsize(os.path.join(server.mounts["test-models"], "engine-2x128.st"))
    assert sum(r.bytes_sent for r in gets) <= size + 1  # every byte at most once (+ the 1-byte probe)
