// The bridge between a plan (built in Python) and the GPU. It knows buffers, pipelines and
// dispatch lists; it does not know it is running RWKV. Everything crosses as plain data and
// integer ids. A program runs as ONE command-buffer submission.
//
//   const bridge = new Bridge(device, shaderBaseUrl)
//   await bridge.load(plan)                  // buffers, pipelines, bind groups: once
//   bridge.fill(plan.fills, readRange)       // weights: file byte ranges -> buffers
//   bridge.run("decode", [{buffer, offset, data}])
//   await bridge.read(buffer, offset, size)  // -> ArrayBuffer
import { describe } from "./device.js";
import { quantize, SCHEMES } from "./quantize.js";


export class Bridge {
  constructor(device, shaderBase, adapter = null) {
    this.device = device;
    this.adapter = adapter;
    this.shaderBase = shaderBase;
    this.buffers = [];
    this.programs = new Map();
    this.bytesAllocated = 0;
    this.peakBytes = 0;
    this.sources = new Map(); // shader file -> text
    this.modules = new Map(); // preludes + file -> GPUShaderModule
    this.pipelines = new Map(); // kernel key -> GPUComputePipeline
    this.failure = null; // a lost device or an asynchronous validation error: every later call reports it
    this.lost = false;
    device.lost.then((info) => { // the more important fact: it replaces an earlier GPU error
      this.lost = true;
      this.failure = deviceLostMessage(info);
    });
    device.addEventListener("uncapturederror", (event) => { this.failure ??= `GPU error: ${event.error.message}`; });
  }

  info() {
    return { ...(this.adapter ? describe(this.adapter, this.device) : {}), bytesAllocated: this.bytesAllocated, peakBytes: this.peakBytes };
  }

  async load(plan) {
    this.check();
    this.checkLimits(plan);
    this.budget = plan.budget ?? Infinity;
    this.peakBytes = this.bytesAllocated; // the peak is per model: what this plan made the GPU hold
    const planned = plan.buffers.reduce((n, b) => n + (b.role === "host" ? 0 : Math.max(4, b.bytes)), 0);
    if (this.bytesAllocated + planned > this.budget) {
      throw new Error(`the plan needs ${planned} bytes of GPU memory (${this.bytesAllocated} already held) but the budget is ${this.budget}: unload first or raise the budget`);
    }
    // role "host": CPU memory the engine reads rows from (an embedding table off the GPU)
    this.buffers = plan.buffers.map((b) => (b.role === "host" ? new Uint8Array(b.bytes) : this.createBuffer(b.bytes, b.name)));
    const kernels = await Promise.all(plan.kernels.map((k) => this.pipeline(k)));
    this.device.pushErrorScope("validation");
    for (const [name, steps] of Object.entries(plan.programs)) {
      this.programs.set(name, steps.map((step) => this.prepare(step, kernels)));
    }
    const error = await this.device.popErrorScope();
    if (error) throw new Error(`the plan does not fit this GPU: ${error.message}`);
  }

  // Say which limit a plan exceeds, in words, before WebGPU fails with a validation error.
  checkLimits(plan) {
    const limits = this.device.limits;
    // Each kernel names the WGSL language features it uses (py/rwkvweb/plan.py Plan.kernel's `needs`).
    const has = globalThis.navigator?.gpu?.wgslLanguageFeatures;
    const missing = [...new Set(plan.kernels.flatMap((k) => k.needs ?? []))].filter((f) => !has?.has(f));
    if (missing.length) {
      throw new Error(`the plan's kernels use WGSL language features this browser lacks, ${missing.join(", ")}: plan without the matvec options that need them (e.g. +dp4a)`);
    }
    for (const b of plan.buffers) {
      if (b.bytes > limits.maxBufferSize) {
        throw new Error(`buffer "${b.name}" needs ${b.bytes} bytes but this GPU's maxBufferSize is ${limits.maxBufferSize}: the model is too large for this device`);
      }
    }
    for (const steps of Object.values(plan.programs)) {
      for (const step of steps) {
        for (const [buffer, , size] of step.bindings || []) {
          if (size > limits.maxStorageBufferBindingSize) {
            throw new Error(`a binding of "${plan.buffers[buffer].name}" is ${size} bytes but this GPU's maxStorageBufferBindingSize is ${limits.maxStorageBufferBindingSize}: plan the model with a smaller max_binding`);
          }
        }
        if ((step.bindings || []).length > limits.maxStorageBuffersPerShaderStage) {
          throw new Error(`a kernel binds ${step.bindings.length} storage buffers but this GPU allows ${limits.maxStorageBuffersPerShaderStage} per shader stage`);
        }
      }
    }
  }

