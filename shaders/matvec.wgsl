// out[t, m] = act(Σ_k W[m, k] · x[t, k] + bias[m])   (+ out[t, m] when ACCUMULATE: the residual add;
//   with LERP: out[t, m] += (toward[t, m] − out[t, m]) · act(...), RWKV-7's v += (v_first − v)·sigmoid(...);
//   with GATED: act(...) · toward[t, m] before the add, RWKV-4/5/6's channel mix r ⊙ (Wv·k))
// x[t] may be a slice of a wider row (X_OFFSET, X_STRIDE): RWKV-6's five ddlerp LoRAs read one [T, 5D] buffer.
// for the tokens t of a chunk: T_PAD = 1 is a decode step's matrix × vector, T_PAD > 1 a prefill's
// matrix × matrix, each invocation keeping TILE_T tokens' sums in registers so every weight it loads
// serves TILE_T tokens. Reference: every `W @ x` and `x @ W` in reference.py (projections, LoRA, FFN, head).
// Three variants, chosen per adapter by the plan (model.py):
//   ROW_MAJOR, ROW_THREADS = 1   W is [M, K]; one invocation per row, vec4 loads along K.
//   ROW_MAJOR, ROW_THREADS > 1   W is [M, K]; ROW_THREADS invocations share a row, then a
//                                workgroup reduction: coalesced reads, what real GPUs want (TILE_T 1).
//                                The reduction is a prelude's row_total: lib/reduce_workgroup.wgsl or,
//                                with `subgroups`, lib/reduce_subgroup.wgsl.
//   !ROW_MAJOR                   W is [K, M_PAD] (k-major: LoRA's own `x @ w1` layout, or a matrix
//                                transposed at load); one invocation per 4 outputs, neighbours read
//                                neighbouring vec4s: what SwiftShader's CPU lanes want.
// Groups (START1 set): up to four matrices with the same K stacked in one weight buffer, rows
// [START_g, START_g+1) of this dispatch (row-major: the matrices' rows one after another; k-major: each
// its own [K, rows] block); group g reads x from X_OFFSET_g, writes `out` from ROW_OFFSET_g and applies
// ACT_g (group 0: X_OFFSET, ROW_OFFSET, ACT); bias[m] is by the dispatch's row m (the groups' biases side by
// side). RWKV-7's r/k/v, its LoRA down-projections and w's + a's up-projections run as one dispatch each this
// way (model.py `_block`). k-major groups before the last hold M % 4 == 0 rows.
// Needs a weight prelude (lib/weights_*.wgsl) for `weight4` and a reduce prelude (lib/reduce_*.wgsl) for `row_total`.
override M: u32;                  // output rows written by this dispatch
override K: u32;                  // input length, a multiple of 4
override ROW_MAJOR: bool = true;
override ACT: u32 = 0;            // 0 none, 1 tanh, 2 sigmoid, 3 relu², 4 decay: exp(-0.606531·sigmoid(t)), 0.606531 = exp(-0.5), 5 silu
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override LERP: bool = false;      // out moves toward `toward` by act(W·x + bias): the value residual's mix
override GATED: bool = false;     // act(W·x + bias) is multiplied by `toward` (the gate) before it is stored or added
override X_STRIDE: u32 = K;       // floats from one token's row of x to the next, a multiple of 4
override X_OFFSET: u32 = 0u;      // where this dispatch's K inputs start in a row of x, a multiple of 4
override ROW_OFFSET: u32 = 0;     // where this dispatch's rows start in a row of `out` (a split head)
override OUT_STRIDE: u32 = ROW_OFFSET + M;  // floats from one token's row of `out` to the next
override ROW_THREADS: u32 = 1;    // invocations per row (row-major), a power of two dividing WG
override WG: u32 = 64;
override M_PAD: u32 = (M + 3u) / 4u * 4u;  // k-major: each k's row of outputs padded to whole vec4s
override T_PAD: u32 = 1;          // token rows in `x` and `out`, a multiple of TILE_T
override TILE_T: u32 = 1;         // tokens per invocation, at most MAX_TILE
override COUNTED: bool = false;   // only the first count[0] tokens are real (a prefill's last chunk); else all T_PAD
const MAX_TILE = 16u;
const NONE = 0xFFFFFFFFu;
override START1: u32 = NONE;      // the first row of group 1 (NONE: a single matrix), then of groups 2 and 3
override START2: u32 = NONE;
override START3: u32 = NONE;
override X_OFFSET1: u32 = 0u;
override X_OFFSET2: u32 = 0u;
override X_OFFSET3: u32 = 0u;
override ROW_OFFSET1: u32 = 0u;
override ROW_OFFSET2: u32 = 0u;
override ROW_OFFSET3: u32 = 0u;
override ACT1: u32 = 0u;
override ACT2: u32 = 0u;
override ACT3: u32 = 0u;

