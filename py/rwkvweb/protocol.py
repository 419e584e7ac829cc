"""The bridge protocol (docs/bridge-protocol.md): the engine's five backend calls as frames.

A CPython process outside the browser (over a WebSocket, rwkvweb.remote) or inside a VM (over a
console, rwkvweb.console) drives a page's WebGPU bridge with these frames; web/gpu/bridge-server.js
answers them by calling the same Bridge that Pyodide calls in-process. `serve` below is the same
handler in Python over any backend (numpy): the protocol's reference and what the tests talk to.

A frame is a JSON header, plus bytes for bulk data: as text (JSON alone) or binary (u32 little-endian
header length, the header's UTF-8, the payload). Weight bytes never cross: `fill` names the model's
URL and the JavaScript side reads its byte ranges itself.
"""

from __future__ import annotations

import json
import struct
import time

VERSION = 1
DEFAULT_TIMEOUT = 120.0  # seconds without any frame from the bridge before a call gives up (a load sends progress)
MAX_HEADER = 64 << 20  # a plan's JSON is a few hundred KiB; anything near this is not a frame


class ProtocolError(RuntimeError):
    """The peer does not speak this protocol (version, malformed frame)."""


class BridgeError(RuntimeError):
    """The bridge refused or failed a call; the message is the bridge's own."""


class BridgeClosed(ConnectionError):
    """The transport ended (the page closed, the process died) or went silent past the timeout."""


def encode(header: dict, payload: bytes = b"") -> str | bytes:
    """A frame: the JSON text alone when there is no payload, else the binary form."""
    text = json.dumps(header, separators=(",", ":"))
    if not payload:
        return text
    head = text.encode()
    return struct.pack("<I", len(head)) + head + bytes(payload)


