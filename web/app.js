// The page: renders what the engine worker reports. Model and user text go into the DOM as text only.
import { EngineClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const status = $("status");

function setStatus(text, state) {
  status.textContent = text;
  status.dataset.state = state;
}

function addStep(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("steps").append(item);
}

const engine = new EngineClient(new URL("./worker.js", import.meta.url), {
  onProgress: ({ step, ms }) => addStep(`${step}: ${ms} ms`),
  onFailed: (error) => setStatus(error, "failed"),
  onReady: (info) => {
    setStatus(`ready: Python ${info.python}, rwkvweb ${info.packages.rwkvweb}, ${info.vocabTokens} tokens in the vocabulary`, "ready");
    $("gpu").textContent = info.webgpu
      ? `WebGPU adapter: ${info.webgpu.vendor || "?"} ${info.webgpu.architecture || ""} ${info.webgpu.description || ""}`.trim()
      : "WebGPU: no adapter (use a WebGPU-enabled browser)";
    $("packages").textContent = Object.entries(info.packages).map(([name, version]) => `${name} ${version}`).join(", ");
    $("gpu").dataset.found = String(Boolean(info.webgpu));
    $("tokenize").disabled = false;
  },
});

$("tokenize").addEventListener("click", async () => {
  try {
    const ids = await engine.call("encode", { text: $("text").value });
    $("ids").textContent = JSON.stringify(ids);
    $("ids").dataset.count = String(ids.length);
  } catch (error) {
    $("ids").textContent = `error: ${error.message}`;
  }
});

setStatus("starting Python in a worker…", "loading");
