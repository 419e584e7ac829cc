// Choose the next token from the logits on the GPU, so only 4 bytes come back per token.
//   1. penalties for tokens already generated (counts): repetition (divide positive logits by r,
//      multiply negative ones), presence (−α once seen), frequency (−β·count);
//   2. temperature ≤ 0 or top_k = 1: greedy, the first index of the maximum (numpy's argmax);
//   3. otherwise p_i ∝ exp((l_i − max) / T); keep p_i ≥ max(t_k, t_p), where t_k is the k-th largest
//      p (top-k; 0 disables) and t_p the largest threshold whose kept mass still reaches top_p of the
//      total (top-p), both found by bisection on log p: no sort;
//   4. draw u = PCG(seed, step) in [0, 1) and walk the kept mass to u·Σkept.
// Then counts[token] += 1 and params.step += 1, so the next call continues the same stream.
// A NaN or infinite logit (a damaged model) gives token NOT_FINITE instead, and no count: the engine
// reports it rather than sampling from garbage.
// One workgroup of WG invocations (a power of two); reductions go through workgroup memory.
override V: u32;        // vocabulary size
override WG: u32 = 256;

struct Params {
  temperature: f32,
  top_p: f32,
  top_k: u32,
  presence: f32,
  frequency: f32,
  repetition: f32,
  seed: u32,
  step: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;        // [V]
@group(0) @binding(1) var<storage, read_write> counts: array<u32>;  // [V] times each token was generated
@group(0) @binding(2) var<storage, read_write> params: Params;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;   // [V] scratch: unnormalised probabilities
@group(0) @binding(4) var<storage, read_write> token: array<u32>;   // [1] the choice

var<workgroup> shared_value: array<f32, WG>;
var<workgroup> shared_index: array<u32, WG>;
var<workgroup> settings: Params;
var<workgroup> chosen: u32;
var<workgroup> not_finite: atomic<u32>;  // set by any invocation that meets a NaN or ±inf logit
const NOT_FINITE = 0xffffffffu;

fn adjusted(i: u32) -> f32 {
  var l = logits[i];
  let seen = counts[i];
  if (seen > 0u) {
    l = select(l * settings.repetition, l / settings.repetition, l > 0.0);
    l -= settings.presence + settings.frequency * f32(seen);
  }
  return l;
}

fn sum_all(lid: u32, value: f32) -> f32 {
  shared_value[lid] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { shared_value[lid] += shared_value[lid + stride]; }
    workgroupBarrier();
  }
  let total = shared_value[0];
  workgroupBarrier();
  return total;
}

// (max, first index of the max) over all invocations.
fn argmax_all(lid: u32, value: f32, index: u32) -> u32 {
  shared_value[lid] = value;
  shared_index[lid] = index;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let v = shared_value[lid + stride];
      let j = shared_index[lid + stride];
      if (v > shared_value[lid] || (v == shared_value[lid] && j < shared_index[lid])) {
        shared_value[lid] = v;
        shared_index[lid] = j;
      }
    }
    workgroupBarrier();
  }
  let best = shared_index[0];
  workgroupBarrier();
  return best;
}

// Kept count (or mass, when `mass`) of probabilities ≥ threshold.
fn kept(lid: u32, threshold: f32, mass: bool) -> f32 {
  var total = 0.0;
  for (var i = lid; i < V; i += WG) {
    let p = probs[i];
    if (p >= threshold) { total += select(1.0, p, mass); }
  }
  return sum_all(lid, total);
}

fn pcg(value: u32) -> u32 {
  let state = value * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) local: vec3<u32>) {
  let lid = local.x;
  if (lid == 0u) {
    settings = params;
    atomicStore(&not_finite, 0u);  // explicitly: not every native backend zero-fills workgroup memory
  }
  let temperature = workgroupUniformLoad(&settings.temperature);  // (a barrier: the stores above are visible)
  let top_k = workgroupUniformLoad(&settings.top_k);
  let top_p = workgroupUniformLoad(&settings.top_p);

  var best = -3.4e38;
  var best_index = 0u;
  for (var i = lid; i < V; i += WG) {
    let l = adjusted(i);
    if ((bitcast<u32>(l) & 0x7f800000u) == 0x7f800000u) { atomicOr(&not_finite, 1u); }  // exponent all ones
    if (l > best) { best = l; best_index = i; }
  }
  let greedy = argmax_all(lid, best, best_index);  // its barriers also publish not_finite
  if (lid == 0u) { chosen = greedy; }

  if (temperature > 0.0 && top_k != 1u) {
    let top = adjusted(greedy);  // every invocation reads the same logit: the maximum
    var total = 0.0;
    for (var i = lid; i < V; i += WG) {
      let p = exp((adjusted(i) - top) / temperature);
      probs[i] = p;
      total += p;
    }
    storageBarrier();  // probs written in a strided pattern are read in chunks below
    total = sum_all(lid, total);

    // Bisection in log-probability, over [-88, 0]: exp(-88) is float32's smallest normal, and
    // 30 halvings resolve thresholds to ~1e-7 relative, float32's own precision.
    var log_cut = -88.0;
    if (top_k > 1u && top_k < V) {  // largest cut with at least k probabilities above it
      var high = 0.0;
      for (var halving = 0; halving < 30; halving++) {
        let mid = 0.5 * (log_cut + high);
        if (kept(lid, exp(mid), false) >= f32(top_k)) { log_cut = mid; } else { high = mid; }
      }
    }
    if (top_p < 1.0) {  // largest cut whose kept mass still reaches top_p of the total
      var high = 0.0;
      for (var halving = 0; halving < 30; halving++) {
        let mid = 0.5 * (log_cut + high);
        if (kept(lid, exp(mid), true) >= top_p * total) { log_cut = mid; } else { high = mid; }
      }
    }
    let threshold = exp(log_cut);

    // The draw: each invocation sums a contiguous chunk; invocation 0 finds the chunk, then the token.
    let chunk = (V + WG - 1u) / WG;
    var part = 0.0;
    for (var i = lid * chunk; i < min(V, (lid + 1u) * chunk); i++) {
      if (probs[i] >= threshold) { part += probs[i]; }
    }
    shared_value[lid] = part;
    workgroupBarrier();
    if (lid == 0u) {
      var mass = 0.0;
      for (var t = 0u; t < WG; t++) { mass += shared_value[t]; }
      let u = f32(pcg(settings.seed ^ pcg(settings.step)) >> 8u) / 16777216.0;
      var remaining = u * mass;
      var c = 0u;
      while (c + 1u < WG && remaining >= shared_value[c]) { remaining -= shared_value[c]; c++; }
      for (var i = c * chunk; i < min(V, (c + 1u) * chunk); i++) {
        let p = probs[i];
        if (p >= threshold) {
          chosen = i;  // the last kept token of the chunk if rounding leaves some mass unspent
          if (remaining < p) { break; }
          remaining -= p;
        }
      }
    }
  }
  workgroupBarrier();
  if (lid == 0u) {
    if (atomicLoad(&not_finite) != 0u) {
      token[0] = NOT_FINITE;
    } else {
      token[0] = chosen;
      counts[chosen] += 1u;
    }
    params.step = settings.step + 1u;
  }
}
