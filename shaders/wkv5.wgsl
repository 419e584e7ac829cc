// The RWKV-5.2 / RWKV-6 state update and readout, per head, for the tokens of a chunk in order
// (reference56.py `_Eagle.attend`; T_PAD = 1 is one decode step):
//   y[i] = Σ_j r[j]·(S[j, i] + u[j]·k[j]·v[i])        S[key j, value i], float32 (the official orientation)
//   S[j, i] = w[j]·S[j, i] + k[j]·v[i]                 w = exp(−exp(d)), u = time_faaaa
// d is time_decay, one per channel (5.2), or with PER_TOKEN_DECAY the decay LoRA's output per token (6).
// One workgroup per head, one invocation per value column i: each owns S[:, i] and walks time
// itself, so no barriers; neighbouring invocations touch neighbouring floats of each row.
override C: u32;
override N: u32 = 64;                  // head size
override T_PAD: u32 = 1;               // token rows in each block of vecs and in out
override COUNTED: bool = false;        // only the first count[0] tokens are real; else all T_PAD
override PER_TOKEN_DECAY: bool = false;

@group(0) @binding(0) var<storage, read> vecs: array<f32>;        // [4, T_PAD, C]: r | d | k | v (d unread unless PER_TOKEN_DECAY)
@group(0) @binding(1) var<storage, read> params: array<f32>;      // [2, C]: time_decay | time_faaaa (time_decay unread with PER_TOKEN_DECAY)
@group(0) @binding(2) var<storage, read_write> state: array<f32>; // [H, N, N]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [T_PAD, C]: y
@group(0) @binding(4) var<storage, read> count: array<u32>;       // [1] (unread unless COUNTED)

fn vec_at(slot: u32, t: u32, c: u32) -> f32 { return vecs[(slot * T_PAD + t) * C + c]; }

@compute @workgroup_size(N)
fn main(@builtin(workgroup_id) head: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = head.x * N;
  let i = lid.x;
  var n = T_PAD;
  if (COUNTED) { n = min(count[0], T_PAD); }
  for (var t = 0u; t < n; t++) {
    let v_i = vec_at(3u, t, h + i);
    var y = 0.0;
    for (var j = 0u; j < N; j++) {
      let at = (h + j) * N + i;  // S[head, j, i]
      let kv = vec_at(2u, t, h + j) * v_i;
      let s = state[at];
      y += vec_at(0u, t, h + j) * (s + params[C + h + j] * kv);
      var d = params[h + j];
      if (PER_TOKEN_DECAY) { d = vec_at(1u, t, h + j); }
      state[at] = exp(-exp(d)) * s + kv;
    }
    out[t * C + h + i] = y;
  }
}
