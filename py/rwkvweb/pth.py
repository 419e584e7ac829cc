"""Official `.pth` checkpoints (torch.save's zip format) read by range, without torch or numpy.

A checkpoint is a ZIP whose members are stored uncompressed:
    <prefix>/data.pkl       a pickle of {name: tensor}; each tensor is a call
                            torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, ...)
                            over a persistent id ("storage", torch.<Type>Storage, key, location, numel)
    <prefix>/data/<key>     each storage's raw little-endian bytes
    <prefix>/byteorder      "little" (newer torch; absent means little)
So the header is: the end-of-central-directory (ZIP64 where present) and the central directory
at the file's end, one small local header per member (its name and extra field fix where the
bytes start), and data.pkl. The result is the same tensor table the safetensors reader gives
(`TensorInfo` with dtype, shape and absolute byte range), so the loader, progress, cache,
budget planner and precisions treat both formats alike; bf16 storages are BF16 tensors, which
the loader widens on the way (`bf16-f32`).

The pickle is read by a restricted unpickler that only rebuilds tensor *references* (storage,
offset, shape, stride): it resolves the few globals torch uses for that and refuses every other
one, so a checkpoint can never run code. Every number a hostile file can lie about (offsets,
sizes, counts, strides) is checked against the file before anything is read or allocated.

The parser is written once, as a generator that asks for byte ranges; `read_pth_header`
(sync sources) and `read_pth_header_async` (the page's JS reader) answer those requests.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from dataclasses import dataclass

from .safetensors import DTYPE_SIZES, FormatError, SafetensorsFile, TensorInfo
from .source import ByteSource, open_source

MAGIC = b"PK\x03\x04"  # a zip's first local file header; safetensors starts with an 8-byte length instead
EOCD, EOCD_SIZE = b"PK\x05\x06", 22
ZIP64_LOCATOR, ZIP64_LOCATOR_SIZE = b"PK\x06\x07", 20
ZIP64_EOCD, ZIP64_EOCD_SIZE = b"PK\x06\x06", 56
CENTRAL, CENTRAL_SIZE = b"PK\x01\x02", 46
LOCAL, LOCAL_SIZE = b"PK\x03\x04", 30
MAX_COMMENT = 0xFFFF
# Limits far above any real checkpoint (RWKV-7 2.9B: ~1,000 members, a ~100 KB pickle): a file
# claiming more is corrupt or hostile, and is refused before anything that size is read.
MAX_CENTRAL_DIRECTORY = 64 * 1024 * 1024
MAX_PICKLE = 64 * 1024 * 1024
# Local headers close together are fetched in one read (small tensors sit side by side between them):
# an official 2.9B-shaped file (1,062 tensors) then takes 458 reads of 3.5 MB in all, not 1,070 of 0.4 MB.
COALESCE_GAP = 16384
PARALLEL_READS = 16

# torch storage class -> safetensors dtype name
STORAGE_DTYPES = {
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "DoubleStorage": "F64",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}


class CheckpointError(FormatError):
    """The file is not a torch checkpoint of plain tensors, or it lies about its layout."""


def is_pth(prefix: bytes) -> bool:
    """Whether a file's first bytes are a zip's (torch.save) rather than safetensors' header length."""
    return prefix[:4] == MAGIC


# --- the pickle: tensor references only ------------------------------------------------------


@dataclass(frozen=True)
class StorageRef:
    key: str  # the member <prefix>/data/<key>
    dtype: str  # safetensors dtype name


