"""A corpus of malformed safetensors model files, and a runner that feeds them to the CLI.

`corpus()` yields Case(name, data, expect, refused_by): the file's bytes, a regular expression
the refusal must match (the problem, and the tensor where there is one), and which commands
must refuse it (header defects: all; bad weight values: only those that read the weights).
Every case is one defect made on a small valid model (2 layers, width 64, vocabulary 32):
truncations at every tensor boundary, lying header lengths and offsets, hostile JSON,
dtype/shape/byte disagreements, missing/extra/huge-index tensors, integer and unknown dtypes,
NaN/Inf weights, odd widths and head sizes, hostile metadata.

    python tests/hostile.py DIR    # runs the corpus through `python -m rwkvweb` in this process,
                                   # prints one JSON line per (case, command) and a summary line

The runner judges each run: a traceback (an exception escaped the CLI), a hang (over
CASE_SECONDS), a silent wrong answer (exit 0 where a refusal was due), an unclear error (not
exactly one line, too long, or not matching `expect`), or too much memory (tracemalloc's peak
over MEMORY_LIMIT: a header may claim terabytes, the runtime must not believe it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import struct
import sys
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "py")]

from rwkvweb.config import ModelConfig, tensor_shapes  # noqa: E402
from rwkvweb.quant import QUANTIZED_KEY, quantize  # noqa: E402
from rwkvweb.testmodel import random_weights  # noqa: E402

CASE_SECONDS = 20  # one command on a 0.5 MB file takes well under a second; 20 s leaves room for a loaded CI machine
MEMORY_LIMIT = 64 * 2**20  # bytes traced per run: the valid model's reference run peaks near 4 MB
MESSAGE_LIMIT = 400  # characters in the one error line
ALL = frozenset({"info", "plan", "logits", "logits-budgeted", "browser"})
READS_WEIGHTS = frozenset({"logits", "logits-budgeted", "browser"})
COMMANDS = {
    "info": ["info"],
    "plan": ["plan"],
    "logits": ["logits", "--tokens", "1,2"],
    "logits-budgeted": ["logits", "--tokens", "1,2", "--precision", "int8"],
}
BASE_CONFIG = ModelConfig.default_for(2, 64, 32)


@dataclass
class Case:
    name: str
    data: bytes
    expect: str  # a regular expression the error line must match (re.search)
    refused_by: frozenset = ALL


# --- building files ------------------------------------------------------------------------------


def encode(header: dict, blobs: list[bytes]) -> bytes:
    """A file from a header object (offsets as given) and the data section's pieces."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def raw(header_text: bytes, data: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header_text) if length is None else length) + header_text + data


