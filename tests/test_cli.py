"""`python -m rwkvweb`: the commands anyone can use to check the engine without JavaScript."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import SafetensorsFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, stdin: bytes = b"", check=True):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    result = subprocess.run([sys.executable, "-m", "rwkvweb", *args], input=stdin, capture_output=True, env=env)
    if check and result.returncode:
        raise AssertionError(result.stderr.decode())
    return result


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "m.st"
    out = cli(
        "testmodel", str(path), "--layers", "2", "--width", "128", "--vocab", "256", "--seed", "4", "--dtype", "fp16"
    )
    assert b"wrote" in out.stdout
    return str(path)


def test_info_prints_config_and_tensors(model):
    out = cli("info", model).stdout.decode()
    assert "n_layer=2, n_embd=128, vocab_size=256" in out
    assert "blocks.1.att.r_k" in out and "F16" in out


def test_logits_json_has_one_row_per_token_and_equals_the_reference(model):
    rows = json.loads(cli("logits", model, "--tokens", "1,2,255", "--backend", "numpy").stdout)["logits"]
    expected, _ = RWKV7.load(model).logits([1, 2, 255])
    assert np.array(rows).shape == (3, 256)
    np.testing.assert_array_equal(np.array(rows, np.float32), expected)


def test_any_vocab_and_width_multiple_of_64(tmp_path):
    path = str(tmp_path / "odd.st")
    cli("testmodel", path, "--layers", "1", "--width", "192", "--vocab", "77")
    rows = json.loads(cli("logits", path, "--tokens", "76,0").stdout)["logits"]
    assert len(rows) == 2 and len(rows[0]) == 77


def test_generate_prints_ids_for_a_model_without_tokenizer(model):
    ids = json.loads(cli("generate", model, "--tokens", "1,2", "--max-tokens", "4", "--temperature", "0").stdout)
    assert len(ids) == 4 and all(0 <= i < 256 for i in ids)


def test_encode_and_decode_round_trip_through_stdin():
    text = "Hello 世界 🌍\n"
    ids = json.loads(cli("encode", stdin=text.encode()).stdout)
    assert ids and all(isinstance(i, int) for i in ids)
    assert cli("decode", stdin=json.dumps(ids).encode()).stdout.decode() == text
    assert cli("decode", *map(str, ids)).stdout.decode() == text


@pytest.mark.parametrize(
    "args, message",
    [
        (("logits", "/no/such/model.st", "--tokens", "1"), "cannot open model file"),
        (("logits", "MODEL", "--tokens", "1,x"), "--tokens must be comma-separated integers"),
        (("logits", "MODEL", "--tokens", "256"), "token id 256 is outside the vocabulary"),
        (("testmodel", "/tmp/never.st", "--width", "100"), "multiple of 64"),
        (("info", "NOTSAFETENSORS"), "header length field"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(model, tmp_path, args, message):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff" * 64)
    args = [model if a == "MODEL" else str(junk) if a == "NOTSAFETENSORS" else a for a in args]
    result = cli(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr.decode() and "Traceback" not in result.stderr.decode()


@pytest.mark.browser
def test_webgpu_backend_prints_the_same_json_as_numpy(model):
    tokens = "1,7,255,0,42"
    gpu = np.array(json.loads(cli("logits", model, "--tokens", tokens, "--backend", "webgpu").stdout)["logits"])
    ref = np.array(json.loads(cli("logits", model, "--tokens", tokens, "--backend", "numpy").stdout)["logits"])
    assert gpu.shape == ref.shape == (5, 256)
    assert np.abs(gpu - ref).max() <= 1e-3 * (ref.max() - ref.min())  # float32 both sides; see test_model_gpu


@pytest.mark.browser
def test_generate_greedy_is_the_same_on_both_backends(tmp_path):
    path = str(tmp_path / "world.st")
    cli("testmodel", path, "--layers", "1", "--width", "64", "--vocab", "65536", "--dtype", "fp16", "--seed", "2")
    outputs = [
        cli("generate", path, "--prompt", "Hello", "--max-tokens", "12", "--temperature", "0", "--backend", b).stdout
        for b in ("numpy", "webgpu")
    ]
    assert outputs[0] == outputs[1] and len(outputs[0].strip()) > 0


def test_plan_prints_the_memory_plan_from_the_header(model):
    plan = json.loads(cli("plan", model, "--budget", "1MB").stdout)  # 1.2 MB at fp16: some matrices become int8
    assert plan["budget"] == 1_000_000 and plan["fits"] and plan["gpu_bytes"] <= 1_000_000
    assert set(plan["matrices_by_precision"]) == {"f16", "int8"}
    tensors = {t["name"]: t for t in plan["tensors"]}
    assert list(tensors) == list(SafetensorsFile(model).tensors)  # every tensor in the header
    assert all(t["where"] in ("gpu", "unused") for t in tensors.values())
    assert tensors["blocks.0.att.v1"]["where"] == "unused"  # layer 0 has no value residual
    assert tensors["blocks.1.att.v1"]["precision"] == "f16" and tensors["blocks.1.ln1.weight"] == {
        "name": "blocks.1.ln1.weight",
        "precision": "f32",
        "bytes": 128 * 4,
        "where": "gpu",
    }
    assert sum(t["bytes"] for t in tensors.values()) <= plan["bytes_by_role"]["weight"]  # buffers are padded
    refused = cli("plan", model, "--budget", "100kB", check=False)
    # the fixed part: vectors, state, scratch (hidden holds all four LoRA ranks side by side) and NF4 matrices
    assert refused.returncode == 2 and b"raise the budget to 607,380 bytes or more" in refused.stderr


@pytest.mark.browser
def test_logits_under_a_precision_agree_on_both_backends(model):
    """The same int8 plan on numpy and in headless Chromium: float32 order only (test_budget_gpu.py)."""
    numpy_rows = np.array(json.loads(cli("logits", model, "--tokens", "5,6,7", "--precision", "int8").stdout)["logits"])
    gpu_rows = np.array(
        json.loads(cli("logits", model, "--tokens", "5,6,7", "--precision", "int8", "--backend", "webgpu").stdout)[
            "logits"
        ]
    )
    exact = np.array(json.loads(cli("logits", model, "--tokens", "5,6,7").stdout)["logits"])
    assert np.abs(gpu_rows - numpy_rows).max() <= 1e-3 * np.ptp(numpy_rows)
    assert 0 < np.abs(numpy_rows - exact).max() <= 0.03 * np.ptp(exact)  # int8's bound (test_budget.py)


def test_logits_are_the_same_for_every_chunk_size(model):
    """--chunk N: N tokens per prefill submission; any N gives the reference's rows (float32 in another order)."""
    tokens = "5,6,7,8,9,10,11,12,13,14,15"
    expected = np.array(json.loads(cli("logits", model, "--tokens", tokens).stdout)["logits"])
    for chunk in ("1", "4", "64"):
        got = np.array(json.loads(cli("logits", model, "--tokens", tokens, "--chunk", chunk).stdout)["logits"])
        assert np.abs(got - expected).max() <= 1e-5 * (expected.max() - expected.min()), chunk
    assert b"--chunk must be at least 1" in cli("logits", model, "--tokens", tokens, "--chunk", "0", check=False).stderr


