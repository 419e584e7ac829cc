// The Python cell (this page only): the user's code runs in the worker's Pyodide against the loaded
// model through the public api.Model; what it prints, and its last expression's value, show as text.

export function initPython({ engine, $, showError, setBusy }) {
  $("python-run").addEventListener("click", async () => {
    const output = $("python-output");
    output.textContent = "";
    delete output.dataset.done;
    showError(null);
    setBusy(true);
    try {
      const { output: printed, value } = await engine.call("python", { code: $("python-code").value });
      output.textContent = printed + (value == null ? "" : `${value}\n`);
      output.dataset.done = "ok";
    } catch (error) {
      output.textContent = String(error.message || error);
      output.dataset.done = "error";
    } finally {
      setBusy(false);
    }
  });
}
