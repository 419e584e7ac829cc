// Weight storage prelude, float16 read natively as vec4<f16> (needs lib/enable_f16.wgsl first and the
// WebGPU feature "shader-f16"): the same bytes as lib/weights_f16.wgsl, without unpack2x16float.
// weight4 widens to f32 and the kernels accumulate in f32: an f16 sum of K = 768-3072 products would carry
// 11-bit mantissas (rounding error ~K·2^-11 of the output scale, far outside the 1e-5 kernel bound and
// enough to move logits), while each f16 weight is exact in f32 — so the result equals the unpacked path's.
alias WeightWord = vec4<f16>;

fn weight4(i: u32) -> vec4<f32> {
  return vec4<f32>(weight[i]);
}
