// The service worker: the app offline. build/site.py writes the build's version (the asset
// manifest's hash) into BUILD, so every build is a new worker with a cache of its own.
//
// - install: every file of asset-manifest.json goes into the cache "rwkvweb-<BUILD>", each checked
//   against its sha256 (files unchanged since the last build are copied from the old cache, not
//   fetched); a file that does not match fails the install, and the old build stays in charge.
// - a page (and the workers it starts) is answered from ONE build for its whole life: the build that
//   served its navigation. Each client's build is recorded (cache "rwkvweb-clients"), so a page that
//   started on the old build keeps getting the old files after a new worker takes over, and a page
//   loaded after that gets only new ones: no response ever mixes two builds.
// - old builds' caches are deleted once no open page uses them (at activation and at each navigation).
// - HEAD and single Range requests are answered from the cached file (models stream by Range).
// - anything not in the build (a user's models, other origins) is left alone: the browser fetches it
//   as if there were no service worker.

const BUILD = "__BUILD__";
const FILES = new Set(["__FILES__"]); // the build's files (build/site.py writes both)
const PREFIX = "rwkvweb-build-";
const CURRENT = PREFIX + BUILD;
const CLIENTS = "rwkvweb-clients";
const SCOPE = new URL(self.registration.scope);
const PARALLEL = 6;

self.addEventListener("install", (event) => event.waitUntil(precache().then(() => self.skipWaiting())));
self.addEventListener("activate", (event) => event.waitUntil(forgetUnusedBuilds()));
// "build": which build this worker installs; "tidy": a page finished loading, so the pages that
// used an older build may be gone (a reload's old page is still alive while the new one navigates).
self.addEventListener("message", (event) => {
  if (event.data === "build") event.source?.postMessage({ build: BUILD });
  if (event.data === "tidy") event.waitUntil(forgetUnusedBuilds());
});

async function precache() {
  const response = await fetch(new URL("asset-manifest.json", SCOPE), { cache: "no-store" });
  const text = await response.text();
  const manifest = JSON.parse(text);
  if (manifest.version !== BUILD) throw new Error(`the site changed while installing (${manifest.version} is not ${BUILD}): the next check retries`);
  const cache = await caches.open(CURRENT);
  const headers = new Headers(response.headers);
  headers.set("X-Rwkvweb-Build", BUILD);
  await cache.put(new URL("asset-manifest.json", SCOPE).href, new Response(text, { status: 200, headers })); // the worker reads it
  const queue = Object.entries(manifest.files).filter(([path]) => path !== "sw.js");
  const workers = Array.from({ length: PARALLEL }, async () => {
    while (queue.length) {
      const [path, entry] = queue.pop();
      await cache.put(new URL(path, SCOPE).href, await verified(path, entry));
    }
  });
  await Promise.all(workers);
}

// The file's response, from an older build's cache when its bytes are unchanged, else the network;
// refused unless its bytes have the manifest's sha256.
async function verified(path, entry) {
  const url = new URL(path, SCOPE).href;
  const previous = await caches.match(url);
  const reuse = previous?.headers.get("X-Rwkvweb-Sha256") === entry.sha256;
  const source = reuse ? previous : await fetch(url, { cache: "no-store" });
  if (!source.ok) throw new Error(`${path}: HTTP ${source.status} while installing the offline copy`);
  const bytes = await source.arrayBuffer();
  const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (digest !== entry.sha256) throw new Error(`${path}: its bytes are not the build's (sha256 ${digest}): the site changed while installing`);
  const headers = new Headers(source.headers);
  headers.set("X-Rwkvweb-Sha256", entry.sha256);
  headers.set("X-Rwkvweb-Build", BUILD);
  headers.set("Content-Length", String(bytes.byteLength));
  return new Response(bytes, { status: 200, statusText: "OK", headers });
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== SCOPE.origin || !url.pathname.startsWith(SCOPE.pathname)) return;
  if (request.method !== "GET" && request.method !== "HEAD") return;
  let path;
  try {
    path = decodeURIComponent(url.pathname.slice(SCOPE.pathname.length));
  } catch {
    return; // a malformed path: the server answers it
  }
  if (path === "" || path.endsWith("/")) path += "index.html";
  if (!FILES.has(path) || path === "sw.js") return;
  event.respondWith(answer(event, path));
});

