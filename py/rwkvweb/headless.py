"""Run the browser engine from CPython: the built site in headless Chromium, driven by Playwright.

This is the product path end to end (Pyodide in the worker, the Python graph, WGSL on WebGPU),
used by `python -m rwkvweb logits|generate --backend webgpu` so anyone can compare the engine
with the numpy reference without writing JavaScript. Needs a source checkout (serve.py and
build/ beside py/), Playwright, and Chromium (Debian: /usr/bin/chromium).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = os.environ.get("RWKVWEB_CHROMIUM", "/usr/bin/chromium")
# SwiftShader gives Chromium a WebGPU adapter without a GPU; the rest keep it off the network.
CHROMIUM_ARGS = [
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BLANK = "__headless__.html"

CALL_JS = """
async ([method, params]) => {
  if (!window.__engine) {
    const { EngineClient } = await import("/client.js");
    window.__engine = await new Promise((resolve, reject) => {
      const engine = new EngineClient("/worker.js", {
        onReady: () => resolve(engine), onFailed: (e) => reject(new Error(e)),
      });
    });
  }
  return window.__engine.call(method, params);
}
"""


def open_blank(page, base_url: str):
    """Point the page at an empty document on the server's origin (served by Playwright, not
    the site), so `import()` of the site's modules and same-origin fetches work from it."""
    page.route(base_url + BLANK, lambda route: route.fulfill(body="<!doctype html>", content_type="text/html"))
    page.goto(base_url + BLANK)
    return page


class HeadlessEngine:
    """`call(method, params)` on the page's engine worker; see web/worker.js for the methods."""

    def __init__(self, page, base_url: str):
        self.page, self.base_url = page, base_url

    def call(self, method: str, params: dict | None = None):
        return self.page.evaluate(CALL_JS, [method, params or {}])

    def load(self, model_path: str, **options) -> dict:
        """options: budget (bytes), precision (auto | fp32 | fp16 | int8 | nf4), as for api.Model.load."""
        url = model_path if _is_url(model_path) else self.base_url + "cli-model/" + os.path.basename(model_path)
        return self.call("load", {"url": url, **options})  # a URL is fetched by the page itself, from its own origin


def _is_url(model_path: str) -> bool:
    return model_path.startswith(("http://", "https://"))


@contextmanager
def headless_engine(model_path: str):
    """Serve the site plus the model's folder (serve.py in a process of its own, which builds the
    site when it is stale), open Chromium, yield a HeadlessEngine."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} not found: install Chromium (apt-get install chromium) or set RWKVWEB_CHROMIUM")
    from playwright.sync_api import sync_playwright

    mounts = {} if _is_url(model_path) else {"cli-model": os.path.dirname(os.path.abspath(model_path))}
    with site_server(mounts) as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = open_blank(browser.new_page(), url)
            yield HeadlessEngine(page, url)
            browser.close()


@contextmanager
def site_server(mounts: dict[str, str]):
    """`python serve.py` of this source checkout on a free loopback port; yields its URL. The package
    imports nothing from build/ or serve.py (it ships to the browser): the server is another process."""
    script = os.path.join(REPO, "serve.py")
    if not os.path.exists(script):
        raise RuntimeError("--backend webgpu needs a source checkout of rwkvweb (serve.py and build/ beside py/)")
    command = [
        sys.executable,
        script,
        "--port",
        "0",
        "--quiet",
        *(f"--mount={prefix}={folder}" for prefix, folder in mounts.items()),
    ]
    errors = tempfile.TemporaryFile("w+")  # not a pipe: a chatty server must never block on a full one
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=REPO)
    try:
        for line in server.stdout:  # "building the site ..." first when it is stale, then "serving ROOT at URL ..."
            match = re.search(r" at (http://\S+)", line)
            if match:
                break
        else:
            errors.seek(0)
            raise RuntimeError(f"serve.py stopped before serving: {errors.read().strip()}")
        yield match.group(1).rstrip("/") + "/"
    finally:
        server.terminate()
        server.wait(timeout=10)
        errors.close()
