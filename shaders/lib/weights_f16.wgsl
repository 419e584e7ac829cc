// Weight storage prelude, float16 packed in pairs into u32 (the file's bytes as they are):
// unpacked in-shader, so it runs on adapters without `shader-f16` (SwiftShader).
alias WeightWord = vec2<u32>;

fn weight4(i: u32) -> vec4<f32> {
  let pair = weight[i];
  return vec4<f32>(unpack2x16float(pair.x), unpack2x16float(pair.y));
}