struct Group { start: u32, next: u32, x: u32, out: u32, act: u32 }  // next: the following group's start

fn group_of(m: u32) -> Group {
  if (m >= START3) { return Group(START3, NONE, X_OFFSET3, ROW_OFFSET3, ACT3); }
  if (m >= START2) { return Group(START2, START3, X_OFFSET2, ROW_OFFSET2, ACT2); }
  if (m >= START1) { return Group(START1, START2, X_OFFSET1, ROW_OFFSET1, ACT1); }
  return Group(0u, START1, X_OFFSET, ROW_OFFSET, ACT);
}

@group(0) @binding(0) var<storage, read> weight: array<WeightWord>;  // [M*K/4] words of 4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;       // [T_PAD, X_STRIDE/4]: K/4 from X_OFFSET/4
@group(0) @binding(2) var<storage, read> bias: array<f32>;          // [M] (bound but unread without HAS_BIAS)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [T_PAD, OUT_STRIDE]
@group(0) @binding(4) var<storage, read> count: array<u32>;         // [1] tokens in this chunk (unread unless COUNTED)
@group(0) @binding(5) var<storage, read> toward: array<f32>;        // [T_PAD, OUT_STRIDE] (unread unless LERP or GATED)

fn activate(t: f32, act: u32) -> f32 {
  switch act {
    case 1u: { return tanh(clamp(t, -10.0, 10.0)); }  // f32 tanh is ±1 from ±9.1; SwiftShader's gives NaN past ~44
    case 2u: { return 1.0 / (1.0 + exp(-t)); }
    case 3u: { let r = max(t, 0.0); return r * r; }
    case 4u: { return exp(-0.606531 * (1.0 / (1.0 + exp(-t)))); }
    case 5u: { return t / (1.0 + exp(-t)); }
    default: { return t; }
  }
}

fn x_row(t: u32, g: Group) -> u32 { return (t * X_STRIDE + g.x) / 4u; }  // token t's first vec4 of x

fn tokens() -> u32 {
  if (COUNTED) { return min(count[0], T_PAD); }
  return T_PAD;
}

