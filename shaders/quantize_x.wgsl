// xq = x quantized per token per block of 128 along K to signed int8, for the matvec's packed dot products
// (lib/matvec_dp4a.wgsl, model.py's +dp4a). Reference: numpy_exec.py `quantize_x`, which computes the same
// codes bit for bit: every operation that decides a code is exact in f32 (see `code` below).
// Per block: sx = amax·f32(1/127) with its mantissa cut to 16 bits, q = round-half-even(x / sx) in [-127, 127]
// (amax / sx ≤ 127.004: never clamped), so |x − sx·q| ≤ sx/2; also Σx (f32) and Σq (exact in f32: |Σq| ≤ 16256).
// Several slices of x (a grouped matvec's parts, each from its own X_OFFSET) go into slices of xq: slice s,
// token t holds K/16 vec4s of codes (16 per vec4, word j = elements 4j..4j+3, first in the low byte: pack4xI8),
// then K/128 vec4s (sx, Σx, Σq, 0) as f32 bits; (s·T_PAD + t)·XQ_ROW vec4s from the start.
// Needs the WGSL language feature packed_4x8_integer_dot_product (pack4xI8). Not reproduced bit for bit: a block
// whose largest magnitude is below ~1e-36 (sx subnormal, which GPUs may flush); a NaN in x reaches Σx, so the
// matvec's min·Σx makes that output NaN, as the float path would.
override K: u32;                  // a multiple of 128
override X_STRIDE: u32 = K;       // floats from one token's row of x to the next, a multiple of 4
override X_OFFSET: u32 = 0u;      // slice 0's first float in a row of x, a multiple of 4; then slices 1-3's
override X_OFFSET1: u32 = 0u;
override X_OFFSET2: u32 = 0u;
override X_OFFSET3: u32 = 0u;
override T_PAD: u32 = 1u;         // token rows
override COUNTED: bool = false;   // only the first count[0] tokens are real (a prefill's last chunk)
const LANES = 32u;                // one vec4 of x each: 128 elements per workgroup
const INV127 = 0x3c010204u;       // the bits of f32(1/127) (a literal's rounding is up to the compiler)
const MANTISSA16 = 0xFFFFFF00u;   // keeps 16 significant bits: q·sx is then exact in f32 (8 + 16 bits)

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;         // [T_PAD, X_STRIDE/4]
@group(0) @binding(1) var<storage, read> count: array<u32>;           // [1] (unread unless COUNTED)
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;  // [slices, T_PAD, K/4 + K/32] words

var<workgroup> amax: array<f32, LANES>;
var<workgroup> sums: array<vec2<f32>, LANES>;  // (Σx, Σq) partial sums

fn x_offset(slice: u32) -> u32 {
  switch slice {
    case 1u: { return X_OFFSET1; }
    case 2u: { return X_OFFSET2; }
    case 3u: { return X_OFFSET3; }
    default: { return X_OFFSET; }
  }
}

// round-half-even(v / sx) exactly, whatever the accuracy of 1/sx: a first guess, then the residual
// v − q·sx, which is exact (q·sx has 24 bits; v and q·sx lie within a factor 2 of each other near a
// rounding boundary), decides between the guess and its neighbours.
fn code(v: f32, sx: f32) -> i32 {
  var q = round(v * (1.0 / sx));
  let r = 2.0 * (v - q * sx);
  if (r > sx) { q += 1.0; } else if (r < -sx) { q -= 1.0; }
  else if (abs(r) == sx && q % 2.0 != 0.0) { q += sign(r); }  // a tie goes to the even neighbour
  return i32(clamp(q, -127.0, 127.0));
}

@compute @workgroup_size(LANES)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let block = wid.x;
  let t = wid.y;
  let slice = wid.z;
  if (COUNTED && t >= min(count[0], T_PAD)) { return; }  // uniform per workgroup
  let lane = lid.x;
  let v = x[(t * X_STRIDE + x_offset(slice)) / 4u + block * LANES + lane];
  amax[lane] = max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w)));
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { amax[lane] = max(amax[lane], amax[lane + stride]); }
    workgroupBarrier();
  }
  let sx = bitcast<f32>(bitcast<u32>(amax[0] * bitcast<f32>(INV127)) & MANTISSA16);
  var q = vec4<i32>(0);
  if (sx > 0.0) { q = vec4<i32>(code(v.x, sx), code(v.y, sx), code(v.z, sx), code(v.w, sx)); }
  let row = (slice * T_PAD + t) * (K / 4u + K / 32u);  // this token's first word
  xq[row + block * LANES + lane] = pack4xI8(q);
  sums[lane] = vec2<f32>(v.x + v.y + v.z + v.w, f32(q.x + q.y + q.z + q.w));
  workgroupBarrier();
  for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { sums[lane] += sums[lane + stride]; }
    workgroupBarrier();
  }
  if (lane == 0u) {
    let at = row + K / 4u + 4u * block;
    xq[at] = bitcast<u32>(sx);
    xq[at + 1u] = bitcast<u32>(sums[0].x);
    xq[at + 2u] = bitcast<u32>(sums[0].y);
    xq[at + 3u] = 0u;
  }
}
