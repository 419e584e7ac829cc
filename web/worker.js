// The engine's home: Pyodide and the WebGPU device live in this module worker, so the page's
// main thread only renders. Protocol (client.js is the other end):
//   page -> worker  {id, method, params}
//   worker -> page  {id, result} | {id, error} | {id, kind: "text", piece} | {id, kind: "progress", ...}
//                   | {kind: "progress", step, ms} | {kind: "ready", info} | {kind: "failed", error}
//                   | {kind: "device-lost", error} (the GPU device went away, even between requests)
// Requests run one at a time, in the order they came (a queue); `abort` is answered at once: it stops
// the running request ({id} names one: a queued one is dropped, answered with an "aborted" error).
// An error is one line: a Python exception's last line ("ValueError: …"; the whole traceback goes to
// console.debug for developers); with code "device-lost" when the GPU device was lost (load again).
// Started as worker.js?role=embed (web/embed.js) it refuses the Python cell: an embedding site
// must never run code in this origin.
import { loadPyodide } from "./pyodide/pyodide.mjs";
import { Bridge, deviceLostMessage } from "./gpu/bridge.js";
import { requestDevice, describe } from "./gpu/device.js";
import { openSource, ModelSourceError } from "./net/range.js";
import { cachedReader, openCache } from "./net/cache.js";

