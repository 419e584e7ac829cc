"""The safetensors format: parse and validate the header, read tensors by range, write files.

Layout (https://github.com/huggingface/safetensors):
    8 bytes    little-endian u64 N, the length of the JSON header
    N bytes    JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
    the rest   the data section; offsets are relative to its start

Parsing needs only the first 8 + N bytes and no numpy, so it runs the same in
Pyodide. Every offset is checked against the file size before anything is
read, so a malformed file gives a `FormatError` naming the tensor, never a
crash or a huge allocation.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

from .source import ByteSource, open_source

# dtype name -> bytes per element. numpy names are kept beside them for the readers that have numpy.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}

# A header larger than this is not a model header but a corrupt length field: the largest RWKV-7
# checkpoints' headers are under 1 MB (about 45 tensors a layer, ~100 bytes each). 16 MiB also bounds
# the JSON checks' time on a hostile header (a few seconds at worst; safetensors' own cap is 100 MB).
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 8  # a header nests 3 deep ({name: {"shape": [...]}}); metadata values 1-2
MAX_NAME = 1000  # characters: official names are under 40; a longer one is garbage, kept out of messages


class FormatError(ValueError):
    """The file is not a valid safetensors file; the message says where and why."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, e.g. "F16"
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int  # absolute, exclusive

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def header_length(prefix: bytes, file_size: int) -> int:
    """The JSON header's length from the first 8 bytes, checked against the file size."""
    if file_size < 8 or len(prefix) < 8:
        raise FormatError(f"file is {file_size} bytes: too short to be safetensors (needs an 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > file_size - 8:
        raise FormatError(
            f"header length field says {length} bytes but the file has only {file_size - 8} after it "
            f"(truncated or not safetensors)"
        )
    if length > MAX_HEADER_BYTES:
        raise FormatError(f"header length {length} is over the {MAX_HEADER_BYTES}-byte limit (corrupt file?)")
    return length


def parse_header(header_json: bytes, file_size: int) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate the JSON header; return (tensors by name in file order, metadata)."""
    data_start = 8 + len(header_json)
    data_size = file_size - data_start
    header = parse_json(header_json, "header")
    if not isinstance(header, dict):
        raise FormatError("header JSON must be an object of tensors")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError("__metadata__ must map strings to strings")
    tensors = {name: _tensor_info(name, entry, data_start, data_size) for name, entry in header.items()}
    _check_coverage(tensors.values(), data_start, data_size)
    return tensors, metadata


def parse_json(text: bytes | str, what: str):
    """JSON from an untrusted file: any failure (bad UTF-8, syntax, deep nesting, integers past
    Python's 4300-digit conversion limit) is a FormatError."""
    try:
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        if _nested_deeper_than(text, MAX_JSON_DEPTH):
            raise RecursionError
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"{what} is not valid UTF-8 JSON: {error}") from None
    except RecursionError:
        raise FormatError(
            f"{what} JSON is nested too deeply (or its brackets do not match) to be a safetensors header"
        ) from None
    except ValueError as error:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise FormatError(f"{what} JSON holds a value no header needs: {error}") from None


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than `limit`, checked before json.loads: in Pyodide a deep
    enough document overflows the WebAssembly stack before Python's recursion limit, killing the
    worker. With strings removed, each pass deletes the innermost empty pairs (C speed throughout:
    ~0.1 s for a 16 MB header, a few seconds when it is millions of tiny strings)."""
    skeleton = _STRINGS.sub(b"", text.encode("utf-8")).translate(None, _NOT_BRACKETS)
    for _ in range(limit):  # each pass removes at least one level, so what remains after `limit` is deeper
        shorter = skeleton.replace(b"[]", b"").replace(b"{}", b"")
        if not shorter:
            return False
        if shorter == skeleton:  # stuck: unbalanced ("[[[[" with no closers still recurses in json.loads)
            return len(skeleton) > limit
        skeleton = shorter
    return True


_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: linear time)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _tensor_info(name: str, entry: object, data_start: int, data_size: int) -> TensorInfo:
    if len(name) > MAX_NAME:
        raise FormatError(
            f"a tensor name is {len(name)} characters long ({_short(name, 40)}): no model's tensor is named so"
        )
    if not isinstance(entry, dict):
        raise FormatError(f"tensor {name!r}: entry must be an object, got {type(entry).__name__}")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"tensor {name!r}: unknown dtype {_short(dtype)} (known: {', '.join(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise FormatError(f"tensor {name!r}: shape must be a list of non-negative integers, got {_short(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise FormatError(f"tensor {name!r}: data_offsets must be [begin, end] integers, got {_short(offsets)}")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise FormatError(
            f"tensor {name!r}: data_offsets {_short(offsets)} fall outside the {data_size}-byte data section"
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise FormatError(
            f"tensor {name!r}: shape {_short(shape)} x {dtype} is {_short(expected)} bytes "
            f"but data_offsets span {end - begin}"
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


def _short(value: object, limit: int = 80) -> str:
    """A value from the file for a message: repr'd, and cut so one line stays one line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_coverage(tensors, data_start: int, data_size: int) -> None:
    """Tensors must tile the data section exactly: no overlaps, no holes (as the format requires)."""
    position = data_start
    previous = None
    for info in sorted(tensors, key=lambda t: (t.start, t.end)):
        if info.start < position:
            raise FormatError(f"tensor {info.name!r} overlaps tensor {previous.name!r}")
        if info.start > position:
            raise FormatError(
                f"{info.start - position} unused bytes before tensor {info.name!r} (holes are not allowed)"
            )
        position, previous = info.end, info
    if position != data_start + data_size:
        raise FormatError(f"data section is {data_size} bytes but the tensors cover {position - data_start}")


class SafetensorsFile:
    """A safetensors file over any byte source: header parsed up front, tensors read on demand."""

    def __init__(self, source: ByteSource | str):
        self.source = open_source(source) if isinstance(source, str) else source
        size = self.source.size
        length = header_length(self.source.read(0, min(8, size)), size)
        self.tensors, self.metadata = parse_header(self.source.read(8, 8 + length), size)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.source.name}") from None

    def read_bytes(self, name: str) -> bytes:
        info = self.info(name)
        return self.source.read(info.start, info.end)

    def read_array(self, name: str, dtype: str = "float32"):
        """The tensor as a numpy array converted to `dtype` (CPython only: needs numpy)."""
        info = self.info(name)
        return to_array(self.read_bytes(name), info).astype(dtype, copy=False)


