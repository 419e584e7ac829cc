"""`--backend webgpu-remote`: the engine in this process, only the bridge in a headless page (rwkvweb.remote,
web/remote.js, web/gpu/bridge-server.js). Same results as the in-page engine; clear errors, never a hang."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import run_async
from rwkvweb.api import Model
from rwkvweb.protocol import BridgeClosed, BridgeError
from rwkvweb.remote import remote_backend
from test_cli import cli

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("remote") / "m.st")
    cli("testmodel", path, "--layers", "2", "--width", "128", "--vocab", "256", "--seed", "4", "--dtype", "fp16")
    return path


def test_logits_and_generation_equal_the_in_page_engine(model):
    tokens = "1,7,255,0,42"
    logits = {
        backend: np.array(json.loads(cli("logits", model, "--tokens", tokens, "--backend", backend).stdout)["logits"])
        for backend in ("webgpu-remote", "webgpu", "numpy")
    }
    # the same plan and kernels on the same GPU: bit for bit; numpy within float32 noise (test_cli.py's bound)
    assert np.array_equal(logits["webgpu-remote"], logits["webgpu"])
    ref = logits["numpy"]
    assert np.abs(logits["webgpu-remote"] - ref).max() <= 1e-3 * (ref.max() - ref.min())
    sampled = ("--tokens", "3,4,5", "--max-tokens", "20", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7")
    generated = [cli("generate", model, *sampled, "--backend", b).stdout for b in ("webgpu-remote", "webgpu")]
    assert generated[0] == generated[1] and len(json.loads(generated[0])) == 20


def test_a_version_mismatch_is_refused_by_the_page_with_its_message(model):
    with pytest.raises(BridgeError, match="protocol version 99 is not supported: this bridge speaks version 1"):
        remote_backend(model, version=99)


def test_model_load_a_bulk_read_back_and_a_dropped_page(model):
    loaded = run_async(Model.load(model, backend="webgpu-remote", tokenizer_for=lambda config, metadata: None))
    ids, _ = run_async(loaded.engine.generate([5, 6], 6, _greedy()))
    reference = run_async(Model.load(model, tokenizer_for=lambda config, metadata: None, matvec="cols"))
    assert ids == run_async(reference.engine.generate([5, 6], 6, _greedy()))[0]
    backend = loaded.engine.backend
    plan = {
        "buffers": [{"name": "big", "bytes": 3 << 20, "role": "scratch"}],
        "kernels": [],
        "programs": {},
        "fills": [],
    }
    run_async(backend.load(plan))  # a bulk write and read-back through the page's GPU, binary frames both ways
    data = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    run_async(backend.write(0, 0, data))
    assert run_async(backend.read(0, 0, len(data))) == data
    backend.browser.kill()  # the page goes away mid-session
    backend.browser.wait()
    started = time.monotonic()
    with pytest.raises(BridgeClosed, match="the page('s connection| closed the connection)"):
        run_async(backend.read(0, 0, 4))
    assert time.monotonic() - started < 10  # reported at once, not after the call timeout
    loaded.engine.backend.close()


def _greedy():
    from rwkvweb.engine import Sampling

    return Sampling(temperature=0)
