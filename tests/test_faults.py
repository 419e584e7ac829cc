"""Runtime faults in the browser engine (issue 14, item 3): a lost GPU device, a network that fails
mid-load, a full storage quota, aborts at every stage, requests that arrive together, and the shape of
the errors the worker reports. Each through the engine worker (web/worker.js) in headless Chromium;
the page, the JS module and the iframe protocol (test_embed.py) each get the device-lost case."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from gpu_harness import blank_page
from rwkvweb.config import ModelConfig
from rwkvweb.headless import CALL_JS, open_blank
from rwkvweb.testmodel import write_test_model

pytestmark = pytest.mark.browser
TIMEOUT = 120_000
SMALL = "/test-models/faults-2x128.st"
GREEDY = {"max_tokens": 12, "temperature": 0}
LOST = "the GPU device was lost (destroyed"
WORLD = "/test-models/faults-world-2x64.st"  # World vocabulary: nearly every token is a piece of text


@pytest.fixture(scope="module")
def models(model_dir):
    write_test_model(str(model_dir / "faults-2x128.st"), ModelConfig.default_for(2, 128, 300), seed=8, dtype="fp16")
    (model_dir / "faults-empty.st").write_bytes(b"")
    write_test_model(
        str(model_dir / "faults-world-2x64.st"), ModelConfig.default_for(2, 64, 65536), seed=3, dtype="fp16"
    )
    return model_dir


@pytest.fixture(scope="module")
def engine(browser, server, models):
    page = blank_page(browser.new_page(), server)
    page.console_messages = []
    page.on("console", lambda message: page.console_messages.append(message.text))
    page.evaluate(CALL_JS, ["info", {}])  # starts the worker and waits for it
    yield page
    page.close()


def call(page, method, params=None):
    return page.evaluate(CALL_JS, [method, params or {}])


def failure(page, method, params=None) -> str:
    """The message a call rejects with (a call that succeeds fails the test)."""
    return page.evaluate(
        "async ([m, p]) => window.__engine.call(m, p).then(() => 'no error', (e) => e.message)", [method, params or {}]
    )


def gpu_bytes(page) -> int:
    return call(page, "info")["gpu"]["bytesAllocated"]


def engine_worker(page):
    """Playwright's handle on the page's engine worker (web/worker.js)."""
    workers = [w for w in page.workers if "/worker.js" in w.url]
    assert len(workers) == 1, [w.url for w in page.workers]
    return workers[0]


def lose_device(page) -> None:
    """Simulate a lost GPU (a driver reset): destroy the engine's device from inside its worker."""
    engine_worker(page).evaluate("() => self.__rwkvwebDevice().destroy()")


# --- errors in one line --------------------------------------------------------------------------


def test_a_python_error_is_one_line_and_the_traceback_goes_to_the_console(engine):
    call(engine, "load", {"url": SMALL})
    before = len(engine.console_messages)
    message = failure(engine, "generate", {"prompt": [300], "options": {"max_tokens": 2}})
    assert message == "ValueError: token id 300 is outside the model's vocabulary [0, 300)"
    logged = engine.console_messages[before:]
    assert any(m.startswith("Traceback (most recent call last)") and m.rstrip().endswith(message) for m in logged)


def test_an_empty_model_file_is_named_as_such(engine):
    assert "the model file is empty" in failure(engine, "load", {"url": "/test-models/faults-empty.st"})
    picked = engine.evaluate("""async () => window.__engine.call("load", { file: new File([], "picked.st") })
      .then(() => "no error", (e) => e.message)""")
    assert picked.startswith("picked.st: the model file is empty")


# --- aborts --------------------------------------------------------------------------------------


def abort_after_first_submission(page) -> None:
    """Make the engine worker abort its running request once the next GPU submission is made: exactly where a
    prefill stands then is known (its first chunk is submitted), where a timer from the page would guess."""
    engine_worker(page).evaluate("""() => {
      const submit = GPUQueue.prototype.submit;
      GPUQueue.prototype.submit = function (...args) {
        GPUQueue.prototype.submit = submit;
        setTimeout(() => self.onmessage({ data: { method: "abort" } }));  // as the page's abort message arrives
        return submit.apply(this, args);
      };
    }""")


