// The engine's home: Pyodide and (later) the WebGPU device live in this module worker,
// so the page's main thread only renders. Protocol (see client.js):
//   page -> worker  {id, method, params}
//   worker -> page  {id, result} | {id, error} | {kind: "progress", step, ms} | {kind: "ready", info} | {kind: "failed", error}
import { loadPyodide } from "./pyodide/pyodide.mjs";

const site = new URL("./", import.meta.url);
let pyodide = null;
let api = null; // the Python module rwkvweb.browser
const info = {};

// Start-up, as named steps: each one reports its time, and a failure names the step.
const steps = [
  ["pyodide", async () => {
    pyodide = await loadPyodide({ indexURL: new URL("pyodide/", site).href });
    info.python = pyodide.runPython("import sys; sys.version.split()[0]");
  }],
  ["wheels", async () => {
    const manifest = await fetchOk(new URL("asset-manifest.json", site)).then((r) => r.json());
    const wheels = Object.keys(manifest.files).filter((p) => p.startsWith("wheels/") && p.endsWith(".whl"));
    await pyodide.loadPackage(wheels.map((p) => new URL(p, site).href), { messageCallback: () => {} });
    api = pyodide.pyimport("rwkvweb.browser");
    info.packages = toJs(api.package_versions());
  }],
  ["tokenizer", async () => {
    const vocab = await fetchOk(new URL("vocab/rwkv_vocab_v20230424.txt", site)).then((r) => r.text());
    info.vocabTokens = api.init_tokenizer(vocab);
  }],
  ["webgpu", async () => {
    // Not fatal here: the tokenizer works without a GPU; the engine will say what is missing.
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    info.webgpu = adapter ? describeAdapter(adapter) : null;
  }],
];

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}; is the site built and served whole?`);
  return response;
}

function describeAdapter(adapter) {
  const a = adapter.info || {};
  return {
    vendor: a.vendor || "", architecture: a.architecture || "", description: a.description || "",
    features: [...adapter.features].sort(),
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  };
}

const methods = {
  encode: ({ text }) => toJs(api.encode(text)),
  decode: ({ ids }) => api.decode(pyodide.toPy(ids)),
  info: () => info,
};

function toJs(value) {
  // Python lists come back as proxies: copy into plain JS values and free the proxy.
  if (value && typeof value.toJs === "function") {
    const plain = value.toJs();
    value.destroy();
    return plain;
  }
  return value;
}

const ready = (async () => {
  for (const [name, run] of steps) {
    const started = performance.now();
    try {
      await run();
    } catch (error) {
      const message = `start-up step "${name}" failed: ${error.message || error}`;
      self.postMessage({ kind: "failed", error: message });
      throw new Error(message);
    }
    self.postMessage({ kind: "progress", step: name, ms: Math.round(performance.now() - started) });
  }
  self.postMessage({ kind: "ready", info });
})();

self.onmessage = async ({ data }) => {
  const { id, method, params } = data || {};
  try {
    await ready;
    if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${JSON.stringify(method)}`);
    self.postMessage({ id, result: await methods[method](params || {}) });
  } catch (error) {
    self.postMessage({ id, error: String(error.message || error) });
  }
};
