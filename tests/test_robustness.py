"""One test per model-file defect of issue 14 (each failed before its fix): a clear one-line
refusal with a non-zero exit, the same from every command, and never invalid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import hostile
from rwkvweb.config import ModelError, detect_config, model_config, tensor_shapes
from rwkvweb.safetensors import FormatError, SafetensorsFile, header_length, parse_header

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (["info"], ["plan"], ["logits", "--tokens", "1,2"], ["logits", "--tokens", "1,2", "--precision", "fp32"])


def cli(*args, stdin: str = "", timeout: float = 60):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    return subprocess.run(
        [sys.executable, "-m", "rwkvweb", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )


def write(tmp_path, name, tensors, metadata=None, dtypes=None) -> str:
    path = tmp_path / name
    path.write_bytes(hostile.encode(*hostile.pack(tensors, metadata, dtypes)))
    return str(path)


def refused_everywhere(path: str, message: str, commands=COMMANDS) -> None:
    for command in commands:
        run = cli(command[0], path, *command[1:])
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and message in lines[0], (command, run.stderr[-2000:])
        assert "Traceback" not in run.stderr


def test_a_huge_layer_index_is_refused_at_once(tmp_path):
    tensors = hostile.weights()
    tensors["blocks.9999999.ln1.weight"] = np.ones(64, np.float32)
    path = write(tmp_path, "huge-index.st", tensors)
    started = time.perf_counter()
    refused_everywhere(path, "blocks are numbered 0..9999999 but block 2 is missing", COMMANDS[:1])
    assert time.perf_counter() - started < 20  # was: minutes and 9 GB building ten million layers
    shapes = {name: tuple(w.shape) for name, w in tensors.items()}
    started = time.perf_counter()
    with pytest.raises(ModelError, match="block 2 is missing"):
        detect_config(shapes)
    assert time.perf_counter() - started < 0.5  # detection itself: no per-layer work before the check


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("emb.weight", np.int32),
        ("head.weight", np.int16),
        ("blocks.0.ln1.weight", np.int32),
        ("blocks.0.ln1.weight", np.float64),
        ("blocks.1.att.x_k", np.float64),
    ],
)
def test_integer_and_f64_weights_are_refused_by_reference_and_engine(tmp_path, name, dtype):
    tensors = hostile.weights()
    tensors[name] = (tensors[name] * 100).astype(dtype)
    refused_everywhere(
        write(tmp_path, "int.st", tensors),
        f"tensor {name!r} is {hostile.pack({name: tensors[name]})[0][name]['dtype']}",
    )


@pytest.mark.parametrize(
    "name, value", [("head.weight", np.nan), ("blocks.0.att.key.weight", np.inf), ("ln_out.bias", -np.inf)]
)
def test_non_finite_weights_are_an_error_not_invalid_json(tmp_path, name, value):
    tensors = hostile.weights()
    tensors[name].reshape(-1)[0] = value
    path = write(tmp_path, "nan.st", tensors)
    reference = cli("logits", path, "--tokens", "1,2")
    assert reference.returncode == 2 and f"tensor {name!r} holds NaN or infinite values" in reference.stderr
    runs = [reference]
    for precision in ("fp32", "nf4"):
        runs.append(cli("logits", path, "--tokens", "1,2", "--precision", precision))
        assert runs[-1].returncode == 2 and "the logits after token 0 are not finite" in runs[-1].stderr
    for run in runs:
        assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run.stderr  # no numpy warnings either
    generated = cli("generate", path, "--tokens", "1,2", "--max-tokens", "3", "--temperature", "0")
    assert generated.returncode == 2 and "the logits are not finite" in generated.stderr and generated.stdout == ""


def test_header_json_nested_too_deeply_is_a_format_error():
    text = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(FormatError, match="nested too deeply"):
        parse_header(text, 8 + len(text))


def test_offsets_with_thousands_of_digits_are_a_format_error():
    text = b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, ' + b"9" * 5000 + b"]}}"
    with pytest.raises(FormatError, match="value no header needs"):
        parse_header(text, 8 + len(text))


@pytest.mark.parametrize("dtype", [["F32"], {"a": 1}, 7, None])
def test_a_dtype_that_is_not_a_string_is_named(dtype):
    text = json.dumps({"x": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}).encode()
    with pytest.raises(FormatError, match="tensor 'x': unknown dtype"):
        parse_header(text, 8 + len(text) + 4)


def test_a_header_length_over_the_limit_reads_nothing_more(tmp_path):
    path = tmp_path / "sparse.st"
    with open(path, "wb") as file:  # a sparse 200 MB file: the length field is all that is read
        file.write((150 * 2**20).to_bytes(8, "little"))  # over safetensors.MAX_HEADER_BYTES (16 MiB)
        file.truncate(200 * 2**20)
    with pytest.raises(FormatError, match="over the .*limit"):
        header_length(path.read_bytes()[:8], os.path.getsize(path))
    run = cli("info", str(path))
    assert run.returncode == 2 and "over the" in run.stderr


@pytest.mark.parametrize(
    "value, message",
    [
        ('{"head.weight": ["nf4"]}', "unknown quantization scheme"),
        ('{"head.weight": 4}', "unknown quantization scheme"),
        ("[" * 50_000 + "]" * 50_000, "must be a JSON object"),
        ('{"a": ' + "9" * 6000 + "}", "must be a JSON object"),
        ('"nf4"', "must be a JSON object"),
        ('{"blocks.0.ln1.weight": "nf4"}', "'blocks.0.ln1.weight' is declared nf4"),
    ],
)
def test_odd_quantized_metadata_is_refused_in_one_line(tmp_path, value, message):
    path = write(tmp_path, "meta.st", hostile.weights(), {"rwkvweb.quantized": value})
    refused_everywhere(path, message, COMMANDS[:2])


def test_quantized_codes_are_refused_for_a_lora_matrix():
    """Only the large matrices may be stored quantized: the LoRA path reads float weights only."""
    case = next(c for c in hostile.metadata() if c.name == "metadata-quantized-lora")
    from rwkvweb.quant import fold_quantized

    size = len(case.data)
    length = header_length(case.data[:8], size)
    tensors, metadata = parse_header(case.data[8 : 8 + length], size)
    with pytest.raises(ModelError, match="'blocks.0.att.w1' is quantized"):
        model_config(fold_quantized(tensors, metadata))


@pytest.mark.parametrize(
    "case",
    [
        "widths-width-96",
        "widths-width-72-head-8",
        "widths-ffn-130",
        "widths-lora-33",
        "widths-width-0",
        "widths-head-size-0",
        "widths-vocab-0",
    ],
)
def test_widths_the_kernels_cannot_lay_out_are_refused_by_every_command(tmp_path, case):
    """info and numpy logits accepted width 96 while plan/generate failed an assertion; width 0 divided by zero."""
    found = next(c for c in hostile.widths() if c.name == case)
    path = tmp_path / "w.st"
    path.write_bytes(found.data)
    for command in COMMANDS:
        run = cli(command[0], str(path), *command[1:])
        assert run.returncode == 2 and "Traceback" not in run.stderr, (command, run.stderr[-1500:])
        assert len(run.stderr.strip().splitlines()) == 1


def test_generate_refuses_an_odd_width_like_info(tmp_path):
    path = tmp_path / "w96.st"
    path.write_bytes(next(c for c in hostile.widths() if c.name == "widths-width-96").data)
    for command in (["info"], ["generate", "--tokens", "1", "--max-tokens", "2"]):
        run = cli(command[0], str(path), *command[1:])
        assert run.returncode == 2 and "width (n_embd) 96 is not a multiple of 64" in run.stderr, run.stderr[-1500:]


def test_info_reads_an_nf4_file_written_by_build_quantize(tmp_path):
    from build.quantize import quantize_file
    from rwkvweb.config import ModelConfig
    from rwkvweb.testmodel import write_test_model

    source, target = tmp_path / "m.st", tmp_path / "m-nf4.st"
    write_test_model(str(source), ModelConfig.default_for(2, 128, 256))
    quantize_file(str(source), str(target), precision="nf4")
    run = cli("info", str(target))
    assert run.returncode == 0, run.stderr
    assert "n_layer=2, n_embd=128, vocab_size=256" in run.stdout
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines() if line.startswith("  ")}
    assert rows["head.weight"][1] == "nf4" and "head.weight.qparams" not in rows
    # codes (256 x 128 / 2 bytes) plus one float32 absmax per 64 weights
    assert int(rows["head.weight"][-1].replace(",", "")) == 256 * 128 // 2 + 256 * 128 // 64 * 4


@pytest.mark.parametrize("stdin", ["[1.0]", "[true]", "[1.5]", "null", "[[1]]", "[-1]", '["1"]', "{}", "[" * 100_000])
def test_decode_refuses_ids_that_are_not_integers(stdin):
    run = cli("decode", stdin=stdin)
    assert run.returncode == 2 and "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, (
        run.stderr[-1500:]
    )
    assert run.stdout == ""


def test_decode_still_decodes_integer_ids():
    run = cli("decode", stdin="[33, 34]")
    assert run.returncode == 0 and run.stdout == " !"


def test_the_base_model_of_the_corpus_is_valid(tmp_path):
    """The corpus's defects are made on this file: it must load and run everywhere."""
    path = tmp_path / "good.st"
    path.write_bytes(hostile.good_model())
    file = SafetensorsFile(str(path))
    assert model_config(file.tensors) == detect_config(tensor_shapes(hostile.BASE_CONFIG))
    for command in COMMANDS:
        run = cli(command[0], str(path), *command[1:])
        assert run.returncode == 0, (command, run.stderr[-1500:])
