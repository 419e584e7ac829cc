// Weight storage prelude, float32: four consecutive elements per word.
// A kernel that reads weights through `weight4(i)` (elements 4i..4i+3) is compiled once per prelude,
// so the same kernel body serves every storage dtype.
alias WeightWord = vec4<f32>;

fn weight4(i: u32) -> vec4<f32> {
  return weight[i];
}