def to_array(data: bytes, info: TensorInfo):
    """Raw little-endian bytes -> numpy array of the tensor's shape (bf16 widened to float32)."""
    import numpy as np

    if info.dtype == "BF16":
        return widen(data, "BF16").reshape(info.shape)
    return np.frombuffer(data, NUMPY_DTYPES[info.dtype]).reshape(info.shape)


def widen(data, dtype: str):
    """Little-endian F32 / F16 / BF16 values (bytes or a uint8 array) as a float32 numpy array: the one
    numpy widening (engine.py has the pure-Python one for Pyodide, web/gpu/bridge.js the JavaScript one)."""
    import numpy as np

    raw = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if dtype == "BF16":  # bf16 is the top half of a float32: shift it back into place, exactly
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    return raw.view("<f2").astype(np.float32) if dtype == "F16" else raw.view("<f4")


def bf16_to_f16(data, what: str = "a bf16 tensor"):
    """bf16 values (bytes or a uint8 array) rounded to the nearest float16, as a float16 numpy array; a finite
    value beyond float16's range (65504) is refused rather than made infinite. web/gpu/bridge.js's narrowBF16
    gives the same bits."""
    import numpy as np

    wide = widen(data, "BF16")
    with np.errstate(over="ignore"):
        half = wide.astype(np.float16)
    overflow = np.isinf(half) & np.isfinite(wide)
    if overflow.any():
        raise ValueError(
            f"{what} holds {wide[overflow][0]:g}, beyond float16's range: load it at precision fp32, int8 or nf4"
        )
    return half


def write_safetensors(path: str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write numpy arrays (float32/float16/int...) in the given order as a safetensors file."""
    import numpy as np

    names = {np.dtype(numpy_name): name for name, numpy_name in NUMPY_DTYPES.items()}
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    arrays = []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in names:
            raise ValueError(f"tensor {name!r}: cannot store numpy dtype {array.dtype} in safetensors")
        header[name] = {
            "dtype": names[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # pad so the data section starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for array in arrays:
            file.write(array.tobytes())
