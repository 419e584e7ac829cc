"""torch.save checkpoints made by the tests, without torch: a pickle and a zip written by hand.

The layout is torch's (PyTorchStreamWriter): members `archive/data.pkl`, `archive/byteorder`,
`archive/data/<key>`, `archive/version`, stored uncompressed, each member's data aligned to 64
bytes by padding in its *local* header's extra field (so the data starts where only the local
header says), and optionally ZIP64 records. The pickle calls
`torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, requires_grad, hooks)` over
persistent ids `("storage", torch.<Type>Storage, key, "cpu", numel)`, as torch writes it.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    "bf16": "BFloat16Storage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.float64): "DoubleStorage",
}


def _text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def _ints(values) -> bytes:
    return pickle.MARK + b"".join(_int(v) for v in values) + pickle.TUPLE


@dataclass
class TensorEntry:
    """One tensor of the pickle: `shape` elements of storage `key` from `offset`, `stride` apart."""

    name: str
    storage: str  # torch storage class name, e.g. "FloatStorage"
    key: str
    offset: int
    shape: tuple
    stride: tuple
    numel: int = 0


def tensor_pickle(entries: list[TensorEntry], extra: bytes = b"") -> bytes:
    """{name: tensor} as torch pickles a state_dict (protocol 2)."""
    body = []
    for e in entries:
        persistent = (
            pickle.MARK
            + _text("storage")
            + pickle.GLOBAL
            + f"torch\n{e.storage}\n".encode()
            + _text(e.key)
            + _text("cpu")
            + _int(e.numel)
            + pickle.TUPLE
            + pickle.BINPERSID
        )
        ordered_dict = pickle.GLOBAL + b"collections\nOrderedDict\n" + pickle.EMPTY_TUPLE + pickle.REDUCE
        body.append(
            _text(e.name)
            + pickle.GLOBAL
            + b"torch._utils\n_rebuild_tensor_v2\n"
            + pickle.MARK
            + persistent
            + _int(e.offset)
            + _ints(e.shape)
            + _ints(e.stride)
            + pickle.NEWFALSE
            + ordered_dict
            + pickle.TUPLE
            + pickle.REDUCE
        )
    return (
        pickle.PROTO
        + b"\x02"
        + pickle.EMPTY_DICT
        + pickle.MARK
        + b"".join(body)
        + pickle.SETITEMS
        + extra
        + pickle.STOP
    )


def zip_stored(members: list[tuple[str, bytes]], align: int = 64, zip64: bool = False) -> bytes:
    """A zip of stored members, torch-style: local extra fields pad each member's data to `align`."""
    out, central = bytearray(), bytearray()
    for name, data in members:
        raw_name, offset, crc = name.encode(), len(out), zlib.crc32(data)
        extra = b""
        if align:
            pad = -(offset + 30 + len(raw_name) + 4) % align
            extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB": torch's padding field
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(raw_name), len(extra)
        )
        out += raw_name + extra + data
        sizes = (len(data), len(data), offset)
        central_extra = b""
        if zip64:
            central_extra = struct.pack("<HHQQQ", 1, 24, *sizes)
            sizes = (0xFFFFFFFF,) * 3
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                45,
                45,
                0,
                0,
                0,
                0,
                crc,
                sizes[1],
                sizes[0],
                len(raw_name),
                len(central_extra),
                0,
                0,
                0,
                0,
                sizes[2],
            )
            + raw_name
            + central_extra
        )
    cd_offset, count = len(out), len(members)
    out += central
    if zip64:
        record = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), cd_offset)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record, 1)
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)


def bf16_bytes(array: np.ndarray) -> bytes:
    """float32 truncated to its top 16 bits: a bf16 storage (what the loader widens back exactly)."""
    return (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def as_bf16(array: np.ndarray) -> np.ndarray:
    """The float32 values a bf16 storage of `array` holds."""
    return (np.ascontiguousarray(array, np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)


@dataclass
class Checkpoint:
    """Entries + storages -> bytes; tests edit the parts to make hostile files."""

    entries: list[TensorEntry] = field(default_factory=list)
    storages: dict[str, bytes] = field(default_factory=dict)
    extra_pickle: bytes = b""
    byteorder: bytes | None = b"little"

    def members(self) -> list[tuple[str, bytes]]:
        members = [("archive/data.pkl", tensor_pickle(self.entries, self.extra_pickle))]
        if self.byteorder is not None:
            members.append(("archive/byteorder", self.byteorder))
        members += [(f"archive/data/{key}", raw) for key, raw in self.storages.items()]
        return members + [("archive/version", b"3\n")]

    def to_bytes(self, align: int = 64, zip64: bool = False) -> bytes:
        return zip_stored(self.members(), align, zip64)


def checkpoint_of(tensors: dict[str, np.ndarray], bf16=frozenset()) -> Checkpoint:
    """One storage per tensor, contiguous (as torch saves a state_dict); names in `bf16` stored as bf16."""
    checkpoint = Checkpoint()
    for key, (name, array) in enumerate(tensors.items()):
        if bf16 is True or name in bf16:
            raw, storage = bf16_bytes(array), STORAGE_NAMES["bf16"]
        else:
            raw, storage = np.ascontiguousarray(array).tobytes(), STORAGE_NAMES[array.dtype]
        strides = tuple(int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim))
        checkpoint.entries.append(TensorEntry(name, storage, str(key), 0, tuple(array.shape), strides, array.size))
        checkpoint.storages[str(key)] = raw
    return checkpoint


def write_pth(
    path, tensors: dict[str, np.ndarray], bf16=frozenset(), zip64: bool = False, extra_pickle: bytes = b""
) -> None:
    """torch.save's file of `tensors`; `extra_pickle`: opcodes the pickle runs after the state dict (hostile files)."""
    checkpoint = checkpoint_of(tensors, bf16)
    checkpoint.extra_pickle = extra_pickle
    path.write_bytes(checkpoint.to_bytes(zip64=zip64))
