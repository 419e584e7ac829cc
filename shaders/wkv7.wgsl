// The RWKV-7 state update and readout for one token, per head (reference.py `time_mix`):
//   kk = normalise(k ⊙ k_k) per head;  k' = k ⊙ (1 + (a − 1) ⊙ k_a)
//   S  = S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·k'ᵀ        S[value i, key j], float32
//   y  = S·r;   bonus = (Σ_head r ⊙ k' ⊙ r_k) · v
// One workgroup per head, one invocation per value row i: each owns S[i, :], so no barriers.
// `w` arrives already as the decay exp(−0.606531·sigmoid(·)) (matvec ACT 4).
override C: u32;
override N: u32 = 64;   // head size

@group(0) @binding(0) var<storage, read> vecs: array<f32>;        // [5C]: r | w | k | v | a
@group(0) @binding(1) var<storage, read> params: array<f32>;      // [3C]: k_k | k_a | r_k
@group(0) @binding(2) var<storage, read_write> state: array<f32>; // [H, N, N]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [2C]: y | bonus

@compute @workgroup_size(N)
fn main(@builtin(workgroup_id) head: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = head.x * N;
  let i = lid.x;
  var squares = 0.0;
  for (var j = 0u; j < N; j++) { let t = vecs[2u * C + h + j] * params[h + j]; squares += t * t; }
  let inv_norm = 1.0 / max(sqrt(squares), 1e-12);

  let row = (h + i) * N;  // S[head, i, :] starts at ((head·N) + i)·N
  var sa = 0.0;
  for (var j = 0u; j < N; j++) {
    sa -= state[row + j] * vecs[2u * C + h + j] * params[h + j] * inv_norm;
  }
  let v_i = vecs[3u * C + h + i];
  var y = 0.0;
  var rkr = 0.0;
  for (var j = 0u; j < N; j++) {
    let r = vecs[h + j];
    let w = vecs[C + h + j];
    let k = vecs[2u * C + h + j];
    let a = vecs[4u * C + h + j];
    let kk = k * params[h + j] * inv_norm;
    let k_mod = k * (1.0 + (a - 1.0) * params[C + h + j]);
    let s = state[row + j] * w + sa * kk * a + v_i * k_mod;
    state[row + j] = s;
    y += s * r;
    rkr += r * k_mod * params[2u * C + h + j];
  }
  out[h + i] = y;
  out[C + h + i] = rkr * v_i;
}
