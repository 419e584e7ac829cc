"""Convert official RWKV `.pth` checkpoints to safetensors, without torch:

    python -m build.convert RWKV-x070-World-0.1B.pth model.st --dtype fp16

A `.pth` written by `torch.save` is a zip: `<name>/data.pkl` (a pickle of the tensor dict) and
`<name>/data/<key>` (each storage's raw little-endian bytes). The pickle is read by a restricted
unpickler that only rebuilds tensors: it resolves the few globals torch uses for that
(`torch._utils._rebuild_tensor_v2`, the typed storage classes, `collections.OrderedDict`) and
refuses every other global, so a checkpoint can never run code. bf16 (the official dtype) is
widened exactly to fp32, or rounded to fp16 on the way out.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "py"))

from rwkvweb.config import detect_config  # noqa: E402
from rwkvweb.safetensors import write_safetensors  # noqa: E402

# torch storage class -> numpy dtype of its elements ("bf16" handled apart: numpy has none)
STORAGES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bf16", "DoubleStorage": np.float64,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a torch checkpoint of plain tensors; the message says why."""


class StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGES[name]


class Storage:
    def __init__(self, data: bytes, dtype):
        self.data, self.dtype = data, dtype

    def elements(self) -> np.ndarray:
        if self.dtype == "bf16":  # the top half of a float32: shift it back into place, exactly
            return (np.frombuffer(self.data, "<u2").astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(self.data, np.dtype(self.dtype).newbyteorder("<"))


def rebuild_tensor(storage: Storage, offset: int, shape, stride, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, for numpy: the strided view, copied."""
    elements = storage.elements()
    if not shape:
        return elements[offset : offset + 1].reshape(()).copy()
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else offset
    if last >= len(elements):
        raise CheckpointError(f"a tensor of shape {tuple(shape)} reaches past its storage ({len(elements)} elements)")
    view = np.lib.stride_tricks.as_strided(elements[offset:], shape=tuple(shape), strides=tuple(s * elements.itemsize for s in stride))
    return np.ascontiguousarray(view)


class RestrictedUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        raise CheckpointError(f"refused: the checkpoint's pickle asks for {module}.{name}; only tensors are rebuilt, nothing else runs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise CheckpointError(f"refused: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, _numel = pid
        try:
            data = self.archive.read(f"{self.prefix}/data/{key}")
        except KeyError:
            raise CheckpointError(f"storage {key!r} is missing from the archive") from None
        return Storage(data, storage_type.dtype)


def read_pth(path: str) -> dict[str, np.ndarray]:
    """The tensors of a torch.save zip checkpoint, as numpy arrays (bf16 widened to float32)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path}: not a zip archive (legacy pre-1.6 torch.save files are not supported)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one */data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as file:
            tensors = RestrictedUnpickler(file, archive, prefix).load()
    if not isinstance(tensors, dict) or not all(isinstance(v, np.ndarray) for v in tensors.values()):
        raise CheckpointError(f"{path}: the checkpoint is not a flat dict of tensors")
    return dict(tensors)


def convert(source: str, target: str, dtype: str = "fp16") -> dict:
    """Write the checkpoint as safetensors (official names kept) at fp16 or fp32; returns a summary."""
    tensors = read_pth(source)
    config = detect_config({name: tuple(t.shape) for name, t in tensors.items()})
    numpy_dtype = {"fp16": np.float16, "fp32": np.float32}[dtype]
    converted = {name: t.astype(numpy_dtype) if t.dtype.kind == "f" else t for name, t in tensors.items()}
    write_safetensors(target, converted, {"version": config.version, "converted_from": os.path.basename(source)})
    return {"tensors": len(converted), "config": config, "bytes": os.path.getsize(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a .pth checkpoint (torch.save zip)")
    parser.add_argument("target", help="the .st / .safetensors file to write")
    parser.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="fp32 keeps bf16 exactly")
    args = parser.parse_args()
    try:
        summary = convert(args.source, args.target, args.dtype)
    except (CheckpointError, ValueError, OSError) as error:
        sys.exit(f"convert: {error}")
    print(f"wrote {args.target}: {summary['tensors']} tensors, {summary['bytes']:,} bytes, {summary['config']}")


if __name__ == "__main__":
    main()
