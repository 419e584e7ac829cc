// The WebGPU device: ask the adapter for what a plan needs, and say plainly what is missing.

export class GpuUnavailableError extends Error {}

// Limits raised to the adapter's maximum: large weights need big buffers and bindings.
const RAISED_LIMITS = ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize"];

const OPTIONAL_FEATURES = ["shader-f16", "subgroups"];

export async function requestDevice({ powerPreference = "high-performance" } = {}) {
  if (!globalThis.navigator?.gpu) {
    throw new GpuUnavailableError("this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or Safari, or enable WebGPU");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference });
  if (!adapter) throw new GpuUnavailableError("WebGPU is present but no GPU adapter was found (blocklisted driver, or no GPU)");
  const requiredLimits = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  // What the matvec variants use where the adapter has it (py/rwkvweb/model.py choose_matvec reads
  // describe()'s device features): f16 weights read natively, subgroup reductions.
  const requiredFeatures = OPTIONAL_FEATURES.filter((name) => adapter.features.has(name));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  return { adapter, device };
}

export function describe(adapter, device) {
  const info = adapter.info || {};
  return {
    vendor: info.vendor || "", architecture: info.architecture || "", description: info.description || "",
    features: [...device.features].sort(),
    // WGSL language features (packed_4x8_integer_dot_product: model.py's +dp4a), the browser's, not the device's
    wgslLanguageFeatures: [...(navigator.gpu.wgslLanguageFeatures || [])].sort(),
    maxBufferSize: device.limits.maxBufferSize,
    maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
    minStorageBufferOffsetAlignment: device.limits.minStorageBufferOffsetAlignment,
    maxStorageBuffersPerShaderStage: device.limits.maxStorageBuffersPerShaderStage,
  };
}