@pytest.mark.browser
def test_embed_prints_the_hidden_state_on_both_backends(model):
    from rwkvweb.reference import RWKV7

    ids = [3, 9, 27, 81, 243]
    reference = RWKV7.load(model)
    for pooling in ("last", "mean"):
        expected = reference.embed(ids, pooling)
        for backend in ("numpy", "webgpu"):
            out = cli(
                "embed",
                model,
                "--tokens",
                ",".join(map(str, ids)),
                "--pooling",
                pooling,
                "--chunk",
                "2",
                "--backend",
                backend,
            )
            got = np.array(json.loads(out.stdout)["embedding"])
            # float32 in another order; ln_out's output is O(1): 1e-5 absolute is ~100 ulps of slack
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-5, (pooling, backend)
    normalized = np.array(json.loads(cli("embed", model, "--tokens", "3,9", "--normalize").stdout)["embedding"])
    assert abs(np.linalg.norm(normalized) - 1) < 1e-6


@pytest.mark.browser
def test_generate_stats_and_synthetic_prompts(model):
    for backend in ("numpy", "webgpu"):
        out = (
            cli(
                "generate",
                model,
                "--prompt-tokens",
                "40",
                "--max-tokens",
                "4",
                "--temperature",
                "0",
                "--stats",
                "--chunk",
                "16",
                "--backend",
                backend,
            )
            .stdout.decode()
            .splitlines()
        )
        stats = json.loads(out[-1])
        assert set(stats) == {"prompt_tokens", "prefill_seconds", "generated", "decode_seconds"}
        assert stats["prompt_tokens"] == 40 and stats["generated"] == 4 and stats["prefill_seconds"] > 0
        assert len(json.loads(out[0])) == 4  # the ids (this model has no tokenizer)
