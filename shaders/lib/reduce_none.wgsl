// Row-sum prelude for matvec.wgsl's layouts with one invocation per row or column (ROW_THREADS = 1): nothing to
// reduce, and no barrier in the shader.
fn row_total(value: f32, lid: u32, lane: u32) -> f32 {
  return value;
}
