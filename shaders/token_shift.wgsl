// Token shift: mix each channel with the previous token's, N_MIX ways in one pass, and remember
// the chunk's last token. For token t of the chunk (t = 0 takes its predecessor from the state):
//   out[j, t, c] = x[t, c] + (x[t − 1, c] − x[t, c]) · mix[j, c];   then prev[c] = x[n − 1, c].
// Reference: `xr, xw, xk, xv, xa, xg = x + dx * x_r, ...` (N_MIX 6) and the FFN's x_k (N_MIX 1).
// CURRENT: the mix weights the current token instead, out = prev + (x − prev)·mix (RWKV-4/5's time_mix_*,
// reference.shift_mix). MIX_PER_TOKEN: mix is [N_MIX, T_PAD, C], one vector per token (RWKV-6's ddlerp
// mixes, time_maa_* + LoRA). KEEP_PREV: prev is read but not updated (RWKV-6's first shift, by time_maa_x).
override C: u32;
override N_MIX: u32;
override WG: u32 = 64;
override T_PAD: u32 = 1;          // token rows in x and in each of out's N_MIX blocks
override COUNTED: bool = false;   // only the first count[0] tokens are real; else all T_PAD
override CURRENT: bool = false;
override MIX_PER_TOKEN: bool = false;
override KEEP_PREV: bool = false;

@group(0) @binding(0) var<storage, read> x: array<f32>;             // [T_PAD, C] (after LayerNorm)
@group(0) @binding(1) var<storage, read_write> prev: array<f32>;    // [C] the state's shift vector
@group(0) @binding(2) var<storage, read> mix: array<f32>;           // [N_MIX, C] ([N_MIX, T_PAD, C] if MIX_PER_TOKEN)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [N_MIX, T_PAD, C]
@group(0) @binding(4) var<storage, read> count: array<u32>;         // [1] (unread unless COUNTED)

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let c = id.x;
  if (c >= C) { return; }
  var n = T_PAD;
  if (COUNTED) { n = min(count[0], T_PAD); }
  var before = prev[c];
  for (var t = 0u; t < n; t++) {  // one invocation walks its channel through time: no races on prev
    let now = x[t * C + c];
    let dx = before - now;
    for (var j = 0u; j < N_MIX; j++) {
      var m = mix[j * C + c];
      if (MIX_PER_TOKEN) { m = mix[(j * T_PAD + t) * C + c]; }
      if (CURRENT) { out[(j * T_PAD + t) * C + c] = before - dx * m; } else { out[(j * T_PAD + t) * C + c] = now + dx * m; }
    }
    before = now;
  }
  if (!KEEP_PREV) { prev[c] = before; }
}
