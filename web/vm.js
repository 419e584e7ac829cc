// VM mode (the full-toolchain mode): CheerpX boots the Debian i386 image (python -m build.vm_image) over
// HTTP Range, runs the VM-side bridge program rwkvweb-vm in it, and bridges its console to the page's
// WebGPU Bridge (gpu/bridge-server.js over vm-console.js). CheerpX is loaded from Leaning Technologies'
// CDN at run time and never vendored: its Community License allows free use only from that CDN.
// NOT RUN in this project's environment (no internet): written against CheerpX 1.3.9's documented API.
import { Bridge } from "./gpu/bridge.js";
import { BridgeServer } from "./gpu/bridge-server.js";
import { requestDevice } from "./gpu/device.js";
import { openSource } from "./net/range.js";
import { ConsoleLines, typeFrame } from "./vm-console.js";

export const CHEERPX_URL = "https://cxrtnc.leaningtech.com/1.3.9/cx.esm.js";

// Why VM mode cannot start in this browser ("" when it can), before anything is downloaded.
export function vmUnavailable() {
  if (!globalThis.crossOriginIsolated) return "VM mode needs cross-origin isolation (COOP/COEP headers, as serve.py sends)";
  if (!globalThis.isSecureContext) return "VM mode needs HTTPS (or localhost)";
  if (!globalThis.navigator?.gpu) return "this browser has no WebGPU";
  return "";
}

// Boot the image and run `rwkvweb-vm ARGS` (the CLI: e.g. ["generate", modelUrl, "--prompt", "Hi",
// "--backend", "webgpu-remote"]). onText(line): the program's output; onStatus(text): progress.
// loadCheerpX: how the engine is imported (a test passes a stand-in).
export async function runInVm({ imageUrl, args, onText, onStatus = () => {}, loadCheerpX = () => import(CHEERPX_URL) }) {
  const why = vmUnavailable();
  if (why) throw new Error(why);
  onStatus("loading CheerpX");
  let CheerpX;
  try {
    CheerpX = await loadCheerpX();
  } catch (error) {
    throw new Error(`CheerpX could not be loaded from ${CHEERPX_URL} (offline, or blocked?): ${error.message}; staying in Pyodide mode`);
  }
  onStatus("booting the VM image");
  const disk = await CheerpX.HttpBytesDevice.create(imageUrl);
  const writable = await CheerpX.OverlayDevice.create(disk, await CheerpX.IDBDevice.create("rwkvweb-vm"));
  const cx = await CheerpX.Linux.create({
    mounts: [{ type: "ext2", path: "/", dev: writable }, { type: "devs", path: "/dev" }, { type: "proc", path: "/proc" }],
  });
  const { adapter, device } = await requestDevice();
  const bridge = new Bridge(device, new URL("shaders/", location.href), adapter);
  let type = null;
  const server = new BridgeServer(bridge, (frame) => typeFrame(type, frame), { openSource, binary: true, onStatus });
  const lines = new ConsoleLines({ onFrame: (bytes) => server.receive(bytes), onText });
  type = cx.setCustomConsole((bytes) => lines.write(bytes), 120, 40);
  onStatus("running rwkvweb-vm");
  try {
    return await cx.run("/usr/local/bin/rwkvweb-vm", args, { env: ["HOME=/root", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"], cwd: "/root" });
  } finally {
    bridge.destroy();
  }
}