const site = new URL("./", import.meta.url);
let pyodide = null;
let api = null; // the Python module rwkvweb.browser
let gpu = null; // {adapter, device}, made on the first load
let bridge = null;
const role = new URL(import.meta.url).searchParams.get("role") || "page";
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
    info.packages = plain(api.package_versions());
  }],
  ["tokenizer", async () => {
    const vocab = await fetchOk(new URL("vocab/rwkv_vocab_v20230424.txt", site)).then((r) => r.text());
    info.vocabTokens = api.init_tokenizer(vocab);
  }],
  ["webgpu", async () => {
    // Not fatal: the tokenizer works without a GPU; loading a model says what is missing.
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    info.webgpu = adapter ? { vendor: adapter.info?.vendor || "", architecture: adapter.info?.architecture || "", description: adapter.info?.description || "" } : null;
  }],
];

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}; is the site built and served whole?`);
  return response;
}

function plain(value) {
  // Python values come back as proxies: copy into plain JS values and free the proxy.
  if (value && typeof value.toJs === "function") {
    const copy = value.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
    value.destroy();
    return copy;
  }
  return value;
}

let cacheStore; // undefined: not opened yet; null: no OPFS in this browser
async function modelCache() {
  if (cacheStore === undefined) cacheStore = await openCache();
  return cacheStore;
}

// The reader to load from: through the OPFS cache where there is one and the server names the
// file's version (ETag or Last-Modified), so that changed bytes are never served from the cache.
async function withCache(source, wanted) {
  const store = wanted && source.version ? await modelCache() : null;
  const { entry, note } = store ? await store.entry({ url: source.url, version: source.version, size: source.size }) : { entry: null, note: "" };
  if (!entry?.complete()) await source.prepare();
  return { reader: entry ? cachedReader(source, entry) : source, entry, note };
}

// The model's source, or, when the network is down and the OPFS cache holds a whole copy of this
// URL, that copy (with a note saying so: it may be older than the server's).
async function openModel(target, cache, signal) {
  const url = typeof target === "string" ? new URL(target, site).href : null;
  const saved = url && cache ? await (await modelCache())?.loadedKey(url) : null;
  const offlineCopy = () => ({
    source: offlineSource(saved),
    offline: `offline: the server could not be reached, so the copy cached on ${new Date(saved.updated).toISOString().slice(0, 10)} was used`,
  });
  if (saved && navigator.onLine === false) return offlineCopy();
  try {
    return { source: await openSource(target, { signal }), offline: "" };
  } catch (error) {
    if (saved && /cannot fetch/.test(error.message)) return offlineCopy();
    throw error;
  }
}

function offlineSource({ url, version, size }) {
  const missing = async () => { throw new ModelSourceError(`${url}: offline, and these bytes are not in the model cache`); };
  return { name: url.split("/").pop(), url, size, version, note: "", fetchedBytes: 0, sequential: false, prepare: async () => {}, read: missing };
}

async function shippedModel() {
  const { models } = await fetchOk(new URL("models/index.json", site)).then((r) => r.json());
  if (!models.length) throw new Error("no model is shipped with this site: give a model URL");
  return new URL(models[0].file, site).href;
}

async function ensureBridge() {
  if (bridge?.failure) { bridge = null; gpu = null; } // a lost device: start over with a new one
  if (!bridge) {
    gpu = await requestDevice();
    bridge = new Bridge(gpu.device, new URL("shaders/", site), gpu.adapter);
    const device = gpu.device;
    device.lost.then((info) => {
      if (gpu?.device === device) self.postMessage({ kind: "device-lost", error: deviceLostMessage(info) });
    });
  }
  return bridge;
}

// What the planner needs to know of this device: its largest binding and its adapter (model.choose_matvec).
async function deviceFacts() {
  await ensureBridge();
  return { maxBinding: gpu.device.limits.maxStorageBufferBindingSize, device: describe(gpu.adapter, gpu.device) };
}

// For tests and developers (the worker's console): the device now in use, so that a lost device can be
// simulated with .destroy(). Only code running inside this worker can reach it.
self.__rwkvwebDevice = () => gpu?.device ?? null;

// A reader whose reads stop once the load is aborted (the fetches themselves get the same signal).
function abortable(reader, signal) {
  const wrapped = Object.create(reader);
  wrapped.read = async (start, end, into) => {
    signal.throwIfAborted();
    return reader.read(start, end, into);
  };
  return wrapped;
}

let loading = null; // the running load's AbortController

const methods = {
  info: () => ({ ...info, gpu: bridge ? bridge.info() : null, wasmBytes: pyodide?._module.HEAP8.buffer.byteLength ?? 0 }),
  encode: ({ text }) => plain(api.encode(text)),
  decode: ({ ids }) => api.decode(pyodide.toPy(ids)),

  // budget: GPU bytes (default: budget.py's DEFAULT_BUDGET); precision: auto | fp32 | fp16 | int8 | nf4;
  // cache: keep the fetched bytes in OPFS (net/cache.js) and read them from there next time.
  // chunk: the most prompt tokens one prefill submission runs (default: model.py's DEFAULT_CHUNK).
  // No url and no file: the first model the site ships (models/index.json).
  async load({ url, file, budget, precision = "auto", cache = true, chunk }, id) {
    const started = performance.now();
    const controller = new AbortController();
    loading = controller;
    const target = file || url || (await shippedModel());
    const { source, offline } = await openModel(target, cache && !file, controller.signal);
    const { reader: stored, entry, note: cacheNote } = await withCache(source, cache && !file);
    const reader = abortable(stored, controller.signal);
    const note = [offline, cacheNote].filter(Boolean).join("; ");
    reader.onProgress = (p) => {
      const seconds = (performance.now() - started) / 1000;
      const rate = p.bytesDone / Math.max(seconds, 1e-3);
      self.postMessage({ id, kind: "progress", ...p, bytesPerSecond: rate, etaSeconds: (p.bytesTotal - p.bytesDone) / Math.max(rate, 1) });
    };
    try {
      const gpuBridge = await ensureBridge();
      const { maxBinding, device } = await deviceFacts();
      const model = plain(await api.load(gpuBridge, reader, maxBinding, pyodide.toPy(device), budget ?? undefined, precision, chunk ?? undefined));
      if (!stored.cachingStopped) entry?.markLoaded();
      const notes = [reader.note, note].filter(Boolean).join("; ");
      return { ...model, name: reader.name, url: reader.url ?? null, bytes: reader.size, fetchedBytes: source.fetchedBytes, cached: Boolean(entry), note: notes,
               seconds: (performance.now() - started) / 1000, gpu: gpuBridge.info(), device };
    } finally {
      entry?.close();
    }
  },

  // The official models (catalog.py), and before any download whether one fits this device's budget:
  // from its official shapes (catalogVerdict: nothing fetched) or from a URL's header (verdict: a few Range reads).
  catalog: () => plain(api.catalog()),

  async catalogVerdict({ id, budget }) {
    const { maxBinding, device } = await deviceFacts();
    return plain(api.catalog_verdict(id, maxBinding, pyodide.toPy(device), budget ?? undefined));
  },

  async verdict({ url, budget }) {
    const { maxBinding, device } = await deviceFacts();
    const { reader } = await withCache((await openModel(url, false)).source, false);
    return plain(await api.verdict(reader, maxBinding, pyodide.toPy(device), budget ?? undefined));
  },

  async cacheList() {
    const store = await modelCache();
    return store ? { models: await store.list(), ...(await store.usage()) } : { models: [], unavailable: true };
  },

  async cacheDelete({ id }) {
    const store = await modelCache();
    if (!store) throw new Error("this browser has no model cache (OPFS unavailable)");
    await store.delete(id);
    return true;
  },

  async generate({ prompt, options }, id) {
    const onText = (piece) => self.postMessage({ id, kind: "text", piece });
    const result = plain(await api.generate(pyodide.toPy(prompt), pyodide.toPy(options || {}), onText));
    return { ...result, gpuBytes: bridge.bytesAllocated };
  },

  async logits({ tokens, keepState = false }) {
    const rows = plain(await api.logits(pyodide.toPy(tokens), keepState));
    return rows.map((row) => Array.from(new Float32Array(row.buffer, row.byteOffset, row.byteLength / 4)));
  },

  async chatNew({ template, system }) {
    return plain(api.chat_new(template ?? undefined, system ?? undefined));
  },

  chatTranscript: () => plain(api.chat_transcript()),

  async chatSend({ text, options }, id) {
    const onText = (piece) => self.postMessage({ id, kind: "text", piece });
    return { ...plain(await api.chat_send(text, pyodide.toPy(options || {}), onText)), gpuBytes: bridge.bytesAllocated };
  },

  async chatRegenerate({ options }, id) {
    const onText = (piece) => self.postMessage({ id, kind: "text", piece });
    return { ...plain(await api.chat_regenerate(pyodide.toPy(options || {}), onText)), gpuBytes: bridge.bytesAllocated };
  },

  async chatSave() {
    return plain(await api.chat_save()).slice().buffer;
  },

  async chatRestore({ data }) {
    return plain(await api.chat_restore(pyodide.toPy(new Uint8Array(data))));
  },

  // The Python cell: the user's own code against the loaded model (rwkvweb.browser.run_cell).
  async python({ code }) {
    if (role !== "page") throw new Error("the Python cell runs only on rwkvweb's own page, never for an embedding site");
    return plain(await api.run_cell(code));
  },

  // embed: {text} or {ids}, or {inputs: [...]} for a batch -> the hidden state after ln_out (rwkvweb.browser.embed),
  // as plain arrays of numbers (one, or one per input) so that every transport can carry them.
  async embed({ text, ids, inputs, pooling = "last", normalize = false }) {
    const input = inputs ?? text ?? ids;
    if (input === undefined) throw new Error("embed needs text, ids or inputs");
    const result = plain(await api.embed(pyodide.toPy(input), pooling, normalize));
    const vector = (bytes) => Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    return Array.isArray(result) ? result.map(vector) : vector(result);
  },

  async storage() {
    const estimate = await navigator.storage?.estimate?.();
    return { usage: estimate?.usage ?? null, quota: estimate?.quota ?? null };
  },

  async exportState() {
    const bytes = plain(await api.export_state());
    return bytes.slice().buffer;
  },

  async importState({ state }) {
    await api.import_state(pyodide.toPy(new Uint8Array(state)));
    return true;
  },

  async unload() {
    if (bridge) await api.unload(bridge);
    return bridge ? bridge.info() : null;
  },
};

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

// The queue: each request waits for the one before it, so nothing interleaves on the engine.
let tail = Promise.resolve();
let running = null; // id of the request on the engine now
const dropped = new Set(); // ids aborted while still queued

function abort({ id } = {}) {
  if (id !== undefined && id !== running) {
    dropped.add(id);
    return true;
  }
  api?.abort();
  loading?.abort(new Error("the load was aborted"));
  return true;
}

// What the caller is told: one line. Pyodide's PythonError carries the whole traceback; the caller gets
// its last line ("ValueError: …"), a JavaScript error raised inside Python (JsException) its own message,
// and a lost device (whatever call noticed it first) the one line that says so.
async function publicError(error) {
  if (gpu && !bridge?.failure) await Promise.race([gpu.device.lost, new Promise((resolve) => setTimeout(resolve, 50))]);
  if (bridge?.lost) return { error: bridge.failure, code: "device-lost" };
  let message = String(error?.message || error);
  if (error?.type && message.startsWith("Traceback")) {
    console.debug(message); // the full traceback, for developers
    // the exception's own line, which Python prints with its module ("pyodide.ffi.JsException: …")
    const type = error.type.replace(/[^\w]/g, "");
    const line = [...message.matchAll(new RegExp(`^(?:[\\w.]+\\.)?${type}: `, "gm"))].at(-1);
    message = line ? `${type}: ${message.slice(line.index + line[0].length)}`.trim() : message.trim().split("\n").at(-1);
    if (type === "JsException") message = message.replace(/^JsException: (\w*Error: )?/, "");
  }
  return { error: message };
}

async function answer(id, method, params) {
  try {
    await ready;
    if (dropped.delete(id)) throw new Error("aborted before it started");
    if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${JSON.stringify(method)}`);
    running = id;
    api?.clear_abort();
    self.postMessage({ id, result: await methods[method](params || {}, id) });
  } catch (error) {
    self.postMessage({ id, ...(await publicError(error)) });
  } finally {
    running = null;
    loading = null;
  }
}

self.onmessage = ({ data }) => {
  const { id, method, params } = data || {};
  if (method === "abort") return self.postMessage({ id, result: abort(params || {}) }); // at once, never queued
  tail = tail.then(() => answer(id, method, params));
};