  createBuffer(bytes, label) {
    this.account(Math.max(4, bytes));
    return this.device.createBuffer({
      label, size: Math.max(4, bytes),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
  }

  // Every GPU byte is counted against the plan's budget: going over is a bug in the plan, not a
  // condition to recover from, so it fails loudly before the allocation.
  account(delta) {
    if (delta > 0 && this.bytesAllocated + delta > (this.budget ?? Infinity)) {
      throw new Error(`GPU memory budget exceeded: ${this.bytesAllocated} + ${delta} bytes > ${this.budget}`);
    }
    this.bytesAllocated += delta;
    this.peakBytes = Math.max(this.peakBytes, this.bytesAllocated);
  }

  async source(file) {
    if (!this.sources.has(file)) {
      const response = await fetch(new URL(file, this.shaderBase));
      if (!response.ok) throw new Error(`shader ${file}: HTTP ${response.status}`);
      this.sources.set(file, await response.text());
    }
    return this.sources.get(file);
  }

  async pipeline(kernel) {
    const key = JSON.stringify([kernel.shader, kernel.include, kernel.entry, kernel.constants]);
    if (!this.pipelines.has(key)) {
      const moduleKey = JSON.stringify([kernel.include, kernel.shader]);
      if (!this.modules.has(moduleKey)) {
        // The one templating step: preludes (lib/weights_*.wgsl) are prepended to the kernel.
        const texts = await Promise.all([...kernel.include, kernel.shader].map((f) => this.source(f)));
        this.modules.set(moduleKey, this.device.createShaderModule({ label: kernel.shader, code: texts.join("\n") }));
      }
      const module = this.modules.get(moduleKey);
      const constants = Object.fromEntries(Object.entries(kernel.constants).map(([k, v]) => [k, Number(v)]));
      this.pipelines.set(key, this.device.createComputePipelineAsync({
        label: `${kernel.shader}:${kernel.entry}`, layout: "auto", compute: { module, entryPoint: kernel.entry, constants },
      }).catch(async (error) => {
        const messages = (await module.getCompilationInfo()).messages.map((m) => `line ${m.lineNum}: ${m.message}`);
        throw new Error(`compiling ${kernel.shader} (${kernel.entry}) with ${JSON.stringify(kernel.constants)}: ${error.message} ${messages.join("; ")}`);
      }));
    }
    return this.pipelines.get(key);
  }

  prepare(step, kernels) {
    if (step.copy) {
      const [src, srcOffset, dst, dstOffset, size] = step.copy;
      return { copy: [this.buffers[src], srcOffset, this.buffers[dst], dstOffset, size] };
    }
    const pipeline = kernels[step.kernel];
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: step.bindings.map(([buffer, offset, size], binding) => ({ binding, resource: { buffer: this.buffers[buffer], offset, size } })),
    });
    return { pipeline, bindGroup, workgroups: step.workgroups };
  }

  // Weights: each fill copies file bytes [start, end) into a buffer, converted on the way as it
  // says. readRange(start, end, into) resolves to those bytes (a Uint8Array), written into the
  // ArrayBuffer `into` where the reader can (net/range.js, net/cache.js). Fills whose bytes are
  // contiguous in the file are read as one range of at most maxBatchBytes, `parallel` ranges in
  // flight at once: few requests. Each lane reuses its own scratch memory for reads and
  // conversions, so the loader's memory stays a few lane-sized buffers however large the model
  // (fresh buffers per chunk would pile up as garbage faster than the collector returns them).
  // onProgress({bytesDone, bytesTotal, fillsDone, fillsTotal}) follows each batch.
  async fill(fills, readRange, { maxBatchBytes = 8 << 20, parallel = 4, onProgress = () => {} } = {}) {
    this.check();
    const progress = { bytesDone: 0, bytesTotal: fills.reduce((n, f) => n + f.end - f.start, 0), fillsDone: 0, fillsTotal: fills.length };
    const batches = [];
    for (const f of [...fills].sort((a, b) => a.start - b.start)) {
      const last = batches.at(-1);
      if (last && f.start === last.end && f.end - last.start <= maxBatchBytes) {
        last.fills.push(f);
        last.end = f.end;
      } else {
        batches.push({ start: f.start, end: f.end, fills: [f] });
      }
    }
    let next = 0;
    let failed = false; // one lane's failure stops the others before their next batch
    const lane = async () => {
      const scratch = new Scratch();
      while (next < batches.length && !failed) {
        const batch = batches[next++];
        const size = batch.end - batch.start;
        const got = await readRange(batch.start, batch.end, scratch.take("read", size));
        if (failed) return;
        const bytes = got instanceof Uint8Array ? got : new Uint8Array(got);
        scratch.keep("read", bytes.buffer); // a reader may hand back the buffer it read into (a BYOB read moves it)
        for (const f of batch.fills) this.upload(f, bytes.subarray(f.start - batch.start, f.end - batch.start), scratch);
        progress.bytesDone += size;
        progress.fillsDone += batch.fills.length;
        onProgress({ ...progress });
      }
    };
    // Every lane settles before the failure is reported: none may write into buffers that the
    // failed load's clean-up destroys (a write there would be a GPU error that poisons the device).
    const stopOthers = (error) => {
      failed = true;
      throw error;
    };
    const lanes = await Promise.allSettled(
      Array.from({ length: Math.min(parallel, batches.length) }, () => lane().catch(stopOthers)),
    );
    const failure = lanes.find((l) => l.status === "rejected");
    if (failure) throw failure.reason;
    this.check();
  }

