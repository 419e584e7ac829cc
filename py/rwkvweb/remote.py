"""`--backend webgpu-remote`: this CPython process runs the engine; a headless page runs only the bridge.

The site is served (serve.py, as for `--backend webgpu`, with the model's folder mounted), Chromium opens
remote.html?bridge=ws://127.0.0.1:PORT/SECRET, and the page connects back to a WebSocket server here
(rwkvweb.websocket) that takes only that page's origin on that secret path. The plan, the engine loop,
the tokenizer and sampling control stay in Python; frames (rwkvweb.protocol) carry the backend calls.
Needs a source checkout (serve.py, build/) and Chromium, not Playwright: the page connects by itself.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import tempfile
import urllib.parse
from contextlib import ExitStack

from .headless import CHROMIUM, CHROMIUM_ARGS, site_server
from .protocol import DEFAULT_TIMEOUT, VERSION, RemoteBackend, round_trip_times
from .websocket import WebSocketServer

CONNECT_SECONDS = (
    90.0  # a cold Chromium plus a WebGPU device on SwiftShader takes a few seconds; a stale site is built first
)


class WebSocketTransport:
    def __init__(self, socket):
        self.socket = socket

    def send(self, frame) -> None:
        self.socket.send(frame)

    def receive(self, timeout):
        return self.socket.receive(timeout)

    def close(self) -> None:
        self.socket.close()


def remote_backend(model_path: str, *, timeout: float = DEFAULT_TIMEOUT, version: int = VERSION) -> RemoteBackend:
    """Start the page and return a RemoteBackend connected to it; close() (or exit) stops everything.
    model_path: the file the engine will load (its folder is served to the page), or an http(s) URL."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} not found: install Chromium (apt-get install chromium) or set RWKVWEB_CHROMIUM")
    stack = ExitStack()
    try:
        is_url = model_path.startswith(("http://", "https://"))
        folder = os.path.dirname(os.path.abspath(model_path))
        site = stack.enter_context(site_server({} if is_url else {"cli-model": folder}))
        origin = site.rstrip("/")
        server = WebSocketServer(origin)
        stack.callback(server.close)
        browser = _open_chromium(site + "remote.html?" + urllib.parse.urlencode({"bridge": server.url}), stack)
        socket = server.accept(CONNECT_SECONDS)
        backend = RemoteBackend(WebSocketTransport(socket), url_for=_mounted(site), timeout=timeout, version=version)
    except BaseException:
        stack.close()
        raise
    backend.browser = browser
    backend.on_close.append(stack.close)
    atexit.register(backend.close)
    return backend


def _mounted(site: str):
    """The URL the page reads a source from: its own URL, else the file under serve.py's cli-model mount."""

    def url_for(source) -> str:
        name = str(getattr(source, "url", None) or source.name)
        if name.startswith(("http://", "https://")):
            return name
        return site + "cli-model/" + urllib.parse.quote(os.path.basename(name))

    return url_for


def _open_chromium(url: str, stack: ExitStack) -> subprocess.Popen:
    profile = stack.enter_context(tempfile.TemporaryDirectory(prefix="rwkvweb-remote-", ignore_cleanup_errors=True))
    log = stack.enter_context(tempfile.TemporaryFile())  # not a pipe: a chatty browser must never block on it
    command = [CHROMIUM, "--headless", *CHROMIUM_ARGS, f"--user-data-dir={profile}", url]
    # a session of its own: stopping it ends the renderer and GPU processes too, not only the first one
    browser = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)

    def stop() -> None:
        for signal_ in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(browser.pid, signal_)
            except ProcessLookupError:
                break
            try:
                browser.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        browser.wait()

    stack.callback(stop)
    return browser


def measure(model_path: str, round_trips: int = 200) -> dict:
    """Round-trip times over the WebSocket to the page, in ms (medians; protocol.round_trip_times): a bare
    frame (hello), a 4-byte GPU read-back, a 1 MiB read-back. `python -m rwkvweb.remote MODEL`"""
    backend = remote_backend(model_path)
    try:
        return round_trip_times(backend, _run, round_trips)
    finally:
        backend.close()


def _run(coroutine):
    import asyncio

    return asyncio.run(coroutine)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1] if len(sys.argv) > 1 else "models/rwkv7-tiny-wordnet.st")))
