"""A minimal WebSocket server (RFC 6455) on the standard library: one loopback connection from one page.

Enough for the bridge protocol (rwkvweb.protocol): the opening handshake with an exact Origin check
and a secret path, masked client frames, text and binary messages (fragmented or not), ping/pong and
close. Blocking sockets with timeouts, so the engine's calls work from any event loop and never hang.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import struct
import time

from .protocol import BridgeClosed

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_MESSAGE = 1 << 30  # a read-back larger than this is a bug in the plan, not a frame to buffer
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class WebSocketServer:
    """Listens on 127.0.0.1; `url` has a random path that only the page it is handed to knows, and
    `accept` takes only an upgrade from `origin` (the page's origin, exactly) on that path."""

    def __init__(self, origin: str, host: str = "127.0.0.1"):
        self.origin = origin.rstrip("/")
        self.path = "/bridge/" + secrets.token_urlsafe(16)
        self.listener = socket.create_server((host, 0))
        self.url = f"ws://{host}:{self.listener.getsockname()[1]}{self.path}"
        self.refused: list[str] = []  # why upgrades were turned away: said when none is accepted in time

    def accept(self, timeout: float) -> "WebSocket":
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f" (refused: {'; '.join(self.refused)})" if self.refused else ""
                raise BridgeClosed(f"no page connected to {self.url} within {timeout:g} s{why}")
            self.listener.settimeout(left)
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(max(1.0, min(left, 10.0)))
            try:
                return self._upgrade(connection)
            except (OSError, ValueError) as error:
                self.refused.append(str(error))
                connection.close()

    def _upgrade(self, connection: socket.socket) -> "WebSocket":
        request = _read_head(connection)
        lines = request.split("\r\n")
        method, path, *_ = lines[0].split(" ") + ["", ""]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        problem = (
            "not a GET" if method != "GET"
            else "wrong path" if path != self.path
            else f"origin {headers.get('origin')!r} is not {self.origin!r}" if headers.get("origin") != self.origin
            else "not a WebSocket upgrade" if headers.get("upgrade", "").lower() != "websocket"
            else "WebSocket version is not 13" if headers.get("sec-websocket-version") != "13"
            else "no Sec-WebSocket-Key" if not headers.get("sec-websocket-key")
            else ""
        )  # fmt: skip
        if problem:
            connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            raise ValueError(problem)
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        connection.sendall(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        return WebSocket(connection)

    def close(self) -> None:
        self.listener.close()


def _read_head(connection: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk or len(data) > 16384:
            raise ValueError("the upgrade request ended early or is too long")
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1")


class WebSocket:
    """One server-side connection: send(str | bytes), receive(timeout) -> str | bytes, close()."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.closed = False
        self.buffer = b""

    def send(self, message: str | bytes) -> None:
        opcode, data = (TEXT, message.encode()) if isinstance(message, str) else (BINARY, bytes(message))
        self._send_frame(opcode, data)

    def _send_frame(self, opcode: int, data: bytes) -> None:
        if self.closed:
            raise BridgeClosed("the page's connection is closed")
        n = len(data)
        length = (
            struct.pack("!B", n) if n < 126 else struct.pack("!BH", 126, n) if n < 65536 else struct.pack("!BQ", 127, n)
        )
        try:
            self.connection.sendall(bytes([0x80 | opcode]) + length + data)  # server frames are never masked
        except OSError as error:
            self.closed = True
            raise BridgeClosed(f"the page's connection failed: {error}") from None

    def receive(self, timeout: float | None) -> str | bytes:
        """The next whole message; pings are answered and a close ends it (BridgeClosed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts, kind = [], None
        while True:
            fin, opcode, data = self._frame(deadline)
            if opcode == PING:
                self._send_frame(PONG, data)
            elif opcode == CLOSE:
                self._close_reply(data)
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                raise BridgeClosed(f"the page closed the connection (code {code}{': ' if data[2:] else ''}"
                                   f"{data[2:].decode('utf-8', 'replace')})")  # fmt: skip
            elif opcode in (TEXT, BINARY, CONTINUATION):
                if (opcode == CONTINUATION) != (kind is not None):
                    raise self._fail("a continuation frame out of place")
                kind = kind or opcode
                parts.append(data)
                if sum(map(len, parts)) > MAX_MESSAGE:
                    raise self._fail("a message larger than 1 GiB")
                if fin:
                    message = b"".join(parts)
                    return message.decode() if kind == TEXT else message
            elif opcode != PONG:
                raise self._fail(f"unknown opcode {opcode}")

    def _frame(self, deadline) -> tuple[bool, int, bytes]:
        first, second = self._exactly(2, deadline)
        if not second & 0x80:
            raise self._fail("an unmasked client frame (RFC 6455 section 5.1)")
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._exactly(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._exactly(8, deadline))
        if n > MAX_MESSAGE:
            raise self._fail("a frame larger than 1 GiB")
        mask = self._exactly(4, deadline)
        data = _unmask(self._exactly(n, deadline), mask)
        return bool(first & 0x80), first & 0x0F, data

    def _exactly(self, n: int, deadline) -> bytes:
        while len(self.buffer) < n:
            if self.closed:
                raise BridgeClosed("the page's connection is closed")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            self.connection.settimeout(left)
            try:
                chunk = self.connection.recv(max(65536, n - len(self.buffer)))
            except TimeoutError:
                raise
            except OSError as error:
                self.closed = True
                raise BridgeClosed(f"the page's connection failed: {error}") from None
            if not chunk:
                self.closed = True
                raise BridgeClosed("the page's connection dropped (the browser closed or crashed)")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _close_reply(self, data: bytes) -> None:
        self.close(data[:2])

    def _fail(self, why: str) -> BridgeClosed:
        self.close(struct.pack("!H", 1002) + why.encode()[:100])
        return BridgeClosed(f"the page broke the WebSocket protocol: {why}")

    def close(self, reason: bytes = struct.pack("!H", 1000)) -> None:
        """Send a close frame (once) and drop the connection."""
        if not self.closed:
            try:
                self._send_frame(CLOSE, reason)
            except BridgeClosed:
                pass
        self.closed = True
        self.connection.close()


def _unmask(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (fast enough for MiB read-backs)."""
    if not data:
        return data
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(len(data), "little")
