// The page's handle on the engine worker: call(method, params, {onText, onProgress}) -> Promise, abort(),
// plus start-up events and onDeviceLost(message) (the GPU device went away: load the model again). A failed
// call rejects with an Error whose `code` is "device-lost" in that case. Messages come only from our own
// worker; nothing here listens to window.
export class EngineClient {
  constructor(workerUrl, {
    onProgress = () => {}, onReady = () => {}, onFailed = () => {}, onDeviceLost = () => {},
  } = {}) {
    this.pending = new Map();
    this.nextId = 1;
    this.worker = new Worker(workerUrl, { type: "module" });
    this.worker.onmessage = ({ data }) => {
      if (data.kind === "progress" && data.id === undefined) return onProgress(data); // start-up steps
      if (data.kind === "ready") return onReady(data.info);
      if (data.kind === "failed") return onFailed(data.error);
      if (data.kind === "device-lost") return onDeviceLost(data.error);
      const call = this.pending.get(data.id);
      if (!call) return;
      if (data.kind === "text") return call.onText?.(data.piece);
      if (data.kind === "progress") return call.onProgress?.(data);
      this.pending.delete(data.id);
      if (data.error === undefined) return call.resolve(data.result);
      const error = new Error(data.error);
      if (data.code) error.code = data.code;
      call.reject(error);
    };
    this.worker.onerror = (event) => onFailed(`the engine worker crashed: ${event.message || "unknown error"}`);
  }

  // The promise carries the request's id (promise.id), which abort(id) names.
  call(method, params = {}, { onText, onProgress, transfer = [] } = {}) {
    const id = this.nextId++;
    const promise = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onText, onProgress });
      this.worker.postMessage({ id, method, params }, transfer);
    });
    promise.id = id;
    return promise;
  }

  // Stop the running request (no id), or the request `id` (dropped if still queued).
  abort(id) {
    return this.call("abort", id === undefined ? {} : { id });
  }
}
