"""Round trips of the bridge protocol over the console transport, natively on a pty (no CheerpX):
python -m build.bench_console

A child process plays the VM side (rwkvweb.console's backend on a raw tty), this process the page's side
(protocol.serve over numpy). Prints the median times of a bare frame (hello), a 4-byte and a 1 MiB
read-back (protocol.round_trip_times, which rwkvweb.remote uses for the WebSocket transport).
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

# The VM side's program: only what the VM's wheel ships (protocol.py holds the timing, not remote.py).
VM_SIDE = """
import asyncio, json
from rwkvweb.console import console_backend
from rwkvweb.protocol import round_trip_times
print(json.dumps(round_trip_times(console_backend(), asyncio.run)))
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