def test_an_abort_between_prompt_chunks_undoes_the_prompt(engine):
    """Aborted after the first of a 1000-token prompt's 16 chunks: the prompt stops there (the rest never
    runs), the state is the one before it, the GPU holds the bytes it held, and a continuation equals the
    uninterrupted greedy run."""
    call(engine, "load", {"url": SMALL})
    whole = call(engine, "generate", {"prompt": [5, 6, 7], "options": {**GREEDY, "max_tokens": 24}})
    assert whole["stopped_by"] == "length"  # (the test model's greedy text has no end-of-text this early)
    first = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    held = gpu_bytes(engine)
    long = [1 + (i * 7) % 290 for i in range(1000)]
    abort_after_first_submission(engine)
    aborted = call(engine, "generate", {"prompt": long, "options": {"max_tokens": 100000, "keep_state": True}})
    assert aborted["stopped_by"] == "abort" and aborted["generated"] == 0 and aborted["tokens"] == []
    assert 1 <= aborted["prefill_chunks"] < 16  # 1000 tokens are 16 chunks of 64: it stopped before the end
    assert gpu_bytes(engine) == held
    rest = call(engine, "generate", {"prompt": [], "options": {**GREEDY, "keep_state": True}})
    assert first["tokens"] + rest["tokens"] == whole["tokens"]
    again = call(engine, "generate", {"prompt": long, "options": {"max_tokens": 1, "temperature": 0}})
    assert again["prefill_chunks"] == 16 and again["generated"] == 1  # the same prompt, not aborted, runs whole


def test_an_abort_during_decode_leaves_the_engine_as_fresh(engine):
    """Aborted while tokens come: stopped_by "abort", the GPU holds the bytes it held before, and the next
    greedy generation equals the one before the abort."""
    call(engine, "load", {"url": SMALL})
    baseline = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    held = gpu_bytes(engine)
    out = engine.evaluate("""async () => {
      const e = window.__engine;
      const later = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      // a prompt whose greedy text runs 200 tokens without end-of-text: the abort comes before that
      let short;
      for (let token = 1; ; token++) {
        short = [token];
        const run = await e.call("generate", { prompt: short, options: { max_tokens: 200, temperature: 0 } });
        if (run.stopped_by === "length") break;
      }
      const decode = e.call("generate", { prompt: short, options: { max_tokens: 100000, temperature: 0 } });
      await later(500);
      e.abort();
      return await decode;
    }""")
    assert out["stopped_by"] == "abort" and 1 < out["generated"] < 200
    assert gpu_bytes(engine) == held
    again = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    assert again["tokens"] == baseline["tokens"] and again["text"] == baseline["text"]


def test_an_abort_during_load_frees_its_gpu_memory_and_the_next_load_works(engine, models):
    name = "faults-4x512.st"  # ~25 MB: several read batches, so the abort lands between them
    write_test_model(str(models / name), ModelConfig.default_for(4, 512, 300), seed=2, dtype="fp16")
    call(engine, "load", {"url": SMALL})
    baseline = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    call(engine, "unload")
    assert gpu_bytes(engine) == 0
    out = engine.evaluate(
        """async (url) => {
      const e = window.__engine;
      let progress = 0;
      const load = e.call("load", { url, cache: false }, { onProgress: () => { if (++progress === 1) e.abort(); } });
      return { error: await load.then(() => "no error", (err) => err.message), progress };
    }""",
        "/test-models/" + name,
    )
    assert out["progress"] >= 1 and out["error"] == "the load was aborted"
    assert gpu_bytes(engine) == 0  # what the half-made model held is freed
    assert "no model is loaded" in failure(engine, "generate", {"prompt": [1], "options": {"max_tokens": 1}})
    call(engine, "load", {"url": SMALL})
    again = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    assert again["tokens"] == baseline["tokens"]


# --- requests at once ----------------------------------------------------------------------------


