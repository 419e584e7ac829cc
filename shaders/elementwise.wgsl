// Small elementwise steps, one entry point each, over LEN elements.
//   lerp:    a = a + (b − a) · t          the value residual: v += (v_first − v) · sigmoid(...)
//   add_mul: out = (a + b) · t            (GroupNorm(y) + bonus) ⊙ g
override LEN: u32;
override WG: u32 = 64;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;  // [LEN]
@group(0) @binding(1) var<storage, read> b: array<f32>;        // [LEN]
@group(0) @binding(2) var<storage, read> t: array<f32>;        // [LEN]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [LEN] (add_mul only)

@compute @workgroup_size(WG)
fn lerp(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= LEN) { return; }
  a[i] = a[i] + (b[i] - a[i]) * t[i];
}

@compute @workgroup_size(WG)
fn add_mul(@builtin(global_invocation_id) id: vec3<u32>) {
  let i = id.x;
  if (i >= LEN) { return; }
  out[i] = (a[i] + b[i]) * t[i];
}
