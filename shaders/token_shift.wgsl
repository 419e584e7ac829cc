// Token shift: mix each channel with the previous token's, N_MIX ways in one pass, and remember
// this token. out[j·C + c] = x[c] + (prev[c] − x[c]) · mix[j·C + c];  prev[c] = x[c].
// Reference: `xr, xw, xk, xv, xa, xg = x + dx * x_r, ...` (N_MIX 6) and the FFN's x_k (N_MIX 1).
override C: u32;
override N_MIX: u32;
override WG: u32 = 64;

@group(0) @binding(0) var<storage, read> x: array<f32>;             // [C] this token (after LayerNorm)
@group(0) @binding(1) var<storage, read_write> prev: array<f32>;    // [C] the state's shift vector
@group(0) @binding(2) var<storage, read> mix: array<f32>;           // [N_MIX * C]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [N_MIX * C]

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let c = id.x;
  if (c >= C) { return; }
  let now = x[c];
  let dx = prev[c] - now;
  for (var j = 0u; j < N_MIX; j++) {
    out[j * C + c] = now + dx * mix[j * C + c];
  }
  prev[c] = now;
}