def test_requests_sent_together_run_one_after_another(engine):
    """The page's client (web/client.js) fires three requests without waiting: the worker's queue runs
    them in order, the second's text only after the first's last piece, each as it would run alone."""
    call(engine, "load", {"url": SMALL})
    alone = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    out = engine.evaluate(
        """async (options) => {
      const e = window.__engine;
      const events = [];
      const run = (tag, prompt) => e.call("generate", { prompt, options },
                                          { onText: (piece) => events.push([tag, piece]) })
        .then((result) => { events.push([tag, "<done>"]); return result; });
      const results = await Promise.all([run("a", [5, 6, 7]), run("b", [9, 9]), run("c", [5, 6, 7])]);
      return { events, results };
    }""",
        GREEDY,
    )
    tags = [tag for tag, _ in out["events"]]
    assert tags == sorted(tags)  # a's pieces, then b's, then c's: never interleaved
    a, b, c = out["results"]
    assert a["tokens"] == c["tokens"] == alone["tokens"] and b["tokens"] != a["tokens"]
    for tag, result in zip("abc", out["results"]):
        assert "".join(p for t, p in out["events"] if t == tag and p != "<done>") == result["text"]


# --- the network fails mid-load ------------------------------------------------------------------


def test_a_network_failure_mid_load_is_retried_then_explained_and_the_cache_keeps_only_whole_data(
    engine, server, models
):
    name = "faults-net-4x512.st"
    write_test_model(str(models / name), ModelConfig.default_for(4, 512, 300), seed=5, dtype="fp16")
    path = "/test-models/" + name
    data = (models / name).read_bytes()
    full = call(engine, "load", {"url": path, "cache": False})["fetchedBytes"]  # what one whole load fetches
    reference = call(engine, "logits", {"tokens": [1, 2, 3]})
    call(engine, "unload")

    seen = {"ranges": 0, "refused": 0}

    def cut_after_two_ranges(route):  # the probe and two batches get through; then the connection drops
        wanted = route.request.headers.get("range", "")
        if wanted.startswith("bytes=") and wanted != "bytes=0-0":
            seen["ranges"] += 1
            if seen["ranges"] > 2:
                seen["refused"] += 1
                return route.abort("connectionreset")
        route.continue_()

    url = server.url + path.lstrip("/")
    engine.route(url, cut_after_two_ranges)
    try:
        message = failure(engine, "load", {"url": path})
    finally:
        engine.unroute(url)
    assert "cannot fetch" in message and "(after 4 attempts)" in message  # retried with back-off, then one line
    assert seen["refused"] >= 4
    assert gpu_bytes(engine) == 0

    stored = engine.evaluate(
        """async (name) => {
      const root = await (await navigator.storage.getDirectory()).getDirectoryHandle("rwkvweb-cache");
      for await (const [, folder] of root.entries()) {
        const meta = JSON.parse(await (await (await folder.getFileHandle("meta.json")).getFile()).text());
        if (!meta.url.endsWith("/" + name)) continue;
        const bytes = new Uint8Array(await (await (await folder.getFileHandle("data")).getFile()).arrayBuffer());
        return { meta, ranges: meta.ranges.map(([a, b]) => [a, Array.from(bytes.subarray(a, b))]) };
      }
      return null;
    }""",
        name,
    )
    assert stored is not None and not stored["meta"]["loaded"] and stored["ranges"]
    kept = 0
    for start, content in stored["ranges"]:
        assert bytes(content) == data[start : start + len(content)]  # every recorded byte is the file's
        kept += len(content)
    assert 0 < kept < full

    resumed = call(engine, "load", {"url": path})  # the network is back
    assert resumed["fetchedBytes"] == full - kept  # only what was missing
    assert call(engine, "logits", {"tokens": [1, 2, 3]}) == reference


# --- the lost device -----------------------------------------------------------------------------


def test_a_lost_device_mid_generation_is_one_line_and_a_load_recovers(engine):
    call(engine, "load", {"url": WORLD})
    baseline = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    engine.evaluate("""() => {
      window.__pieces = 0;
      window.__run = window.__engine.call("generate", { prompt: [1, 2], options: { max_tokens: 100000 } },
                                           { onText: () => window.__pieces++ })
        .then(() => "no error", (e) => [e.message, e.code]);
    }""")
    engine.wait_for_function("window.__pieces >= 3", timeout=TIMEOUT)
    lose_device(engine)
    message, code = engine.evaluate("window.__run")
    assert message.startswith(LOST) and message.endswith("; Reload model to continue on a new device")
    assert code == "device-lost" and "\n" not in message
    later = failure(engine, "generate", {"prompt": [1], "options": {"max_tokens": 1}})
    assert later.startswith(LOST)  # every later call says the same
    call(engine, "load", {"url": WORLD})  # a new device
    again = call(engine, "generate", {"prompt": [5, 6, 7], "options": GREEDY})
    assert again["tokens"] == baseline["tokens"]


