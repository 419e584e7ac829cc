// Byte readers for model files: read(start, end) -> Promise<ArrayBuffer> of bytes [start, end).
// A URL is read by HTTP Range requests (the whole file never sits in memory); a File or Blob
// (file picker, drag and drop) through Blob.slice. Errors say what was wrong and what to do.

export class ModelSourceError extends Error {}

export async function openSource(source, { signal } = {}) {
  if (typeof Blob !== "undefined" && source instanceof Blob) return blobReader(source);
  return urlReader(new URL(source, globalThis.location?.href), signal);
}

function blobReader(blob) {
  return {
    name: blob.name || "local file",
    size: blob.size,
    read: async (start, end) => blob.slice(start, end).arrayBuffer(),
  };
}

async function urlReader(url, signal) {
  const head = await request(url, { method: "HEAD", signal });
  const size = Number(head.headers.get("Content-Length"));
  if (!Number.isFinite(size) || size <= 0) throw new ModelSourceError(`${url}: the server did not report the file's size (no Content-Length)`);
  return {
    name: url.pathname.split("/").pop() || url.href,
    size,
    read: async (start, end) => {
      if (end <= start) return new ArrayBuffer(0);
      const response = await request(url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal });
      if (response.status !== 206) {
        throw new ModelSourceError(`${url}: asked for bytes ${start}-${end - 1} but the server answered ${response.status}, not 206: serve models from a server with Range support (python serve.py does)`);
      }
      const bytes = await response.arrayBuffer();
      if (bytes.byteLength !== end - start) throw new ModelSourceError(`${url}: got ${bytes.byteLength} bytes for a ${end - start}-byte range (file changed while loading?)`);
      return bytes;
    },
  };
}

async function request(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ModelSourceError(`${url}: cannot fetch (${error.message}); check the URL and that the server allows it (CORS)`);
  }
  if (!response.ok) throw new ModelSourceError(`${url}: HTTP ${response.status}${response.status === 404 ? " (no such model file)" : ""}`);
  return response;
}
