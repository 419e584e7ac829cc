// The example host page: embeds rwkvweb's embed.html (from ?app=URL, default this site's) and drives
// it through rwkvweb-embed.js. Model text goes into the page as text, never HTML.
import { embedRwkvweb } from "./rwkvweb-embed.js";

const $ = (id) => document.getElementById(id);
const app = new URL(new URLSearchParams(location.search).get("app") || "embed.html?transcript=1", location.href).href;
$("snippet").textContent = `<iframe src="${app}" title="rwkvweb"></iframe>`;

let run = null;

async function start() {
  try {
    window.rwkvweb = await embedRwkvweb($("frame-box"), app);
    $("host-status").textContent = "loading the model…";
    const model = await window.rwkvweb.load({
      onProgress: (p) => { $("host-status").textContent = `loading: ${Math.round((100 * p.bytesDone) / p.bytesTotal)}%`; },
    });
    $("host-status").textContent = `${model.name} loaded (${model.config.n_layer} layers × ${model.config.n_embd})`;
    $("host-status").dataset.loaded = "true";
    $("host-generate").disabled = false;
  } catch (error) {
    $("host-status").textContent = `error: ${error.message}`;
  }
}

$("host-generate").addEventListener("click", async () => {
  $("host-output").textContent = "";
  delete $("host-output").dataset.done;
  $("host-generate").disabled = true;
  $("host-stop").disabled = false;
  run = window.rwkvweb.generate($("host-prompt").value, { max_tokens: 60, temperature: 0.8, top_p: 0.85, seed: 1 });
  try {
    for await (const piece of run) $("host-output").append(piece);
    const { stats } = await run.result;
    $("host-stats").textContent = `${stats.generated} tokens, ${stats.tokens_per_second.toFixed(1)} tokens/s; stopped by ${stats.stopped_by}`;
    $("host-output").dataset.done = stats.stopped_by;
  } catch (error) {
    $("host-stats").textContent = `error: ${error.message}`;
  } finally {
    $("host-generate").disabled = false;
    $("host-stop").disabled = true;
  }
});
$("host-stop").addEventListener("click", () => run?.abort());

start();
