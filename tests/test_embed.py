"""The iframe protocol across origins: a host page on http://127.0.0.1:P embeds the app served at
http://localhost:Q (two servers, two origins); a third origin that may frame the app but is not on
?origins= gets no reply. Everything through serve.py, in headless Chromium."""

from __future__ import annotations

import urllib.parse

import pytest
from playwright.sync_api import expect

import serve
from app_models import HOSTILE, write_parrot_model
from rwkvweb.tokenizer import WorldTokenizer

pytestmark = pytest.mark.browser
TIMEOUT = 120_000


@pytest.fixture(scope="module")
def origins(site_dir, model_dir):
    """(host A, app B, third C) as origin strings; B lets A and C frame it, A and C may frame B."""
    host, third = serve.serve_in_thread(site_dir), serve.serve_in_thread(site_dir)
    app = serve.serve_in_thread(site_dir, mounts={"test-models": str(model_dir)})
    a, c = (f"http://127.0.0.1:{s.server_address[1]}" for s in (host, third))
    b = f"http://localhost:{app.server_address[1]}"
    app.embed_origins.extend([a, c])
    for server in (host, third):
        server.frame_origins.append(b)
    yield a, b, c
    for server in (host, third, app):
        server.shutdown()
        server.server_close()


@pytest.fixture
def tab(browser, origins):
    """A tab that may reach the three local origins and nothing else."""
    page = browser.new_page()
    page.outside_requests = []

    def guard(route):
        if route.request.url.startswith(origins):
            route.continue_()
        else:
            page.outside_requests.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    yield page
    page.close()


def example_url(host, app, allowed):
    embed = f"{app}/embed.html?transcript=1&origins={allowed}"
    return f"{host}/embed-example.html?app={urllib.parse.quote(embed, safe='')}"


def test_a_host_on_another_origin_loads_and_generates_through_the_protocol(tab, origins):
    a, b, _ = origins
    tab.goto(example_url(a, b, a))
    expect(tab.locator("#host-status")).to_have_attribute("data-loaded", "true", timeout=TIMEOUT)
    assert "rwkv7-tiny-wordnet.st loaded (4 layers × 192)" in tab.text_content("#host-status")
    assert tab.frames[1].url.startswith(b + "/embed.html")
    tab.fill("#host-prompt", "garden (noun): ")
    tab.click("#host-generate")
    tab.wait_for_selector("#host-output[data-done]", timeout=TIMEOUT)
    assert len(tab.text_content("#host-output")) > 20 and "tokens/s" in tab.text_content("#host-stats")

    protocol = tab.evaluate("""async () => {
      const app = window.rwkvweb;
      const ids = await app.encode("hi <b>");
      const text = await app.decode(ids);
      const state = await app.exportState();
      await app.importState(state);
      // three requests at once are queued, not refused or interleaved: each one's pieces arrive together,
      // in the order the requests were made; greedy, the first and the last give the same text
      const options = { max_tokens: 12, temperature: 0 };
      const events = [];
      const drain = async (tag, run) => {
        for await (const piece of run) events.push([tag, piece]);
        return await run.result;
      };
      const short = { ...options, max_tokens: 6 };
      const [one, other, two] = await Promise.all([drain("a", app.generate("cat (noun): ", options)),
                                                   drain("b", app.generate("dog (noun): ", short)),
                                                   drain("c", app.generate("cat (noun): ", options))]);
      const errors = [];
      for (const call of [() => app.call("<img src=x onerror=pwn()>"), () => app.call("python", { code: "1" }),
                          () => app.embed("hello"), () => app.call("generate", { prompt: 5 })]) {
        errors.push(await call().then(() => "no error", (e) => e.message));
      }
      // abort: a long generation stops early and says so
      const run = app.generate("dog (noun): ", { max_tokens: 3000 });
      let pieces = 0;
      for await (const piece of run) { if (++pieces === 3) await run.abort(); }
      const aborted = await run.result;
      return { ids, text, stateBytes: state.byteLength, one, other, two, events, errors,
               aborted: aborted.stats.stopped_by };
    }""")
    assert protocol["ids"] == list(b"hi <b>") and protocol["text"] == "hi <b>"
    assert protocol["stateBytes"] == 4 * (
        4 * 192 * 2 + 4 * 3 * 64 * 64
    )  # per layer: two shifts [C] + S [H, 64, 64], float32
    assert protocol["one"]["text"] == protocol["two"]["text"] and protocol["one"]["stats"]["generated"] == 12
    assert protocol["other"]["stats"]["generated"] == 6  # b is told from a and c by its length
    tags = [tag for tag, _ in protocol["events"]]
    assert tags == sorted(tags) and set(tags) == {"a", "b", "c"}  # a's pieces, then b's, then c's: never mixed
    for tag, result in zip("abc", (protocol["one"], protocol["other"], protocol["two"])):
        assert "".join(piece for t, piece in protocol["events"] if t == tag) == result["text"]
    assert protocol["one"]["stats"]["prompt_tokens"] == len("cat (noun): ")
    unknown, python, embed, bad_prompt = protocol["errors"]
    assert unknown.startswith('unknown method "<img src=x onerror=pwn()>"; known: load, generate, abort')
    assert python.startswith('unknown method "python"')  # the Python cell is the main page's only
    assert (
        embed == "no error"
    )  # embed() answers through the protocol too (its vectors are checked in test_app_module.py)
    assert bad_prompt == "generate: prompt must be text (or a list of token ids)"
    assert protocol["aborted"] == "abort"
    frame = tab.frame_locator("iframe")
    expect(frame.locator("#embed-error")).to_contain_text("generate: prompt must be text")
    assert frame.locator("#embed-error img, #embed-transcript img, #embed-transcript script").count() == 0
    assert tab.outside_requests == []


