"""Model URLs on another origin (issue 11, part 2): the page (served by serve.py) loads a `.pth`
from a second local origin that serves it as model hubs do (Range + CORS), and each missing piece
of such a server (CORS, Range, an exposed Content-Range) gets a message naming it.

The second origin is serve.py's server on another loopback port with a handler that adds CORS
headers and answers preflights; its first path segment picks how it misbehaves. The tabs here
use no Playwright routes: with any route active Playwright answers every CORS preflight itself
(allowing everything), which would hide exactly what these tests check. Instead every request
the tab makes is recorded and must go to one of the two local origins.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpu_harness import blank_page
from pth_writer import as_bf16, write_pth
from rwkvweb.config import ModelConfig
from rwkvweb.headless import CALL_JS
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import write_safetensors
from rwkvweb.testmodel import random_weights

CONFIG = ModelConfig.default_for(2, 128, 300)  # 2 heads
TOKENS = [1, 2, 299, 7, 7]
MODES = ("cors", "nocors", "norange", "hidden", "nopreflight")


def _cors_handler():
    import serve

    class CorsHandler(serve.SiteHandler):
        """serve.py's handler, plus CORS as its first path segment asks:
        cors: what a model hub sends; nocors: nothing (plain serve.py); norange: CORS but Range ignored;
        hidden: CORS without exposing Content-Range / ETag; nopreflight: preflights refused."""

        def _mode(self) -> str:
            first = self.path.lstrip("/").split("/", 1)[0]
            return first if first in MODES else "nocors"

        def do_GET(self) -> None:
            if self._mode() == "norange" and "Range" in self.headers:
                del self.headers["Range"]
            super().do_GET()

        def do_OPTIONS(self) -> None:
            allowed = self._mode() in ("cors", "norange", "hidden")
            self.send_response(204 if allowed else 403)
            if allowed:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
                self.send_header("Access-Control-Allow-Headers", "Range")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._record(204 if allowed else 403, self.headers.get("Access-Control-Request-Headers"), 0)

        def end_headers(self) -> None:
            mode = self._mode()
            if mode != "nocors" and self.command != "OPTIONS":
                self.send_header("Access-Control-Allow-Origin", "*")
                exposed = "Content-Length" if mode == "hidden" else "Content-Range, Content-Length, ETag, Accept-Ranges"
                self.send_header("Access-Control-Expose-Headers", exposed)
            super().end_headers()

    return CorsHandler


@pytest.fixture(scope="module")
def weights():
    return random_weights(CONFIG, seed=33)


@pytest.fixture(scope="module")
def model_origin(tmp_path_factory, weights, model_dir):
    """A second origin serving fp32 and bf16 `.pth` files; their safetensors twins go on the page's own server."""
    import serve

    folder = tmp_path_factory.mktemp("hub")
    write_pth(folder / "fp32.pth", weights)
    write_pth(folder / "bf16.pth", weights, bf16=True)
    write_safetensors(str(model_dir / "xo-fp32.st"), weights)
    write_safetensors(str(model_dir / "xo-bf16.st"), {n: as_bf16(a) for n, a in weights.items()})
    hub = serve.serve_in_thread(str(folder), mounts={mode: str(folder) for mode in MODES})
    hub.RequestHandlerClass = _cors_handler()
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.fixture(scope="module")
def worker_tab(browser, server, model_origin):
    """One tab and engine worker for the module (starting Pyodide takes seconds)."""
    page = blank_page(browser.new_page(), server)
    page.unroute_all()  # blank_page's route served the empty document; no route may stay (see the docstring)
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.evaluate(CALL_JS, ["info", {}])  # starts the worker
    yield page
    page.close()


@pytest.fixture
def tab(worker_tab, server, model_origin):
    worker_tab.requests.clear()
    model_origin.requests.clear()
    yield worker_tab
    assert [url for url in worker_tab.requests if not url.startswith((server.url, model_origin.url))] == []


def call(page, method, params=None):
    return page.evaluate(CALL_JS, [method, params or {}])


def logits(page) -> np.ndarray:
    return np.array(call(page, "logits", {"tokens": TOKENS}), np.float32)  # rows of float32 values, exact as JS numbers


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_a_pth_on_another_origin_loads_by_range_and_equals_its_safetensors_twin(tab, model_origin, weights, kind):
    loaded = call(tab, "load", {"url": f"{model_origin.url}cors/{kind}.pth", "cache": False})
    assert loaded["config"]["n_layer"] == 2 and loaded["config"]["vocab_size"] == 300
    from_pth = logits(tab)
    call(tab, "load", {"url": f"/test-models/xo-{kind}.st", "cache": False})
    twin = logits(tab)
    # bf16 widens exactly to fp32 on the way, so the GPU holds the twin's very values: equal bits
    np.testing.assert_array_equal(from_pth, twin)
    reference = RWKV7(CONFIG, {n: as_bf16(a) if kind == "bf16" else a for n, a in weights.items()}).logits(TOKENS)[0]
    spread = reference.max() - reference.min()
    # fp32 on the GPU against the numpy reference: summation order differs, 1e-3 of the logit range
    # is the bound the project uses for fp32 whole-model checks (test_model_gpu.py)
    assert np.abs(from_pth - reference).max() <= 1e-3 * spread

    assert any(url.startswith(model_origin.url) for url in tab.requests)  # the guard sees the worker's requests
    seen = model_origin.requests
    assert seen and {r.method for r in seen} <= {"HEAD", "GET", "OPTIONS"}
    gets = [r for r in seen if r.method == "GET"]
    assert gets and all(r.range and r.status == 206 for r in gets), [(r.method, r.range, r.status) for r in gets]
    size = os.path.getsize(os.path.join(model_origin.root, f"{kind}.pth"))
    assert sum(r.bytes_sent for r in gets) < 1.2 * size  # each byte about once (the tail read overlaps a few tensors)


