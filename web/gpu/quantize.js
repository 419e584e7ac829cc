// Blockwise quantization of weights as they stream in: the formats of py/rwkvweb/quant.py,
// which is the oracle (its numpy code does these same float64 operations, so codes agree bit
// for bit). quantize(values: Float32Array, scheme, scratch?) -> {codes: Uint8Array, params:
// Float32Array}, both padded to whole 4-byte words, in the scratch's reusable memory if given
// (bridge.js's Scratch); blocks are runs of consecutive elements from values[0].

const NF4_LEVELS = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];
const NF4_MIDPOINTS = NF4_LEVELS.slice(1).map((level, i) => (NF4_LEVELS[i] + level) / 2);
// A value's NF4 code is how many midpoints lie below it. To find it in one comparison, [-1, 1]
// is cut into 2048 cells, narrower than any gap between midpoints (>= 0.08), and each cell
// knows how many midpoints fall in earlier cells: cell() is monotonic, so those are exactly
// the midpoints below any value in the cell but one, which the comparison decides.
const CELLS = 2048;
const cell = (v) => Math.min(CELLS, Math.max(0, Math.floor((v + 1) * (CELLS / 2))));
const CELL_CODES = Uint8Array.from({ length: CELLS + 1 }, (_, c) => NF4_MIDPOINTS.filter((m) => cell(m) < c).length);

export const SCHEMES = { int8: { block: 128, bits: 8, paramBytes: 8 }, nf4: { block: 64, bits: 4, paramBytes: 4 } };

export function quantize(values, scheme, scratch = null) {
  const take = (name, Type, length) => {
    const array = scratch ? new Type(scratch.take(name, length * Type.BYTES_PER_ELEMENT), 0, length) : new Type(length);
    return array.fill(0);
  };
  if (scheme === "int8") return quantizeInt8(values, take);
  if (scheme === "nf4") return quantizeNF4(values, take);
  throw new Error(`unknown quantization scheme ${JSON.stringify(scheme)}`);
}

const wordBytes = (n) => Math.ceil(n / 4) * 4;

function quantizeInt8(values, take) {
  const block = SCHEMES.int8.block;
  const blocks = Math.ceil(values.length / block);
  const codes = take("codes", Uint8Array, wordBytes(values.length));
  const params = take("params", Float32Array, 2 * blocks); // min, range per block
  for (let b = 0; b < blocks; b++) {
    const first = b * block;
    const last = Math.min(first + block, values.length);
    let low = Infinity;
    let high = -Infinity;
    for (let i = first; i < last; i++) { low = Math.min(low, values[i]); high = Math.max(high, values[i]); }
    const spread = Math.fround(high - low);
    params[2 * b] = low;
    params[2 * b + 1] = spread;
    if (!(spread > 0)) continue; // a constant block: every code 0
    for (let i = first; i < last; i++) {
      codes[i] = Math.min(255, Math.max(0, Math.floor((values[i] - low) / spread * 255 + 0.5)));
    }
  }
  return { codes, params };
}

function quantizeNF4(values, take) {
  const block = SCHEMES.nf4.block;
  const blocks = Math.ceil(values.length / block);
  const codes = take("codes", Uint8Array, wordBytes(Math.ceil(values.length / 2)));
  const params = take("params", Float32Array, blocks); // absmax per block
  for (let b = 0; b < blocks; b++) {
    const first = b * block;
    const last = Math.min(first + block, values.length);
    let absmax = 0;
    for (let i = first; i < last; i++) absmax = Math.max(absmax, Math.abs(values[i]));
    absmax = Math.fround(absmax);
    params[b] = absmax;
    const scale = absmax > 0 ? absmax : 1;
    for (let i = first; i < last; i++) {
      const v = values[i] / scale;
      let code = CELL_CODES[cell(v)]; // the midpoints below v's cell; at most one more lies in it
      if (code < 15 && NF4_MIDPOINTS[code] < v) code++;
      codes[i >> 1] |= code << (4 * (i & 1));
    }
  }
  return { codes, params };
}
