// The bridge protocol's server side (docs/bridge-protocol.md): frames from a Python process outside
// this page (a WebSocket: remote.js; the VM's console: vm.js) become calls on the one Bridge that
// Pyodide calls in-process. It owns no GPU logic of its own.
//
//   const server = new BridgeServer(bridge, (frame) => socket.send(frame), { openSource });
//   socket.onmessage = (event) => server.receive(event.data);
//
// Frames: a JSON header as text, or binary: u32 little-endian header length, the header, a payload.
// Requests run one at a time in the order they came; each gets one answer, {id, ok: true, ...} or
// {id, error}. Weight bytes never cross: `fill` names a URL that openSource reads by Range itself.
export const PROTOCOL_VERSION = 1;
const MAX_HEAD_RANGE = 16 << 20; // `range` is for headers (the planner's reads), never for weights

export function encodeFrame(header, payload = null, { binary = false } = {}) {
  const text = JSON.stringify(header);
  if (!payload?.byteLength && !binary) return text;
  const head = new TextEncoder().encode(text);
  const bytes = payload ? new Uint8Array(payload.buffer ?? payload, payload.byteOffset ?? 0, payload.byteLength) : new Uint8Array(0);
  const frame = new Uint8Array(4 + head.byteLength + bytes.byteLength);
  new DataView(frame.buffer).setUint32(0, head.byteLength, true);
  frame.set(head, 4);
  frame.set(bytes, 4 + head.byteLength);
  return frame.buffer;
}

export function decodeFrame(data) {
  if (typeof data === "string") return { header: parseHeader(data), payload: new Uint8Array(0) };
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength < 4) throw new Error(`a binary frame of ${bytes.byteLength} bytes is shorter than its 4-byte length field`);
  const length = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  if (length > bytes.byteLength - 4) throw new Error(`a binary frame's header length ${length} runs past its ${bytes.byteLength} bytes`);
  const header = parseHeader(new TextDecoder().decode(bytes.subarray(4, 4 + length)));
  return { header, payload: bytes.subarray(4 + length) };
}

function parseHeader(text) {
  let header;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new Error(`a frame's header is not JSON (${error.message})`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) throw new Error("a frame's header must be a JSON object");
  return header;
}

export class BridgeServer {
  // send(frame): a string or an ArrayBuffer; openSource(url) -> a reader (net/range.js);
  // binary: answer every frame in the binary form (a console carries only that form).
  constructor(bridge, send, { openSource, binary = false, onStatus = () => {} } = {}) {
    this.bridge = bridge;
    this.send = send;
    this.openSource = openSource;
    this.binary = binary;
    this.onStatus = onStatus;
    this.greeted = false;
    this.tail = Promise.resolve();
    this.sources = new Map(); // url -> reader: a header's reads and the fill share one HEAD
  }

  receive(data) {
    this.tail = this.tail.then(() => this.handle(data));
    return this.tail;
  }

  async handle(data) {
    let id = null;
    try {
      const { header, payload } = decodeFrame(data);
      id = header.id ?? null;
      const { result = {}, bytes = null } = (await this.answer(header, payload)) || {};
      this.reply({ id, ok: true, ...result }, bytes);
    } catch (error) {
      this.reply({ id, error: String(error?.message || error) });
    }
  }

  reply(header, bytes = null) {
    this.send(encodeFrame(header, bytes, { binary: this.binary }));
  }

  async answer(header, payload) {
    const op = header.op;
    if (op === "hello") {
      if (header.version !== PROTOCOL_VERSION) {
        throw new Error(`protocol version ${JSON.stringify(header.version)} is not supported: this bridge speaks version ${PROTOCOL_VERSION}; use the same rwkvweb version on both sides`);
      }
      this.greeted = true;
      return { result: { version: PROTOCOL_VERSION, bridge: this.bridge.info() } };
    }
    if (!this.greeted) throw new Error(`${JSON.stringify(op)} before hello: a session starts with a version handshake`);
    switch (op) {
      case "load":
        this.onStatus("loading the plan");
        this.bridge.destroy(); // one model at a time, as in the worker
        await this.bridge.load(header.plan);
        return null;
      case "fill": return this.fill(header);
      case "write":
        this.bridge.write(header.buffer, header.offset, payload);
        return null;
      case "run": {
        let at = 0;
        const writes = (header.writes || []).map((w) => ({ buffer: w.buffer, offset: w.offset, data: payload.subarray(at, (at += w.size)) }));
        this.bridge.run(header.programs, writes);
        return null;
      }
      case "read":
        return { bytes: new Uint8Array(await this.bridge.read(header.buffer, header.offset, header.size)) };
      case "range": { // bytes of a model file for its header: the planner's reads when Python cannot reach the URL
        if (header.end - header.start > MAX_HEAD_RANGE) throw new Error(`range reads are for headers, at most ${MAX_HEAD_RANGE} bytes`);
        const reader = await this.source(header.url);
        const bytes = header.end > header.start ? await reader.read(header.start, Math.min(header.end, reader.size)) : null;
        return { result: { size: reader.size }, bytes };
      }
      default:
        throw new Error(`unknown op ${JSON.stringify(op)} (this bridge knows hello, load, fill, write, run, read, range)`);
    }
  }

  async source(url) {
    if (!this.sources.has(url)) this.sources.set(url, this.openSource(url));
    try {
      return await this.sources.get(url);
    } catch (error) {
      this.sources.delete(url);
      throw error;
    }
  }

  async fill({ id, fills, source }) {
    const reader = await this.source(source.url);
    this.sources.delete(source.url); // a later load asks the server again (the file may have changed)
    await reader.prepare();
    const started = performance.now();
    let last = 0;
    const onProgress = (p) => {
      this.onStatus(`loading weights: ${Math.round((100 * p.bytesDone) / Math.max(1, p.bytesTotal))}%`);
      if (performance.now() - last > 1000) { // a sign of life for the caller's timeout, not a flood
        last = performance.now();
        this.reply({ id, progress: { ...p, seconds: (last - started) / 1000 } });
      }
    };
    await this.bridge.fill(fills, reader.read, { onProgress, ...(reader.sequential ? { parallel: 1 } : {}) });
    this.onStatus("ready");
    return { result: { fetchedBytes: reader.fetchedBytes } };
  }
}