@dataclass(frozen=True)
class TensorRef:
    """What _rebuild_tensor_v2 describes: `shape` elements of `storage`, `stride` apart, from `offset`."""

    storage: StorageRef
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in elements


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, shape, stride, *_ignored) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2), as a reference; checked once its name is known (_check)."""
    return TensorRef(storage, offset, shape, stride)


def _check(name: str, ref: TensorRef) -> TensorRef:
    """A tensor reference whose numbers can be trusted: a storage, offset >= 0, sizes >= 0, strides >= 1."""
    if not isinstance(ref.storage, StorageRef):
        raise CheckpointError(f"tensor {name!r} is rebuilt from {type(ref.storage).__name__}, not a storage")
    if not _is_count(ref.offset):
        raise CheckpointError(f"tensor {name!r} has storage offset {ref.offset!r:.40}: offsets must be integers >= 0")
    shape, stride = _int_tuple(name, ref.shape, "shape"), _int_tuple(name, ref.stride, "stride")
    if len(shape) != len(stride):
        raise CheckpointError(f"tensor {name!r} has shape {list(shape)} but {len(stride)} strides {list(stride)}")
    if any(n < 0 for n in shape):
        raise CheckpointError(f"tensor {name!r} has a negative size in shape {list(shape)}")
    if any(s <= 0 for n, s in zip(shape, stride) if n > 1):
        raise CheckpointError(
            f"tensor {name!r} of shape {list(shape)} has stride {list(stride)}: strides must be >= 1 "
            "(negative or zero strides are views no weight needs; save the tensor .contiguous())"
        )
    return TensorRef(ref.storage, ref.offset, shape, stride)


def _rebuild_parameter(data, _requires_grad=None, _hooks=None, *_ignored):
    return data  # torch._utils._rebuild_parameter wraps a tensor in nn.Parameter: the tensor is what we keep


def _ordered_dict(*args):
    import collections

    return collections.OrderedDict(*args)


def _int_tuple(name: str, value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"tensor {name!r}: its {what} must be a tuple of integers, got {value!r:.80}")
    return tuple(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class RestrictedUnpickler(pickle._Unpickler):
    """Rebuilds tensor references and ordered dicts; refuses every other global.

    The pure-Python unpickler, not the C one: its memo is a dict, so a pickle of a few bytes
    cannot make it allocate a memo table of gigabytes (the C one sizes it by the largest index)."""

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): _ordered_dict,
    }

    def find_class(self, module: str, name: str):
        if not module or not name:  # a GLOBAL cut short reads as empty names
            raise CheckpointError("data.pkl is corrupt or truncated (a global with an empty name)")
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"refused: the checkpoint's pickle asks for {module}.{name}; only tensors are rebuilt, nothing else runs"
        )

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
        ):
            raise CheckpointError(f"refused: unexpected persistent id {pid!r:.80}")
        return StorageRef(pid[2], pid[1].dtype)


def load_tensor_refs(data: bytes) -> dict[str, TensorRef]:
    """data.pkl -> {name: TensorRef}, or one clear CheckpointError (never a traceback)."""
    try:
        value = RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        struct.error,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as error:
        raise CheckpointError(
            f"data.pkl is corrupt or truncated ({type(error).__name__}: {str(error)[:120]})"
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, TensorRef) for k, v in value.items()
    ):
        raise CheckpointError(
            "the checkpoint is not a flat dict of named tensors (a state_dict); save model.state_dict()"
        )
    return {name: _check(name, ref) for name, ref in value.items()}


# --- the zip: members by range ----------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    header_offset: int  # the local file header
    size: int
    data_start: int = -1  # known once the local header is read

    @property
    def data_end(self) -> int:
        return self.data_start + self.size


def _u(data: bytes, at: int, fmt: str) -> int:
    return struct.unpack_from("<" + fmt, data, at)[0]


def _find_eocd(tail: bytes) -> int:
    """Offset in `tail` of the end-of-central-directory record whose comment reaches the end exactly."""
    at = tail.rfind(EOCD)
    while at >= 0:
        if at + EOCD_SIZE <= len(tail) and at + EOCD_SIZE + _u(tail, at + 20, "H") == len(tail):
            return at
        at = tail.rfind(EOCD, 0, at)
    raise CheckpointError(
        "not a zip archive: no end-of-central-directory record (truncated download? "
        "legacy pre-1.6 torch.save files are not supported)"
    )


def _central_directory_location(tail: bytes, tail_start: int):
    """(entries, cd_offset, cd_size), checked: from the EOCD, or its ZIP64 record (a generator, as parse_checkpoint)."""
    at = _find_eocd(tail)
    entries, cd_size, cd_offset = _u(tail, at + 10, "H"), _u(tail, at + 12, "I"), _u(tail, at + 16, "I")
    cd_limit = tail_start + at  # the central directory ends before the EOCD
    if at >= ZIP64_LOCATOR_SIZE and tail[at - ZIP64_LOCATOR_SIZE : at - ZIP64_LOCATOR_SIZE + 4] == ZIP64_LOCATOR:
        record = _u(tail, at - ZIP64_LOCATOR_SIZE + 8, "Q")
        cd_limit = tail_start + at - ZIP64_LOCATOR_SIZE
        if record + ZIP64_EOCD_SIZE > cd_limit:
            raise CheckpointError(f"the ZIP64 locator points at byte {record}, past the end of the archive's records")
        (record_bytes,) = yield [(record, record + ZIP64_EOCD_SIZE)]
        if record_bytes[:4] != ZIP64_EOCD:
            raise CheckpointError(f"no ZIP64 end-of-central-directory record at byte {record} (corrupt zip)")
        entries, cd_size, cd_offset = _u(record_bytes, 32, "Q"), _u(record_bytes, 40, "Q"), _u(record_bytes, 48, "Q")
        cd_limit = record
    if cd_size > MAX_CENTRAL_DIRECTORY:
        raise CheckpointError(
            f"the central directory claims {cd_size:,} bytes, over the {MAX_CENTRAL_DIRECTORY:,}-byte limit "
            f"(corrupt zip)"
        )
    if cd_offset + cd_size > cd_limit:
        raise CheckpointError(
            f"the central directory claims bytes [{cd_offset}, {cd_offset + cd_size}) but the archive's "
            f"records start at {cd_limit} (truncated or corrupt zip)"
        )
    if entries * CENTRAL_SIZE > cd_size:
        raise CheckpointError(
            f"the archive claims {entries:,} members but its {cd_size:,}-byte central directory cannot hold them"
        )
    return entries, cd_offset, cd_size


def _parse_central_directory(data: bytes, entries: int, cd_offset: int) -> dict[str, Member]:
    members: dict[str, Member] = {}
    at = 0
    for _ in range(entries):
        if at + CENTRAL_SIZE > len(data) or data[at : at + 4] != CENTRAL:
            raise CheckpointError(
                f"central directory entry {len(members)} is missing or corrupt (at byte {cd_offset + at})"
            )
        flags, method = _u(data, at + 8, "H"), _u(data, at + 10, "H")
        compressed, size = _u(data, at + 20, "I"), _u(data, at + 24, "I")
        name_length, extra_length, comment_length = (
            _u(data, at + 28, "H"),
            _u(data, at + 30, "H"),
            _u(data, at + 32, "H"),
        )
        offset = _u(data, at + 42, "I")
        end = at + CENTRAL_SIZE + name_length + extra_length + comment_length
        if end > len(data):
            raise CheckpointError(f"central directory entry {len(members)} runs past the directory (corrupt zip)")
        raw_name = data[at + CENTRAL_SIZE : at + CENTRAL_SIZE + name_length]
        name = raw_name.decode("utf-8", errors="replace")
        extra = data[at + CENTRAL_SIZE + name_length : at + CENTRAL_SIZE + name_length + extra_length]
        size, compressed, offset = _zip64_values(extra, size, compressed, offset, name)
        if flags & 1:
            raise CheckpointError(f"member {name!r} is encrypted; a torch checkpoint never is")
        if method != 0 or compressed != size:
            raise CheckpointError(
                f"member {name!r} is compressed (method {method}); torch.save stores members uncompressed, "
                "so this is not a checkpoint it wrote (re-save it with torch.save)"
            )
        if offset + LOCAL_SIZE + name_length + size > cd_offset:
            raise CheckpointError(
                f"member {name!r} claims {size:,} bytes at byte {offset}, past the end of the archive's "
                f"data ({cd_offset:,} bytes): corrupt or truncated zip"
            )
        if name in members:
            raise CheckpointError(f"the archive holds two members named {name!r}")
        members[name] = Member(name, offset, size)
        at = end
    return members


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int, name: str) -> tuple[int, int, int]:
    """Sizes and offset that do not fit 32 bits are in the ZIP64 extra field (id 1), in this order."""
    wanted = [value == 0xFFFFFFFF for value in (size, compressed, offset)]
    if not any(wanted):
        return size, compressed, offset
    at = 0
    while at + 4 <= len(extra):
        field, length = _u(extra, at, "H"), _u(extra, at + 2, "H")
        if field == 1:
            values, position = [size, compressed, offset], at + 4
            for i, needed in enumerate(wanted):
                if needed:
                    if position + 8 > at + 4 + length or position + 8 > len(extra):
                        break
                    values[i], position = _u(extra, position, "Q"), position + 8
            else:
                return values[0], values[1], values[2]
            break
        at += 4 + length
    raise CheckpointError(f"member {name!r} needs a ZIP64 extra field that is missing or too short (corrupt zip)")


def _coalesce(members: list[Member]) -> list[tuple[int, int, list[Member]]]:
    """Local header reads, merged where headers sit close together: [(start, end, members)]."""
    groups: list[tuple[int, int, list[Member]]] = []
    for member in sorted(members, key=lambda m: m.header_offset):
        start, end = member.header_offset, member.header_offset + LOCAL_SIZE + len(member.name.encode())
        if groups and start - groups[-1][1] <= COALESCE_GAP and end - groups[-1][0] <= 1 << 20:
            first, last, inside = groups[-1]
            groups[-1] = (first, max(last, end), inside + [member])
        else:
            groups.append((start, end, [member]))
    return groups


def _locate_data(member: Member, block: bytes, block_start: int, limit: int) -> Member:
    """The member with its data start, from its local header (name and extra lengths may differ
    from the central directory's: torch pads the local extra field to align the data)."""
    at = member.header_offset - block_start
    header = block[at : at + LOCAL_SIZE]
    if len(header) < LOCAL_SIZE or header[:4] != LOCAL:
        raise CheckpointError(
            f"member {member.name!r}: no local file header at byte {member.header_offset} (corrupt zip)"
        )
    name_length, extra_length = _u(header, 26, "H"), _u(header, 28, "H")
    name = block[at + LOCAL_SIZE : at + LOCAL_SIZE + name_length]
    if name != member.name.encode():
        raise CheckpointError(f"member {member.name!r}: its local header names {name[:80]!r} (corrupt zip)")
    data_start = member.header_offset + LOCAL_SIZE + name_length + extra_length
    if data_start + member.size > limit:
        raise CheckpointError(
            f"member {member.name!r}: {member.size:,} bytes from byte {data_start} run past the archive's data"
        )
    return Member(member.name, member.header_offset, member.size, data_start)


# --- the whole header, as requests for byte ranges ---------------------------------------------


@dataclass
class Checkpoint:
    """A parsed checkpoint: its tensor references and the byte ranges of the members they use."""

    tensors: dict[str, TensorRef]
    storages: dict[str, Member]  # storage key -> its member, data_start known


def parse_checkpoint(size: int):
    """A generator: yields lists of (start, end) ranges, is sent the list of their bytes, returns a Checkpoint."""
    if size < EOCD_SIZE:
        raise CheckpointError(f"not a zip archive: the file is only {size} bytes")
    tail_start = max(0, size - (EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE))
    (tail,) = yield [(tail_start, size)]
    entries, cd_offset, cd_size = yield from _central_directory_location(tail, tail_start)
    (directory,) = yield [(cd_offset, cd_offset + cd_size)]
    members = _parse_central_directory(directory, entries, cd_offset)
    prefix = _archive_prefix(members)
    pickle_member, byteorder = members[f"{prefix}/data.pkl"], members.get(f"{prefix}/byteorder")
    if pickle_member.size > MAX_PICKLE:
        raise CheckpointError(
            f"data.pkl claims {pickle_member.size:,} bytes, over the {MAX_PICKLE:,}-byte limit (corrupt checkpoint)"
        )
    located = yield from _read_local_headers([m for m in (pickle_member, byteorder) if m], cd_offset)
    pickle_member, byteorder = located[pickle_member.name], byteorder and located[byteorder.name]
    wanted = [(pickle_member.data_start, pickle_member.data_end)]
    if byteorder:
        if byteorder.size > 16:
            raise CheckpointError(f"the byteorder member is {byteorder.size:,} bytes; torch writes 'little' or 'big'")
        wanted.append((byteorder.data_start, byteorder.data_end))
    replies = yield wanted
    if byteorder and replies[1].strip() != b"little":
        raise CheckpointError(
            f"the checkpoint's byte order is {replies[1][:16]!r}; only little-endian checkpoints are supported"
        )
    tensors = load_tensor_refs(replies[0])
    storage_members = {}
    for name, ref in tensors.items():
        member = members.get(f"{prefix}/data/{ref.storage.key}")
        if member is None:
            raise CheckpointError(f"tensor {name!r}: its storage {ref.storage.key!r:.40} is not in the archive")
        storage_members[ref.storage.key] = member
    located = yield from _read_local_headers(list(storage_members.values()), cd_offset)
    return Checkpoint(tensors, {key: located[m.name] for key, m in storage_members.items()})


def _archive_prefix(members: dict[str, Member]) -> str:
    pickles = [name for name in members if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(
            f"expected one */data.pkl in the archive, found {len(pickles)}: not a torch.save checkpoint"
        )
    return pickles[0][: -len("/data.pkl")]


def _read_local_headers(members: list[Member], limit: int):
    groups = _coalesce(members)
    blocks = yield [(start, end) for start, end, _ in groups]
    return {
        m.name: _locate_data(m, block, start, limit)
        for (start, _, inside), block in zip(groups, blocks)
        for m in inside
    }


# --- the tensor table ------------------------------------------------------------------------


def tensor_table(checkpoint: Checkpoint) -> dict[str, TensorInfo]:
    """TensorInfo per tensor, as safetensors gives: one contiguous byte range each, bounds-checked."""
    return {
        name: _tensor_info(name, ref, checkpoint.storages[ref.storage.key]) for name, ref in checkpoint.tensors.items()
    }


def _tensor_info(name: str, ref: TensorRef, member: Member) -> TensorInfo:
    item = DTYPE_SIZES[ref.storage.dtype]
    numel = math.prod(ref.shape)
    if numel and ref.stride != _contiguous_strides(ref.shape, ref.stride):
        raise CheckpointError(
            f"tensor {name!r} is a strided view (shape {list(ref.shape)}, stride {list(ref.stride)}) that is not "
            "one byte range; convert the file with `python -m build.convert`, which copies such views"
        )
    start, nbytes = ref.offset * item, numel * item
    if start + nbytes > member.size:
        raise CheckpointError(
            f"tensor {name!r}: {numel:,} {ref.storage.dtype} elements from element {ref.offset:,} reach past "
            f"its {member.size:,}-byte storage"
        )
    return TensorInfo(name, ref.storage.dtype, ref.shape, member.data_start + start, member.data_start + start + nbytes)


def _contiguous_strides(shape: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides for `shape`; a dimension of size 1 may have any stride (torch gives it any)."""
    out, step = [], 1
    for n, s in zip(reversed(shape), reversed(stride)):
        out.append(s if n == 1 else step)
        step *= n
    return tuple(reversed(out))


# --- drivers ---------------------------------------------------------------------------------


def _run_sync(requests, source: ByteSource):
    reply = None
    try:
        while True:
            ranges = requests.send(reply)
            reply = [source.read(start, end) for start, end in ranges]
    except StopIteration as done:
        return done.value


async def _run_async(requests, source):
    import asyncio

    from .source import read_any

    reply = None
    try:
        while True:
            ranges = requests.send(reply)
            reply = []
            for at in range(0, len(ranges), PARALLEL_READS):  # a few at a time: one request per local header
                batch = ranges[at : at + PARALLEL_READS]
                reply += await asyncio.gather(*(read_any(source, start, end) for start, end in batch))
    except StopIteration as done:
        return done.value


def read_checkpoint(source: ByteSource) -> Checkpoint:
    """The checkpoint's tensor references and storage ranges, from a sync source."""
    return _run_sync(parse_checkpoint(source.size), source)


def read_pth_header(source: ByteSource) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(tensors, metadata) like safetensors.parse_header, for a sync source (CPython)."""
    return tensor_table(read_checkpoint(source)), {}


async def read_pth_header_async(source) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The same for a source whose reads may be awaitable (the page's JS reader)."""
    if getattr(source, "sequential", False):  # web/net/range.js: a server that ignores Range
        raise CheckpointError(
            "this server does not answer Range requests, and a .pth is read from its end (the zip "
            "directory) first: serve it from a server with Range, or convert it (python -m build.convert)"
        )
    return tensor_table(await _run_async(parse_checkpoint(source.size), source)), {}


class PthFile(SafetensorsFile):
    """A `.pth` with SafetensorsFile's interface (tensors, metadata, read_bytes, read_array)."""

    def __init__(self, source: ByteSource | str):
        self.source = open_source(source) if isinstance(source, str) else source
        self.tensors, self.metadata = read_pth_header(self.source)


def open_model_file(source: ByteSource | str) -> SafetensorsFile:
    """A safetensors or torch.save file, told apart by its first bytes."""
    source = open_source(source) if isinstance(source, str) else source
    return PthFile(source) if is_pth(source.read(0, min(4, source.size))) else SafetensorsFile(source)
