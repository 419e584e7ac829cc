// vm.html: run the CLI inside the VM (vm.js) and show its output, as text. Where CheerpX cannot run, the
// status says exactly why (the Pyodide page, index.html, works without it).
import { runInVm, vmUnavailable } from "./vm.js";

const status = document.getElementById("vm-status");
const output = document.getElementById("vm-output");
const progress = document.getElementById("vm-progress");
const IMAGE_URL = new URL("vm/rwkvweb-i386.ext2", location.href).href; // python -m build.vm_image, copied there

const why = vmUnavailable();
if (why) status.textContent = `VM mode is unavailable here: ${why}. Use the Pyodide page (index.html).`;

document.getElementById("vm-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const args = document.getElementById("vm-args").value.trim().split(/\s+/)
    .map((a) => (a.startsWith("models/") ? new URL(a, location.href).href : a)); // the page reads the model by URL
  output.textContent = "";
  progress.hidden = false;
  try {
    await runInVm({
      imageUrl: IMAGE_URL, args,
      onText: (line) => output.append(line + "\n"), // text nodes, never HTML
      onStatus: (text) => { status.textContent = text; },
    });
    status.textContent = "done";
  } catch (error) {
    status.textContent = String(error?.message || error);
  } finally {
    progress.hidden = true;
  }
});
