// The RWKV-7 state update and readout, per head, for the tokens of a chunk in order
// (reference.py `time_mix`; T_PAD = 1 is one decode step):
//   kk = normalise(k ⊙ k_k) per head;  k' = k ⊙ (1 + (a − 1) ⊙ k_a)
//   S  = S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·k'ᵀ        S[value i, key j], float32
//   y  = S·r;   bonus = (Σ_head r ⊙ k' ⊙ r_k) · v
// One workgroup per head, one invocation per value row i: each owns S[i, :] and walks time
// itself, so no barriers. `w` arrives already as the decay exp(−0.606531·sigmoid(·)) (matvec ACT 4).
override C: u32;
override N: u32 = 64;             // head size
override T_PAD: u32 = 1;          // token rows in each block of vecs and out
override COUNTED: bool = false;   // only the first count[0] tokens are real; else all T_PAD

@group(0) @binding(0) var<storage, read> vecs: array<f32>;        // [5, T_PAD, C]: r | w | k | v | a
@group(0) @binding(1) var<storage, read> params: array<f32>;      // [3, C]: k_k | k_a | r_k
@group(0) @binding(2) var<storage, read_write> state: array<f32>; // [H, N, N]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [2, T_PAD, C]: y | bonus
@group(0) @binding(4) var<storage, read> count: array<u32>;       // [1] (unread unless COUNTED)

fn vec_at(slot: u32, t: u32, c: u32) -> f32 { return vecs[(slot * T_PAD + t) * C + c]; }

@compute @workgroup_size(N)
fn main(@builtin(workgroup_id) head: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = head.x * N;
  let i = lid.x;
  let row = (h + i) * N;  // S[head, i, :] starts at ((head·N) + i)·N
  var n = T_PAD;
  if (COUNTED) { n = min(count[0], T_PAD); }
  for (var t = 0u; t < n; t++) {
    var squares = 0.0;
    for (var j = 0u; j < N; j++) { let u = vec_at(2u, t, h + j) * params[h + j]; squares += u * u; }
    let inv_norm = 1.0 / max(sqrt(squares), 1e-12);
    var sa = 0.0;
    for (var j = 0u; j < N; j++) {
      sa -= state[row + j] * vec_at(2u, t, h + j) * params[h + j] * inv_norm;
    }
    let v_i = vec_at(3u, t, h + i);
    var y = 0.0;
    var rkr = 0.0;
    for (var j = 0u; j < N; j++) {
      let r = vec_at(0u, t, h + j);
      let w = vec_at(1u, t, h + j);
      let k = vec_at(2u, t, h + j);
      let a = vec_at(4u, t, h + j);
      let kk = k * params[h + j] * inv_norm;
      let k_mod = k * (1.0 + (a - 1.0) * params[C + h + j]);
      let s = state[row + j] * w + sa * kk * a + v_i * k_mod;
      state[row + j] = s;
      y += s * r;
      rkr += r * k_mod * params[2u * C + h + j];
    }
    out[t * C + h + i] = y;
    out[(T_PAD + t) * C + h + i] = rkr * v_i;
  }
}
