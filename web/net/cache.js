// A persistent cache of model bytes in the Origin Private File System (OPFS), so a second load
// of the same file makes no request for its bytes and an interrupted load resumes where it
// stopped. One entry per (URL, ETag or Last-Modified, size): a changed file gets a new entry
// and is never served stale. An entry is a folder:
//   data        the file's bytes at their own offsets (only the ranges fetched so far)
//   meta.json   {url, version, size, ranges: [[start, end], ...] already written, loaded, updated}
// `loaded`: a load finished from this entry, so it holds every byte a load reads (the unused
// tensors of a file, such as layer 0's v-LoRA, are never fetched, so "all bytes" is not the test).
// A range is recorded only after its bytes are flushed, so a killed load never records bytes it
// did not write. Needs a dedicated worker (synchronous access handles). Where OPFS is missing,
// full, or the entry is locked by another tab, loading goes on uncached and `note` says why.

const ROOT = "rwkvweb-cache";

export async function openCache() {
  try {
    if (!navigator.storage?.getDirectory) return null;
    const root = await navigator.storage.getDirectory();
    return new ModelCache(await root.getDirectoryHandle(ROOT, { create: true }));
  } catch {
    return null; // no OPFS here (or storage disabled): memory only
  }
}

export class ModelCache {
  constructor(folder) {
    this.folder = folder;
  }

  static async id({ url, version, size }) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify([url, version, size])));
    return [...new Uint8Array(digest).slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The entry for this file, created if new; null (with the reason) if it cannot be used.
  async entry(key) {
    const id = await ModelCache.id(key);
    await this.forgetOtherVersions(key.url, id); // first: their bytes count against the quota
    const existing = await this.folder.getDirectoryHandle(id).catch(() => null);
    const meta = existing && (await readMeta(existing));
    const missing = key.size - (meta?.size === key.size ? rangeBytes(meta.ranges) : 0);
    const estimate = await navigator.storage.estimate?.();
    if (estimate && estimate.quota - estimate.usage < missing) {
      return { entry: null, note: `not cached: the browser's storage quota has ${mb(estimate.quota - estimate.usage)} free and this model needs ${mb(missing)} more; delete cached models to make room` };
    }
    const folder = existing ?? (await this.folder.getDirectoryHandle(id, { create: true }));
    const entry = new CacheEntry(id, folder, key, meta);
    try {
      await entry.open();
    } catch (error) {
      return { entry: null, note: error.name === "NoModificationAllowedError"
        ? "another tab is loading this model: loading without the cache"
        : `the model cache is unavailable (${error.message}): loading without it` };
    }
    return { entry, note: "" };
  }

  async list() {
    const models = [];
    for await (const [id, folder] of this.folder.entries()) {
      const meta = await readMeta(folder);
      if (!meta) continue;
      models.push({ id, url: meta.url, size: meta.size, cachedBytes: rangeBytes(meta.ranges), complete: Boolean(meta.loaded), updated: meta.updated });
    }
    return models.sort((a, b) => b.updated - a.updated);
  }

  // The key ({url, version, size, updated}) of a fully loaded entry for this URL, or null: what an
  // offline load reads when the server cannot be asked whether the file changed.
  async loadedKey(url) {
    for await (const [, folder] of this.folder.entries()) {
      const meta = await readMeta(folder);
      if (meta?.url === url && meta.loaded) return { url, version: meta.version, size: meta.size, updated: meta.updated };
    }
    return null;
  }

  async delete(id) {
    await this.folder.removeEntry(id, { recursive: true });
  }

  // Entries for the same URL under another version can never be read again: free their space.
  async forgetOtherVersions(url, keep) {
    for (const model of await this.list()) {
      if (model.url === url && model.id !== keep) await this.delete(model.id).catch(() => {}); // in use by another tab: next time
    }
  }

  async usage() {
    const estimate = (await navigator.storage.estimate?.()) || {};
    return { usage: estimate.usage ?? null, quota: estimate.quota ?? null };
  }
}

class CacheEntry {
  constructor(id, folder, key, meta) {
    this.id = id;
    this.folder = folder;
    this.key = key;
    this.ranges = meta?.size === key.size ? meta.ranges : [];
    this.loaded = Boolean(meta?.loaded) && this.ranges.length > 0;
  }

  async open() {
    this.data = await (await this.folder.getFileHandle("data", { create: true })).createSyncAccessHandle();
    this.meta = await (await this.folder.getFileHandle("meta.json", { create: true })).createSyncAccessHandle();
  }

  complete() {
    return this.loaded;
  }

  markLoaded() {
    this.loaded = true;
    this.saveMeta();
  }

  has(start, end) {
    return this.ranges.some(([a, b]) => a <= start && end <= b);
  }

  read(start, end, into) {
    const bytes = into ? new Uint8Array(into, 0, end - start) : new Uint8Array(end - start);
    const got = this.data.read(bytes, { at: start });
    if (got !== bytes.byteLength) throw new Error(`model cache: read ${got} of ${bytes.byteLength} bytes at ${start}`);
    return bytes;
  }

  // Bytes [start, start + length) are written and flushed, then recorded as cached.
  write(start, bytes) {
    this.data.write(bytes, { at: start });
    this.data.flush();
    this.ranges = merge([...this.ranges, [start, start + bytes.byteLength]]);
    this.saveMeta();
  }

  saveMeta() {
    const { url, version, size } = this.key;
    const text = new TextEncoder().encode(JSON.stringify({ url, version, size, ranges: this.ranges, loaded: this.loaded, updated: Date.now() }));
    this.meta.truncate(0);
    this.meta.write(text, { at: 0 });
    this.meta.flush();
  }

  close() {
    this.data?.close();
    this.meta?.close();
    this.data = this.meta = null;
  }
}

async function readMeta(folder) {
  try {
    const text = await (await (await folder.getFileHandle("meta.json")).getFile()).text();
    const meta = JSON.parse(text);
    return Array.isArray(meta.ranges) ? meta : null;
  } catch {
    return null; // new, or written by a load killed before its first range: nothing cached
  }
}

const rangeBytes = (ranges) => ranges.reduce((n, [a, b]) => n + b - a, 0);

function merge(ranges) {
  const out = [];
  for (const [a, b] of ranges.sort((x, y) => x[0] - y[0])) {
    const last = out.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

// A reader (web/net/range.js) whose bytes come from the cache where present and are stored
// there as they arrive (the source's fetchedBytes counts only those). A range is stored only once its
// whole read succeeded, so a load that fails half way (network, abort) leaves only complete bytes.
export function cachedReader(reader, entry) {
  const cached = Object.create(reader);
  let failed = false;
  cached.read = async (start, end, into) => {
    if (entry.has(start, end)) {
      // OPFS reads are synchronous: yield to the event loop so the worker still answers messages
      // (and a long load from the cache does not freeze it) between chunks
      await new Promise((resolve) => setTimeout(resolve));
      return entry.read(start, end, into);
    }
    const bytes = await reader.read(start, end, into);
    if (!failed) {
      try {
        entry.write(start, bytes);
      } catch (error) { // e.g. QuotaExceededError: keep loading, stop caching, say why
        failed = true;
        cached.cachingStopped = true; // the entry lacks bytes this load read: it must not be marked loaded
        cached.note = [reader.note, `caching stopped: ${error.name === "QuotaExceededError" ? "the browser's storage quota is full; delete cached models to make room" : error.message}`].filter(Boolean).join("; ");
      }
    }
    return bytes;
  };
  return cached;
}
