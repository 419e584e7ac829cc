// Weight storage prelude, blockwise NF4 (py/rwkvweb/quant.py): 4-bit codes, eight per word, then
// per block of 64 consecutive elements an f32 absmax. w = absmax · NF4[code].
alias WeightWord = u32;
override WEIGHT_ELEMENTS: u32;  // elements in this buffer: the block parameters follow their codes

// The NormalFloat4 levels (QLoRA, Dettmers et al. 2023), as in quant.py's NF4_LEVELS.
var<private> NF4: array<f32, 16> = array<f32, 16>(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

fn weight4(i: u32) -> vec4<f32> {
  let absmax = bitcast<f32>(weight[(WEIGHT_ELEMENTS + 7u) / 8u + i / 16u]);  // 16 groups of 4 per block
  let codes = weight[i / 2u] >> (16u * (i % 2u));
  return absmax * vec4<f32>(NF4[codes & 15u], NF4[(codes >> 4u) & 15u], NF4[(codes >> 8u) & 15u], NF4[(codes >> 12u) & 15u]);
}
