"""Round trips of the bridge protocol over the console transport, natively on a pty (no CheerpX):
python -m build.bench_console

A child process plays the VM side (rwkvweb.console's backend on a raw tty), this process the page's side
(protocol.serve over numpy). Prints the median time of a bare frame (hello) and of a 1 MiB read-back.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys

from rwkvweb.console import ConsoleTransport
from rwkvweb.numpy_exec import NumpyBackend
from rwkvweb.protocol import BridgeClosed, serve

VM_SIDE = """
import asyncio, json, statistics, time
from rwkvweb.console import console_backend
backend = console_backend()
def median_ms(call, n):
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)
plan = {"buffers": [{"name": "m", "bytes": 1 << 20, "role": "scratch"}], "kernels": [], "programs": {}, "fills": []}
asyncio.run(backend.load(plan))
print(json.dumps({
    "frame_round_trip_ms": median_ms(lambda: backend._call({"op": "hello", "version": 1}), 300),
    "read_1_MiB_ms": median_ms(lambda: asyncio.run(backend.read(0, 0, 1 << 20)), 10),
}))
"""


def main() -> None:
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", VM_SIDE], stdin=follower, stdout=follower)
    os.close(follower)
    lines: list[str] = []
    try:
        asyncio.run(serve(NumpyBackend(), ConsoleTransport(leader, leader, on_text=lines.append), open_url=None))
    except BridgeClosed:
        pass
    child.wait()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
