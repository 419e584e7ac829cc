// Row-sum prelude for matvec.wgsl's rows-wg branch (ROW_THREADS invocations per row): a log-step tree in
// workgroup memory (`partial`, declared by the kernel), one barrier per step. Works on every adapter.
// row_total(value, lid, lane): the sum of `value` over the row's ROW_THREADS lanes, valid in lane 0;
// every invocation of the workgroup must call it (it holds barriers).
fn row_total(value: f32, lid: u32, lane: u32) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = ROW_THREADS / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  return partial[lid];
}