  // One fill's bytes into its buffer (plan.py's Plan.fill says what each field means).
  upload(f, bytes, scratch) {
    if (f.quantize && f.transpose) return this.uploadQuantizedColumns(f, bytes, scratch); // widens on its own
    if (f.convert === "f16-f32") bytes = widenF16(aligned(bytes, 2, scratch), scratch);
    else if (f.convert === "bf16-f32") bytes = widenBF16(aligned(bytes, 2, scratch), scratch);
    else if (f.convert === "bf16-f16") bytes = narrowBF16(aligned(bytes, 2, scratch), scratch, this.buffers[f.buffer].label);
    if (f.quantize) {
      const { codes, params } = quantize(new Float32Array(...view(aligned(bytes, 4, scratch), 4)), f.quantize, scratch);
      this.write(f.buffer, f.offset, codes);
      this.write(f.buffer, f.params_offset, params);
    } else if (f.transpose) {
      const [rows, cols, paddedRows] = f.transpose;
      const columns = transpose(aligned(bytes, 4, scratch), rows, cols, scratch);
      const segment = columns.byteLength / cols; // this fill's rows of one column
      for (let k = 0; k < cols; k++) {
        this.write(f.buffer, f.offset + k * paddedRows * (segment / rows), columns.subarray(k * segment, (k + 1) * segment));
      }
    } else {
      this.write(f.buffer, f.offset, bytes);
    }
  }

  // k-major quantized blocks (plan.py's Plan.fill, quant.py's quantize_columns): each column of the chunk,
  // edge-padded to whole blocks, quantized on its own; row k of the stored matrix gets its codes and parameters.
  uploadQuantizedColumns(f, bytes, scratch) {
    const [rows, cols, paddedRows] = f.transpose;
    const { block, bits, paramBytes } = SCHEMES[f.quantize];
    const perColumn = Math.ceil(rows / block) * block;
    const padded = paddedColumns(bytes, f.convert, rows, cols, perColumn, scratch);
    const { codes, params } = quantize(padded, f.quantize, scratch);
    const paramBytesAll = new Uint8Array(params.buffer, params.byteOffset, params.byteLength);
    const codeStride = (paddedRows * bits) / 8;
    const paramStride = (paddedRows / block) * paramBytes;
    const codesPer = (perColumn * bits) / 8;
    const paramsPer = (perColumn / block) * paramBytes;
    if (perColumn === paddedRows) { // every stored row: the columns are contiguous
      this.write(f.buffer, f.offset, codes.subarray(0, cols * codesPer));
      this.write(f.buffer, f.params_offset, paramBytesAll);
      return;
    }
    for (let k = 0; k < cols; k++) {
      this.write(f.buffer, f.offset + k * codeStride, codes.subarray(k * codesPer, (k + 1) * codesPer));
      this.write(f.buffer, f.params_offset + k * paramStride, paramBytesAll.subarray(k * paramsPer, (k + 1) * paramsPer));
    }
  }