def pack(
    tensors: dict[str, np.ndarray], metadata: dict | None = None, dtypes: dict | None = None
) -> tuple[dict, list[bytes]]:
    """(header, blobs) for arrays; `dtypes` overrides the declared dtype name of some tensors."""
    names = {
        np.dtype("<f4"): "F32",
        np.dtype("<f2"): "F16",
        np.dtype("<f8"): "F64",
        np.dtype("<i4"): "I32",
        np.dtype("<i2"): "I16",
        np.dtype("<i8"): "I64",
        np.dtype("i1"): "I8",
        np.dtype("u1"): "U8",
        np.dtype("?"): "BOOL",
    }
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        header[name] = {
            "dtype": (dtypes or {}).get(name, names[array.dtype]),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        blobs.append(array.tobytes())
        offset += array.nbytes
    return header, blobs


def weights(config: ModelConfig = BASE_CONFIG) -> dict[str, np.ndarray]:
    return random_weights(config, seed=3)


def good_model() -> bytes:
    return encode(*pack(weights()))


# --- the corpus ----------------------------------------------------------------------------------


def corpus() -> list[Case]:
    cases: list[Case] = []
    for family in (
        truncations,
        header_lengths,
        offsets,
        hostile_json,
        disagreements,
        names,
        dtypes,
        values,
        widths,
        metadata,
    ):
        cases.extend(family())
    return cases


def truncations() -> list[Case]:
    """Cut the file at every boundary: in the length field, in the header, at every tensor's start and end."""
    header, blobs = pack(weights())
    data = encode(header, blobs)
    header_end = len(data) - sum(map(len, blobs))
    cases = [Case(f"truncated-at-{n}", data[:n], r"too short|truncated") for n in (0, 1, 7)]
    cases += [
        Case(f"truncated-at-{n}", data[:n], r"header length field says")
        for n in (8, 9, header_end // 2, header_end - 1)
    ]
    names = [name for name in header if name != "__metadata__"]
    for name in names:
        begin, end = header[name]["data_offsets"]
        for cut in {begin + 1, end} - {sum(map(len, blobs))}:
            if end - begin > 1 or cut == end:
                # the first tensor reaching past the cut is the one named
                first_out = next(n for n in names if header[n]["data_offsets"][1] > cut)
                cases.append(
                    Case(
                        f"truncated-in-data-at-{cut}",
                        data[: header_end + cut],
                        re.escape(repr(first_out)) + ".*outside",
                    )
                )
    cases.append(Case("one-byte-extra", data + b"\0", r"data section is \d+ bytes but the tensors cover"))
    return cases


def header_lengths() -> list[Case]:
    data = good_model()
    (length,) = struct.unpack("<Q", data[:8])
    body = data[8:]
    lies = {
        "zero": 0,
        "one": 1,
        "short-by-one": length - 1,
        "long-by-one": length + 1,
        "whole-file": len(body),
        "past-the-end": len(body) + 1,
        "2^63": 2**63,
        "2^64-1": 2**64 - 1,
    }
    expect = {
        "zero": "not valid UTF-8 JSON",
        "one": "not valid UTF-8 JSON",
        "short-by-one": "not valid UTF-8 JSON",
        "long-by-one": "not valid UTF-8 JSON|data section",
        "whole-file": "not valid UTF-8 JSON|Extra data",
    }
    cases = [
        Case(f"header-length-{label}", struct.pack("<Q", value) + body, expect.get(label, "header length field says"))
        for label, value in lies.items()
    ]
    return cases  # a length over safetensors.MAX_HEADER_BYTES needs a 16 MB file: test_robustness.py makes a sparse one


def offsets() -> list[Case]:
    header, blobs = pack(weights())
    cases = []

    def lie(label, name, value, expect):
        changed = json.loads(json.dumps(header))
        changed[name]["data_offsets"] = value
        cases.append(Case(f"offsets-{label}", encode(changed, blobs), expect))

    begin, end = header["blocks.0.att.key.weight"]["data_offsets"]
    key = re.escape("'blocks.0.att.key.weight'")
    lie("shifted", "blocks.0.att.key.weight", [begin + 4, end + 4], "overlaps|unused bytes|" + key)
    lie("reversed", "blocks.0.att.key.weight", [end, begin], key + ".*(outside|bytes but)")
    lie("beyond", "blocks.0.att.key.weight", [begin, 10**9], key + ".*outside")
    lie("negative", "blocks.0.att.key.weight", [-4, end], key + ".*data_offsets must be")
    lie("floats", "blocks.0.att.key.weight", [float(begin), float(end)], key + ".*data_offsets must be")
    lie("strings", "blocks.0.att.key.weight", [str(begin), str(end)], key + ".*data_offsets must be")
    lie("three", "blocks.0.att.key.weight", [begin, end, end], key + ".*data_offsets must be")
    lie("booleans", "blocks.0.att.key.weight", [False, True], key + ".*data_offsets must be")
    lie("huge", "blocks.0.att.key.weight", [begin, 2**70], key + ".*outside")
    lie(
        "same-as-previous",
        "blocks.0.att.key.weight",
        header["blocks.0.att.receptance.weight"]["data_offsets"],
        "overlaps|unused bytes",
    )
    text = json.dumps(header, separators=(",", ":")).encode()
    text = text.replace(f'"data_offsets":[{begin},{end}]'.encode(), b'"data_offsets":[' + b"9" * 5000 + b",1]")
    cases.append(Case("offsets-thousands-of-digits", raw(text, b"".join(blobs)), r"value no header needs"))
    return cases


def hostile_json() -> list[Case]:
    data = good_model()
    tail = data[8 + struct.unpack("<Q", data[:8])[0] :]
    texts = {
        "deeply-nested-arrays": (b"[" * 200_000 + b"]" * 200_000, r"nested too deeply|must be an object"),
        "deeply-nested-objects": (
            b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
            r"nested too deeply|entry must be an object",
        ),
        "a-list": (b"[]", "must be an object"),
        "a-number": (b"42", "must be an object"),
        "null": (b"null", "must be an object"),
        "not-utf8": (b'{"\xff\xfe": 1}', "not valid UTF-8 JSON"),
        "truncated-json": (b'{"emb.weight": {"dtype": "F32"', "not valid UTF-8 JSON"),
        "nan-literal": (b'{"x": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', "shape must be"),
        "entry-not-object": (b'{"emb.weight": 5}', "'emb.weight': entry must be an object"),
        "huge-int": (
            b'{"x": {"dtype": "F32", "shape": [' + b"1" * 10_000 + b'], "data_offsets": [0, 4]}}',
            "value no header needs",
        ),
        "empty": (b"{}", "data section is|not an RWKV-7|missing"),
        "metadata-not-strings": (b'{"__metadata__": {"a": 1}}', "__metadata__ must map strings to strings"),
        "metadata-a-list": (b'{"__metadata__": ["a"]}', "__metadata__ must map strings to strings"),
    }
    return [
        Case(f"json-{label}", raw(text, tail if label == "empty" else b""), expect)
        for label, (text, expect) in texts.items()
    ]


def disagreements() -> list[Case]:
    """dtype, shape and byte count that do not agree."""
    header, blobs = pack(weights())
    cases = []

    def entry(label, name, expect, **fields):
        changed = json.loads(json.dumps(header))
        changed[name].update(fields)
        cases.append(Case(f"disagree-{label}", encode(changed, blobs), re.escape(repr(name)) + ".*" + expect))

    name = "blocks.1.att.value.weight"
    entry("dtype-f16-bytes-f32", name, "bytes but data_offsets span", dtype="F16")
    entry("dtype-list", name, "unknown dtype", dtype=["F32"])
    entry("dtype-lowercase", name, "unknown dtype", dtype="f32")
    entry("dtype-fp8", name, "unknown dtype", dtype="F8_E4M3")
    entry("dtype-missing", name, "unknown dtype", dtype=None)
    entry("shape-too-big", name, "bytes but data_offsets span", shape=[64, 65])
    entry("shape-negative", name, "shape must be", shape=[-64, -64])
    entry("shape-dict", name, "shape must be", shape={"0": 64})
    entry("shape-huge", name, "bytes but data_offsets span", shape=[2**40, 2**40])
    entry("shape-zero-rows", name, "bytes but data_offsets span", shape=[0, 64])
    entry("shape-transposed-lora", "blocks.0.att.w1", "has shape .*expected", shape=[32, 64])
    entry("shape-rank-3", name, "has shape .*expected", shape=[4, 16, 64])
    return cases


def names() -> list[Case]:
    """Missing, extra, huge-index and strangely named tensors."""
    cases = []

    def variant(label, expect, drop=(), add=None, refused_by=ALL):
        tensors = {n: w for n, w in weights().items() if n not in drop}
        tensors.update(add or {})
        cases.append(Case(f"names-{label}", encode(*pack(tensors)), expect, refused_by))

    vector = np.ones(64, np.float32)
    variant("no-emb", "'emb.weight' is missing", drop=["emb.weight"])
    variant("no-head", "'head.weight' is missing", drop=["head.weight"])
    variant("no-key-in-block-1", "tensors missing, e.g. blocks.1.att.key.weight", drop=["blocks.1.att.key.weight"])
    variant(
        "huge-layer-index",
        "blocks are numbered 0..9999999 but block 2 is missing",
        add={"blocks.9999999.ln1.weight": vector},
    )
    variant("layer-index-999999999999", "does not know", add={"blocks.999999999999.ln1.weight": vector})
    variant("gap-in-blocks", "block 2 is missing", add={"blocks.3.ln1.weight": vector})
    variant("one-more-block-half-made", r"tensors missing, e.g. blocks\.2\.", add={"blocks.2.ln1.weight": vector})
    variant("extra-tensor", "does not know.*'extra'", add={"extra": vector})
    variant("escape-codes-in-name", r"does not know.*\\x1b\[31m", add={"\x1b[31mred": vector})
    variant("name-5000-chars", "5000 characters long", add={"n" * 5000: vector})
    variant("rwkv6-marker", r"does not know \(not RWKV-7\?\)", add={"blocks.0.att.time_maa_x": vector})
    variant("no-tensors-at-all", "not an RWKV-7 checkpoint", drop=list(weights()))
    return cases


def dtypes() -> list[Case]:
    """Integer, boolean and F64 weights: refused by every command, never reinterpreted."""
    cases = []
    for name, dtype in (
        ("emb.weight", np.int32),
        ("head.weight", np.int16),
        ("blocks.0.att.key.weight", np.int8),
        ("blocks.0.ln1.weight", np.int32),
        ("blocks.1.att.x_r", np.int64),
        ("ln_out.bias", np.uint8),
        ("blocks.0.att.w0", np.bool_),
        ("blocks.0.ln1.weight", np.float64),
        ("head.weight", np.float64),
    ):
        tensors = weights()
        tensors[name] = (tensors[name] * 10).astype(dtype)
        label = np.dtype(dtype).name
        cases.append(
            Case(
                f"dtype-{label}-{name}",
                encode(*pack(tensors)),
                re.escape(repr(name)) + " is [A-Z]+[0-9]*: rwkvweb reads",
            )
        )
    return cases


def values() -> list[Case]:
    """NaN and infinite weights: the header is fine, so only commands that read the weights must refuse."""
    cases = []
    for label, name, index, value, dtype in (
        ("nan-head", "head.weight", (0, 0), np.nan, np.float32),
        ("inf-ln-out", "ln_out.bias", (3,), np.inf, np.float32),
        ("minus-inf-key", "blocks.0.att.key.weight", (1, 1), -np.inf, np.float32),
        ("nan-emb-row-1", "emb.weight", (1, 5), np.nan, np.float32),
        ("f16-inf-value", "blocks.1.att.value.weight", (0, 0), np.inf, np.float16),
    ):
        tensors = weights()
        tensors[name] = tensors[name].astype(dtype)
        tensors[name][index] = value
        cases.append(Case(f"values-{label}", encode(*pack(tensors)), "NaN or infinite|not finite", READS_WEIGHTS))
    return cases


def widths() -> list[Case]:
    """Widths and head sizes the kernels cannot lay out, and zero-sized dimensions."""
    import dataclasses

    cases = []
    for label, change, expect in (
        ("width-96", dict(n_embd=96, head_size=32, dim_ffn=384), "width .*96 is not a multiple of 64"),
        ("width-72-head-8", dict(n_embd=72, head_size=8, dim_ffn=288), "width .*72 is not a multiple of 64"),
        ("head-48-of-128", dict(n_embd=128, head_size=48, dim_ffn=512), "128 is not a multiple of the head size 48"),
        ("ffn-130", dict(dim_ffn=130), "dim_ffn 130 is not a multiple of 4"),
        ("lora-33", dict(d_decay_lora=33), "d_decay_lora 33 is not a multiple of 4"),
        ("head-size-0", dict(n_embd=64, head_size=0), "empty dimension"),
        ("width-0", dict(n_embd=0, dim_ffn=0), "empty dimension"),
        ("vocab-0", dict(vocab_size=0), "empty dimension"),
    ):
        config = dataclasses.replace(BASE_CONFIG, **change)
        shapes = {name: tuple(shape) for name, shape in _shapes(config).items()}
        tensors = {name: np.full(shape, 0.5, np.float32) for name, shape in shapes.items()}
        cases.append(Case(f"widths-{label}", encode(*pack(tensors)), expect))
    return cases


def _shapes(config: ModelConfig) -> dict:
    """tensor_shapes for configs a ModelConfig cannot describe (a zero head size: r_k is [H, 0])."""
    if config.head_size == 0:
        shapes = tensor_shapes(BASE_CONFIG)
        return {name: ((shape[0], 0) if name.endswith("att.r_k") else shape) for name, shape in shapes.items()}
    return tensor_shapes(config)


def metadata() -> list[Case]:
    """Hostile metadata: rwkvweb.quantized that is not JSON, not an object, names odd schemes or
    tensors, declares a vector or LoRA matrix quantized; an unknown tokenizer."""
    cases = []
    plain = weights()
    for label, value, expect in (
        ("not-json", "not json", "must be a JSON object"),
        ("a-list", "[]", "must be a JSON object"),
        ("scheme-list", '{"head.weight": ["nf4"]}', "unknown quantization scheme"),
        ("scheme-int3", '{"head.weight": "int3"}', "unknown quantization scheme 'int3'"),
        ("deep", "[" * 100_000 + "]" * 100_000, "must be a JSON object"),
        ("huge-number", '{"a": ' + "9" * 10_000 + "}", "must be a JSON object"),
        ("no-such-tensor", '{"nothing.here": "nf4"}', "'nothing.here' is declared nf4 but the file lacks"),
        ("vector-declared", '{"blocks.0.ln1.weight": "nf4"}', "'blocks.0.ln1.weight' is declared nf4"),
    ):
        cases.append(Case(f"metadata-quantized-{label}", encode(*pack(plain, {QUANTIZED_KEY: value})), expect))
    lora = dict(plain)
    codes, params = quantize(lora["blocks.0.att.w1"].reshape(-1), "nf4")
    rows = lora["blocks.0.att.w1"].shape[0]
    lora["blocks.0.att.w1"] = np.frombuffer(codes, np.uint8).reshape(rows, -1)
    lora["blocks.0.att.w1.qparams"] = np.frombuffer(params, np.float32)
    cases.append(
        Case(
            "metadata-quantized-lora",
            encode(*pack(lora, {QUANTIZED_KEY: '{"blocks.0.att.w1": "nf4"}'})),
            "'blocks.0.att.w1' is quantized",
        )
    )
    cases.append(
        Case(
            "metadata-tokenizer-unknown",
            encode(*pack(plain, {"rwkvweb.tokenizer": "klingon"})),
            "klingon",
            frozenset({"browser"}),
        )
    )
    return cases


# --- judging a run -------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm: a BaseException so no `except Exception` in the code under test swallows it."""


def judge(
    case: Case, command: str, returncode: int | None, error_text: str, output: str, failure: str | None = None
) -> str:
    """ok | traceback | hang | silent | unclear | memory (failure: what the runner saw, if anything)."""
    if failure:
        return failure
    if command not in case.refused_by:
        return "ok" if returncode == 0 else _unclear_or_refused(case, error_text)
    if returncode == 0:
        return "silent"
    lines = [line for line in error_text.splitlines() if line.strip()]
    if "Traceback" in error_text:
        return "traceback"
    if len(lines) != 1 or len(lines[0]) > MESSAGE_LIMIT or not re.search(case.expect, lines[0]):
        return "unclear"
    return "ok"


def _unclear_or_refused(case: Case, error_text: str) -> str:
    """A command that may accept the case refused it: fine only with a clear, matching line."""
    lines = [line for line in error_text.splitlines() if line.strip()]
    return "ok" if len(lines) == 1 and re.search(case.expect, lines[0]) else "unclear"


def summary(verdicts: list[str]) -> str:
    counts = {kind: verdicts.count(kind) for kind in ("traceback", "hang", "silent", "unclear", "memory")}
    return (
        f"{len(verdicts)} inputs tried: {counts['traceback']} tracebacks, {counts['hang']} hangs, "
        f"{counts['silent']} silent wrong answers, {counts['unclear']} unclear errors, "
        f"{counts['memory']} over the memory limit"
    )


def run_cli(path: str, command: str) -> tuple[int | None, str, str, str | None, float, int]:
    """(exit code, stderr, stdout, failure, seconds, peak traced bytes) of `python -m rwkvweb COMMAND path`
    in this process."""
    from rwkvweb.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = COMMANDS[command][:1] + [path] + COMMANDS[command][1:]
    failure, code = None, None
    tracemalloc.start()
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _raise_hang)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Hang:
        failure = "hang"
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException as error:  # noqa: BLE001 - any escape is the traceback this corpus looks for
        failure = "traceback"
        err.write(f"Traceback: {type(error).__name__}: {str(error)[:300]}")
    finally:
        signal.alarm(0)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if failure is None and peak > MEMORY_LIMIT:
        failure = "memory"
    return code, err.getvalue(), out.getvalue(), failure, seconds, peak


def _raise_hang(signum, frame):
    raise Hang


def main(folder: str) -> int:
    verdicts = []
    for case in corpus():
        path = os.path.join(folder, case.name + ".st")
        with open(path, "wb") as file:
            file.write(case.data)
        for command in COMMANDS:
            code, error_text, output, failure, seconds, peak = run_cli(path, command)
            verdict = judge(case, command, code, error_text, output, failure)
            verdicts.append(verdict)
            print(
                json.dumps(
                    {
                        "case": case.name,
                        "command": command,
                        "verdict": verdict,
                        "exit": code,
                        "seconds": round(seconds, 3),
                        "peak_bytes": peak,
                        "error": error_text.strip()[: MESSAGE_LIMIT + 100],
                    }
                ),
                flush=True,
            )
        os.remove(path)
    print(summary(verdicts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
