"""The VM-side bridge program and the console transport: Python in a VM (CheerpX) drives the page's bridge.

    python3 -m rwkvweb.console logits http://HOST/models/m.st --tokens 1,2,3 --backend webgpu-remote

runs the CLI (rwkvweb.cli) with its webgpu-remote backend reached over the terminal instead of a
WebSocket: bridge frames (rwkvweb.protocol, binary form) go out on stdout as lines `@rwkvweb:<base64>`,
answers come back on stdin the same way (the page types them in: CheerpX's console has no other
channel), every other line is ordinary output. stdin is put in raw mode first: a canonical tty would
echo the answers and cut lines at 4096 bytes. The model is named by URL: the page reads its bytes (the
header through the protocol's `range`, the weights by Range itself); nothing is fetched inside the VM.
"""

from __future__ import annotations

import base64
import binascii
import os
import select
import sys
import time

from .protocol import BridgeClosed, ProtocolError, RemoteBackend, encode_binary

PREFIX = b"@rwkvweb:"


class ConsoleTransport:
    """Frames as base64 lines on a pair of file descriptors (a tty, a pty's master, a pipe, a socket).
    on_text(line) receives the lines that are not frames (None: they are dropped)."""

    def __init__(self, read_fd: int, write_fd: int, on_text=None):
        self.read_fd, self.write_fd, self.on_text = read_fd, write_fd, on_text
        self.buffer = b""
        self.closed = False

    def send(self, frame) -> None:
        if isinstance(frame, str):  # the text form: the console carries only the binary one
            from .protocol import decode

            frame = encode_binary(*decode(frame))
        line = PREFIX + base64.b64encode(frame) + b"\n"
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.write_fd, view) :]
        except OSError as error:
            self.closed = True
            raise BridgeClosed(f"the console is gone: {error}") from None

    def receive(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line.startswith(PREFIX):
                try:
                    return base64.b64decode(line[len(PREFIX) :], validate=True)
                except binascii.Error as error:
                    raise ProtocolError(f"a console frame is not base64 ({error})") from None
            if self.on_text is not None:
                self.on_text(line.decode("utf-8", "replace"))

    def _line(self, deadline) -> bytes:
        while b"\n" not in self.buffer:
            if self.closed:
                raise BridgeClosed("the console ended")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError
            if not select.select([self.read_fd], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:  # EIO: a pty whose other side closed
                chunk = b""
            if not chunk:
                self.closed = True
                raise BridgeClosed("the console ended (the other side closed it)")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def close(self) -> None:
        self.closed = True


class BridgeSource:
    """A model file the bridge's side can reach and this process cannot: its header is read through the
    protocol's `range` (at most 16 MiB a read: headers only); the weights never come here (fill names the URL)."""

    def __init__(self, backend: RemoteBackend, url: str):
        self.backend, self.url, self.name = backend, url, url
        self.size = self.backend.call_range(url, 0, 0)[0]

    def read(self, start: int, end: int) -> bytes:
        size, data = self.backend.call_range(self.url, start, end)
        if len(data) != end - start:
            raise ProtocolError(f"{self.url}: asked for bytes [{start}, {end}), the bridge sent {len(data)}")
        return data


class ConsoleBackend(RemoteBackend):
    """A RemoteBackend whose model sources are read through the bridge (the VM has no network)."""

    def call_range(self, url: str, start: int, end: int) -> tuple[int, bytes]:
        header, data = self._call({"op": "range", "url": url, "start": start, "end": end})
        return int(header["size"]), data

    def source(self, url: str) -> BridgeSource:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"in the VM the model is named by the URL the page reads it from, not {url!r}")
        return BridgeSource(self, url)


def console_backend(read_fd: int = 0, write_fd: int = 1):
    """The webgpu-remote backend over this process's terminal, in raw mode when it is one."""
    if os.isatty(read_fd):
        import tty

        tty.setraw(read_fd)
    return ConsoleBackend(ConsoleTransport(read_fd, write_fd))


def main(argv: list[str] | None = None) -> int:
    from . import cli

    cli.REMOTE_BACKEND = lambda model: console_backend()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
