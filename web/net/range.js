// Byte readers for model files: read(start, end, into?) -> Promise<Uint8Array> of bytes
// [start, end), read into the ArrayBuffer `into` where the stream allows it (a BYOB read moves
// the buffer: use the returned view's .buffer afterwards); fetchedBytes counts what was read.
// A URL is read by HTTP Range requests (the whole file never sits in memory); a File or Blob
// (file picker, drag and drop) through Blob.slice. Transient failures (network errors, 408,
// 429, 5xx) are retried with back-off. A server that ignores Range (answers 200) is read as
// one stream instead, front to back: `sequential` tells the loader to ask in file order.
// Errors say what was wrong and what to do.

export class ModelSourceError extends Error {}

const RETRY_DELAYS_MS = [250, 1000, 3000];

export async function openSource(source, { signal } = {}) {
  if (typeof Blob !== "undefined" && source instanceof Blob) return blobReader(source);
  return urlReader(new URL(source, globalThis.location?.href), signal);
}

function blobReader(blob) {
  const reader = {
    name: blob.name || "local file",
    size: blob.size,
    sequential: false,
    prepare: async () => {},
    fetchedBytes: 0,
    read: async (start, end, into) => { // called unbound (the bridge gets the function alone)
      const bytes = await readBody(blob.slice(start, end).stream(), end - start, into);
      reader.fetchedBytes += bytes.byteLength;
      return bytes;
    },
  };
  return reader;
}

async function urlReader(url, signal) {
  const head = await request(url, { method: "HEAD", signal });
  const size = Number(head.headers.get("Content-Length"));
  if (!Number.isFinite(size) || size <= 0) throw new ModelSourceError(`${url}: the server did not report the file's size (no Content-Length)`);
  let stream = null;
  let probed = null;
  const reader = {
    name: url.pathname.split("/").pop() || url.href,
    url: url.href,
    size,
    version: head.headers.get("ETag") || head.headers.get("Last-Modified") || "", // what the cache keys on
    sequential: false,
    note: "",
    fetchedBytes: 0, // bytes read from the server (the cache's hits are not)
    // One byte asks whether Range works; a 200 means the server sends the whole file instead.
    // Made once, before the first read (a load served whole from the cache never asks).
    prepare: () => (probed ??= (async () => {
      const probe = await request(url, { headers: { Range: "bytes=0-0" }, signal });
      await probe.body?.cancel();
      if (probe.status !== 206) {
        reader.sequential = true;
        reader.note = "this server does not support Range requests: the model is read as one stream, front to back";
      }
    })()),
    read: async (start, end, into) => {
      await reader.prepare();
      if (end <= start) return new Uint8Array(0);
      if (reader.sequential) {
        stream ??= new SequentialBody(await request(url, { signal }), url);
        reader.fetchedBytes += end - start;
        return new Uint8Array(await stream.read(start, end));
      }
      const response = await request(url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal });
      if (response.status !== 206) throw new ModelSourceError(`${url}: asked for bytes ${start}-${end - 1}, got HTTP ${response.status}`);
      const bytes = await readBody(response.body, end - start, into);
      if (bytes.byteLength !== end - start) throw new ModelSourceError(`${url}: got ${bytes.byteLength} bytes for a ${end - start}-byte range (file changed while loading?)`);
      reader.fetchedBytes += bytes.byteLength;
      return bytes;
    },
  };
  return reader;
}

// A body (a response's, a Blob's) read into `into` (an ArrayBuffer of >= size bytes) where the
// stream supports reading into our memory (BYOB), else into fresh memory; returns the bytes read.
async function readBody(body, size, into) {
  let reader = null;
  try {
    reader = into ? body.getReader({ mode: "byob" }) : null;
  } catch {
    reader = null; // not a byte stream here
  }
  if (!reader) return new Uint8Array(await new Response(body).arrayBuffer());
  let buffer = into;
  let filled = 0;
  while (filled < size) {
    const { value, done } = await reader.read(new Uint8Array(buffer, filled, size - filled));
    if (value) buffer = value.buffer; // the read moved our buffer into `value`
    if (done) break;
    filled += value.byteLength;
  }
  await reader.cancel();
  return new Uint8Array(buffer, 0, filled);
}

// A whole-file response consumed in order: read(start, end) must not go backwards.
class SequentialBody {
  constructor(response, url) {
    this.reader = response.body.getReader();
    this.url = url;
    this.position = 0; // file offset of pending[0]
    this.pending = new Uint8Array(0);
  }

  async read(start, end) {
    if (start < this.position) {
      throw new ModelSourceError(`${this.url}: without Range support bytes must be read in order (asked for ${start} after ${this.position})`);
    }
    while (this.position + this.pending.byteLength < end) {
      const { done, value } = await this.reader.read();
      if (done) throw new ModelSourceError(`${this.url}: the file ended at byte ${this.position + this.pending.byteLength}, before ${end}`);
      const joined = new Uint8Array(this.pending.byteLength + value.byteLength);
      joined.set(this.pending);
      joined.set(value, this.pending.byteLength);
      this.pending = joined;
    }
    const out = this.pending.slice(start - this.position, end - this.position);
    this.pending = this.pending.slice(end - this.position);
    this.position = end;
    return out.buffer;
  }
}

// `no-store`: the browser's HTTP cache would keep a second copy of every byte (net/cache.js keeps
// the one we use), and a HEAD must reach the server to tell whether the file changed.
async function request(url, options) {
  options = { cache: "no-store", ...options };
  for (let attempt = 0; ; attempt++) {
    let response = null;
    let failure = null;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      failure = `cannot fetch (${error.message}); check the URL and that the server allows it (CORS)`;
    }
    const transient = failure || [408, 429, 500, 502, 503, 504].includes(response.status);
    if (!transient) {
      if (!response.ok) throw new ModelSourceError(`${url}: HTTP ${response.status}${response.status === 404 ? " (no such model file)" : ""}`);
      return response;
    }
    if (attempt === RETRY_DELAYS_MS.length) {
      throw new ModelSourceError(`${url}: ${failure || `HTTP ${response.status}`} (after ${attempt + 1} attempts)`);
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
  }
}
