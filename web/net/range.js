// Byte readers for model files: read(start, end, into?) -> Promise<Uint8Array> of bytes
// [start, end), read into the ArrayBuffer `into` where the stream allows it (a BYOB read moves
// the buffer: use the returned view's .buffer afterwards); fetchedBytes counts what was read.
// A URL is read by HTTP Range requests (the whole file never sits in memory); a File or Blob
// (file picker, drag and drop) through Blob.slice. Transient failures (network errors, 408,
// 429, 5xx) are retried with back-off. A server that ignores Range (answers 200) is read as
// one stream instead, front to back: `sequential` tells the loader to ask in file order.
// A URL on another origin (a model hub) is read by CORS requests: the page's CSP allows https:
// and loopback http: origins for that (serve.py); such a server must allow cross-origin reads
// (Access-Control-Allow-Origin), answer Range requests, and expose Content-Range (and ETag, for
// the cache) to the page. Each missing piece is named in the error (or, for ETag, the note).
// Errors say what was wrong and what to do.

export class ModelSourceError extends Error {}

const RETRY_DELAYS_MS = [250, 1000, 3000];

export async function openSource(source, { signal } = {}) {
  if (typeof Blob !== "undefined" && source instanceof Blob) return blobReader(source);
  return urlReader(new URL(source, globalThis.location?.href), signal);
}

function blobReader(blob) {
  if (blob.size === 0) {
    throw new ModelSourceError(`${blob.name || "local file"}: the model file is empty (0 bytes); pick the model file itself`);
  }
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
  const crossOrigin = checkOrigin(url);
  const head = await request(url, { method: "HEAD", signal }, crossOrigin && "cors");
  const size = Number(head.headers.get("Content-Length") ?? NaN);
  if (size === 0) {
    throw new ModelSourceError(`${url}: the model file is empty (0 bytes on the server); check the URL or upload it again`);
  }
  if (!Number.isFinite(size) || size < 0) {
    throw new ModelSourceError(`${url}: the server did not report the file's size (no Content-Length${crossOrigin ? " exposed to cross-origin reads" : ""})`);
  }
  let stream = null;
  let probed = null;
  const version = head.headers.get("ETag") || head.headers.get("Last-Modified") || ""; // what the cache keys on
  const reader = {
    name: url.pathname.split("/").pop() || url.href,
    url: url.href,
    size,
    version,
    sequential: false,
    note: crossOrigin && !version ? `not cached: the server at ${url.origin} does not expose ETag to cross-origin reads `
      + "(Access-Control-Expose-Headers), so a changed file could not be told from the cached one" : "",
    fetchedBytes: 0, // bytes read from the server (the cache's hits are not)
    // One byte asks whether Range works; a 200 means the server sends the whole file instead.
    // Made once, before the first read (a load served whole from the cache never asks).
    prepare: () => (probed ??= (async () => {
      const probe = await request(url, { headers: { Range: "bytes=0-0" }, signal }, crossOrigin && "range");
      await probe.body?.cancel();
      if (probe.status !== 206 && crossOrigin) {
        throw new ModelSourceError(`${url}: the server at ${url.origin} does not support Range requests (it answered HTTP ${probe.status} `
          + "to one); a model on another origin is read tensor by tensor, so its server must answer Range requests with 206");
      }
      if (probe.status === 206) checkContentRange(probe, url, 0, 1, size, crossOrigin);
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
      const response = await request(url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal }, crossOrigin && "range");
      if (response.status !== 206) throw new ModelSourceError(`${url}: asked for bytes ${start}-${end - 1}, got HTTP ${response.status}`);
      checkContentRange(response, url, start, end, size, crossOrigin);
      const bytes = await readBody(response.body, end - start, into);
      if (bytes.byteLength !== end - start) throw new ModelSourceError(`${url}: got ${bytes.byteLength} bytes for a ${end - start}-byte range (file changed while loading?)`);
      reader.fetchedBytes += bytes.byteLength;
      return bytes;
    },
  };
  return reader;
}

// Whether `url` is on another origin; refuses what the page's CSP would block anyway (serve.py's
// connect-src: https: anywhere, http: only on loopback), with the reason instead of a bare failure.
function checkOrigin(url) {
  const here = globalThis.location?.origin;
  if (!here || url.origin === here) return false;
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new ModelSourceError(`${url.href}: only http(s) model URLs can be read`);
  if (url.protocol === "http:" && !["localhost", "127.0.0.1"].includes(url.hostname)) {
    throw new ModelSourceError(`${url.href}: plain http:// model URLs on other hosts are not allowed by this page's security policy; use https://`);
  }
  return true;
}

// A 206 must carry the range asked for. Cross-origin, a missing Content-Range means the server
// did not expose it (CORS hides every header it does not list in Access-Control-Expose-Headers).
function checkContentRange(response, url, start, end, size, crossOrigin) {
  const header = response.headers.get("Content-Range");
  if (header === null) {
    if (!crossOrigin) return;
    throw new ModelSourceError(`${url}: the server at ${url.origin} answers Range requests but does not expose Content-Range to `
      + "cross-origin reads; add it to Access-Control-Expose-Headers (with Content-Length and ETag)");
  }
  const expected = `bytes ${start}-${end - 1}/${size}`;
  if (header.trim() !== expected) throw new ModelSourceError(`${url}: asked for ${expected}, the server sent ${header} (file changed while loading?)`);
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
// crossOrigin: false, or what a failed fetch of another origin most likely means: "cors" (the first
// request: CORS itself) or "range" (CORS worked for the HEAD: the preflight of a Range request).
async function request(url, options, crossOrigin = false) {
  options = { cache: "no-store", ...options };
  for (let attempt = 0; ; attempt++) {
    let response = null;
    let failure = null;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? error; // asked for: never retried
      if (error.name === "AbortError") throw error;
      failure = crossOrigin ? await crossOriginFailure(url, crossOrigin)
        : `cannot fetch (${error.message}); check the URL and that the server is up`;
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
    options.signal?.throwIfAborted();
  }
}

// Why a fetch of another origin failed, as far as a page can tell: a browser hides CORS failures
// behind the same TypeError as a network failure. An opaque (no-cors) HEAD that succeeds proves the
// server is up, so CORS was the reason: that is final, not retried. It fails too where the server
// sends no Cross-Origin-Resource-Policy (this page is cross-origin isolated): then both causes are named.
async function crossOriginFailure(url, kind) {
  const refused = `the server at ${url.origin} does not allow cross-origin reads (no Access-Control-Allow-Origin)`;
  if (kind === "range") {
    return `cannot read a byte range from ${url.origin}: the server allows cross-origin reads but its preflight answer `
      + "does not allow the Range header (Access-Control-Allow-Headers: Range), or the connection failed";
  }
  const reachable = await fetch(url, { method: "HEAD", mode: "no-cors", cache: "no-store" }).then(() => true, () => false);
  if (reachable) throw new ModelSourceError(`${url}: ${refused}; serve the model with CORS headers, or from this page's own server`);
  return `cannot reach ${url.origin} (check the URL and that the server is up), or ${refused}`;
}
