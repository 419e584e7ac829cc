// out[t] = table[token[t]] : gather the chunk's embedding rows (reference: `w["emb.weight"][token]`).
// Needs a weight prelude (lib/weights_*.wgsl) for `weight4`; one invocation per 4 channels of a token.
// A table larger than one binding is split by rows: each part's dispatch holds rows
// [ROW_START, ROW_START + ROWS) and writes only the tokens that fall in them.
override C: u32;
override ROW_START: u32 = 0;
override ROWS: u32;
override WG: u32 = 64;
override T_PAD: u32 = 1;  // tokens in the chunk (rows past the chunk's count gather stale ids: never read)

@group(0) @binding(0) var<storage, read> weight: array<WeightWord>;  // [ROWS*C/4] this part of the table
@group(0) @binding(1) var<storage, read> token: array<u32>;         // [T_PAD]
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>; // [T_PAD, C/4]

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  let c4 = id.x;
  let t = id.y;
  if (c4 >= C / 4u || t >= T_PAD) { return; }
  let row = token[t];
  if (row < ROW_START || row >= ROW_START + ROWS) { return; }
  out[t * (C / 4u) + c4] = weight4((row - ROW_START) * (C / 4u) + c4);
}