  write(buffer, offset, data) {
    let bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    if (this.buffers[buffer] instanceof Uint8Array) return this.buffers[buffer].set(bytes, offset); // host memory
    if (bytes.byteLength % 4) { // writeBuffer takes whole 4-byte words
      const padded = new Uint8Array(bytes.byteLength + 4 - (bytes.byteLength % 4));
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(this.buffers[buffer], offset, bytes);
  }

  // Programs (one name or several, in order) run as ONE command buffer: writes queue first.
  run(names, writes = []) {
    this.check();
    const programs = (typeof names === "string" ? [names] : [...names]).map((name) => {
      if (!this.programs.has(name)) throw new Error(`no program named ${JSON.stringify(name)} in the plan`);
      return this.programs.get(name);
    });
    for (const w of writes) this.write(w.buffer, w.offset, w.data);
    const encoder = this.device.createCommandEncoder();
    let pass = null;
    for (const step of programs.flat()) {
      if (step.copy) {
        if (pass) { pass.end(); pass = null; }
        encoder.copyBufferToBuffer(...step.copy);
        continue;
      }
      pass ??= encoder.beginComputePass();
      pass.setPipeline(step.pipeline);
      pass.setBindGroup(0, step.bindGroup);
      pass.dispatchWorkgroups(...step.workgroups);
    }
    pass?.end();
    this.device.queue.submit([encoder.finish()]);
  }

  async read(buffer, offset, size) {
    this.check();
    if (this.buffers[buffer] instanceof Uint8Array) return this.buffers[buffer].slice(offset, offset + size).buffer; // host memory
    this.account(size);
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const encoder = this.device.createCommandEncoder();
      encoder.copyBufferToBuffer(this.buffers[buffer], offset, staging, 0, size);
      this.device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      return staging.getMappedRange().slice(0);
    } finally {
      staging.destroy();
      this.account(-staging.size);
    }
  }

  destroy() {
    for (const buffer of this.buffers) {
      if (buffer instanceof Uint8Array) continue; // host memory: the collector's
      buffer.destroy();
      this.account(-buffer.size);
    }
    this.buffers = [];
    this.programs.clear();
  }

  check() {
    if (this.failure) throw new Error(this.failure);
  }
}

// One line for a lost device (a driver reset, the GPU process crashing, device.destroy()): what
// happened and the way back, which the page offers as its "Reload model" button.
export function deviceLostMessage(info) {
  const why = [info?.reason, info?.message].filter(Boolean).join(": ") || "unknown reason";
  return `the GPU device was lost (${why}); Reload model to continue on a new device`;
}

// Reusable memory for one loading lane: take(name, bytes) gives an ArrayBuffer of at least that
// size, the same one each time unless it must grow; keep(name, buffer) adopts a buffer that a
// reader moved (transferred) the old one into. It grows to exactly what is asked: requests are
// bounded by the plan's fill size, and doubling would hold up to twice the largest of them per lane.
class Scratch {
  constructor() {
    this.buffers = new Map();
  }

  take(name, bytes) {
    const buffer = this.buffers.get(name);
    if (buffer && buffer.byteLength >= bytes) return buffer;
    const grown = new ArrayBuffer(bytes);
    this.buffers.set(name, grown);
    return grown;
  }

  keep(name, buffer) {
    if (buffer.byteLength >= (this.buffers.get(name)?.byteLength || 0)) this.buffers.set(name, buffer);
  }
}

// The bytes at an offset that is a multiple of `alignment` (typed arrays need it), copied into
// scratch memory only when they are not.
function aligned(bytes, alignment, scratch) {
  if (bytes.byteOffset % alignment === 0) return bytes;
  const copy = new Uint8Array(scratch.take("align", bytes.byteLength), 0, bytes.byteLength);
  copy.set(bytes);
  return copy;
}

const view = (bytes, size) => [bytes.buffer, bytes.byteOffset, bytes.byteLength / size];

// A row-major [rows, cols] matrix of 2- or 4-byte elements as [cols, rows]: its columns in turn.
function transpose(bytes, rows, cols, scratch) {
  const Elements = bytes.byteLength / (rows * cols) === 2 ? Uint16Array : Uint32Array;
  const source = new Elements(...view(bytes, Elements.BYTES_PER_ELEMENT));
  const target = new Elements(scratch.take("transpose", bytes.byteLength), 0, rows * cols);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    for (let k = 0; k < cols; k++) target[k * rows + r] = source[row + k];
  }
  return new Uint8Array(target.buffer, 0, bytes.byteLength);
}