def test_a_third_origin_that_may_frame_the_app_but_is_not_listed_gets_no_reply(tab, origins):
    a, b, c = origins
    tab.goto(example_url(c, b, a))  # C frames B, but ?origins= lists only A
    frame = tab.frame_locator("iframe")
    expect(frame.locator("#status")).to_have_text("ready", timeout=TIMEOUT)  # the engine is up...
    replies = tab.evaluate(
        """async (app) => {
      const seen = [];
      addEventListener("message", (event) => seen.push(event.data));
      const target = document.querySelector("iframe").contentWindow;
      target.postMessage({ rwkvweb: 1, id: 1, method: "encode", params: { text: "x" } }, app);
      target.postMessage({ rwkvweb: 1, id: 2, method: "load", params: {} }, app);
      await new Promise((resolve) => setTimeout(resolve, 3000));
      return seen;
    }""",
        b,
    )
    assert replies == []  # ...yet neither "ready" nor any answer reached C
    assert tab.text_content("#host-status") == "waiting for the app…"
    expect(frame.locator("#status")).to_have_text("ready")  # and nothing ran: no model load started


def test_hostile_output_and_errors_show_as_text_in_the_embed_page(tab, origins, model_dir):
    a, b, _ = origins
    write_parrot_model(str(model_dir / "parrot-embed.st"), HOSTILE, ["Say it"], WorldTokenizer.from_file())
    tab.add_init_script("window.pwn = () => { window.__pwned = true; }; window.hit = window.pwn;")
    tab.goto(example_url(a, b, a))
    expect(tab.locator("#host-status")).to_have_attribute("data-loaded", "true", timeout=TIMEOUT)
    result = tab.evaluate(
        """async (url) => {
      await window.rwkvweb.load({ url });
      const run = window.rwkvweb.generate("Say it", { max_tokens: 40, temperature: 0 });
      return (await run.result).text;
    }""",
        f"{b}/test-models/parrot-embed.st",
    )
    assert result == HOSTILE
    frame = tab.frame_locator("iframe")
    expect(frame.locator("#embed-transcript li[data-role='output']").last).to_have_text(HOSTILE)
    assert frame.locator("img, script:not([src])").count() == 0
    assert tab.frames[1].evaluate("window.__pwned") is None and tab.evaluate("window.__pwned") is None


def test_a_lost_device_is_an_error_reply_and_a_load_recovers(tab, origins, model_dir):
    """The GPU device is destroyed (as a driver reset would) while the iframe generates: the host's request
    gets one error line with code "device-lost", and a load through the protocol brings the engine back."""
    from rwkvweb.config import ModelConfig
    from rwkvweb.testmodel import write_test_model

    a, b, _ = origins
    write_test_model(
        str(model_dir / "world-embed-2x64.st"), ModelConfig.default_for(2, 64, 65536), seed=3, dtype="fp16"
    )
    tab.goto(example_url(a, b, a))
    expect(tab.locator("#host-status")).to_have_attribute("data-loaded", "true", timeout=TIMEOUT)
    tab.evaluate(
        """async (url) => {
      const app = window.rwkvweb;
      await app.load({ url });
      window.__baseline = (await app.generate("cat", { max_tokens: 8, temperature: 0 }).result).text;
      window.__pieces = 0;
      const run = app.generate("dog", { max_tokens: 4096 });
      window.__run = (async () => { for await (const _ of run) window.__pieces++; })()
        .then(() => "no error", (e) => [e.message, e.code]);
    }""",
        f"{b}/test-models/world-embed-2x64.st",
    )
    for _ in range(1200):  # text is coming (polled: the host page's CSP forbids wait_for_function's eval)
        if tab.evaluate("() => window.__pieces") >= 3:
            break
        tab.wait_for_timeout(100)
    workers = [w for w in tab.workers if w.url.startswith(b + "/worker.js")]
    assert len(workers) == 1, [w.url for w in tab.workers]
    workers[0].evaluate("() => self.__rwkvwebDevice().destroy()")
    message, code = tab.evaluate("window.__run")
    assert message.startswith("the GPU device was lost (destroyed") and "Reload model" in message
    assert code == "device-lost" and "\n" not in message
    frame = tab.frame_locator("iframe")
    expect(frame.locator("#status")).to_have_attribute("data-state", "failed")
    again = tab.evaluate(
        """async (url) => {
      await window.rwkvweb.load({ url });
      return (await window.rwkvweb.generate("cat", { max_tokens: 8, temperature: 0 }).result).text;
    }""",
        f"{b}/test-models/world-embed-2x64.st",
    )
    assert again == tab.evaluate("window.__baseline")
    expect(frame.locator("#status")).to_have_attribute("data-state", "ready")
