// Official models (py/rwkvweb/catalog.py): what each one is, whether it fits this device's budget
// before a byte of it is downloaded (the budget planner on its official shapes, in the worker), and
// a button that puts its URL in the model box. "Will it fit?" beside the URL box asks the same of any
// URL from its header alone (a few small Range reads). Everything goes into the DOM as text.
export function initCatalog({ engine, $, showError }) {
  const budget = () => Number($("budget").value);

  async function show() {
    try {
      const models = await engine.call("catalog");
      $("catalog-list").replaceChildren(...models.map(entry));
    } catch (error) {
      showError(error);
    }
  }

  function entry(model) {
    const item = document.createElement("li");
    item.dataset.id = model.id;
    const title = document.createElement("strong");
    title.textContent = model.title;
    const facts = document.createElement("span");
    const size = model.download_bytes ? `${(model.download_bytes / 1e9).toFixed(2)} GB download` : "size unknown";
    facts.textContent = ` · ${size} · ${model.licence} · `;
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    const check = button("Will it fit?", () => ask(verdict, "catalogVerdict", { id: model.id, budget: budget() }));
    const use = button("Use", () => {
      $("model-choice").value = "";
      $("model-url").value = model.url;
    });
    item.append(title, facts, check, use, verdict);
    return item;
  }

  async function ask(target, method, params) {
    target.textContent = "planning…";
    delete target.dataset.fits;
    try {
      const answer = await engine.call(method, params);
      target.textContent = answer.message;
      target.dataset.fits = String(answer.fits);
    } catch (error) {
      target.textContent = String(error.message || error);
      target.dataset.fits = "false";
    }
  }

  function button(text, onClick) {
    const element = document.createElement("button");
    element.type = "button";
    element.textContent = text;
    element.addEventListener("click", onClick);
    return element;
  }

  $("catalog").addEventListener("toggle", () => {
    if ($("catalog").open && !$("catalog-list").childElementCount) show();
  });
  $("check-fit").addEventListener("click", () => ask($("fit-verdict"), "verdict", { url: $("model-url").value, budget: budget() }));
}