async function answer(event, path) {
  const build = await buildFor(event);
  const cache = await caches.open(build);
  const cached = await cache.match(new URL(path, SCOPE).href);
  if (!cached) return fetch(event.request); // an older build without this file
  return fromCached(cached, event.request);
}

// Which build answers this request. A navigation gets the newest build, a worker script its page's;
// each records "the client made from this URL gets that build". Any other request gets its client's
// build: recorded the first time that client asks, from the record of the URL it was made from
// (client ids cannot be matched at creation: Chromium may give the new document another id than
// the navigation's resultingClientId, e.g. when cross-origin isolation swaps its browsing context group).
async function buildFor(event) {
  const request = event.request;
  if (request.mode === "navigate") {
    await remember(creationKey(request.url), CURRENT);
    event.waitUntil(forgetUnusedBuilds());
    return CURRENT;
  }
  const build = await clientBuild(event.clientId);
  if (["worker", "sharedworker"].includes(request.destination)) await remember(creationKey(request.url), build);
  return build;
}

const memory = new Map(); // this worker's copy of the records (cache "rwkvweb-clients"), rebuilt after a restart

async function clientBuild(clientId) {
  if (!clientId) return CURRENT;
  let build = await recall(clientKey(clientId));
  if (!build) {
    const client = await self.clients.get(clientId);
    build = (client && (await recall(creationKey(client.url)))) || CURRENT;
    await remember(clientKey(clientId), build);
  }
  return (await caches.has(build)) ? build : CURRENT;
}

async function remember(key, build) {
  memory.set(key, build);
  await (await caches.open(CLIENTS)).put(key, new Response(build));
}

async function recall(key) {
  if (!memory.has(key)) {
    const saved = await (await caches.open(CLIENTS)).match(key);
    memory.set(key, saved ? await saved.text() : null);
  }
  return memory.get(key);
}

function clientKey(clientId) {
  return new URL(`__client__/${encodeURIComponent(clientId)}`, SCOPE).href;
}

function creationKey(url) {
  return new URL(`__created__/${encodeURIComponent(url.split("#")[0])}`, SCOPE).href;
}

// Delete the caches of builds no open client uses, and the records of clients that are gone.
async function forgetUnusedBuilds() {
  const live = new Set((await self.clients.matchAll({ includeUncontrolled: true, type: "all" })).map((c) => c.id));
  const records = await caches.open(CLIENTS);
  const inUse = new Set([CURRENT]);
  const creations = [];
  for (const request of await records.keys()) {
    const build = await (await records.match(request)).text();
    if (request.url.includes("__created__/")) creations.push([request, build]);
    else if (live.has(decodeURIComponent(request.url.split("__client__/")[1]))) inUse.add(build);
    else {
      await records.delete(request);
      memory.delete(request.url);
    }
  }
  for (const [request, build] of creations) {
    if (!inUse.has(build)) {
      await records.delete(request);
      memory.delete(request.url);
    }
  }
  for (const name of await caches.keys()) {
    if (name.startsWith(PREFIX) && !inUse.has(name)) await caches.delete(name);
  }
}

// A cached file as the server would send it: whole, headers only (HEAD), or one byte range (206).
async function fromCached(cached, request) {
  const headers = new Headers(cached.headers);
  if (request.method === "HEAD") return new Response(null, { status: 200, headers });
  const range = /^bytes=(\d*)-(\d*)$/.exec(request.headers.get("Range") || "");
  if (!range || (range[1] === "" && range[2] === "")) return cached;
  const blob = await cached.blob();
  const size = blob.size;
  let start = range[1] === "" ? Math.max(0, size - Number(range[2])) : Number(range[1]);
  let end = range[1] === "" || range[2] === "" ? size : Math.min(Number(range[2]) + 1, size);
  if (start >= size || end <= start) {
    headers.set("Content-Range", `bytes */${size}`);
    return new Response(null, { status: 416, headers });
  }
  headers.set("Content-Range", `bytes ${start}-${end - 1}/${size}`);
  headers.set("Content-Length", String(end - start));
  return new Response(blob.slice(start, end), { status: 206, statusText: "Partial Content", headers });
}
