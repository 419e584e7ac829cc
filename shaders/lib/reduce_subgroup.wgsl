// Row-sum prelude for matvec.wgsl's rows-wg branch on adapters with `subgroups` (needs
// lib/enable_subgroups.wgsl first): subgroupAdd within each subgroup, then one barrier and the row's
// lane 0 adds one sum per subgroup from workgroup memory, instead of log2(ROW_THREADS) barriers.
// Subgroups of a one-dimensional workgroup are taken to be runs of consecutive local indices, aligned
// to their (power-of-two) size: what Vulkan, D3D12 and Metal drivers do (SwiftShader's are 4 wide,
// lavapipe's 8, GPUs' 16-64); tests/test_kernels.py checks the sums on both CPU adapters here.
// row_total(value, lid, lane): as lib/reduce_workgroup.wgsl's, valid in lane 0; every invocation calls it.
fn row_total(value: f32, lid: u32, lane: u32) -> f32 {
  let size = subgroupAdd(1u);  // this subgroup's width (nothing has returned: all its invocations are here)
  var sum = subgroupAdd(value);  // a subgroup no wider than a row: the sum of its run of the row
  if (size > ROW_THREADS) {  // a subgroup holding several rows (64-wide waves): butterflies within each row
    sum = value;
    for (var mask = ROW_THREADS / 2u; mask > 0u; mask /= 2u) { sum += subgroupShuffleXor(sum, mask); }
  }
  partial[lid] = sum;
  workgroupBarrier();
  var total = 0.0;
  if (lane == 0u) {
    let run = min(size, ROW_THREADS);  // lanes of this row per subgroup: one sum every `run` slots
    for (var j = 0u; j < ROW_THREADS; j += run) { total += partial[lid + j]; }
  }
  return total;
}
