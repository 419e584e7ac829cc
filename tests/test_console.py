"""The VM-side bridge program (python -m rwkvweb.console) over a real pseudo-terminal: the program in raw
tty mode sends base64 frame lines, this test stands in for the page (protocol.serve over numpy, the
Python twin of web/gpu/bridge-server.js) and types the answers in. Its other output is plain lines."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import run_async
from rwkvweb.console import ConsoleTransport
from rwkvweb.numpy_exec import NumpyBackend
from rwkvweb.protocol import BridgeClosed, serve
from rwkvweb.source import FileSource
from test_cli import ROOT, cli

URL = "http://page.test/models/m.st"  # only the bridge's side reads it (the VM has no network)


class SwiftShaderLikeNumpy(NumpyBackend):
    """The numpy backend answering hello as the page's SwiftShader bridge would: the same weight layout."""

    def info(self) -> dict:
        return {"architecture": "swiftshader", "maxStorageBufferBindingSize": 1 << 30}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("console") / "m.st")
    cli("testmodel", path, "--layers", "2", "--width", "128", "--vocab", "256", "--seed", "5", "--dtype", "fp16")
    return path


def run_in_pty(model: str, *args: str, command=None) -> tuple[list[str], str, list[str]]:
    """(the program's plain output lines, its stderr, the URLs the page was asked to read); command: how
    the VM program is started (default: this Python's rwkvweb.console)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    command = [*(command or [sys.executable, "-m", "rwkvweb.console"]), *args]
    child = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)  # the child's exit then ends the console (EIO on the leader)
    watchdog = threading.Timer(120, child.kill)  # a hang fails the test instead of stalling the suite
    watchdog.start()
    lines, urls = [], []

    def open_url(url):
        urls.append(url)
        return FileSource(model)

    try:
        run_async(serve(SwiftShaderLikeNumpy(), ConsoleTransport(leader, leader, on_text=lines.append), open_url))
    except BridgeClosed:
        pass
    finally:
        watchdog.cancel()
        os.close(leader)
    stderr = child.stderr.read().decode()
    assert child.wait() == 0, stderr
    return lines, stderr, urls


def test_the_vm_program_runs_logits_over_the_console(model):
    lines, _, urls = run_in_pty(model, "logits", URL, "--tokens", "1,2,255", "--backend", "webgpu-remote")
    over_console = np.array(json.loads(lines[-1])["logits"])
    planned = np.array(json.loads(cli("logits", model, "--tokens", "1,2,255", "--budget", "2GB").stdout)["logits"])
    assert np.array_equal(over_console, planned)  # the same plan on the same numpy code: bit for bit
    assert set(urls) == {URL}  # the header's range reads and the fill: all by the page, from the URL


def test_the_vm_program_generates_over_the_console(model):
    args = ("--tokens", "3,4", "--max-tokens", "8", "--temperature", "0.7", "--seed", "3")
    lines, _, _ = run_in_pty(model, "generate", URL, *args, "--backend", "webgpu-remote")
    assert json.loads(lines[-1]) == json.loads(cli("generate", model, *args).stdout)


def test_a_console_with_no_page_behind_it_is_one_clear_error(model):
    child = subprocess.run(
        [sys.executable, "-m", "rwkvweb.console", "logits", "m.st", "--tokens", "1", "--backend", "webgpu-remote"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")},
        timeout=60,
    )
    assert child.returncode == 2
    assert child.stderr.decode().strip() == "rwkvweb logits: the console ended (the other side closed it)"