fn finish(t: u32, m: u32, dot: f32, g: Group) {
  var v = dot;
  if (HAS_BIAS) { v += bias[m]; }
  v = activate(v, g.act);
  let at = t * OUT_STRIDE + g.out + m - g.start;
  if (GATED) { v *= toward[at]; }
  if (ACCUMULATE) { v += out[at]; }
  if (LERP) { v = out[at] + (toward[at] - out[at]) * v; }
  out[at] = v;
}

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(workgroup_id) group: vec3<u32>) {
  let t0 = group.y * TILE_T;  // this workgroup's first token (the workgroup is one row of WG invocations)
  let n = tokens();
  if (t0 >= n) { return; }  // uniform per workgroup: the barriers below stay in uniform control flow
  let tiles = min(TILE_T, n - t0);
  if (!ROW_MAJOR) {
    let m4 = id.x;
    if (m4 >= M_PAD / 4u) { return; }
    let g = group_of(m4 * 4u);
    let stride = (min(g.next, M_PAD) - g.start) / 4u;  // words from one k to the next in this group's block
    let first = g.start * (K / 4u) + m4 - g.start / 4u;  // this invocation's word at k = 0
    let end = min(g.next, M);  // the group's real rows end here
    if (TILE_T == 1u) {  // a decode step: one accumulator in registers, no array to zero
      var sum = vec4<f32>(0.0);
      for (var k4 = 0u; k4 < K / 4u; k4++) {  // four k per step: four vec4s of W, one vec4 of x
        let xs = x[x_row(t0, g) + k4];
        let w = first + k4 * 4u * stride;
        sum += weight4(w) * xs.x + weight4(w + stride) * xs.y + weight4(w + 2u * stride) * xs.z + weight4(w + 3u * stride) * xs.w;
      }
      for (var c = 0u; c < 4u; c++) {
        if (m4 * 4u + c < end) { finish(t0, m4 * 4u + c, sum[c], g); }
      }
      return;
    }
    var acc: array<vec4<f32>, MAX_TILE>;  // a prefill tile's sums (decode steps never zero this array)
    for (var k4 = 0u; k4 < K / 4u; k4++) {  // four k per step: four vec4s of W, one vec4 of x per token
      let w = first + k4 * 4u * stride;
      let w0 = weight4(w);
      let w1 = weight4(w + stride);
      let w2 = weight4(w + 2u * stride);
      let w3 = weight4(w + 3u * stride);
      for (var j = 0u; j < TILE_T; j++) {  // a constant bound, left early in a partial tile (a short prompt)
        if (j == tiles) { break; }
        let xs = x[x_row(t0 + j, g) + k4];
        acc[j] += w0 * xs.x + w1 * xs.y + w2 * xs.z + w3 * xs.w;
      }
    }
    for (var j = 0u; j < tiles; j++) {
      for (var c = 0u; c < 4u; c++) {
        if (m4 * 4u + c < end) { finish(t0 + j, m4 * 4u + c, acc[j][c], g); }
      }
    }
  } else if (ROW_THREADS == 1u) {
    let m = id.x;
    if (m >= M) { return; }
    let g = group_of(m);
    let row = m * (K / 4u);
    if (TILE_T == 1u) {  // a decode step: one accumulator in registers
      var sum = vec4<f32>(0.0);
      for (var k4 = 0u; k4 < K / 4u; k4++) { sum += weight4(row + k4) * x[x_row(t0, g) + k4]; }
      finish(t0, m, sum.x + sum.y + sum.z + sum.w, g);
      return;
    }
    var acc: array<vec4<f32>, MAX_TILE>;
    for (var k4 = 0u; k4 < K / 4u; k4++) {
      let w = weight4(row + k4);
      for (var j = 0u; j < TILE_T; j++) {
        if (j == tiles) { break; }
        acc[j] += w * x[x_row(t0 + j, g) + k4];
      }
    }
    for (var j = 0u; j < tiles; j++) { finish(t0 + j, m, acc[j].x + acc[j].y + acc[j].z + acc[j].w, g); }
  } else {  // TILE_T is 1: one token per workgroup row of the dispatch
    let m = group.x * (WG / ROW_THREADS) + lid.x / ROW_THREADS;
    let lane = lid.x % ROW_THREADS;
    let g = group_of(m);
    var sum = vec4<f32>(0.0);
    if (m < M) {
      for (var k4 = lane; k4 < K / 4u; k4 += ROW_THREADS) { sum += weight4(m * (K / 4u) + k4) * x[x_row(t0, g) + k4]; }
    }
    let total = row_total(sum.x + sum.y + sum.z + sum.w, lid.x, lane);  // a reduce prelude's: workgroup or subgroup
    if (lane == 0u && m < M) { finish(t0, m, total, g); }
  }
}
