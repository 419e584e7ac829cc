// out[m] = act(Σ_k W[m, k] · x[k] + bias[m])   (+ out[m] when ACCUMULATE: the residual add)
// Reference: every `W @ x` and `x @ W` in reference.py (projections, LoRA, FFN, head).
// Layout: ROW_MAJOR W is [M, K] (nn.Linear weights: one invocation per row, vec4 along K);
// otherwise W is [K, M] (LoRA `x @ w1`: one invocation per 4 outputs, neighbours read neighbours).
// Needs a weight prelude (lib/weights_*.wgsl) for `weight4`.
override M: u32;                  // output rows written by this dispatch
override K: u32;                  // input length, a multiple of 4
override ROW_MAJOR: bool = true;
override ACT: u32 = 0;            // 0 none, 1 tanh, 2 sigmoid, 3 relu², 4 decay: exp(-0.606531·sigmoid(t)), 0.606531 = exp(-0.5)
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override ROW_OFFSET: u32 = 0;     // where this dispatch's rows start in `out` (a split head)
override WG: u32 = 64;

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

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (ROW_MAJOR) {
    let m = id.x;
    if (m >= M) { return; }
    var acc = vec4<f32>(0.0);
    let row = m * (K / 4u);
    for (var k4 = 0u; k4 < K / 4u; k4++) {
      acc += weight4(row + k4) * x[k4];
    }
    finish(m, acc.x + acc.y + acc.z + acc.w);
  } else {
    let m4 = id.x;
    if (m4 * 4u >= M) { return; }
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < K; k++) {
      acc += weight4(k * (M / 4u) + m4) * x[k / 4u][k % 4u];
    }
    for (var j = 0u; j < 4u; j++) { finish(m4 * 4u + j, acc[j]); }
  }
}
