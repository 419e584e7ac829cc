// embed.html: rwkvweb inside another site's <iframe>, driven by postMessage. The contract (README,
// "Embedding"; keep it as written, extend it, never change it):
//   host -> iframe  {rwkvweb: 1, id, method, params}
//   iframe -> host  {rwkvweb: 1, kind: "ready"} once the engine is up; per request any number of
//                   {rwkvweb: 1, id, kind: "text", piece} and {rwkvweb: 1, id, kind: "progress", ...},
//                   then exactly one {rwkvweb: 1, id, result} or {rwkvweb: 1, id, error}; an error may carry
//                   code: "device-lost" (the GPU device was lost: send load again to continue).
// Who may talk to it: this page's own origin, plus the origins the server lets frame it (its CSP
// frame-ancestors: serve.py --embed-origin), narrowed by ?origins=A,B. A message from any other origin,
// or from a window that is not our parent, gets no reply and does nothing; replies go to the sender's
// exact origin, never "*". Requests are queued by the engine worker, never interleaved. The Python
// cell is not reachable from here: the worker runs with role=embed and refuses it.
import { EngineClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const showTranscript = params.get("transcript") === "1";
const running = new Map(); // host id -> engine call id (queued or running)

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function showError(message) {
  $("embed-error").hidden = !message;
  $("embed-error").textContent = message || "";
}

function addLine(role, text = "") {
  const item = document.createElement("li");
  item.dataset.role = role;
  item.textContent = text;
  if (showTranscript) $("embed-transcript").append(item);
  return item;
}

// --- who may talk to us -----------------------------------------------------------

async function frameAncestors() {
  try {
    const response = await fetch(location.href, { method: "HEAD", cache: "no-store" });
    const policy = response.headers.get("Content-Security-Policy") || "";
    const directive = policy.split(";").map((d) => d.trim().split(/\s+/)).find((d) => d[0] === "frame-ancestors");
    return (directive || []).slice(1).map((source) => (source === "'self'" ? location.origin : source === "*" ? "*" : originOf(source))).filter(Boolean);
  } catch {
    return []; // cannot tell: only our own origin
  }
}

function originOf(text) {
  try {
    return new URL(text).origin;
  } catch {
    return null;
  }
}

const allowedOrigins = (async () => {
  const framers = new Set([location.origin, ...(await frameAncestors())]);
  if (!params.has("origins")) return framers;
  const wanted = params.get("origins").split(",").map((o) => originOf(o.trim())).filter(Boolean);
  return new Set(wanted.filter((o) => framers.has(o) || framers.has("*")));
})();

async function allowed(origin) {
  const origins = await allowedOrigins;
  return origin !== "null" && (origins.has(origin) || (origins.has("*") && !params.has("origins")));
}

// --- the engine -------------------------------------------------------------------

const engineReady = new Promise((resolve, reject) => {
  const engine = new EngineClient(new URL("./worker.js?role=embed", import.meta.url), {
    onReady: () => resolve(engine),
    onFailed: (error) => reject(new Error(error)),
  });
});

async function announceReady() {
  try {
    await engineReady;
  } catch (error) {
    setStatus("failed", "failed");
    showError(String(error.message));
    return;
  }
  setStatus("ready", "ready");
  // To the parent only, at its own origin: Chromium tells us which it is; elsewhere each allowed origin
  // is tried (postMessage drops a message whose target origin is not the window's).
  const origins = [...(await allowedOrigins)].filter((o) => o !== "*");
  const parentOrigin = location.ancestorOrigins?.[0];
  for (const origin of parentOrigin ? [parentOrigin] : origins) {
    if (window.parent !== window && (await allowed(origin))) window.parent.postMessage({ rwkvweb: 1, kind: "ready" }, origin);
  }
}

function need(condition, message) {
  if (!condition) throw new Error(message);
}

const methods = {
  async load({ url, budget, precision } = {}, { call, progress }) {
    need(url === undefined || typeof url === "string", "load: url must be a string (or absent for the shipped model)");
    const target = url ? new URL(url, location.href).href : undefined; // none: the worker loads the shipped model
    setStatus(`loading ${target ? target.split("/").pop() : "the shipped model"}…`, "busy");
    const model = await call("load", { url: target, budget, precision: precision ?? "auto" }, { onProgress: progress });
    setStatus(`${model.name} loaded`, "ready");
    const { name, config, bytes, seconds, cached, note, budget: plannedBudget, matrices_by_precision: matrices, chat_model: chatModel } = model;
    return { name, url: model.url, config, bytes, seconds, cached, note, budget: plannedBudget, matrices, chatModel };
  },

  async generate({ prompt, options = {} } = {}, { text, call }) {
    need(typeof prompt === "string" || Array.isArray(prompt), "generate: prompt must be text (or a list of token ids)");
    addLine("prompt", typeof prompt === "string" ? prompt : JSON.stringify(prompt));
    const line = addLine("output");
    setStatus("generating…", "busy");
    const result = await call("generate", { prompt, options }, { onText: (piece) => { line.append(piece); text(piece); } });
    setStatus("ready", "ready");
    const { text: output, tokens, gpuBytes, ...stats } = result;
    return { text: output, tokens, stats: { ...stats, gpuBytes } };
  },

  abort: async ({ id } = {}, { engine }) => {
    await engine.abort(id === undefined ? undefined : running.get(id));
    return true;
  },
  encode: async ({ text } = {}, { call }) => {
    need(typeof text === "string", "encode: text must be a string");
    return call("encode", { text });
  },
  decode: async ({ ids } = {}, { call }) => {
    need(Array.isArray(ids) && ids.every(Number.isInteger), "decode: ids must be a list of integers");
    return call("decode", { ids });
  },
  embed: async ({ text, pooling, normalize } = {}, { call }) => call("embed", { text, pooling, normalize }),
  exportState: async (_, { call }) => call("exportState"),
  importState: async ({ state } = {}, { call }) => {
    need(state instanceof ArrayBuffer || ArrayBuffer.isView(state), "importState: state must be the ArrayBuffer exportState gave");
    const bytes = state instanceof ArrayBuffer ? state : state.buffer.slice(state.byteOffset, state.byteOffset + state.byteLength);
    return call("importState", { state: bytes });
  },
  unload: async (_, { call }) => {
    await call("unload");
    setStatus("no model loaded", "ready");
    return true;
  },
  info: async (_, { call }) => call("info"),
};

async function handle(origin, { id, method, params: input }) {
  const reply = (message) => window.parent.postMessage({ rwkvweb: 1, id, ...message }, origin);
  try {
    if (!Object.hasOwn(methods, method)) throw new Error(`unknown method ${JSON.stringify(method)}; known: ${Object.keys(methods).join(", ")}`);
    const engine = await engineReady;
    const call = (name, args, hooks) => {
      const promise = engine.call(name, args, hooks);
      if (method !== "abort" && id !== undefined) running.set(id, promise.id);
      return promise;
    };
    const context = {
      engine, call,
      text: (piece) => reply({ kind: "text", piece }),
      progress: ({ id: _, kind: __, ...progress }) => reply({ kind: "progress", ...progress }),
    };
    reply({ result: await methods[method](input ?? {}, context) });
  } catch (error) {
    const message = String(error?.message || error);
    showError(`${method}: ${message}`);
    const lost = error?.code === "device-lost";
    setStatus(lost ? message : "ready", lost ? "failed" : "ready");
    reply({ error: message, ...(lost ? { code: error.code } : {}) });
  } finally {
    if (running.get(id) !== undefined && method !== "abort") running.delete(id);
  }
}

window.addEventListener("message", async (event) => {
  if (window.parent === window || event.source !== window.parent) return;
  const data = event.data;
  if (!data || data.rwkvweb !== 1 || typeof data.method !== "string") return;
  if (!(await allowed(event.origin))) return; // not on the list: no reply, nothing done
  handle(event.origin, data);
});

setStatus("starting…", "loading");
announceReady();
