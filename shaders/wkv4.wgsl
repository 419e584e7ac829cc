// RWKV-4's WKV for the tokens of a chunk in order, one invocation per channel (rwkv4.py `wkv4`;
// T_PAD = 1 is one decode step). With u = time_first and w = −exp(time_decay):
//   q = max(pp, u + k);  wkv = (e^(pp−q)·aa + e^(u+k−q)·v) / (e^(pp−q)·bb + e^(u+k−q))
//   q = max(pp + w, k);  aa, bb, pp = e^(pp+w−q)·aa + e^(k−q)·v,  e^(pp+w−q)·bb + e^(k−q),  q
// aa and bb are the numerator and denominator divided by e^pp, so no exp overflows however large
// k gets. out = r ⊙ wkv, r already sigmoid(W_r·xr) (matvec ACT sigmoid). Each invocation owns its
// channel's state and walks time itself: no barriers.
override C: u32;
override WG: u32 = 64;
override T_PAD: u32 = 1;          // token rows in each block of vecs and in out
override COUNTED: bool = false;   // only the first count[0] tokens are real; else all T_PAD

@group(0) @binding(0) var<storage, read> vecs: array<f32>;        // [3, T_PAD, C]: r | k | v
@group(0) @binding(1) var<storage, read> params: array<f32>;      // [2, C]: time_first | time_decay
@group(0) @binding(2) var<storage, read_write> state: array<f32>; // [3, C]: aa | bb | pp
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [T_PAD, C]: r ⊙ wkv
@group(0) @binding(4) var<storage, read> count: array<u32>;       // [1] (unread unless COUNTED)

fn vec_at(slot: u32, t: u32, c: u32) -> f32 { return vecs[(slot * T_PAD + t) * C + c]; }

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let c = id.x;
  if (c >= C) { return; }
  var n = T_PAD;
  if (COUNTED) { n = min(count[0], T_PAD); }
  let u = params[c];
  let w = -exp(params[C + c]);
  var aa = state[c];
  var bb = state[C + c];
  var pp = state[2u * C + c];
  for (var t = 0u; t < n; t++) {
    let k = vec_at(1u, t, c);
    let v = vec_at(2u, t, c);
    let uk = u + k;
    var q = max(pp, uk);
    var e1 = exp(pp - q);
    var e2 = exp(uk - q);
    out[t * C + c] = vec_at(0u, t, c) * ((e1 * aa + e2 * v) / (e1 * bb + e2));
    let decayed = pp + w;
    q = max(decayed, k);
    e1 = exp(decayed - q);
    e2 = exp(k - q);
    aa = e1 * aa + e2 * v;
    bb = e1 * bb + e2;
    pp = q;
  }
  state[c] = aa;
  state[C + c] = bb;
  state[2u * C + c] = pp;
}
