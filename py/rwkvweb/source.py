"""Byte sources: something with a known size that hands out byte ranges.

Readers (the safetensors header parser, tensor loaders) ask a source for
`read(start, end)` and never for the whole file, so the same code works over a
local file, an in-memory buffer, or HTTP Range requests. In the browser the
JavaScript side owns the network; these classes are the CPython side.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request


class SourceError(OSError):
    """A byte source could not deliver the bytes asked for."""


class ByteSource:
    """Base class: `size` in bytes and `read(start, end)` for [start, end)."""

    size: int
    name: str

    def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _check_range(self, start: int, end: int) -> None:
        if not 0 <= start <= end <= self.size:
            raise SourceError(f"{self.name}: range [{start}, {end}) is outside the {self.size}-byte source")

    def _check_length(self, data: bytes, start: int, end: int) -> bytes:
        if len(data) != end - start:
            raise SourceError(
                f"{self.name}: asked for bytes [{start}, {end}) but got {len(data)} bytes"
                " (was the file truncated or changed while reading?)"
            )
        return data


class BytesSource(ByteSource):
    """Bytes already in memory (tests, small files)."""

    def __init__(self, data: bytes, name: str = "<bytes>"):
        self.data = bytes(data)
        self.size = len(self.data)
        self.name = name

    def read(self, start: int, end: int) -> bytes:
        self._check_range(start, end)
        return self.data[start:end]


class FileSource(ByteSource):
    """A local file, read by seek + read: never loaded whole."""

    def __init__(self, path: str | os.PathLike):
        self.name = os.fspath(path)
        try:
            self.size = os.path.getsize(self.name)
        except OSError as error:
            raise SourceError(f"cannot open model file {self.name!r}: {error.strerror or error}") from error

    def read(self, start: int, end: int) -> bytes:
        self._check_range(start, end)
        with open(self.name, "rb") as file:
            file.seek(start)
            return self._check_length(file.read(end - start), start, end)


class HttpSource(ByteSource):
    """A URL read by HTTP Range requests (the server must answer 206)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.name = url
        self.timeout = timeout
        request = urllib.request.Request(url, method="HEAD")
        with self._open(request) as response:
            length = response.headers.get("Content-Length")
            if length is None:
                raise SourceError(f"{url}: the server did not say how large the file is (no Content-Length)")
            self.size = int(length)

    def _open(self, request: urllib.request.Request):
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise SourceError(f"{self.name}: HTTP {error.code} {error.reason}") from error
        except urllib.error.URLError as error:
            raise SourceError(
                f"{self.name}: cannot connect ({error.reason}); is the URL right and the server up?"
            ) from error

    def read(self, start: int, end: int) -> bytes:
        self._check_range(start, end)
        if start == end:
            return b""
        request = urllib.request.Request(self.name, headers={"Range": f"bytes={start}-{end - 1}"})
        with self._open(request) as response:
            if response.status != 206:
                raise SourceError(
                    f"{self.name}: asked for a byte range but the server answered {response.status}, "
                    "not 206 Partial Content; serve the model from a server that supports Range requests"
                )
            return self._check_length(response.read(), start, end)


def open_source(path_or_url: str | os.PathLike) -> ByteSource:
    """A source for a local path or an http(s) URL."""
    text = os.fspath(path_or_url)
    if text.startswith(("http://", "https://")):
        return HttpSource(text)
    return FileSource(text)


async def read_any(source, start: int, end: int) -> bytes:
    """Bytes [start, end) from a sync CPython source or the page's async JS reader alike."""
    data = source.read(start, end)
    if hasattr(data, "__await__"):
        data = await data
    return data if isinstance(data, bytes) else data.to_bytes()
