"""Shared fixtures: the built site, the server, headless Chromium, small generated models."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "py")]  # serve.py, build/, and the package from source

from rwkvweb.headless import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - after the path setup
from rwkvweb.source import BytesSource  # noqa: E402


@pytest.fixture(scope="session")
def site_dir() -> str:
    from build import site

    site.build()
    return site.SITE


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Generated models for browser tests, served at /test-models/ beside the site (whose own models/ stay visible)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def server(site_dir, model_dir):
    import serve

    httpd = serve.serve_in_thread(site_dir, mounts={"test-models": str(model_dir)})
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) or set RWKVWEB_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            # ForceEagerMeasureMemory: performance.measureUserAgentSpecificMemory() answers at once
            # instead of at the next natural GC (test_load_memory.py samples it during a load)
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS + ["--enable-blink-features=ForceEagerMeasureMemory"],
        )
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, server):
    """A fresh tab whose every request outside the local server is refused and recorded."""
    tab = browser.new_page()
    tab.outside_requests = []

    def guard(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            tab.outside_requests.append(route.request.url)
            route.abort()

    tab.route("**/*", guard)
    tab.console_messages = []
    tab.on("console", lambda message: tab.console_messages.append(message.text))
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def gpu_page(browser, server):
    """One blank tab on the server's origin for a module's plan runs (tests/gpu_harness.py); test_wgpu_exec.py
    overrides it with a native GPU."""
    from gpu_harness import blank_page

    tab = blank_page(browser.new_page(), server)
    yield tab
    tab.close()


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API (browser tests in the same
    session) keeps an event loop running on the main thread, where asyncio.run refuses to start."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class CountingSource(BytesSource):
    """A byte source over bytes that records every read: tests of what a loader reads, and when."""

    def __init__(self, data):
        super().__init__(data)
        self.reads = []

    def read(self, start, end):
        self.reads.append((start, end))
        return super().read(start, end)
