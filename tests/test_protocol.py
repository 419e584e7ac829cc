"""The bridge protocol (docs/bridge-protocol.md) in CPython: RemoteBackend against the Python handler
(protocol.serve over numpy) across a real byte stream (the console transport on a socket pair), and
the WebSocket server's handshake. The page's side (web/gpu/bridge-server.js) is tested in test_remote.py."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import numpy as np
import pytest

from conftest import run_async
from rwkvweb.api import Model
from rwkvweb.config import ModelConfig
from rwkvweb.console import ConsoleTransport
from rwkvweb.numpy_exec import NumpyBackend
from rwkvweb.protocol import (
    VERSION,
    BridgeClosed,
    BridgeError,
    ProtocolError,
    RemoteBackend,
    decode,
    encode,
    round_trip_times,
    serve,
)
from rwkvweb.source import FileSource
from rwkvweb.testmodel import write_test_model
from rwkvweb.websocket import WebSocketServer


class Bridge:
    """A bridge in a thread: protocol.serve over a NumpyBackend on one end of a socket pair."""

    def __init__(self, files: dict[str, str] | None = None, version: int = VERSION):
        self.ours, theirs = socket.socketpair()
        self.transport = ConsoleTransport(theirs.fileno(), theirs.fileno())
        self.socket = theirs
        files = files or {}
        opener = lambda url: FileSource(files[url])  # noqa: E731
        self.thread = threading.Thread(target=self._serve, args=(opener, version), daemon=True)
        self.thread.start()

    def _serve(self, opener, version):
        try:
            asyncio.run(serve(NumpyBackend(), self.transport, opener, version=version))  # in its own thread
        except BridgeClosed:
            pass

    def client(self, **options) -> RemoteBackend:
        return RemoteBackend(ConsoleTransport(self.ours.fileno(), self.ours.fileno()), **options)

    def drop(self):
        self.socket.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("protocol") / "m.st")
    write_test_model(path, ModelConfig.default_for(2, 128, 256), seed=3, dtype="fp16")
    return path


def test_frames_round_trip_in_both_forms():
    assert decode(encode({"id": 1, "op": "run"})) == ({"id": 1, "op": "run"}, b"")
    assert decode(encode({"id": 2}, b"\x00\xff" * 3)) == ({"id": 2}, b"\x00\xff" * 3)
    with pytest.raises(ProtocolError, match="runs past"):
        decode(b"\xff\x00\x00\x00{}")


def test_logits_through_the_protocol_equal_numpy_in_process(model_file):
    url = "http://bridge.test/m.st"
    remote = Bridge({url: model_file}).client()
    source = FileSource(model_file)
    source.url = url  # what the bridge's side reads the weights from
    tokens = [1, 2, 255, 7]
    over_the_wire = run_async(run_async(Model.load(source, backend=remote, matvec="cols")).logits(tokens))
    local = run_async(run_async(Model.load(model_file, matvec="cols")).logits(tokens))
    assert over_the_wire == local  # the same numpy code on the other side: bit for bit


def test_a_bulk_read_comes_back_whole():
    remote = Bridge().client()
    plan = {
        "buffers": [{"name": "big", "bytes": 3 << 20, "role": "scratch"}],
        "kernels": [],
        "programs": {},
        "fills": [],
    }
    run_async(remote.load(plan))
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    run_async(remote.write(0, 0, data))
    assert run_async(remote.read(0, 0, len(data))) == data
    assert run_async(remote.read(0, 1000, 5)) == data[1000:1005]


def test_round_trip_times_time_each_call_it_names():
    """The timings rwkvweb.remote and build/bench_console.py print, here over the socket pair."""
    remote = Bridge().client()
    times = round_trip_times(remote, run_async, round_trips=10)
    assert set(times) == {"frame_round_trip_ms", "read_4_bytes_ms", "read_1_MiB_ms"}
    assert all(ms > 0 for ms in times.values())
    assert times["read_1_MiB_ms"] > times["read_4_bytes_ms"]  # a MiB of base64 lines, not one frame's cost
    assert remote.pending == {}  # every timed call was answered


def test_an_error_in_the_bridge_surfaces_with_its_message_at_the_next_wait():
    remote = Bridge().client()
    plan = {"buffers": [{"name": "b", "bytes": 16, "role": "scratch"}], "kernels": [], "programs": {}, "fills": []}
    run_async(remote.load(plan))
    run_async(remote.run(["no-such-program"], []))  # pipelined: not waited for
    with pytest.raises(BridgeError, match="the bridge's run failed: .*no-such-program"):
        run_async(remote.read(0, 0, 4))


def test_version_mismatch_is_refused_in_both_directions():
    with pytest.raises(
        BridgeError, match=f"protocol version 99 is not supported: this bridge speaks version {VERSION}"
    ):
        Bridge().client(version=99)
    with pytest.raises(ProtocolError, match=f"the bridge speaks protocol version 2, this rwkvweb speaks {VERSION}"):
        Bridge(version=2).client(version=2)


def test_calls_before_hello_are_refused():
    bridge = Bridge()
    transport = ConsoleTransport(bridge.ours.fileno(), bridge.ours.fileno())
    transport.send(encode({"id": 0, "op": "read", "buffer": 0, "offset": 0, "size": 4}))
    answer, _ = decode(transport.receive(5))
    assert "before hello" in answer["error"]


def test_a_dropped_transport_and_a_silent_one_are_errors_not_hangs():
    bridge = Bridge()
    remote = bridge.client(timeout=2)
    bridge.drop()
    with pytest.raises(BridgeClosed, match="the console (ended|is gone)"):
        run_async(remote.read(0, 0, 4))
    silent, _ = socket.socketpair()
    transport = ConsoleTransport(silent.fileno(), silent.fileno())
    with pytest.raises(BridgeClosed, match=r"did not answer hello within 0.3 s"):
        RemoteBackend(transport, timeout=0.3)


def _upgrade(port: int, path: str, origin: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Origin: {origin}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return client.recv(4096)


def test_the_websocket_takes_only_the_pages_origin_on_its_secret_path():
    server = WebSocketServer("http://127.0.0.1:8000")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    accepted = []
    waiter = threading.Thread(target=lambda: accepted.append(server.accept(10)))
    waiter.start()
    assert _upgrade(port, server.path, "http://evil.example").startswith(b"HTTP/1.1 403")
    assert _upgrade(port, "/bridge/guess", "http://127.0.0.1:8000").startswith(b"HTTP/1.1 403")
    answer = _upgrade(port, server.path, "http://127.0.0.1:8000")
    waiter.join()
    # the RFC 6455 section 1.3 example key gives this accept value
    assert b"101 Switching Protocols" in answer and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer
    assert server.refused == ["origin 'http://evil.example' is not 'http://127.0.0.1:8000'", "wrong path"]
    accepted[0].close()
    with pytest.raises(BridgeClosed, match="no page connected .* within 0.2 s \\(refused: origin 'http://evil"):
        server.accept(0.2)
    server.close()


def test_websocket_frames_masked_fragmented_ping_and_close():
    server = WebSocketServer("http://o.test")
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(
        f"GET {server.path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://o.test\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    ws = server.accept(5)
    client.recv(4096)

    def frame(opcode, data, fin=True):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        length = bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + len(data).to_bytes(2, "big")
        return bytes([(0x80 if fin else 0) | opcode]) + length + mask + masked

    client.sendall(frame(0x9, b"hi") + frame(0x2, b"ab" * 100, fin=False) + frame(0x0, b"cd"))
    assert ws.receive(5) == b"ab" * 100 + b"cd"
    assert client.recv(4) == b"\x8a\x02hi"  # the pong, with the ping's data
    client.sendall(frame(0x1, "é".encode()))
    assert ws.receive(5) == "é"
    client.sendall(frame(0x8, b"\x03\xe8bye"))
    with pytest.raises(BridgeClosed, match="closed the connection \\(code 1000: bye\\)"):
        ws.receive(5)
    client.close()
    server.close()
