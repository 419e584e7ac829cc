"""Convert official RWKV `.pth` checkpoints to safetensors, without torch:

    python -m build.convert RWKV-x070-World-0.1B.pth model.st --dtype fp16

The page and the CLI load a `.pth` directly (rwkvweb.pth reads it by range); converting is for
a smaller file (fp16) to host, for build.quantize, and for the rare checkpoint whose tensors are
strided views (rwkvweb.pth needs each tensor to be one byte range; here views are copied out).
The zip and the pickle are read by rwkvweb.pth: a restricted unpickler that only rebuilds tensor
references and refuses every other global, so a checkpoint can never run code, and every offset,
size and stride is checked before anything is read. bf16 (the official dtype) is widened exactly
to fp32, or rounded to fp16 on the way out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "py"))

from rwkvweb.config import detect_config  # noqa: E402
from rwkvweb.pth import CheckpointError, TensorRef, read_checkpoint  # noqa: E402,F401 - CheckpointError: this module's error
from rwkvweb.safetensors import NUMPY_DTYPES, widen, write_safetensors  # noqa: E402
from rwkvweb.source import FileSource  # noqa: E402


def storage_elements(data: bytes, dtype: str, key: str) -> np.ndarray:
    """A storage's bytes as a flat array (bf16 widened exactly to float32)."""
    item = 2 if dtype == "BF16" else np.dtype(NUMPY_DTYPES[dtype]).itemsize
    if len(data) % item:
        raise CheckpointError(f"storage {key!r} is {len(data)} bytes: not a whole number of {dtype} elements")
    if dtype == "BF16":
        return widen(data, "BF16")
    return np.frombuffer(data, NUMPY_DTYPES[dtype])


def rebuild_tensor(elements: np.ndarray, ref: TensorRef, name: str) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, for numpy: the strided view, copied. The reader
    (rwkvweb.pth) has refused negative offsets and strides < 1; the view must end inside the storage."""
    numel = math.prod(ref.shape)
    if numel == 0:
        return np.zeros(ref.shape, elements.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if last >= len(elements):
        raise CheckpointError(
            f"tensor {name!r} of shape {list(ref.shape)} reaches past its storage ({len(elements)} elements)"
        )
    strides = tuple(s * elements.itemsize if n > 1 else 0 for n, s in zip(ref.shape, ref.stride))
    view = np.lib.stride_tricks.as_strided(elements[ref.offset :], shape=ref.shape, strides=strides, writeable=False)
    return np.ascontiguousarray(view)


def read_pth(path: str) -> dict[str, np.ndarray]:
    """The tensors of a torch.save zip checkpoint, as numpy arrays (bf16 widened to float32);
    strided views are copied out, so any tensor torch can save converts."""
    source = FileSource(path)
    checkpoint = read_checkpoint(source)
    storages: dict[tuple[str, str], np.ndarray] = {}
    tensors = {}
    for name, ref in checkpoint.tensors.items():
        key, dtype = ref.storage.key, ref.storage.dtype
        if (key, dtype) not in storages:
            member = checkpoint.storages[key]
            storages[key, dtype] = storage_elements(source.read(member.data_start, member.data_end), dtype, key)
        tensors[name] = rebuild_tensor(storages[key, dtype], ref, name)
    return tensors


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
    except (ValueError, OSError) as error:  # CheckpointError, SourceError and ModelError among them
        sys.exit(f"convert: {error}")
    print(f"wrote {args.target}: {summary['tensors']} tensors, {summary['bytes']:,} bytes, {summary['config']}")


if __name__ == "__main__":
    main()
