// rwkvweb as an ES module, for pages that want the engine without an iframe:
//
//   import { load } from "./rwkvweb.js";           // served beside the rest of the site (same origin)
//   const model = await load();                     // the shipped model; or a URL / File, and options
//   const run = model.generate("Once upon a time", { max_tokens: 50, temperature: 0.8 });
//   for await (const piece of run) out.append(piece);
//   const { text, stats } = await run.result;
//   run.abort();                                    // stops a generation; load(url, { signal }) stops on its AbortSignal
//
// The same semantics as the Python API (py/rwkvweb/api.py): generate starts from a fresh state unless
// keep_state is true; state() exports the recurrent state and state(bytes) imports it; fork() gives a
// handle with a copy of the state that continues on its own (handles take turns on the one engine,
// swapping states as api.Model._activate does). The engine is a module worker (worker.js), so this
// module must be served from the same origin as the page that imports it.
import { EngineClient } from "./client.js";

/**
 * @typedef {object} GenerateOptions
 * @property {number} [max_tokens] default 100
 * @property {number} [temperature] 0 = greedy; default 1
 * @property {number} [top_p] default 0.85
 * @property {number} [top_k] 0 = off
 * @property {number} [seed]
 * @property {boolean} [keep_state] continue from this handle's state instead of a fresh one
 *
 * @typedef {object} GenerateStats
 * @property {number} prompt_tokens tokens the engine ran for the prompt
 * @property {number} prefill_chunks prefill submissions run (an abort is honoured between them: a prompt
 *   aborted before its first token is undone whole, the state left as before it, and `generated` is 0)
 * @property {number} generated
 * @property {number} prefill_seconds
 * @property {number} decode_seconds the tokens after the first
 * @property {number} backend_seconds of decode_seconds, the time spent waiting for the GPU (submitting
 *   batches and awaiting their read-backs); the rest is the engine's own cost per token
 * @property {number} tokens_per_second
 * @property {"length"|"end_of_text"|"abort"} stopped_by
 *
 * @typedef {{text: string, tokens: number[], stats: GenerateStats}} GenerateResult
 *
 * @typedef {AsyncIterable<string> & {result: Promise<GenerateResult>, abort: () => Promise<boolean>}} Generation
 *
 * @typedef {object} LoadOptions
 * @property {number|string} [budget] GPU bytes (default 2 GB), e.g. 700e6
 * @property {"auto"|"fp32"|"fp16"|"int8"|"nf4"} [precision]
 * @property {boolean} [cache] keep the bytes in the OPFS model cache (default true)
 * @property {(progress: {bytesDone: number, bytesTotal: number}) => void} [onProgress]
 * @property {AbortSignal} [signal] aborting it stops the load: it rejects with "the load was aborted" ("aborted
 *   before it started" while still queued behind another request), and the GPU memory the half-loaded model
 *   held is freed (so is the model loaded before: a load replaces it once the new file's header is read)
 */

let engine = null; // one engine worker per page, shared by every handle

// Handles take turns: each task (swap the state in, then run) finishes before the next one starts.
function inTurn(client, task) {
  const run = (client.turn ?? Promise.resolve()).then(task);
  client.turn = run.catch(() => {});
  return run;
}

function startEngine() {
  engine ??= new Promise((resolve, reject) => {
    const client = new EngineClient(new URL("./worker.js?role=module", import.meta.url), {
      onReady: () => resolve(client),
      onFailed: (error) => reject(new Error(error)),
    });
  });
  return engine;
}

/**
 * Load a model: a URL (read by HTTP Range), a File or Blob, or nothing for the site's shipped model.
 * @param {string|Blob} [source]
 * @param {LoadOptions} [options]
 * @returns {Promise<Model>}
 */
