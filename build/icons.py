"""The app's icons, drawn here as PNG (standard library only): three lines of "text" streaming out
of a cursor, white on the theme colour. `maskable` fills the whole square and keeps the drawing
inside the central 60% (the safe zone is a circle of 80%: launchers may crop to any shape);
the plain icon is a rounded square on a transparent ground."""

from __future__ import annotations

import struct
import zlib

THEME = (0x1D, 0x4E, 0x5F)
WHITE = (0xFF, 0xFF, 0xFF)
ACCENT = (0x7F, 0xD1, 0xB9)


def icon_png(size: int, maskable: bool = False) -> bytes:
    rows = [_row(y, size, maskable) for y in range(size)]
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 per row
    return _png(size, size, raw)


def _row(y: int, size: int, maskable: bool) -> bytes:
    pixels = bytearray(size * 4)
    inset = 0 if maskable else round(size * 0.04)
    radius = 0 if maskable else round(size * 0.18)
    _span(pixels, *_rounded_span(y, size, inset, radius), THEME)
    scale = 0.6 if maskable else 0.74  # the drawing's share of the square
    unit = size * scale / 10  # the drawing on a 10 x 10 grid
    left, top = (size - 10 * unit) / 2, (size - 10 * unit) / 2
    bars = [(1.0, 8.0, 1.2), (1.0, 6.5, 4.2), (1.0, 4.0, 7.2)]  # (x0, x1, y0) in grid units, each 1.6 high
    for x0, x1, y0 in bars:
        if top + y0 * unit <= y < top + (y0 + 1.6) * unit:
            _span(pixels, round(left + x0 * unit), round(left + x1 * unit), WHITE)
    if top + 7.0 * unit <= y < top + 9.0 * unit:  # the cursor after the last line
        _span(pixels, round(left + 5.0 * unit), round(left + 5.8 * unit), ACCENT)
    return bytes(pixels)


def _rounded_span(y: int, size: int, inset: int, radius: int) -> tuple[int, int]:
    """[x0, x1) of a rounded square's row y (empty when y is outside)."""
    if not inset <= y < size - inset:
        return 0, 0
    x0, x1 = inset, size - inset
    corner = max(inset + radius - y - 0.5, y + 0.5 - (size - inset - radius), 0)
    if corner and radius:
        dx = radius - (max(radius**2 - corner**2, 0)) ** 0.5
        x0, x1 = round(x0 + dx), round(x1 - dx)
    return x0, x1


def _span(pixels: bytearray, x0: int, x1: int, colour: tuple[int, int, int]) -> None:
    if x1 > x0:
        pixels[4 * x0 : 4 * x1] = bytes((*colour, 255)) * (x1 - x0)


def _png(width: int, height: int, raw: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
