// Entry-point prelude of matvec.wgsl, `dp4a`: the rows-wg branch for int8 weights (lib/weights_int8.wgsl) against
// x quantized by quantize_x.wgsl, four codes × four codes per dot4I8Packed. Model.py's +dp4a; reference:
// numpy_exec.py `matvec_dp4a`. It lives in a prelude because dot4I8Packed needs the WGSL language feature
// packed_4x8_integer_dot_product: matvec.wgsl itself must compile without it. Per block b of 128 elements,
// with weight codes c (w = min + range·c/255) and x ≈ sx·q:
//   Σ w·x = min·Σx + range/255 · sx · Σ c·q,   Σ c·q = dot4I8Packed(c ^ 0x80808080, q) summed + 128·Σq
// (c ^ 0x80 is c − 128 as a signed byte); the integer part is exact (|·| < 2^24), Σx and Σq come from xq.
// `xq` aliases matvec.wgsl's `x` (binding 1): an entry point uses one or the other.
override XQ_SLICE: u32 = 0u;  // the slice of xq (quantize_x.wgsl) group 0 reads; then groups 1-3's
override XQ_SLICE1: u32 = 0u;
override XQ_SLICE2: u32 = 0u;
override XQ_SLICE3: u32 = 0u;
const FLIP = 0x80808080u;

@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;  // [slices, T_PAD, K/16 + K/128]: quantize_x.wgsl

fn xq_slice(m: u32) -> u32 {
  if (m >= START3) { return XQ_SLICE3; }
  if (m >= START2) { return XQ_SLICE2; }
  if (m >= START1) { return XQ_SLICE1; }
  return XQ_SLICE;
}

// This lane's share of row m's dot product with token t: quads of words lane, lane + ROW_THREADS, …
fn dp4a_partial(m: u32, t: u32, lane: u32) -> f32 {
  let xrow = (xq_slice(m) * T_PAD + t) * (K / 16u + K / 128u);
  var sum = 0.0;
  for (var k16 = lane; k16 < K / 16u; k16 += ROW_THREADS) {  // 16 elements a step, 8 steps a block
    let w = m * (K / 4u) + 4u * k16;
    let q = xq[xrow + k16];
    let d = dot4I8Packed(weight[w] ^ FLIP, q.x) + dot4I8Packed(weight[w + 1u] ^ FLIP, q.y)
          + dot4I8Packed(weight[w + 2u] ^ FLIP, q.z) + dot4I8Packed(weight[w + 3u] ^ FLIP, q.w);
    let block = int8_block(w);
    let xs = bitcast<vec4<f32>>(xq[xrow + K / 16u + k16 / 8u]);  // (sx, Σx, Σq, 0)
    var ints = f32(d);
    var base = 0.0;
    if (k16 % 8u == 0u) {  // the block's first step adds its per-block terms
      ints += 128.0 * xs.z;
      base = block.x * xs.y;
    }
    sum += base + block.y * (1.0 / 255.0) * xs.x * ints;
  }
  return sum;
}

@compute @workgroup_size(WG)
fn dp4a(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) group: vec3<u32>) {
  let t = group.y;  // TILE_T is 1: one token per workgroup row of the dispatch
  if (t >= tokens()) { return; }  // uniform per workgroup: row_total's barriers stay in uniform control flow
  let m = group.x * (WG / ROW_THREADS) + lid.x / ROW_THREADS;
  let lane = lid.x % ROW_THREADS;
  var sum = 0.0;
  if (m < M) { sum = dp4a_partial(m, t, lane); }
  let total = row_total(sum, lid.x, lane);
  if (lane == 0u && m < M) { finish(t, m, total, group_of(m)); }
}