export async function load(source, { budget, precision = "auto", cache = true, onProgress, signal } = {}) {
  const aborted = () => new Error("the load was aborted"); // the worker's words for a load stopped half way
  if (signal?.aborted) throw aborted();
  const client = await startEngine();
  if (signal?.aborted) throw aborted();
  const params = { budget, precision, cache };
  if (source instanceof Blob) params.file = source;
  else if (source !== undefined) params.url = new URL(source, location.href).href;
  const pending = client.call("load", params, { onProgress });
  const stop = () => client.abort(pending.id); // running: stopped, its GPU bytes freed; queued: dropped
  signal?.addEventListener("abort", stop, { once: true });
  let info;
  try {
    info = await pending;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
  const model = new Model(client, info, null);
  client.owner = model;
  return model;
}

export class Model {
  /** @param {EngineClient} client @param {object} info what the worker's load returned @param {ArrayBuffer|null} saved */
  constructor(client, info, saved) {
    this.client = client;
    this.info = info;
    /** @type {{n_layer: number, n_embd: number, vocab_size: number}} */
    this.config = info.config;
    this.name = info.name;
    this.saved = saved; // this handle's state while another handle's is on the engine
  }

  /** @param {string} text @returns {Promise<number[]>} */
  encode(text) {
    return this.client.call("encode", { text });
  }

  /** @param {number[]} ids @returns {Promise<string>} */
  decode(ids) {
    return this.client.call("decode", { ids });
  }

  /**
   * Stream a continuation of `prompt` (text or token ids).
   * @param {string|number[]} prompt
   * @param {GenerateOptions} [options]
   * @returns {Generation}
   */
  generate(prompt, options = {}) {
    const pieces = [];
    let wake = null;
    let finished = false;
    let running = null;
    const call = inTurn(this.client, async () => {
      await this.activate();
      const pending = this.client.call("generate", { prompt, options }, { onText: (piece) => { pieces.push(piece); wake?.(); } });
      running = pending.id;
      return pending;
    });
    const result = call.then(({ text, tokens, gpuBytes, ...stats }) => ({ text, tokens, stats: { ...stats, gpuBytes } }));
    result.finally(() => { finished = true; wake?.(); }).catch(() => {});
    return {
      result,
      abort: () => this.client.abort(running ?? undefined),
      async *[Symbol.asyncIterator]() {
        for (;;) {
          while (pieces.length) yield pieces.shift();
          if (finished) {
            await result; // rethrows the generation's error
            return;
          }
          await new Promise((resolve) => (wake = resolve));
          wake = null;
        }
      },
    };
  }

  /**
   * Embeddings (rwkvweb.browser.embed): one float vector [n_embd] per text.
   * @param {string|string[]} text
   * @returns {Promise<number[]|number[][]>}
   */
  embed(text, { pooling = "last", normalize = false } = {}) {
    return inTurn(this.client, async () => {
      await this.activate();
      return this.client.call("embed", { text, pooling, normalize });
    });
  }

  /**
   * state(): export the recurrent state (float32 bytes); state(bytes): import one an export gave.
   * @param {ArrayBuffer|Uint8Array|Blob} [bytes]
   * @returns {Promise<Uint8Array|undefined>}
   */
  async state(bytes) {
    const buffer = bytes === undefined ? undefined : bytes instanceof Blob ? await bytes.arrayBuffer()
      : bytes instanceof ArrayBuffer ? bytes.slice(0) : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    return inTurn(this.client, async () => {
      await this.activate();
      if (buffer === undefined) return new Uint8Array(await this.client.call("exportState"));
      await this.client.call("importState", { state: buffer });
      return undefined;
    });
  }

  /** A handle on the same weights with a copy of this state; each continues on its own. @returns {Promise<Model>} */
  async fork() {
    const copy = await this.state();
    return new Model(this.client, this.info, copy.buffer);
  }

  /** Free the GPU memory; every handle on this model stops working. */
  unload() {
    return inTurn(this.client, async () => {
      await this.client.call("unload");
      this.client.owner = null;
    });
  }

  // Put this handle's state on the engine if another handle ran last (api.Model._activate).
  async activate() {
    const owner = this.client.owner;
    if (owner === this) return;
    if (owner) owner.saved = await this.client.call("exportState");
    if (this.saved) await this.client.call("importState", { state: this.saved.slice(0) });
    this.client.owner = this;
  }
}