def test_the_page_says_the_device_was_lost_and_reloads_the_model(page, server, models):
    page.goto(server.url)
    page.wait_for_selector("#model-info[data-loaded]", timeout=TIMEOUT)
    load_from_url(page, WORLD.lstrip("/"))
    page.click("#mode-completion")
    page.fill("#prompt", "garden (noun): ")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "10")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=TIMEOUT)
    baseline = page.text_content("#output")

    page.fill("#max-tokens", "4096")
    page.click("#generate")
    page.wait_for_selector("#output:not(:empty)", timeout=TIMEOUT)  # text is coming (the page's CSP forbids eval)
    lose_device(page)
    expect(page.locator("#status")).to_have_attribute("data-state", "failed", timeout=TIMEOUT)
    status = page.text_content("#status")
    assert status.startswith(LOST) and status.endswith("Reload model to continue on a new device")
    assert page.text_content("#error") == status  # one line, said once: no traceback
    expect(page.locator("#generate")).to_be_disabled()  # no model to run until it is reloaded

    page.click("#reload-model")
    page.wait_for_selector("#model-info[data-loaded]", timeout=TIMEOUT)
    assert page.get_attribute("#status", "data-state") == "ready" and page.is_hidden("#reload-model")
    page.click("#mode-completion")  # a World model opens in chat mode
    page.fill("#max-tokens", "10")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=TIMEOUT)
    assert page.text_content("#output") == baseline


def test_the_module_rejects_with_the_lost_device_and_loads_again(page, server, models):
    open_blank(page, server.url)
    page.evaluate("""async () => {
      const { load } = await import("/rwkvweb.js");
      window.__load = load;
      const model = await load("/test-models/faults-world-2x64.st");
      window.__baseline = (await model.generate("cat (noun): ", { max_tokens: 8, temperature: 0 }).result).text;
      window.__pieces = 0;
      const run = model.generate("dog (noun): ", { max_tokens: 100000 });
      window.__run = (async () => { for await (const _ of run) window.__pieces++; })()
        .then(() => "no error", (e) => [e.message, e.code]);
    }""")
    page.wait_for_function("window.__pieces >= 3", timeout=TIMEOUT)
    lose_device(page)
    message, code = page.evaluate("window.__run")
    assert message.startswith(LOST) and code == "device-lost"
    again = page.evaluate("""async () => {
      const model = await window.__load("/test-models/faults-world-2x64.st");
      return (await model.generate("cat (noun): ", { max_tokens: 8, temperature: 0 }).result).text;
    }""")
    assert again == page.evaluate("window.__baseline")


def test_the_module_aborts_a_load_half_way_frees_its_gpu_memory_and_loads_again(page, server, models):
    """load(url, { signal }): aborted once weights are arriving, it rejects with one clear line, the GPU holds
    no bytes (the half-made model's are freed), and the next load generates as before; a signal aborted
    already stops a load before anything starts."""
    write_test_model(str(models / "faults-module-4x512.st"), ModelConfig.default_for(4, 512, 300), seed=7, dtype="fp16")
    open_blank(page, server.url)
    out = page.evaluate(
        """async ([small, big]) => {
      const { load } = await import("/rwkvweb.js");
      const greedy = { max_tokens: 12, temperature: 0 };
      const model = await load(small);
      const baseline = (await model.generate([5, 6, 7], greedy).result).tokens;
      const gpuBytes = async () => (await model.client.call("info")).gpu.bytesAllocated;  // the shared engine
      const stop = new AbortController();
      let progress = 0;
      const onProgress = () => { if (++progress === 1) stop.abort(); };
      const error = await load(big, { cache: false, signal: stop.signal, onProgress })
        .then(() => "no error", (e) => e.message);
      const bytesAfter = await gpuBytes();
      const before = new AbortController();
      before.abort();
      const early = await load(small, { signal: before.signal }).then(() => "no error", (e) => e.message);
      const again = await load(small, { signal: new AbortController().signal });
      const tokens = (await again.generate([5, 6, 7], greedy).result).tokens;
      return { error, progress, bytesAfter, early, baseline, tokens, loaded: await gpuBytes() };
    }""",
        [SMALL, "/test-models/faults-module-4x512.st"],
    )
    assert out["progress"] >= 1 and out["error"] == "the load was aborted"
    assert out["bytesAfter"] == 0  # nothing of the half-made model (nor the one it replaced) stays on the GPU
    assert out["early"] == "the load was aborted"
    assert out["tokens"] == out["baseline"] and out["loaded"] > 0


