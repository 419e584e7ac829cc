// out[m] = act(Σ_k W[m, k] · x[k] + bias[m])   (+ out[m] when ACCUMULATE: the residual add)
// Reference: every `W @ x` and `x @ W` in reference.py (projections, LoRA, FFN, head).
// Three variants, chosen per adapter by the plan (model.py):
//   ROW_MAJOR, ROW_THREADS = 1   W is [M, K]; one invocation per row, vec4 loads along K.
//   ROW_MAJOR, ROW_THREADS > 1   W is [M, K]; ROW_THREADS invocations share a row, then a
//                                workgroup reduction: coalesced reads, what real GPUs want.
//   !ROW_MAJOR                   W is [K, M_PAD] (k-major: LoRA's own `x @ w1` layout, or a matrix
//                                transposed at load); one invocation per 4 outputs, neighbours read
//                                neighbouring vec4s: what SwiftShader's CPU lanes want.
// Needs a weight prelude (lib/weights_*.wgsl) for `weight4`.
override M: u32;                  // output rows written by this dispatch
override K: u32;                  // input length, a multiple of 4
override ROW_MAJOR: bool = true;
override ACT: u32 = 0;            // 0 none, 1 tanh, 2 sigmoid, 3 relu², 4 decay: exp(-0.606531·sigmoid(t)), 0.606531 = exp(-0.5)
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override ROW_OFFSET: u32 = 0;     // where this dispatch's rows start in `out` (a split head)
override ROW_THREADS: u32 = 1;    // invocations per row (row-major), a power of two dividing WG
override WG: u32 = 64;
override M_PAD: u32 = (M + 3u) / 4u * 4u;  // k-major: each k's row of outputs padded to whole vec4s

@group(0) @binding(0) var<storage, read> weight: array<WeightWord>;  // [M*K/4] words of 4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;       // [K/4]
@group(0) @binding(2) var<storage, read> bias: array<f32>;          // [M] (bound but unread without HAS_BIAS)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [ROW_OFFSET + M]

fn activate(t: f32) -> f32 {
  switch ACT {
    case 1u: { return tanh(t); }
    case 2u: { return 1.0 / (1.0 + exp(-t)); }
    case 3u: { let r = max(t, 0.0); return r * r; }
    case 4u: { return exp(-0.606531 * (1.0 / (1.0 + exp(-t)))); }
    default: { return t; }
  }
}

fn finish(m: u32, dot: f32) {
  var t = dot;
  if (HAS_BIAS) { t += bias[m]; }
  t = activate(t);
  if (ACCUMULATE) { t += out[ROW_OFFSET + m]; }
  out[ROW_OFFSET + m] = t;
}

var<workgroup> partial: array<f32, WG>;

fn row_dot(m: u32, lane: u32) -> f32 {
  var acc = vec4<f32>(0.0);
  let row = m * (K / 4u);
  for (var k4 = lane; k4 < K / 4u; k4 += ROW_THREADS) {
    acc += weight4(row + k4) * x[k4];
  }
  return acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(workgroup_id) group: vec3<u32>) {
  if (!ROW_MAJOR) {
    let m4 = id.x;
    if (m4 >= M_PAD / 4u) { return; }
    var acc = vec4<f32>(0.0);
    let stride = M_PAD / 4u;  // words from one k to the next
    for (var k4 = 0u; k4 < K / 4u; k4++) {  // four k per step: one vec4 of x, four of W
      let xs = x[k4];
      let w = k4 * 4u * stride + m4;
      acc += weight4(w) * xs.x + weight4(w + stride) * xs.y + weight4(w + 2u * stride) * xs.z + weight4(w + 3u * stride) * xs.w;
    }
    for (var j = 0u; j < 4u; j++) {
      if (m4 * 4u + j < M) { finish(m4 * 4u + j, acc[j]); }
    }
  } else if (ROW_THREADS == 1u) {
    if (id.x < M) { finish(id.x, row_dot(id.x, 0u)); }
  } else {
    let m = group.x * (WG / ROW_THREADS) + lid.x / ROW_THREADS;
    let lane = lid.x % ROW_THREADS;
    partial[lid.x] = select(0.0, row_dot(m, lane), m < M);
    workgroupBarrier();
    for (var stride = ROW_THREADS / 2u; stride > 0u; stride /= 2u) {
      if (lane < stride) { partial[lid.x] += partial[lid.x + stride]; }
      workgroupBarrier();
    }
    if (lane == 0u && m < M) { finish(m, partial[lid.x]); }
  }
}
