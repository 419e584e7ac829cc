// Weight storage prelude, blockwise int8 (py/rwkvweb/quant.py): the codes, four per word, then
// per block of 128 consecutive elements an f32 min and an f32 range. w = min + range · code/255,
// where unpack4x8unorm gives code/255 for four codes at once.
alias WeightWord = u32;
override WEIGHT_ELEMENTS: u32;  // elements in this buffer: the block parameters follow their codes

fn int8_block(i: u32) -> vec2<f32> {  // (min, range) of the block holding word i
  let params = (WEIGHT_ELEMENTS + 3u) / 4u + 2u * (i / 32u);  // 32 words of codes per 128-element block
  return vec2<f32>(bitcast<f32>(weight[params]), bitcast<f32>(weight[params + 1u]));
}

fn weight4(i: u32) -> vec4<f32> {
  let block = int8_block(i);
  return block.x + block.y * unpack4x8unorm(weight[i]);
}