def encode_binary(header: dict, payload: bytes = b"") -> bytes:
    """The binary form, also for frames without a payload (the console carries only this form)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + bytes(payload)


def decode(frame: str | bytes) -> tuple[dict, bytes]:
    """(header, payload) of a frame in either form; ProtocolError says what is wrong with a bad one."""
    if isinstance(frame, str):
        head, payload = frame, b""
    else:
        if len(frame) < 4:
            raise ProtocolError(f"a binary frame of {len(frame)} bytes is shorter than its 4-byte length field")
        (length,) = struct.unpack_from("<I", frame)
        if length > min(MAX_HEADER, len(frame) - 4):
            raise ProtocolError(f"a binary frame's header length {length} runs past its {len(frame)} bytes")
        head, payload = bytes(frame[4 : 4 + length]).decode("utf-8", "replace"), bytes(frame[4 + length :])
    try:
        header = json.loads(head)
    except ValueError as error:
        raise ProtocolError(f"a frame's header is not JSON ({error}): {head[:80]!r}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"a frame's header must be a JSON object, got {head[:80]!r}")
    return header, payload


class RemoteBackend:
    """The engine's backend interface (engine.py) over a transport to a bridge (the page's, or `serve`).

    transport: send(frame) and receive(timeout) -> frame, raising BridgeClosed when it ends; close().
    url_for(source) -> the URL the bridge reads a source's bytes from (default: the source's own URL).
    write and run are pipelined (sent without waiting, as they are fire-and-forget in Pyodide): a
    failure of one is raised, with the bridge's message, by the next call that waits (read, load, fill)."""

    def __init__(self, transport, *, url_for=None, timeout: float = DEFAULT_TIMEOUT, version: int = VERSION):
        self.transport, self.timeout = transport, timeout
        self.url_for = url_for or _source_url
        self.next_id = 0
        self.pending: dict[int, str] = {}  # id -> op, in the order sent: the bridge answers in that order
        self.on_close = []  # what close() also stops (the page's browser and server, rwkvweb.remote)
        hello, _ = self._call({"op": "hello", "version": version})
        if hello.get("version") != VERSION:
            raise ProtocolError(
                f"the bridge speaks protocol version {hello.get('version')!r}, this rwkvweb speaks {VERSION}: "
                "use the same rwkvweb version on both sides"
            )
        self.info = hello.get("bridge") or {}
        self.max_binding = int(self.info.get("maxStorageBufferBindingSize", 128 << 20))
        from .model import choose_matvec

        self.matvec = choose_matvec(self.info)

    # --- the backend interface -------------------------------------------------------------

    async def load(self, plan: dict) -> None:
        self._call({"op": "load", "plan": plan})

    async def fill(self, fills: list[dict], source) -> None:
        self._call({"op": "fill", "fills": fills, "source": {"url": self.url_for(source), "size": source.size}})

    async def write(self, buffer: int, offset: int, data: bytes) -> None:
        self._send({"op": "write", "buffer": buffer, "offset": offset}, data)

    async def run(self, programs: list[str], writes) -> None:
        writes = list(writes)
        header = {"op": "run", "programs": list(programs)}
        header["writes"] = [{"buffer": b, "offset": o, "size": len(d)} for b, o, d in writes]
        self._send(header, b"".join(bytes(d) for _, _, d in writes))

    async def read(self, buffer: int, offset: int, size: int) -> bytes:
        _, payload = self._call({"op": "read", "buffer": buffer, "offset": offset, "size": size})
        if len(payload) != size:
            raise ProtocolError(f"read asked for {size} bytes, the bridge sent {len(payload)}")
        return payload

    def close(self) -> None:
        self.transport.close()
        for stop in reversed(self.on_close):
            stop()
        self.on_close.clear()

    # --- frames ---------------------------------------------------------------------------

    def _send(self, header: dict, payload: bytes = b"") -> int:
        request = self.next_id
        self.next_id += 1
        self.pending[request] = header["op"]
        self.transport.send(encode({"id": request, **header}, payload))
        return request

    def _call(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        """Send and wait for this request's answer; earlier pipelined answers are checked on the way."""
        request = self._send(header, payload)
        while True:
            answer, data = self._receive()
            if answer.get("progress") is not None:  # a long load's sign of life
                continue
            got = answer.get("id")
            if got not in self.pending:
                raise ProtocolError(f"the bridge answered request {got!r}, which was never sent (or already answered)")
            op = self.pending.pop(got)
            if "error" in answer:
                raise BridgeError(f"the bridge's {op} failed: {answer['error']}")
            if got == request:
                return answer, data

    def _receive(self) -> tuple[dict, bytes]:
        waiting = next(reversed(self.pending.values()), "call")
        deadline = time.monotonic() + self.timeout
        try:
            return decode(self.transport.receive(max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            raise BridgeClosed(
                f"the bridge did not answer {waiting} within {self.timeout:g} s (is the page still open?)"
            ) from None


def round_trip_times(backend: RemoteBackend, run, round_trips: int = 200) -> dict:
    """Medians, in ms, of calls over a backend's transport: a bare frame (hello), a 4-byte read-back and a
    1 MiB one (a twentieth as many, at least 5) of a 1 MiB scratch buffer it loads first. `run` runs a
    coroutine to its end (asyncio.run). Here, not in remote.py, because build/bench_console.py times the
    console transport with it inside the VM, whose wheel leaves remote.py out (build/site.py's BROWSERLESS)."""
    import statistics  # only the benchmarks need it

    def median_ms(call, n: int) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 3)

    plan = {"buffers": [{"name": "m", "bytes": 1 << 20, "role": "scratch"}], "kernels": [], "programs": {}, "fills": []}
    run(backend.load(plan))
    return {
        "frame_round_trip_ms": median_ms(lambda: backend._call({"op": "hello", "version": VERSION}), round_trips),
        "read_4_bytes_ms": median_ms(lambda: run(backend.read(0, 0, 4)), round_trips),
        "read_1_MiB_ms": median_ms(lambda: run(backend.read(0, 0, 1 << 20)), max(5, round_trips // 20)),
    }


def _source_url(source) -> str:
    url = getattr(source, "url", None) or getattr(source, "name", "")
    if not str(url).startswith(("http://", "https://")):
        raise ValueError(f"the bridge reads weights by URL itself, but {url!r} is not an http(s) URL")
    return str(url)


async def serve(backend, transport, open_url, *, version: int = VERSION) -> None:
    """Answer frames from a RemoteBackend with `backend` until the transport ends (BridgeClosed).
    open_url(url) -> a byte source for fill. The Python twin of web/gpu/bridge-server.js."""
    greeted = False
    while True:
        try:
            header, payload = decode(transport.receive(None))
        except ProtocolError as error:
            transport.send(encode({"id": None, "error": str(error)}))
            continue
        request = header.get("id")
        try:
            result, data = await _answer(backend, header, payload, open_url, greeted, version)
            greeted = greeted or header.get("op") == "hello"
            transport.send(encode({"id": request, "ok": True, **result}, data))
        except Exception as error:  # every failure is the caller's answer, never the end of the bridge
            transport.send(encode({"id": request, "error": f"{error}" or type(error).__name__}))


async def _answer(backend, header: dict, payload: bytes, open_url, greeted: bool, version: int):
    op = header.get("op")
    if op == "hello":
        if header.get("version") != version:
            raise ProtocolError(
                f"protocol version {header.get('version')!r} is not supported: this bridge speaks version {version}; "
                "use the same rwkvweb version on both sides"
            )
        return {"version": version, "bridge": getattr(backend, "info", lambda: {})()}, b""
    if not greeted:
        raise ProtocolError(f"{op!r} before hello: a session starts with a version handshake")
    if op == "load":
        await backend.load(header["plan"])
    elif op == "fill":
        await backend.fill(header["fills"], open_url(header["source"]["url"]))
    elif op == "write":
        await backend.write(header["buffer"], header["offset"], payload)
    elif op == "run":
        writes, at = [], 0
        for w in header.get("writes", []):
            writes.append((w["buffer"], w["offset"], payload[at : at + w["size"]]))
            at += w["size"]
        await backend.run(header["programs"], writes)
    elif op == "read":
        return {}, await backend.read(header["buffer"], header["offset"], header["size"])
    elif op == "range":
        source = open_url(header["url"])
        return {"size": source.size}, source.read(header["start"], min(header["end"], source.size))
    else:
        raise ProtocolError(f"unknown op {op!r} (this bridge knows hello, load, fill, write, run, read, range)")
    return {}, b""