// A fill's row-major [rows, cols] f32, f16 or bf16 values (`convert` says which) as f32 columns, each padded
// to `perColumn` values with its last one: widened, transposed and padded in one pass into the scratch memory
// that the row-major fills widen into, so that a lane holds one f32 copy of a chunk whichever layout its fills
// have (tests/test_load_memory.py bounds the loader's memory).
function paddedColumns(bytes, convert, rows, cols, perColumn, scratch) {
  if (convert && convert !== "f16-f32" && convert !== "bf16-f32") throw new Error(`cannot quantize a ${convert} fill`);
  const out = new Float32Array(scratch.take("widen", cols * perColumn * 4), 0, cols * perColumn);
  const outBits = new Uint32Array(out.buffer, 0, out.length);
  const wide = !convert ? new Float32Array(...view(aligned(bytes, 4, scratch), 4)) : null;
  const halves = convert ? new Uint16Array(...view(aligned(bytes, 2, scratch), 2)) : null;
  const table = convert === "f16-f32" ? halfTable() : null;
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    if (table) for (let k = 0; k < cols; k++) out[k * perColumn + r] = table[halves[row + k]];
    else if (halves) for (let k = 0; k < cols; k++) outBits[k * perColumn + r] = halves[row + k] << 16; // bf16: top half
    else for (let k = 0; k < cols; k++) out[k * perColumn + r] = wide[row + k];
  }
  for (let k = 0; k < cols; k++) out.fill(out[k * perColumn + rows - 1], k * perColumn + rows, (k + 1) * perColumn);
  return out;
}

function widenF16(bytes, scratch) {
  const halves = new Uint16Array(...view(bytes, 2));
  const out = new Float32Array(scratch.take("widen", 2 * bytes.byteLength), 0, halves.length);
  const table = halfTable();
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  return new Uint8Array(out.buffer, 0, out.byteLength);
}

// Every float16 bit pattern's value (256 KiB, made once): widening is then one lookup a weight.
let HALF_VALUES = null;
function halfTable() {
  if (!HALF_VALUES) {
    HALF_VALUES = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) HALF_VALUES[h] = halfToFloat(h);
  }
  return HALF_VALUES;
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// bf16 -> f16, rounded to nearest (ties to even) like numpy's astype(float16) in safetensors.py's bf16_to_f16:
// one lookup a weight in a table of every bf16 pattern, where OVERFLOW marks a finite value beyond f16's range.
const OVERFLOW = 0xffff; // a NaN pattern the table never produces (NaNs become 0x7e00 | sign)
let BF16_TO_F16 = null;
function narrowBF16(bytes, scratch, name) {
  BF16_TO_F16 ??= Uint16Array.from({ length: 65536 }, (_, h) => floatBitsToHalf(h << 16));
  const source = new Uint16Array(...view(bytes, 2));
  const out = new Uint16Array(scratch.take("widen", bytes.byteLength), 0, source.length);
  for (let i = 0; i < source.length; i++) {
    const half = BF16_TO_F16[source[i]];
    if (half === OVERFLOW) {
      throw new Error(`${name} holds a value beyond float16's range (bf16 bits 0x${source[i].toString(16)}): load it at precision fp32, int8 or nf4`);
    }
    out[i] = half;
  }
  return new Uint8Array(out.buffer, 0, out.byteLength);
}

function floatBitsToHalf(bits) {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15; // rebiased for f16
  let mantissa = bits & 0x7fffff;
  if (((bits >>> 23) & 0xff) === 0xff) return mantissa ? sign | 0x7e00 : sign | 0x7c00; // NaN, infinity
  if (exponent >= 0x1f) return OVERFLOW;
  let shift = 13; // f32's 23 mantissa bits -> f16's 10
  let half = (exponent << 10) | (mantissa >>> 13);
  if (exponent <= 0) { // an f16 subnormal (or zero): the implicit bit becomes explicit
    if (exponent < -10) return sign;
    mantissa |= 0x800000;
    shift = 14 - exponent;
    half = mantissa >>> shift;
  }
  const rest = mantissa & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (rest > halfway || (rest === halfway && half & 1)) half++; // a carry may reach the exponent: correct
  return half >= 0x7c00 ? OVERFLOW : sign | half;
}

function widenBF16(bytes, scratch) {
  const halves = new Uint16Array(...view(bytes, 2));
  const words = new Uint32Array(scratch.take("widen", 2 * bytes.byteLength), 0, halves.length);
  for (let i = 0; i < halves.length; i++) words[i] = halves[i] << 16;
  return new Uint8Array(words.buffer, 0, words.byteLength);
}
