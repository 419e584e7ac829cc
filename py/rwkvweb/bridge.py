"""The WebGPU backend in Pyodide: the engine's backend interface over web/gpu/bridge.js.

The only module that touches JavaScript objects. The worker hands Python its Bridge instance;
plans and writes cross as plain JS objects and typed arrays, results come back as bytes.
"""

from __future__ import annotations


def _to_js(value):
    from js import Object  # noqa: PLC0415 - only importable inside Pyodide
    from pyodide.ffi import to_js

    return to_js(value, dict_converter=Object.fromEntries)


class WebGPUBackend:
    def __init__(self, js_bridge):
        self.js = js_bridge

    async def load(self, plan: dict) -> None:
        await self.js.load(_to_js(plan))

    async def fill(self, fills: list[dict], source) -> None:
        """`source` is a JS reader whose read(start, end) resolves to the bytes (see web/net/range.js);
        its optional onProgress receives the bridge's load progress."""
        options = {"onProgress": source.onProgress} if getattr(source, "onProgress", None) else {}
        if getattr(source, "sequential", False):  # a server without Range: one stream, in file order
            options["parallel"] = 1
        await self.js.fill(_to_js(fills), source.read, _to_js(options))

    async def write(self, buffer: int, offset: int, data: bytes) -> None:
        self.js.write(buffer, offset, _to_js(data))

    async def run(self, programs: list[str], writes) -> None:
        self.js.run(_to_js(programs), _to_js([{"buffer": b, "offset": o, "data": d} for b, o, d in writes]))

    async def read(self, buffer: int, offset: int, size: int) -> bytes:
        return (await self.js.read(buffer, offset, size)).to_bytes()
