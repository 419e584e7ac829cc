"""`python -m rwkvweb info|plan|logits|generate` on RWKV-5.2 and RWKV-6 test models (issue 11's CLI
contract: every supported version, both backends)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rwkvweb.reference import load
from test_cli import cli

VERSIONS = ["x052", "x060"]


@pytest.fixture(scope="module", params=VERSIONS)
def model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli56") / f"{request.param}.st"
    cli(
        "testmodel", str(path), "--version", request.param, "--layers", "2", "--width", "128", "--head-size", "32",
        "--vocab", "256", "--seed", "4", "--dtype", "fp16",
    )  # fmt: skip
    return request.param, str(path)


def test_info_names_the_version_and_head_size(model):
    version, path = model
    out = cli("info", path).stdout.decode()
    assert f"version='{version}'" in out and "head_size=32" in out
    assert "blocks.1.att.time_faaaa" in out and "blocks.1.ffn.receptance.weight" in out


def test_plan_reads_every_tensor_and_lowers_the_new_matrices_too(model):
    _, path = model
    plan = json.loads(cli("plan", path, "--precision", "int8").stdout)
    tensors = {t["name"]: t for t in plan["tensors"]}
    assert all(t["where"] == "gpu" for t in tensors.values()), [n for n, t in tensors.items() if t["where"] != "gpu"]
    assert tensors["blocks.0.att.gate.weight"]["precision"] == tensors["blocks.0.ffn.receptance.weight"]["precision"]
    assert tensors["blocks.0.att.gate.weight"]["precision"] == "int8"


def test_numpy_logits_are_the_reference(model):
    _, path = model
    rows = json.loads(cli("logits", path, "--tokens", "1,2,255", "--backend", "numpy").stdout)["logits"]
    np.testing.assert_array_equal(np.array(rows, np.float32), load(path).logits([1, 2, 255])[0])


@pytest.mark.browser
def test_webgpu_logits_and_greedy_generate_agree_with_numpy(model):
    """float32 on both sides: 1e-4 of the range (tests/test_model56_gpu.py's bound); greedy ids equal."""
    _, path = model
    tokens = "1,7,255,0,42"
    gpu = np.array(json.loads(cli("logits", path, "--tokens", tokens, "--backend", "webgpu").stdout)["logits"])
    ref = np.array(json.loads(cli("logits", path, "--tokens", tokens, "--backend", "numpy").stdout)["logits"])
    assert gpu.shape == ref.shape == (5, 256)
    assert np.abs(gpu - ref).max() <= 1e-4 * (ref.max() - ref.min())
    greedy = ("generate", path, "--tokens", "3,4", "--max-tokens", "8", "--temperature", "0", "--backend")
    outputs = [json.loads(cli(*greedy, backend).stdout) for backend in ("numpy", "webgpu")]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 8
