"""VM mode's page side (web/vm.js, web/vm-console.js) up to the CheerpX boundary. CheerpX itself cannot be
loaded here (its engine comes from Leaning Technologies' CDN, and nothing outside is reachable), so a
STAND-IN with CheerpX's console API plays the VM: its `run` speaks as rwkvweb-vm would, writing frame
lines to the console and reading the answers the page types back. Nothing in this test is real CheerpX."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

STAND_IN_RUN = """
async () => {
  const { runInVm } = await import("/vm.js");
  const { encodeFrame, decodeFrame } = await import("/gpu/bridge-server.js");
  const seen = { text: [], answers: [], calls: [] };
  const bytes = (text) => Uint8Array.from(text, (c) => c.charCodeAt(0));
  const b64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
  const CheerpXStandIn = {  // the shape of CheerpX 1.3.9's API that vm.js uses, and nothing real behind it
    HttpBytesDevice: { create: async (url) => { seen.calls.push(["HttpBytesDevice", url]); return { url }; } },
    IDBDevice: { create: async (name) => ({ name }) },
    OverlayDevice: { create: async (base, overlay) => ({ base, overlay }) },
    Linux: { create: async ({ mounts }) => {
      seen.calls.push(["Linux.create", mounts.map((m) => `${m.type}:${m.path}`).join(",")]);
      let write = null, typed = "", wake = null;
      const nextAnswer = () => new Promise((resolve) => { wake = resolve; });
      const ask = async (header, payload) => {  // one request as rwkvweb-vm writes it; the typed answer back
        const waiting = nextAnswer();
        write(bytes("@rwkvweb:" + b64(encodeFrame(header, payload, { binary: true })) + "\\n"));
        const line = await waiting;
        const answer = decodeFrame(Uint8Array.from(atob(line.slice(9)), (c) => c.charCodeAt(0)));
        seen.answers.push(answer.header);
        return answer;
      };
      return {
        setCustomConsole: (writer, cols, rows) => {
          write = writer;
          return (code) => {
            if (code !== 10) { typed += String.fromCharCode(code); return; }
            const line = typed; typed = ""; wake(line);
          };
        },
        run: async (path, args, options) => {
          seen.calls.push(["run", path, args.join(" ")]);
          write(bytes("plain output from the VM\\n"));
          await ask({ id: 0, op: "hello", version: 1 });
          const plan = { buffers: [{ name: "b", bytes: 8, role: "scratch" }], kernels: [], programs: {}, fills: [] };
          await ask({ id: 1, op: "load", plan });
          await ask({ id: 2, op: "write", buffer: 0, offset: 0 }, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
          const read = await ask({ id: 3, op: "read", buffer: 0, offset: 4, size: 4 });
          seen.read = Array.from(read.payload);
          await ask({ id: 4, op: "run", programs: ["nope"], writes: [] });
          return { status: 0 };
        },
      };
    } },
  };
  const result = await runInVm({
    imageUrl: "/vm/rwkvweb-i386.ext2", args: ["logits", "http://x/m.st"], loadCheerpX: async () => CheerpXStandIn,
    onText: (line) => seen.text.push(line),
  });
  return { ...seen, status: result.status };
}
"""


def test_vm_js_bridges_a_stand_in_consoles_frames_to_the_pages_bridge(page, server):
    page.goto(server.url + "vm.html")
    assert page.evaluate("crossOriginIsolated")  # serve.py's COOP/COEP: what CheerpX needs
    seen = page.evaluate(STAND_IN_RUN)
    assert seen["text"] == ["plain output from the VM"]
    assert seen["calls"][0] == ["HttpBytesDevice", "/vm/rwkvweb-i386.ext2"]
    assert seen["calls"][-1] == ["run", "/usr/local/bin/rwkvweb-vm", "logits http://x/m.st"]
    hello, load, write, read, run = seen["answers"]
    assert hello["ok"] and hello["version"] == 1 and "maxStorageBufferBindingSize" in hello["bridge"]
    assert load["ok"] and write["ok"] and read["ok"]
    assert seen["read"] == [5, 6, 7, 8]  # typed back as a console line, binary payload intact
    assert 'no program named "nope"' in run["error"]
    assert seen["status"] == 0 and page.outside_requests == []


def test_without_cheerpx_the_page_says_why(page, server):
    page.goto(server.url + "vm.html")
    message = page.evaluate(
        """async () => {
          const { runInVm } = await import("/vm.js");
          try {
            await runInVm({ imageUrl: "x", args: [], onText: () => {} });  // the real CDN import: refused here
          } catch (error) { return error.message; }
        }"""
    )
    assert message.startswith("CheerpX could not be loaded from https://cxrtnc.leaningtech.com/1.3.9/cx.esm.js")
    assert "staying in Pyodide mode" in message
