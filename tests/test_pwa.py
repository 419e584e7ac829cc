"""The offline app: a service worker that precaches the build, serves it offline (the shipped model
included), picks up a rebuilt site after a reload without ever mixing two builds; OPFS-cached models
load offline with a note. A site of its own (a copy built into a temp dir), a server and a Chromium
profile of its own, so the service worker and its caches touch no other test."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

import serve
from app_models import write_chat_model
from build import site
from rwkvweb.headless import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser
TIMEOUT = 120_000


@pytest.fixture(scope="module")
def pwa(tmp_path_factory):
    """(context, server, site root). Chromium runs in a thread of its own: the session's browser
    (conftest) already holds Playwright's sync API on the main thread, and it allows one per thread."""
    folder = tmp_path_factory.mktemp("pwa")
    root, models = str(folder / "site"), folder / "models"
    models.mkdir()
    site.build(root, extra_files={"build-note.txt": b"first build\n"})
    write_chat_model(str(models / "offline.st"))
    server = serve.serve_in_thread(root, mounts={"test-models": str(models)})
    yield folder, server, root
    server.shutdown()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


def in_own_chromium(folder, scenario):
    """Run scenario(context) with a Chromium profile of its own, on a thread of its own."""
    from playwright.sync_api import sync_playwright

    def run():
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(folder / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                scenario(context)
            finally:
                context.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def version(root):
    return json.load(open(os.path.join(root, site.MANIFEST)))["version"]


def app_loaded(page):
    page.wait_for_selector("#model-info[data-loaded], #status[data-state='failed']", timeout=TIMEOUT)
    assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")


def generate(page):
    page.click("#mode-completion")
    page.fill("#max-tokens", "20")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=TIMEOUT)
    return page.text_content("#output")


NOTE = """async () => {
  const r = await fetch("build-note.txt");
  return [await r.text(), r.headers.get("X-Rwkvweb-Build")];
}"""
CACHES = "async () => (await caches.keys()).sort()"


def test_installable_offline_and_updated_without_mixing_builds(pwa):
    folder, server, root = pwa
    in_own_chromium(folder, lambda context: offline_and_update(context, server, root))


def offline_and_update(context, server, root):
    manifest = json.load(open(os.path.join(root, "manifest.webmanifest")))
    assert manifest["display"] == "standalone" and manifest["start_url"] == "./"
    assert {(i["sizes"], i["purpose"]) for i in manifest["icons"]} == {
        (s, p) for s in ("192x192", "512x512") for p in ("any", "maskable")
    }
    for icon in manifest["icons"]:
        with open(os.path.join(root, icon["src"]), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"

    page = context.new_page()
    page.goto(server.url)
    app_loaded(page)
    page.evaluate("navigator.serviceWorker.ready")
    first = version(root)
    expect(page.locator("body")).to_have_attribute("data-service-worker", "registered")
    page.fill("#model-url", "test-models/offline.st")  # a model from outside the build, cached in OPFS
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text("offline.st:", timeout=TIMEOUT)
    assert page.evaluate(CACHES) == [f"rwkvweb-build-{first}", "rwkvweb-clients"]

    context.set_offline(True)
    try:
        page.reload()
        app_loaded(page)  # Python, the wheels, the vocabulary and the shipped model, all from the service worker
        assert "rwkv7-tiny-wordnet.st: 4 layers" in page.text_content("#model-info")
        assert len(generate(page)) > 5
        assert page.evaluate(NOTE) == ["first build\n", first]
        page.click("#mode-chat")
        page.fill("#model-url", "test-models/offline.st")
        page.click("#load")
        expect(page.locator("#model-info")).to_contain_text("offline.st:", timeout=TIMEOUT)
        assert "offline: the server could not be reached, so the copy cached on" in page.text_content("#model-info")
        assert "storage:" in page.text_content("#storage") and "MB available" in page.text_content("#storage")
    finally:
        context.set_offline(False)

    site.build(root, extra_files={"build-note.txt": b"second build\n"})  # a new build with a changed asset
    second = version(root)
    assert second != first
    page.reload()  # still the first build (a page keeps the build it started with); the browser finds the new worker
    app_loaded(page)
    expect(page.locator("#update")).to_have_attribute("data-updated", "true", timeout=TIMEOUT)
    # the new worker is in charge now, yet this page still gets its own build's files only
    assert page.evaluate(NOTE) == ["first build\n", first]
    assert page.evaluate("fetch('index.html').then((r) => r.headers.get('X-Rwkvweb-Build'))") == first

    seen = []
    page.on("response", lambda r: seen.append((r.url, r.headers.get("x-rwkvweb-build"))))
    page.reload()
    app_loaded(page)
    assert page.evaluate(NOTE) == ["second build\n", second]
    from_builds = {build for url, build in seen if build}
    assert from_builds == {second}, seen  # every response from the cache is the new build's
    assert any(url.endswith("/app.js") for url, build in seen if build == second)
    page.evaluate("navigator.serviceWorker.controller.postMessage('tidy')")
    page.wait_for_function(f"caches.keys().then((k) => !k.includes('rwkvweb-build-{first}'))", timeout=30_000)
    assert page.evaluate(CACHES) == [f"rwkvweb-build-{second}", "rwkvweb-clients"]
    assert len(generate(page)) > 5
    page.close()
