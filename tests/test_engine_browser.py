"""The engine worker in the browser (Pyodide + WebGPU): state round trips, abort, and GPU memory."""

from __future__ import annotations


import pytest

import numpy as np

from rwkvweb.config import ModelConfig
from rwkvweb.reference import RWKV7
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
      return { stopped: stopped.stopped_by, generated: stopped.generated, next: next.stopped_by,
               nextCount: next.tokens.length };
    }""")
    assert result["stopped"] == "abort" and 0 < result["generated"] < 100000
    assert result["next"] == "length" and result["nextCount"] == 5


def test_gpu_memory_is_the_same_after_generations_and_reloads(engine_page):
    loaded = call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})
    first = call(engine_page, "generate", {"prompt": [3], "options": {"max_tokens": 8}})
    second = call(engine_page, "generate", {"prompt": [3], "options": {"max_tokens": 8}})
    assert loaded["gpu"]["bytesAllocated"] == first["gpuBytes"] == second["gpuBytes"] > 0
    assert call(engine_page, "unload")["bytesAllocated"] == 0
    assert (
        call(engine_page, "load", {"url": "/test-models/engine-2x128.st"})["gpu"]["bytesAllocated"]
        == loaded["gpu"]["bytesAllocated"]
    )


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
        loaded = call(engine_page, "load", {"url": path, "cache": False})  # the network path, not the cache
    finally:
        engine_page.unroute(server.url + path.lstrip("/"))
    assert "does not support Range requests" in loaded["note"]
    reference = call(engine_page, "logits", {"tokens": [1, 2, 3]})
    call(engine_page, "load", {"url": path, "cache": False})  # with Range again
    assert call(engine_page, "logits", {"tokens": [1, 2, 3]}) == reference
    assert len(seen) == 3  # HEAD, the 1-byte probe, one streamed GET


def test_transient_failures_are_retried(engine_page, server):
    path = "/test-models/engine-2x128.st"
    failures = {"left": 2}

    def flaky(route):
        if (
            failures["left"]
            and route.request.headers.get("range", "").startswith("bytes=")
            and route.request.headers["range"] != "bytes=0-0"
        ):
            failures["left"] -= 1
            return route.fulfill(status=503, body="busy")
        route.continue_()

    engine_page.route(server.url + path.lstrip("/"), flaky)
    try:
        loaded = call(engine_page, "load", {"url": path, "cache": False})
    finally:
        engine_page.unroute(server.url + path.lstrip("/"))
    assert failures["left"] == 0 and loaded["config"]["n_layer"] == 2


def requests_for(server, path, since):
    return [r for r in server.requests[since:] if r.path == path]


def test_weights_come_by_range_then_from_the_cache(engine_page, server, model_dir):
    """The server's own log. First load: a HEAD, then GETs that each carry a Range, every byte
    sent once. Second load: only the HEAD (is the cached copy still this file?), no bytes."""
    name = "cache-3x128.st"
    write_test_model(str(model_dir / name), ModelConfig.default_for(3, 128, 300), seed=6, dtype="fp16")
    path, size = "/test-models/" + name, (model_dir / name).stat().st_size
    before = len(server.requests)
    first = call(engine_page, "load", {"url": path})
    mine = requests_for(server, path, before)
    gets = [r for r in mine if r.method == "GET"]
    assert [r.method for r in mine if r.method != "GET"] == ["HEAD"]
    assert gets and all(r.range and r.range.startswith("bytes=") and r.status == 206 for r in gets)
    assert sum(r.bytes_sent for r in gets) <= size + 1  # every byte at most once (+ the 1-byte probe)
    assert first["fetchedBytes"] == sum(r.bytes_sent for r in gets) - 1  # all but the probe byte
    reference = call(engine_page, "logits", {"tokens": [5, 6, 7]})

    before = len(server.requests)
    second = call(engine_page, "load", {"url": path})
    assert [(r.method, r.bytes_sent) for r in requests_for(server, path, before)] == [("HEAD", 0)]
    assert second["fetchedBytes"] == 0
    assert call(engine_page, "logits", {"tokens": [5, 6, 7]}) == reference


def test_a_changed_file_is_fetched_again_not_served_stale(engine_page, server, model_dir):
    name = "cache-changing.st"
    config = ModelConfig.default_for(2, 128, 300)
    write_test_model(str(model_dir / name), config, seed=1, dtype="fp16")
    call(engine_page, "load", {"url": "/test-models/" + name})
    old = call(engine_page, "logits", {"tokens": [1, 2]})
    write_test_model(str(model_dir / name), config, seed=2, dtype="fp16")  # same size, new bytes, new ETag
    again = call(engine_page, "load", {"url": "/test-models/" + name})
    assert again["fetchedBytes"] > 0.95 * again["bytes"]  # everything but layer 0's unused v-LoRA
    new = call(engine_page, "logits", {"tokens": [1, 2]})
    expected = RWKV7.load(str(model_dir / name)).logits([1, 2])[0]
    assert np.abs(np.array(new) - expected).max() <= 1e-3 * (expected.max() - expected.min())  # test_model_gpu's bound
    assert new != old
    listed = [m for m in call(engine_page, "cacheList")["models"] if m["url"].endswith("/" + name)]
    assert len(listed) == 1 and listed[0]["complete"]  # the old version's bytes were freed


LOAD_UNTIL_HALF_JS = """
async (url) => {
  const { EngineClient } = await import("/client.js");
  const engine = await new Promise((resolve, reject) => {
    const e = new EngineClient("/worker.js", { onReady: () => resolve(e), onFailed: (m) => reject(new Error(m)) });
  });
  return await new Promise((resolve, reject) => {
    engine.call("load", { url }, {
      onProgress: (p) => { if (p.bytesDone >= p.bytesTotal / 2) resolve(p.bytesDone / p.bytesTotal); },
    })
      .then(() => resolve(1), reject);
  });
}
"""


def test_a_load_killed_half_way_resumes_from_the_cache(browser, server, model_dir):
    """Close the tab (and with it the worker) once half the bytes are in; a new tab's load
    fetches only what the first did not store, and the model it builds is the same."""
    name = "cache-resume.st"
    write_test_model(str(model_dir / name), ModelConfig.default_for(4, 256, 65536), seed=3, dtype="fp16")  # ~80 MB
    path, size = "/test-models/" + name, (model_dir / name).stat().st_size
    before = len(server.requests)
    tab = blank_page(browser.new_page(), server)
    reached = tab.evaluate(LOAD_UNTIL_HALF_JS, path)
    tab.close()
    assert 0.5 <= reached < 1, "the load finished before it could be interrupted"
    first_bytes = sum(r.bytes_sent for r in requests_for(server, path, before) if r.method == "GET")

    tab = blank_page(browser.new_page(), server)
    try:
        before = len(server.requests)
        resumed = tab.evaluate(CALL_JS, ["load", {"url": path}])
        second_bytes = sum(r.bytes_sent for r in requests_for(server, path, before) if r.method == "GET")
        rows = tab.evaluate(CALL_JS, ["logits", {"tokens": [10, 20, 30]}])
        tab.evaluate(CALL_JS, ["load", {"url": path, "cache": False}])
        assert tab.evaluate(CALL_JS, ["logits", {"tokens": [10, 20, 30]}]) == rows  # resumed bytes == fetched bytes
    finally:
        tab.close()
    print(
        f"killed at {reached:.0%}: first load sent {first_bytes:,} bytes, the resumed one {second_bytes:,} of {size:,}"
    )
    assert resumed["fetchedBytes"] <= 0.6 * size  # at least the half that was reported done came from the cache
    assert second_bytes <= resumed["fetchedBytes"] + 1  # (+ the probe)
    assert first_bytes + second_bytes >= size


def test_cached_models_are_listed_and_deleted(engine_page, model_dir):
    name = "cache-listed.st"
    write_test_model(str(model_dir / name), ModelConfig.default_for(1, 64, 256), seed=2, dtype="fp32")
    call(engine_page, "load", {"url": "/test-models/" + name})
    listing = call(engine_page, "cacheList")
    entry = next(m for m in listing["models"] if m["url"].endswith("/" + name))
    assert entry["complete"] and entry["size"] == (model_dir / name).stat().st_size
    assert listing["usage"] >= entry["cachedBytes"] > 0.9 * entry["size"] and listing["quota"] > listing["usage"]
    call(engine_page, "cacheDelete", {"id": entry["id"]})
    assert not any(m["id"] == entry["id"] for m in call(engine_page, "cacheList")["models"])
    assert (
        call(engine_page, "load", {"url": "/test-models/" + name})["fetchedBytes"] == entry["cachedBytes"]
    )  # fetched anew


def test_a_stop_string_inside_a_decode_batch_rolls_back_on_the_gpu(engine_page):
    """The shipped byte-level model writes text; a stop string from the middle of it ends the text there,
    and the state equals that of a generation cut by max_tokens at the same token (no rollback)."""
    call(engine_page, "load", {"url": "/models/rwkv7-tiny-wordnet.st"})
    options = {"max_tokens": 48, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    free = call(engine_page, "generate", {"prompt": "garden (noun): ", "options": options})
    stop = free["text"][20:23]  # the batch of 16 covers tokens 15..30: the stop lands inside it
    assert stop and stop not in free["text"][:20]
    stopped = call(engine_page, "generate", {"prompt": "garden (noun): ", "options": {**options, "stop": [stop]}})
    assert stopped["text"] == free["text"][:20] and stopped["stopped_by"] == "stop"
    rolled_back = bytes(
        engine_page.evaluate("async () => Array.from(new Uint8Array(await window.__engine.call('exportState')))")
    )
    cut = call(
        engine_page,
        "generate",
        {"prompt": "garden (noun): ", "options": {**options, "max_tokens": stopped["generated"]}},
    )
    assert cut["tokens"] == stopped["tokens"]
    assert (
        bytes(engine_page.evaluate("async () => Array.from(new Uint8Array(await window.__engine.call('exportState')))"))
        == rolled_back
    )
