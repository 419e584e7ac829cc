// out = (x - mean) / sqrt(var + EPS) · weight + bias, over groups of GROUP elements.
// LayerNorm: one group of C (EPS 1e-5).  GroupNorm ln_x: H groups of head_size (EPS 64e-5).
// A chunk of T tokens is T·PARAM_GROUPS groups; weight and bias repeat for every token.
// GATED: out = (norm·weight + bias + add) · gate, the GroupNorm's epilogue (GN(y) + bonus) ⊙ g;
// without ADD: out = (norm·weight + bias) · gate (RWKV-5.2/6's GN(y) ⊙ silu(g)).
// Reference: layer_norm / group_norm in reference.py. One workgroup per group; every invocation
// computes the group's mean and variance itself (two passes, as numpy does) instead of sharing
// them through workgroup memory: barriers cost far more than the redundant reads on SwiftShader.
override GROUP: u32;
override EPS: f32;
override WG: u32 = 64;
override PARAM_GROUPS: u32 = 1;  // groups per token: 1 (LayerNorm) or H (GroupNorm)
override GATED: bool = false;
override ADD: bool = true;       // with GATED: whether `add` is added before the gate

@group(0) @binding(0) var<storage, read> x: array<f32>;          // [groups * GROUP]
@group(0) @binding(1) var<storage, read> weight: array<f32>;     // [PARAM_GROUPS * GROUP]
@group(0) @binding(2) var<storage, read> bias: array<f32>;       // [PARAM_GROUPS * GROUP]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [groups * GROUP]
@group(0) @binding(4) var<storage, read> add: array<f32>;        // [groups * GROUP] (unread unless GATED)
@group(0) @binding(5) var<storage, read> gate: array<f32>;       // [groups * GROUP] (unread unless GATED)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let base = group.x * GROUP;
  var sum = 0.0;
  for (var i = 0u; i < GROUP; i++) { sum += x[base + i]; }
  let mean = sum / f32(GROUP);
  var squares = 0.0;
  for (var i = 0u; i < GROUP; i++) { let d = x[base + i] - mean; squares += d * d; }
  let inv_std = inverseSqrt(squares / f32(GROUP) + EPS);
  let param = (group.x % PARAM_GROUPS) * GROUP;
  for (var i = lid.x; i < GROUP; i += WG) {
    let y = (x[base + i] - mean) * inv_std * weight[param + i] + bias[param + i];
    if (GATED && ADD) { out[base + i] = (y + add[base + i]) * gate[base + i]; }
    else if (GATED) { out[base + i] = y * gate[base + i]; } else { out[base + i] = y; }
  }
}
