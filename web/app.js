// The page: renders what the engine worker reports, and sends it what the user asks.
// Model and user text go into the DOM as text only (textContent / text nodes), never as HTML.
import { EngineClient } from "./client.js";
import { initChat } from "./chat-view.js";
import { initPython } from "./python-cell.js";
import { initCatalog } from "./catalog-view.js";
import { registerServiceWorker, showStorage, askPersistence } from "./pwa.js";

const $ = (id) => document.getElementById(id);

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function showError(error) {
  if (error?.code === "device-lost") return deviceLost(error.message);
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
  if (!error) $("reload-model").hidden = true;
}

// The GPU device went away (mid-generation or idle): the model is gone with it. One line says so, and
// "Reload model" loads the same model again on a new device (from the cache, where it was cached).
function deviceLost(message) {
  state.model = null;
  delete $("model-info").dataset.loaded;
  setStatus(message, "failed");
  $("error").hidden = false;
  $("error").textContent = message;
  $("reload-model").hidden = !state.lastLoad;
  setBusy(state.busy);
}

const needsModel = ["generate", "send", "regenerate", "new-chat", "save-chat", "python-run"];

function setBusy(busy) {
  state.busy = busy;
  for (const id of ["load", "tokenize", ...needsModel]) $(id).disabled = busy || (needsModel.includes(id) && !state.model);
  const stoppable = busy && (state.generating || state.loading); // Stop also aborts a load
  $("stop").disabled = !stoppable;
  $("chat-stop").disabled = !stoppable;
}

const state = {
  ready: false, busy: true, model: null, generating: false, shipped: [], loadedDefault: false,
  lastLoad: null, // {url} or {file}: what "Reload model" loads again
};

// Chat, completion, or the Python cell: one pane at a time.
function setMode(mode) {
  for (const button of document.querySelectorAll(".mode")) button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
  for (const name of ["chat", "completion", "python"]) $(`${name}-pane`).hidden = name !== mode;
  document.body.dataset.mode = mode;
}
for (const button of document.querySelectorAll(".mode")) button.addEventListener("click", () => setMode(button.dataset.mode));

$("settings-toggle").addEventListener("click", () => {
  const open = $("settings").hidden;
  $("settings").hidden = !open;
  $("settings-toggle").setAttribute("aria-expanded", String(open));
});

// Sampling settings, shared by chat and completion.
function samplingOptions() {
  return {
    max_tokens: Number($("max-tokens").value), temperature: Number($("temperature").value),
    top_p: Number($("top-p").value), seed: Number($("seed").value),
  };
}

// Once the worker is ready and the shipped models are listed, load the first one (the default).
function loadDefaultModel() {
  if (state.ready && state.shipped.length && !state.model && !state.loadedDefault) {
    state.loadedDefault = true;
    loadModel();
  }
}

const engine = new EngineClient(new URL("./worker.js", import.meta.url), {
  onProgress: ({ step, ms }) => {
    const item = document.createElement("li");
    item.textContent = `${step}: ${ms} ms`;
    $("steps").append(item);
  },
  onFailed: (error) => { setStatus(error, "failed"); showError(error); },
  onDeviceLost: deviceLost,
  onReady: (info) => {
    setStatus("ready", "ready");
    $("runtime").textContent = `Python ${info.python} (Pyodide) in a worker; World tokenizer with ${info.vocabTokens} tokens`;
    $("packages").textContent = Object.entries(info.packages).map(([name, version]) => `${name} ${version}`).join(", ");
    $("gpu").textContent = info.webgpu
      ? `WebGPU adapter: ${info.webgpu.vendor || "?"} ${info.webgpu.architecture || ""} ${info.webgpu.description || ""}`.trim()
      : "WebGPU: no adapter (use a WebGPU-enabled browser)";
    $("gpu").dataset.found = String(Boolean(info.webgpu));
    setBusy(false);
    state.ready = true;
    loadDefaultModel();
    listCachedModels();
  },
});

$("load").addEventListener("click", () => loadModel());
$("reload-model").addEventListener("click", () => loadModel(state.lastLoad?.file, state.lastLoad?.url));

// A file dropped on the model section loads like one picked with the file input.
$("model-section").addEventListener("dragover", (event) => event.preventDefault());
$("model-section").addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer?.files?.[0];
  if (file) loadModel(file);
});

// The budget's default follows the device: at most half its memory (navigator.deviceMemory, in GB).
if (navigator.deviceMemory && navigator.deviceMemory * 1e9 / 2 < 2e9) {
  $("budget").value = navigator.deviceMemory * 1e9 / 2 >= 1e9 ? "1000000000" : "700000000";
}

