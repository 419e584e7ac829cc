// The installable, offline app: registers the service worker (sw.js), says when a new build has
// taken over (this page keeps its own build until it reloads: sw.js never mixes two), shows the
// storage used and available, and asks for persistent storage once a model is cached.

export async function registerServiceWorker(note) {
  if (!("serviceWorker" in navigator)) return null;
  const hadController = Boolean(navigator.serviceWorker.controller);
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (!hadController) return; // the first install: this page is already the newest build
    note.hidden = false;
    note.textContent = "A new version of the app is installed: reload the page to use it.";
    note.dataset.updated = "true";
  });
  try {
    const registration = await navigator.serviceWorker.register(new URL("sw.js", import.meta.url), { updateViaCache: "none" });
    document.body.dataset.serviceWorker = "registered";
    navigator.serviceWorker.controller?.postMessage("tidy"); // this page is up: older builds' caches may go
    return registration;
  } catch (error) {
    document.body.dataset.serviceWorker = `failed: ${error.message}`;
    return null;
  }
}

export async function askPersistence() {
  try {
    return await navigator.storage?.persist?.();
  } catch {
    return false;
  }
}

export async function showStorage(element) {
  const estimate = await navigator.storage?.estimate?.().catch(() => null);
  if (!estimate) {
    element.textContent = "storage: this browser does not report it";
    return;
  }
  const persisted = await navigator.storage.persisted?.().catch(() => false);
  element.textContent = `storage: ${mb(estimate.usage)} used, ${mb(estimate.quota - estimate.usage)} available` +
    (persisted ? " (persistent: the browser will not evict it)" : " (may be evicted when space runs low)");
  element.dataset.usage = String(estimate.usage);
}

function mb(bytes) {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
