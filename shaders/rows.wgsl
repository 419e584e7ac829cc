// Picking and pooling the rows of a chunk: the prefill's hand-over to the head, and embed()'s pooling.
//   last: out = x[n − 1]               the last real token (the one whose logits are wanted)
//   sum:  out += Σ_{t < n} x[t]         a running sum over chunks: the engine divides for mean pooling
// n = count[0], the chunk's real tokens. One invocation per channel.
override C: u32;
override T_PAD: u32;
override WG: u32 = 64;

@group(0) @binding(0) var<storage, read> x: array<f32>;           // [T_PAD, C]
@group(0) @binding(1) var<storage, read> count: array<u32>;       // [1]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // [C]

@compute @workgroup_size(WG)
fn last(@builtin(global_invocation_id) id: vec3<u32>) {
  let c = id.x;
  if (c >= C) { return; }
  let n = clamp(count[0], 1u, T_PAD);
  out[c] = x[(n - 1u) * C + c];
}

@compute @workgroup_size(WG)
fn sum(@builtin(global_invocation_id) id: vec3<u32>) {
  let c = id.x;
  if (c >= C) { return; }
  let n = min(count[0], T_PAD);
  var total = out[c];
  for (var t = 0u; t < n; t++) { total += x[t * C + c]; }
  out[c] = total;
}