def test_the_module_queues_two_generations_at_once(page, server):
    open_blank(page, server.url)
    out = page.evaluate("""async () => {
      const { load } = await import("/rwkvweb.js");
      const model = await load();
      const greedy = { max_tokens: 10, temperature: 0 };
      const alone = (await model.generate("cat (noun): ", greedy).result).text;
      const events = [];
      const drain = async (tag, run) => {
        for await (const piece of run) events.push(tag);
        return (await run.result).text;
      };
      const [a, b] = await Promise.all([drain("a", model.generate("cat (noun): ", greedy)),
                                        drain("b", model.generate("cat (noun): ", greedy))]);
      return { alone, a, b, events };
    }""")
    assert out["a"] == out["b"] == out["alone"]
    assert out["events"] == sorted(out["events"]) and "b" in out["events"]  # a's pieces, then b's


# --- a full storage quota ------------------------------------------------------------------------


def test_a_full_quota_is_explained_on_the_status_line_and_the_model_loads_uncached(page, server, models):
    for name, seed in (("faults-quota-a.st", 3), ("faults-quota-b.st", 4)):
        write_test_model(str(models / name), ModelConfig.default_for(2, 128, 300), seed=seed, dtype="fp16")
    page.goto(server.url)
    page.wait_for_selector("#model-info[data-loaded]", timeout=TIMEOUT)
    worker = engine_worker(page)

    # storage fills up while the model's bytes are written: caching stops, loading goes on
    worker.evaluate("""() => {
      const full = () => { throw new DOMException("full", "QuotaExceededError"); };
      FileSystemSyncAccessHandle.prototype.write = full;
    }""")
    load_from_url(page, "test-models/faults-quota-a.st")
    assert "caching stopped: the browser's storage quota is full; delete cached models to make room" in (
        page.text_content("#status")
    )
    expect(page.locator("#cache-usage")).to_contain_text("cached", timeout=TIMEOUT)
    entries = [t for t in page.locator("#cache-list li").all_text_contents() if "faults-quota-a.st" in t]
    assert all("(partial" in t for t in entries)  # never marked whole: a later load must not trust it
    assert page.text_content("#model-info").startswith("faults-quota-a.st: 2 layers") and page.is_hidden("#error")

    # too little room from the start: not cached at all, and the status line says how much was missing
    worker.evaluate("() => { StorageManager.prototype.estimate = async () => ({ quota: 50e6, usage: 49.9e6 }); }")
    load_from_url(page, "test-models/faults-quota-b.st")
    assert "not cached: the browser's storage quota has 0.1 MB free" in page.text_content("#status")


def load_from_url(page, url):
    page.evaluate("() => { delete document.querySelector('#model-info').dataset.loaded; }")
    page.fill("#model-url", url)
    page.click("#load")
    page.wait_for_selector("#model-info[data-loaded]", timeout=TIMEOUT)
    assert page.get_attribute("#status", "data-state") == "ready"


def test_stop_aborts_a_load_in_the_page(page, server, models):
    write_test_model(str(models / "faults-stop-4x512.st"), ModelConfig.default_for(4, 512, 300), seed=6, dtype="fp16")
    page.goto(server.url)
    page.wait_for_selector("#model-info[data-loaded]", timeout=TIMEOUT)  # the shipped model, in completion mode
    page.evaluate("() => { delete document.querySelector('#model-info').dataset.loaded; }")
    page.fill("#model-url", "test-models/faults-stop-4x512.st")
    page.click("#load")
    for _ in range(600):  # weights are arriving (polled: the page's CSP forbids wait_for_function's eval)
        if page.evaluate("() => document.querySelector('#load-progress').value") > 0:
            break
        page.wait_for_timeout(50)
    page.click("#stop")  # enabled while the load runs
    expect(page.locator("#error")).to_have_text("the load was aborted", timeout=TIMEOUT)
    expect(page.locator("#status")).to_have_text("no model loaded")  # the shipped one was already replaced
    expect(page.locator("#generate")).to_be_disabled()
    assert page.get_attribute("#model-info", "data-loaded") is None
