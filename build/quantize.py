"""Quantize a model ahead of time: python -m build.quantize IN.st OUT.st (--precision int8|nf4 | --budget 700MB)

Writes the large matrices (quant.py's formats, the ones the loader would make) as codes plus
block parameters, everything else as it is (bf16 widened to f32), and the metadata that says
which is which. The page then fetches and caches about half (int8: 1.06 bytes per weight) or a
quarter (NF4: 0.56) of fp16's bytes and copies them straight into GPU buffers.

--precision quantizes every large matrix to one scheme; --budget writes what the planner would
choose for that budget (matrices it leaves at fp16 stay fp16), so the file loads under it as is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "py"))

from rwkvweb.budget import parse_bytes, plan_budget, quantizable  # noqa: E402
from rwkvweb.config import model_config  # noqa: E402
from rwkvweb.quant import PARAMS_SUFFIX, QUANTIZED_KEY, SCHEMES, fold_quantized, quantize  # noqa: E402
from rwkvweb.pth import open_model_file  # noqa: E402
from rwkvweb.safetensors import SafetensorsFile, to_array, write_safetensors  # noqa: E402


def choose(file: SafetensorsFile, precision: str | None, budget: str | None) -> dict[str, str]:
    """matrix name -> int8 | nf4 for the matrices to quantize."""
    tensors = fold_quantized(file.tensors, file.metadata)
    if any(info.dtype in SCHEMES for info in tensors.values()):
        raise ValueError(f"{file.source.name} is already quantized")
    if precision:
        return {name: precision for name in quantizable(tensors)}
    config = model_config(tensors)
    planned = plan_budget(config, tensors, parse_bytes(budget), "auto", matvec="rows")
    return {name: p for name, p in planned.precisions.items() if p in SCHEMES}


def quantize_file(source: str, target: str, precision: str | None = None, budget: str | None = None) -> dict[str, str]:
    import numpy as np

    file = open_model_file(source)  # safetensors or an official .pth
    schemes = choose(file, precision, budget)
    out = {}
    for name, info in file.tensors.items():
        if name not in schemes:
            out[name] = to_array(file.read_bytes(name), info)
            continue
        array = file.read_array(name, "float32")
        codes, params = quantize(array.reshape(-1), schemes[name])
        rows, K = array.shape
        row_bytes = K * SCHEMES[schemes[name]].bits // 8
        out[name] = np.frombuffer(codes, np.uint8)[: rows * row_bytes].reshape(rows, row_bytes)
        out[name + PARAMS_SUFFIX] = np.frombuffer(params, np.float32)
    write_safetensors(target, out, {**file.metadata, QUANTIZED_KEY: json.dumps(schemes)})
    return schemes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("target")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--precision", choices=sorted(SCHEMES), help="one scheme for every large matrix")
    how.add_argument("--budget", help="what the planner picks for this GPU budget, e.g. 700MB")
    args = parser.parse_args()
    schemes = quantize_file(args.source, args.target, args.precision, args.budget)
    counts = {s: list(schemes.values()).count(s) for s in SCHEMES if s in schemes.values()}
    print(
        f"wrote {args.target}: {os.path.getsize(args.target):,} bytes (from {os.path.getsize(args.source):,}); "
        f"quantized {counts}"
    )


if __name__ == "__main__":
    main()