@pytest.mark.browser
@pytest.mark.parametrize(
    "mode, message",
    [
        ("nocors", "the server at ORIGIN does not allow cross-origin reads (no Access-Control-Allow-Origin)"),
        ("norange", "the server at ORIGIN does not support Range requests (it answered HTTP 200"),
        ("hidden", "the server at ORIGIN answers Range requests but does not expose Content-Range"),
    ],
)
def test_a_server_lacking_cors_or_range_is_named(tab, model_origin, mode, message):
    origin = model_origin.url.rstrip("/")
    with pytest.raises(Exception) as refused:
        call(tab, "load", {"url": f"{model_origin.url}{mode}/fp32.pth", "cache": False})
    assert message.replace("ORIGIN", origin) in str(refused.value)


@pytest.mark.browser
def test_a_preflight_that_refuses_range_is_named(tab, model_origin):
    """Whether Chromium preflights a Range request depends on its version (the Fetch standard now
    safelists simple ranges); where it does, the refusal is named, and where not, the load works."""
    try:
        call(tab, "load", {"url": f"{model_origin.url}nopreflight/fp32.pth", "cache": False})
    except Exception as error:
        assert any(r.method == "OPTIONS" for r in model_origin.requests)
        assert "does not allow the Range header (Access-Control-Allow-Headers: Range)" in str(error)
    else:
        assert not any(r.method == "OPTIONS" for r in model_origin.requests)


@pytest.mark.browser
def test_plain_http_on_another_host_is_refused_before_any_request(tab):
    with pytest.raises(
        Exception, match="plain http:// model URLs on other hosts are not allowed by this page's security policy"
    ):
        call(tab, "load", {"url": "http://models.example/m.pth"})


def test_the_csp_allows_model_origins_and_the_loopback_bridge_and_nothing_more():
    import serve

    directives = dict(d.strip().split(" ", 1) for d in serve.CONTENT_SECURITY_POLICY.split(";"))
    models = ["https:", "http://localhost:*", "http://127.0.0.1:*"]
    bridge = ["ws://localhost:*", "ws://127.0.0.1:*"]  # web/remote.js connects back to the driving Python process
    assert directives["connect-src"].split() == ["'self'", *models, *bridge]
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self' 'wasm-unsafe-eval'"


def test_only_the_vm_page_may_run_cheerpx_from_its_cdn():
    import types

    import serve

    server = types.SimpleNamespace(embed_origins=[], frame_origins=[])
    policy = lambda path: dict(  # noqa: E731
        d.strip().split(" ", 1) for d in serve.security_headers(server, path)["Content-Security-Policy"].split(";")
    )
    assert policy("/vm.html")["script-src"] == "'self' https://cxrtnc.leaningtech.com 'wasm-unsafe-eval'"
    assert "https://cxrtnc.leaningtech.com" in policy("/vm.html")["worker-src"]
    for page in ("/index.html", "/remote.html", "/embed.html", "/vm.js"):
        assert "leaningtech" not in serve.security_headers(server, page)["Content-Security-Policy"]


@pytest.mark.browser
def test_a_second_load_of_a_pth_comes_from_the_cache(tab, model_origin):
    first = call(tab, "load", {"url": f"{model_origin.url}cors/bf16.pth"})
    model_origin.requests.clear()
    again = call(tab, "load", {"url": f"{model_origin.url}cors/bf16.pth"})
    assert first["fetchedBytes"] > 0 and again["cached"] and again["fetchedBytes"] == 0
    assert [r.method for r in model_origin.requests] == ["HEAD"]  # only: has the file changed?
    for entry in call(tab, "cacheList")["models"]:
        call(tab, "cacheDelete", {"id": entry["id"]})


@pytest.mark.browser
def test_the_cli_reads_a_pth_url_on_both_backends(model_origin):
    """`logits URL --backend webgpu`: the page fetches the URL itself, across origins (headless.py)."""
    import json
    import subprocess
    import sys

    url = f"{model_origin.url}cors/bf16.pth"
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "py")}
    rows = {}
    for backend in ("numpy", "webgpu"):
        done = subprocess.run(
            [sys.executable, "-m", "rwkvweb", "logits", url, "--tokens", "1,2,3", "--backend", backend],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        rows[backend] = np.array(json.loads(done.stdout)["logits"], np.float32)
    spread = rows["numpy"].max() - rows["numpy"].min()
    assert np.abs(rows["webgpu"] - rows["numpy"]).max() <= 1e-3 * spread  # fp32 GPU vs numpy: the project's bound
