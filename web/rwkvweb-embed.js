// Host-side helper for rwkvweb's embed page (embed.html): promises and async iterators over its
// postMessage protocol. Copy it next to your page, or import it from the rwkvweb site.
//
//   import { RwkvwebFrame } from "https://rwkvweb.example/rwkvweb-embed.js";
//   const app = await RwkvwebFrame.attach(document.querySelector("iframe"));
//   await app.load();                                      // the shipped model; or {url, budget, precision}
//   const run = app.generate("Once upon a time", { max_tokens: 50 });
//   for await (const piece of run) output.append(piece);   // text as it streams
//   const { text, stats } = await run.result;
//
// Messages are accepted only from the iframe's window and the app's origin, and sent only to that origin.

/**
 * @typedef {{max_tokens?: number, temperature?: number, top_p?: number, top_k?: number, seed?: number}} GenerateOptions
 * @typedef {{text: string, tokens: number[], stats: {prompt_tokens: number, generated: number,
 *   prefill_seconds: number, tokens_per_second: number, stopped_by: string}}} GenerateResult
 */

export class RwkvwebFrame {
  /**
   * Wait for the iframe's engine to report "ready".
   * @param {HTMLIFrameElement} iframe
   * @param {{origin?: string, timeoutMs?: number}} [options] origin: the app's (default: from iframe.src)
   * @returns {Promise<RwkvwebFrame>}
   */
  static attach(iframe, { origin = new URL(iframe.src, location.href).origin, timeoutMs = 120_000 } = {}) {
    const frame = new RwkvwebFrame(iframe, origin);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`rwkvweb at ${origin} did not report ready within ${timeoutMs} ms`)), timeoutMs);
      frame.onReady = () => {
        clearTimeout(timer);
        resolve(frame);
      };
    });
  }

  constructor(iframe, origin) {
    this.iframe = iframe;
    this.origin = origin;
    this.pending = new Map();
    this.nextId = 1;
    this.onReady = () => {};
    this.listener = ({ source, origin: from, data }) => {
      if (source !== iframe.contentWindow || from !== origin || data?.rwkvweb !== 1) return;
      if (data.kind === "ready") return this.onReady();
      const call = this.pending.get(data.id);
      if (!call) return;
      if (data.kind === "text") return call.onText?.(data.piece);
      if (data.kind === "progress") return call.onProgress?.(data);
      this.pending.delete(data.id);
      if (!("error" in data)) return call.resolve(data.result);
      // code "device-lost": the GPU device was lost; load again to continue
      call.reject(Object.assign(new Error(data.error), data.code ? { code: data.code } : {}));
    };
    window.addEventListener("message", this.listener);
  }

  /**
   * One protocol request. Returns a promise with the request's id as `.id`.
   * @param {string} method
   * @param {object} [params]
   * @param {{onText?: (piece: string) => void, onProgress?: (p: object) => void}} [hooks]
   */
  call(method, params = {}, { onText, onProgress } = {}) {
    const id = this.nextId++;
    const promise = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onText, onProgress });
      this.iframe.contentWindow.postMessage({ rwkvweb: 1, id, method, params }, this.origin);
    });
    promise.id = id;
    return promise;
  }

  /** @param {{url?: string, budget?: number, precision?: string, onProgress?: (p: object) => void}} [options] */
  load({ onProgress, ...params } = {}) {
    return this.call("load", params, { onProgress });
  }

  /**
   * Stream a continuation: an async iterator of text pieces, with `.result` (text and stats) and `.abort()`.
   * @param {string} prompt
   * @param {GenerateOptions} [options]
   * @returns {AsyncIterable<string> & {result: Promise<GenerateResult>, abort: () => Promise<boolean>}}
   */
  generate(prompt, options = {}) {
    const pieces = [];
    let wake = null;
    let finished = false;
    const result = this.call("generate", { prompt, options }, {
      onText: (piece) => {
        pieces.push(piece);
        wake?.();
      },
    });
    const done = result.finally(() => {
      finished = true;
      wake?.();
    });
    done.catch(() => {});
    return {
      result,
      abort: () => this.call("abort", { id: result.id }),
      async *[Symbol.asyncIterator]() {
        for (;;) {
          while (pieces.length) yield pieces.shift();
          if (finished) {
            await result; // rethrows the request's error
            return;
          }
          await new Promise((resolve) => (wake = resolve));
          wake = null;
        }
      },
    };
  }

  abort(id) {
    return this.call("abort", id === undefined ? {} : { id });
  }

  encode(text) { return this.call("encode", { text }); }
  decode(ids) { return this.call("decode", { ids }); }
  embed(text) { return this.call("embed", { text }); }
  exportState() { return this.call("exportState"); }
  importState(state) { return this.call("importState", { state }); }
  unload() { return this.call("unload"); }

  close() {
    window.removeEventListener("message", this.listener);
  }
}

/**
 * Make the iframe too: `const app = await embedRwkvweb(container, "https://rwkvweb.example/embed.html")`.
 * @param {HTMLElement} container
 * @param {string} src the app's embed.html URL (with ?origins=… if you like)
 */
export function embedRwkvweb(container, src, { title = "rwkvweb", timeoutMs } = {}) {
  const iframe = document.createElement("iframe");
  iframe.src = src;
  iframe.title = title;
  const attached = RwkvwebFrame.attach(iframe, { timeoutMs });
  container.append(iframe);
  return attached;
}
