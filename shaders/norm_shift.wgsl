// LayerNorm fused with the token shift that follows it (RWKV-7's ln1 → six mixes, ln2 → the FFN's mix):
//   y[t] = LayerNorm(x[t]) · weight + bias;   out[j, t, c] = y[t, c] + (y[t − 1, c] − y[t, c]) · mix[j, c]
// with y[−1] = prev (the state's shift vector), then prev = y[n − 1]. The normalised rows themselves are
// never stored: only the mixes read them. norm.wgsl then token_shift.wgsl compute the same (their numpy twins
// compose to this kernel's). One workgroup per token: it normalises its own row and its predecessor's
// (every invocation computes a row's mean and variance itself, as norm.wgsl does: no barriers). Workgroup 0
// is the only one to touch prev: each of its invocations reads prev[c] for token 0's mixes, then writes
// y[n − 1, c] there, so no other workgroup races on the state.
override C: u32;
override N_MIX: u32;
override EPS: f32;
override WG: u32 = 64;
override T_PAD: u32 = 1;          // token rows in x and in each of out's N_MIX blocks
override COUNTED: bool = false;   // only the first count[0] tokens are real; else all T_PAD

@group(0) @binding(0) var<storage, read> x: array<f32>;             // [T_PAD, C] the residual stream
@group(0) @binding(1) var<storage, read> params: array<f32>;        // [2, C] LayerNorm weight | bias
@group(0) @binding(2) var<storage, read_write> prev: array<f32>;    // [C] the state's shift vector
@group(0) @binding(3) var<storage, read> mix: array<f32>;           // [N_MIX, C]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // [N_MIX, T_PAD, C]
@group(0) @binding(5) var<storage, read> count: array<u32>;         // [1] (unread unless COUNTED)

fn stats(t: u32) -> vec2<f32> {  // token t's mean and 1 / standard deviation, two passes as numpy does
  var sum = 0.0;
  for (var i = 0u; i < C; i++) { sum += x[t * C + i]; }
  let mean = sum / f32(C);
  var squares = 0.0;
  for (var i = 0u; i < C; i++) { let d = x[t * C + i] - mean; squares += d * d; }
  return vec2<f32>(mean, inverseSqrt(squares / f32(C) + EPS));
}

fn normed(t: u32, c: u32, s: vec2<f32>) -> f32 { return (x[t * C + c] - s.x) * s.y * params[c] + params[C + c]; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = group.x;
  var n = T_PAD;
  if (COUNTED) { n = min(count[0], T_PAD); }
  if (t >= n) { return; }
  let now = stats(t);
  var earlier = now;  // the predecessor's statistics (token 0 takes prev instead)
  if (t > 0u) { earlier = stats(t - 1u); }
  var last = now;  // workgroup 0: the statistics of the chunk's last real token, for the new shift state
  if (t == 0u && n > 1u) { last = stats(n - 1u); }
  for (var c = lid.x; c < C; c += WG) {
    let y = normed(t, c, now);
    var before = 0.0;
    if (t == 0u) { before = prev[c]; } else { before = normed(t - 1u, c, earlier); }
    let dx = before - y;
    for (var j = 0u; j < N_MIX; j++) { out[(j * T_PAD + t) * C + c] = y + dx * mix[j * C + c]; }
    if (t == 0u) { prev[c] = normed(n - 1u, c, last); }
  }
}
