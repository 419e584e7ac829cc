// The remote page: the WebGPU bridge alone, driven by a CPython process over a WebSocket
// (`--backend webgpu-remote`, py/rwkvweb/remote.py). Opened as remote.html?bridge=ws://127.0.0.1:PORT/PATH;
// only a loopback ws: URL is taken (serve.py's CSP allows no other), so a link cannot point this page at
// a server elsewhere. Python plans, tokenizes and samples; this page only runs what the frames ask.
import { Bridge } from "./gpu/bridge.js";
import { BridgeServer } from "./gpu/bridge-server.js";
import { requestDevice } from "./gpu/device.js";
import { openSource } from "./net/range.js";

const statusLine = document.getElementById("status");
const status = (text, state = "busy") => {
  statusLine.textContent = text; // text, never HTML
  statusLine.dataset.state = state;
};

function bridgeUrl() {
  const value = new URLSearchParams(location.search).get("bridge");
  if (!value) throw new Error("no ?bridge=ws://127.0.0.1:PORT/... in this page's URL: start it with `python -m rwkvweb ... --backend webgpu-remote`");
  const url = new URL(value);
  if (url.protocol !== "ws:" || !["127.0.0.1", "localhost"].includes(url.hostname)) {
    throw new Error(`the bridge URL must be ws:// on this machine (127.0.0.1 or localhost), not ${url.origin}`);
  }
  return url;
}

async function start() {
  const url = bridgeUrl();
  const { adapter, device } = await requestDevice();
  const bridge = new Bridge(device, new URL("shaders/", location.href), adapter);
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const server = new BridgeServer(bridge, (frame) => socket.send(frame), { openSource, onStatus: (text) => status(text) });
  socket.onopen = () => status("connected", "ready");
  socket.onmessage = (event) => server.receive(event.data);
  socket.onclose = (event) => {
    bridge.destroy();
    status(`disconnected (code ${event.code}): close this page`, "closed");
  };
}

start().catch((error) => status(String(error?.message || error), "failed"));