async function loadModel(dropped = null, again = null) {
  showError(null);
  const file = dropped || (again ? null : $("model-file").files[0]);
  const url = again ?? $("model-url").value;
  state.lastLoad = file ? { file } : { url };
  state.loading = true;
  setBusy(true);
  setStatus(`loading ${file ? file.name : url}…`, "busy");
  try {
    const bar = $("load-progress");
    bar.hidden = false;
    bar.value = 0;
    const options = { budget: Number($("budget").value), precision: $("precision").value };
    const model = await engine.call("load", file ? { file, ...options } : { url, ...options }, {
      onProgress: (p) => {
        bar.value = p.bytesDone / p.bytesTotal;
        $("load-detail").textContent = `${(p.bytesDone / 1e6).toFixed(1)} of ${(p.bytesTotal / 1e6).toFixed(1)} MB, ` +
          `${p.fillsDone}/${p.fillsTotal} tensors, ${(p.bytesPerSecond / 1e6).toFixed(1)} MB/s, ${Math.ceil(p.etaSeconds)} s left`;
        bar.dataset.done = String(p.bytesDone === p.bytesTotal);
      },
    });
    state.model = model;
    bar.hidden = true;
    const c = model.config;
    $("model-info").textContent = `${model.name}: ${c.n_layer} layers × ${c.n_embd} wide, ${c.vocab_size} tokens; ` +
      `${(model.bytes / 1e6).toFixed(1)} MB loaded in ${model.seconds.toFixed(2)} s (${(model.fetchedBytes / 1e6).toFixed(1)} MB ${model.cached ? "fetched, the rest from the cache" : "read"}); ` +
      `GPU memory ${(model.gpu.bytesAllocated / 1e6).toFixed(1)} MB of a ${(model.budget / 1e6).toFixed(0)} MB budget; matrices: ` +
      Object.entries(model.matrices_by_precision).map(([p, n]) => `${n} ${p}`).join(", ") +
      (model.host_bytes ? `; the embedding table (${(model.host_bytes / 1e6).toFixed(1)} MB) in page memory, off the GPU` : "") +
      (model.note ? ` (note: ${model.note})` : "");
    $("model-info").dataset.chat = String(model.chat_model);
    const shipped = state.shipped.find((m) => !file && m.file === url);
    if (shipped?.prompt) $("prompt").value = shipped.prompt;
    setMode(model.chat_model ? "chat" : "completion"); // the shipped dictionary model is no chat model
    await chat.reset();
    if (model.cached) askPersistence().then(() => showStorage($("storage")));
    setStatus(model.note ? `model loaded (note: ${model.note})` : "model loaded", "ready");
    $("model-info").dataset.loaded = "true"; // last: whoever waits for it finds the page ready for the next action
  } catch (error) {
    showError(error);
    // a load that failed half way (network, abort) had already replaced the model: none is left
    if (state.model && !(await engine.call("info").catch(() => null))?.gpu?.bytesAllocated) state.model = null;
    if (error.code !== "device-lost") setStatus(state.model ? "model loaded" : "no model loaded", "ready");
  } finally {
    state.loading = false;
    setBusy(false);
    listCachedModels();
    showStorage($("storage"));
  }
}

// The OPFS cache (net/cache.js): what is stored, how much room is left, and a way to free it.
async function listCachedModels() {
  try {
    const { models, usage, quota, unavailable } = await engine.call("cacheList");
    $("cache-usage").textContent = unavailable ? "this browser has no model cache (OPFS): models are fetched on every load"
      : `${models.length} cached; storage used ${(usage / 1e6).toFixed(1)} MB of ${(quota / 1e6).toFixed(0)} MB allowed`;
    $("cache-list").replaceChildren(...models.map((m) => {
      const item = document.createElement("li");
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        try {
          await engine.call("cacheDelete", { id: m.id });
        } catch (error) {
          showError(error);
        }
        listCachedModels();
      });
      item.append(`${m.url} — ${(m.cachedBytes / 1e6).toFixed(1)} MB${m.complete ? "" : " (partial: the next load resumes)"} `, remove);
      item.dataset.id = m.id;
      return item;
    }));
  } catch (error) {
    $("cache-usage").textContent = `cannot list cached models: ${error.message}`;
  }
}

$("generate").addEventListener("click", async () => {
  showError(null);
  const output = $("output");
  output.replaceChildren();
  delete output.dataset.done;
  $("speed").textContent = "";
  state.generating = true;
  setBusy(true);
  const options = samplingOptions();
  try {
    const result = await engine.call("generate", { prompt: $("prompt").value, options }, {
      onText: (piece) => output.append(document.createTextNode(piece)),
    });
    $("speed").textContent = `${result.generated} tokens, ${result.tokens_per_second.toFixed(2)} tokens/s ` +
      `(prompt: ${result.prompt_tokens} tokens in ${result.prefill_seconds.toFixed(2)} s); stopped by ${result.stopped_by}; ` +
      `GPU memory ${(result.gpuBytes / 1e6).toFixed(1)} MB`;
    output.dataset.done = result.stopped_by;
  } catch (error) {
    showError(error);
  } finally {
    state.generating = false;
    setBusy(false);
  }
});

$("stop").addEventListener("click", () => engine.abort());

$("tokenize").addEventListener("click", async () => {
  try {
    const ids = await engine.call("encode", { text: $("prompt").value });
    $("ids").textContent = JSON.stringify(ids);
    $("ids").dataset.count = String(ids.length);
  } catch (error) {
    showError(error);
  }
});

// The models shipped with the site (build/site.py writes models/index.json); the first is the default.
async function listShippedModels() {
  try {
    const response = await fetch(new URL("models/index.json", import.meta.url));
    const { models } = await response.json();
    state.shipped = models;
    if (!models.length) return;
    const choice = $("model-choice");
    choice.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.file;
      option.textContent = `${m.name} (${(m.bytes / 1e6).toFixed(1)} MB)`;
      return option;
    }));
    $("model-url").value = models[0].file;
    loadDefaultModel();
  } catch (error) {
    showError(`could not list the shipped models: ${error.message}`);
  }
}

$("model-choice").addEventListener("change", () => {
  if ($("model-choice").value) $("model-url").value = $("model-choice").value;
});

const chat = initChat({ engine, $, samplingOptions, showError, setBusy: (busy, generating) => {
  state.generating = generating;
  setBusy(busy);
} });
initPython({ engine, $, showError, setBusy });
initCatalog({ engine, $, showError });

setStatus("starting Python in a worker…", "loading");
setMode("chat");
listShippedModels();
showStorage($("storage"));
registerServiceWorker($("update"));
