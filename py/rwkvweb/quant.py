"""Blockwise weight quantization: the storage formats, their sizes, and the numpy reference.

A quantized weight buffer holds the elements of the stored matrix in their flat order, cut
into blocks of consecutive elements; the codes come first, then one parameter record per block:

  int8  block 128   codes: 1 byte each (4 per u32 word)     params: f32 min, f32 range
        w = min + range · code / 255              (code = round((w − min) / range · 255))
  nf4   block 64    codes: 4 bits each (8 per u32 word)     params: f32 absmax
        w = absmax · NF4[code]                    (code = the nearest NF4 level to w / absmax)

Sizes are padded to whole 4-byte words. The loader quantizes in JavaScript as the weights
stream in (web/gpu/quantize.js), the shaders dequantize in-register (shaders/lib/weights_*.wgsl),
and this module is the oracle both are tested against: `quantize` here computes in float64 with
exactly the operations of the JavaScript (doubles there too), so the codes agree bit for bit.

Files can also hold matrices quantized ahead of time (build/quantize.py): the codes as a U8
tensor under the matrix's own name, [M, K·bits/8], the block parameters as an F32 tensor
`<name>.qparams`, and the metadata key `rwkvweb.quantized` = JSON {name: scheme}. They load by
plain copies: smaller downloads, and no quantizing in the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from .safetensors import FormatError, TensorInfo, parse_json

# The 16 NormalFloat4 levels: quantiles of a standard normal scaled to [-1, 1], with an exact
# zero (Dettmers et al., "QLoRA", 2023, appendix E). web/gpu/quantize.js and weights_nf4.wgsl
# carry the same numbers.
NF4_LEVELS = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
# A value's code is how many of these midpoints lie below it (ties go to the lower level).
NF4_MIDPOINTS = tuple((a + b) / 2 for a, b in zip(NF4_LEVELS, NF4_LEVELS[1:]))


@dataclass(frozen=True)
class Scheme:
    name: str
    block: int  # elements per block
    bits: int  # per code
    param_bytes: int  # per block

    def code_bytes(self, n: int) -> int:
        return _words(n * self.bits // 8 + (1 if n * self.bits % 8 else 0))

    def param_offset(self, n: int) -> int:
        """Where the block parameters start in a buffer of n elements."""
        return self.code_bytes(n)

    def stored_bytes(self, n: int) -> int:
        return self.code_bytes(n) + -(-n // self.block) * self.param_bytes


SCHEMES = {"int8": Scheme("int8", 128, 8, 8), "nf4": Scheme("nf4", 64, 4, 4)}


def _words(nbytes: int) -> int:
    return -(-nbytes // 4) * 4


def quantize(values, scheme: str) -> tuple[bytes, bytes]:
    """(codes, params) for a flat float32 array, as the loader writes them."""
    import numpy as np

    # NaN/Inf weights (a damaged file) give NaN parameters, as in the JavaScript; the logits check
    # (api.check_finite) reports them, so numpy's warnings would only be noise on stderr.
    with np.errstate(invalid="ignore", over="ignore"):
        return _quantize(np, values, scheme)


def _quantize(np, values, scheme: str) -> tuple[bytes, bytes]:
    s = SCHEMES[scheme]
    x = np.asarray(values, np.float32).astype(np.float64)
    n = x.size
    blocks = -(-n // s.block)
    padded = np.zeros(blocks * s.block)
    padded[:n] = x
    # a partial last block takes its parameters from its real elements only
    real = np.arange(blocks * s.block).reshape(blocks, s.block) < n
    grid = padded.reshape(blocks, s.block)
    if scheme == "int8":
        low = np.where(real, grid, np.inf).min(axis=1).astype(np.float32).astype(np.float64)
        high = np.where(real, grid, -np.inf).max(axis=1)
        spread = (high - low).astype(np.float32).astype(np.float64)
        safe = np.where(spread > 0, spread, 1.0)
        codes = np.where(spread[:, None] > 0, np.floor((grid - low[:, None]) / safe[:, None] * 255 + 0.5), 0)
        codes = np.clip(codes, 0, 255).astype(np.uint8).reshape(-1)[:n]
        params = np.stack([low, spread], axis=1).astype(np.float32)
        return _pad(codes.tobytes()), params.tobytes()
    absmax = np.abs(np.where(real, grid, 0)).max(axis=1).astype(np.float32).astype(np.float64)
    safe = np.where(absmax > 0, absmax, 1.0)
    codes = np.searchsorted(np.array(NF4_MIDPOINTS), grid / safe[:, None], side="left").astype(np.uint8).reshape(-1)[:n]
    if n % 2:
        codes = np.append(codes, np.uint8(0))
    packed = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    return _pad(packed.tobytes()), absmax.astype(np.float32).tobytes()


def quantize_columns(values, rows: int, cols: int, scheme: str):
    """A row-major [rows, cols] chunk of a matrix stored k-major: its columns (each `rows` long), each
    edge-padded to whole blocks (the padding repeats the column's last value, so every block's parameters
    come from its real values alone, as a partial block's do in `quantize`) and quantized so that no
    block straddles two columns. (codes [cols, per column] uint8, params [cols, per column] uint8):
    row k goes to the codes and params of elements k·padded_rows + first_row of the stored matrix."""
    import numpy as np

    block = SCHEMES[scheme].block
    columns = np.asarray(values, np.float32).reshape(rows, cols).T
    padded = np.concatenate([columns, np.repeat(columns[:, -1:], -rows % block, axis=1)], axis=1)
    codes, params = quantize(padded.reshape(-1), scheme)
    as_rows = lambda data: np.frombuffer(data, np.uint8).reshape(cols, -1)  # noqa: E731 - whole blocks per column
    return as_rows(codes), as_rows(params)


def _pad(data: bytes) -> bytes:
    return data + bytes(_words(len(data)) - len(data))


def dequantize(buffer, scheme: str, n: int):
    """The n float32 weights a quantized buffer (codes then params) stands for: the shaders' maths."""
    import numpy as np

    s = SCHEMES[scheme]
    raw = np.frombuffer(bytes(buffer), np.uint8)
    params = raw[s.param_offset(n) : s.stored_bytes(n)].view(np.float32).astype(np.float64)
    block = np.arange(n) // s.block
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf parameters: see quantize
        if scheme == "int8":
            low, spread = params[0::2], params[1::2]
            codes = raw[:n].astype(np.float64)
            return (low[block] + spread[block] * (codes / 255)).astype(np.float32)
        nibbles = np.stack([raw[: -(-n // 2)] & 15, raw[: -(-n // 2)] >> 4], axis=1).reshape(-1)[:n]
        return (params[block] * np.array(NF4_LEVELS)[nibbles]).astype(np.float32)


QUANTIZED_KEY = "rwkvweb.quantized"  # metadata: JSON {matrix name: "int8" | "nf4"}
PARAMS_SUFFIX = ".qparams"


@dataclass(frozen=True)
class QuantizedInfo(TensorInfo):
    """A pre-quantized matrix: dtype is the scheme, shape the logical [M, K], start..end its
    codes (M·K·bits/8 bytes, row-major), params_start..params_end its block parameters."""

    params_start: int = 0
    params_end: int = 0


def fold_quantized(tensors: dict[str, TensorInfo], metadata: dict[str, str]) -> dict[str, TensorInfo]:
    """The file's tensors with each pre-quantized matrix (codes + .qparams) as one QuantizedInfo."""
    if QUANTIZED_KEY not in metadata:
        return tensors
    try:
        schemes = parse_json(metadata[QUANTIZED_KEY], f"metadata {QUANTIZED_KEY}")
    except FormatError as error:
        raise FormatError(f"metadata {QUANTIZED_KEY} must be a JSON object {{tensor: scheme}}: {error}") from None
    if not isinstance(schemes, dict):
        raise FormatError(
            f"metadata {QUANTIZED_KEY} must be a JSON object {{tensor: scheme}}, got {type(schemes).__name__}"
        )
    folded = dict(tensors)
    for name, scheme_name in schemes.items():
        label = repr(name) if len(name) <= 100 else repr(name[:100]) + "..."  # names here come from the file
        if not isinstance(scheme_name, str) or scheme_name not in SCHEMES:
            raise FormatError(
                f"tensor {label}: unknown quantization scheme {str(scheme_name)[:40]!r} in metadata {QUANTIZED_KEY} "
                f"(known: {', '.join(SCHEMES)})"
            )
        scheme, codes, params = SCHEMES[scheme_name], tensors.get(name), tensors.get(name + PARAMS_SUFFIX)
        if codes is None or params is None:
            missing = (
                label if codes is None else repr(name + PARAMS_SUFFIX) if len(name) <= 100 else "its " + PARAMS_SUFFIX
            )
            raise FormatError(f"tensor {label} is declared {scheme_name} but the file lacks {missing}")
        if codes.dtype != "U8" or len(codes.shape) != 2:
            raise FormatError(
                f"tensor {label}: {scheme_name} codes must be U8 [rows, cols], got {codes.dtype} {list(codes.shape)}"
            )
        rows, K = codes.shape[0], codes.shape[1] * 8 // scheme.bits
        blocks = -(-rows * K // scheme.block)
        if params.dtype != "F32" or params.numel != blocks * scheme.param_bytes // 4:
            raise FormatError(
                f"tensor {name + PARAMS_SUFFIX!r}: {scheme_name} needs {blocks * scheme.param_bytes // 4} F32 "
                f"block parameters for [{rows}, {K}], got {params.dtype} {list(params.shape)}"
            )
        folded.pop(name + PARAMS_SUFFIX, None)
        folded[name] = QuantizedInfo(name, scheme_name, (rows, K), codes.start, codes.end, params.start, params.end)
    return folded


def read_dequantized(read, info: QuantizedInfo):
    """A pre-quantized matrix as float32 [M, K]; read(start, end) gives the file's bytes."""
    n = info.numel
    codes = read(info.start, info.end)
    buffer = codes + bytes(SCHEMES[info.dtype].code_bytes(n) - len(codes)) + read(info.params_start, info.params_end)
    return dequantize(buffer, info.dtype, n).reshape(info.shape)
