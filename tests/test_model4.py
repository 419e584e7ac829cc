"""RWKV-4 generated models through the whole runtime on the numpy backend: the graph (model4.py) planned,
filled and run by the engine against the numpy reference (reference4.py), the budget planner, state
export/import, a `.pth` checkpoint, the tokenizer chosen by vocabulary size, and the CLI.

Bounds: the planned graph vs the reference ≤ 1e-4 of the logit range (both float32 from the same weights;
only the order of the sums differs, ~1e-7 observed, while a dropped time_first or the other token-shift
convention moves logits by a tenth of the range). Prefill vs decode on one plan ≤ 1e-5
(test_prefill_gpu.py's bound and argument).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import ROOT, run_async
from pth_writer import write_pth
from rwkvweb.api import Model
from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import LARGE_MATRIX, ModelConfig, fresh_state
from rwkvweb.reference import State, load
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import random_weights, write_test_model
from test_cli import cli

REFERENCE = 1e-4  # of the logit range; see the module docstring
SAME_PLAN = 1e-5


def v4_file(tmp_path, layers: int, width: int, vocab: int = 300, dtype: str = "fp32", seed: int = 0) -> str:
    path = str(tmp_path / f"v4-{layers}x{width}x{vocab}-{dtype}.st")
    write_test_model(path, ModelConfig.default_for(layers, width, vocab, version="x040"), seed=seed, dtype=dtype)
    return path


def rows(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(b, np.float32) for b in blobs])


@pytest.mark.parametrize(
    "layers, width, dtype, chunk",
    [(1, 64, "fp32", 1), (2, 64, "fp16", 7), (2, 128, "fp32", 16), (1, 128, "fp16", 64)],
)
def test_the_planned_graph_equals_the_reference(tmp_path, layers, width, dtype, chunk):
    """30 tokens: prefill chunks (head on every row) and one decode step per token, vs the reference."""
    path = v4_file(tmp_path, layers, width, dtype=dtype, seed=layers + width)
    tokens = [int(t) for t in np.random.default_rng(width).integers(0, 300, 30)]
    model = run_async(Model.load(path, chunk=chunk, tokenizer_for=lambda config, metadata: None))
    assert model.config.version == "x040"
    prefill = rows(run_async(model.logits(tokens)))
    prefill_state = np.frombuffer(run_async(model.state()), np.float32)

    async def decode():
        await model.engine.reset()
        return [await model.engine.forward(t) for t in tokens]

    decoded = rows(run_async(decode()))
    expected, state = load(path).logits(tokens)
    scale = expected.max() - expected.min()
    assert np.abs(decoded - expected).max() <= REFERENCE * scale
    assert np.abs(prefill - decoded).max() <= SAME_PLAN * scale
    reference_state = np.frombuffer(state.to_bytes(), np.float32)
    assert np.abs(prefill_state - reference_state).max() <= REFERENCE * np.abs(reference_state).max()


def test_a_fresh_engine_state_is_the_reference_fresh_state(tmp_path):
    """pp = -1e30 in every layer (config4.FRESH_PP), the rest zero: the bytes State.zeros exports."""
    path = v4_file(tmp_path, 2, 64)
    model = run_async(Model.load(path, tokenizer_for=lambda config, metadata: None))
    config = model.config
    assert run_async(model.state()) == fresh_state(config) == State.zeros(config).to_bytes()
    layer = np.frombuffer(fresh_state(config), np.float32).reshape(2, 5, 64)
    assert (layer[:, 3] == -1e30).all() and not layer[:, [0, 1, 2, 4]].any()


def test_exported_state_continues_exactly_in_another_engine(tmp_path):
    path = v4_file(tmp_path, 2, 128, seed=5)
    a, b = (run_async(Model.load(path, tokenizer_for=lambda config, metadata: None)) for _ in range(2))
    run_async(a.logits([9, 8, 7, 6]))
    blob = run_async(a.state())
    assert len(blob) == 2 * 5 * 128 * 4  # att_shift | aa | bb | pp | ffn_shift per layer
    run_async(b.state(blob))
    assert run_async(a.logits([5, 4], keep_state=True)) == run_async(b.logits([5, 4], keep_state=True))
    _, state = load(path).logits([9, 8, 7, 6])
    assert np.abs(np.frombuffer(blob, np.float32) - np.frombuffer(state.to_bytes(), np.float32)).max() < 1e-4
    with pytest.raises(ValueError, match="another model's state"):
        run_async(b.state(blob[:-4]))


def test_greedy_generation_equals_the_reference(tmp_path):
    path = v4_file(tmp_path, 2, 64, seed=2)
    model = run_async(Model.load(path, tokenizer_for=lambda config, metadata: None))
    result = run_async(model.generate([3, 1, 4, 1, 5], 12, temperature=0))
    reference = load(path)
    logits, state = reference.logits([3, 1, 4, 1, 5])
    chosen, last = [], logits[-1]
    for _ in range(12):
        chosen.append(int(np.argmax(last)))
        last, state = reference.forward(chosen[-1], state)
    assert result.tokens == chosen


@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_the_budget_planner_quantizes_every_v4_matrix(tmp_path, precision):
    """Every large matrix of a v4 file (ffn.receptance too) is lowered; the plan runs, prefill == decode."""
    path = v4_file(tmp_path, 2, 128, dtype="fp16", seed=7)
    tensors = SafetensorsFile(path).tensors
    config = ModelConfig.default_for(2, 128, 300, version="x040")
    planned = plan_budget(config, tensors, parse_bytes("1GB"), precision, 128 << 20, "cols", 16)
    large = [name for name in tensors if LARGE_MATRIX.fullmatch(name)]
    assert "blocks.1.ffn.receptance.weight" in large and len(large) == 2 + 2 * 7
    assert {planned.precisions[name] for name in large} == {precision}
    assert planned.compiled.weight_bytes["blocks.1.ffn.receptance.weight"] < 128 * 128 * 2 // 1.5
    model = run_async(Model.load(path, planned=planned, tokenizer_for=lambda config, metadata: None))
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 300, 20)]
    prefill = rows(run_async(model.logits(tokens)))

    async def decode():
        await model.engine.reset()
        return [await model.engine.forward(t) for t in tokens]

    decoded = rows(run_async(decode()))
    expected, _ = load(path).logits(tokens)
    scale = expected.max() - expected.min()
    assert np.abs(prefill - decoded).max() <= SAME_PLAN * scale
    # quantization error only, test_budget.py's bounds and argument (measured here: int8 0.4%, NF4 6.6%)
    error = np.abs(decoded - expected).max() / scale
    assert 0 < error <= {"int8": 0.03, "nf4": 0.2}[precision], error


def test_a_bf16_pth_reads_like_its_safetensors_twin(tmp_path):
    """An official-style RWKV-4 checkpoint: torch.save's zip, bf16 matrices, time_* vectors fp32."""
    config = ModelConfig.default_for(2, 64, 300, version="x040")
    weights = random_weights(config, seed=4)
    bf16 = frozenset(name for name, w in weights.items() if w.ndim == 2)
    write_pth(tmp_path / "v4.pth", weights, bf16=bf16)
    reference = load(str(tmp_path / "v4.pth"))
    assert type(reference).__name__ == "RWKV4" and reference.config == config
    tokens = [7, 1, 200, 42, 5]
    expected, _ = reference.logits(tokens)
    model = run_async(Model.load(str(tmp_path / "v4.pth"), tokenizer_for=lambda config, metadata: None))
    got = rows(run_async(model.logits(tokens)))
    assert np.abs(got - expected).max() <= REFERENCE * (expected.max() - expected.min())


@pytest.mark.parametrize("scheme", ["int8", "nf4"])
def test_a_converted_and_prequantized_pth_equals_quantizing_at_load(tmp_path, scheme):
    """build.convert then build.quantize on an RWKV-4 .pth: the file loads as the same codes the loader
    would make (identical logits), and the reference reading its dequantized values agrees (float32 order)."""
    from build.convert import convert
    from build.quantize import quantize_file

    config = ModelConfig.default_for(2, 64, 300, version="x040")
    weights = random_weights(config, seed=6)
    write_pth(tmp_path / "v4.pth", weights, bf16=frozenset(name for name, w in weights.items() if w.ndim == 2))
    assert convert(str(tmp_path / "v4.pth"), str(tmp_path / "v4.st"))["config"] == config
    quantize_file(str(tmp_path / "v4.st"), str(tmp_path / f"v4-{scheme}.st"), precision=scheme)
    tokens = [3, 1, 4, 1, 5, 9, 2, 6]

    def logits(path, **options):
        model = run_async(Model.load(path, tokenizer_for=lambda config, metadata: None, **options))
        return rows(run_async(model.logits(tokens))), model.info()

    # row blocks both ways: under "cols" a scheme in model.K_MAJOR_SCHEMES quantizes at load into k-major blocks
    at_load, _ = logits(str(tmp_path / "v4.st"), precision=scheme, matvec="rows")
    ahead, info = logits(str(tmp_path / f"v4-{scheme}.st"), matvec="rows")
    assert info["matrices_by_precision"] == {scheme: 2 + 2 * 7}
    np.testing.assert_array_equal(ahead, at_load)
    reference, _ = load(str(tmp_path / f"v4-{scheme}.st")).logits(tokens)
    assert np.abs(reference - ahead).max() <= REFERENCE * (reference.max() - reference.min())


def test_a_pile_vocabulary_asks_for_gpt_neox_and_a_world_one_gets_world(tmp_path):
    """The tokenizer comes from the vocabulary size as for every version: 50277 rows (RWKV-4 Pile/Raven)
    need GPT-NeoX 20B's tokenizer.json; 65536 rows (RWKV-4 World) use the World tokenizer."""
    pile = ModelConfig.default_for(1, 64, 50277, version="x040")
    write_pth(tmp_path / "pile.pth", random_weights(pile, seed=1), bf16=True)
    with pytest.raises(ValueError, match="needs GPT-NeoX 20B's tokenizer"):
        run_async(Model.load(str(tmp_path / "pile.pth")))
    world = v4_file(tmp_path, 1, 64, vocab=65536, dtype="fp16", seed=2)
    model = run_async(Model.load(world))
    assert type(model.tokenizer).__name__ == "WorldTokenizer"
    assert model.decode(model.encode("Hello, RWKV-4")) == "Hello, RWKV-4"


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli4") / "v4.st")
    out = cli(
        "testmodel", path, "--version", "x040", "--layers", "2", "--width", "128", "--vocab", "256", "--dtype", "fp16"
    )
    assert b"version='x040'" in out.stdout
    return path


def test_the_cli_runs_a_v4_model(cli_model):
    info = cli("info", cli_model).stdout.decode()
    assert "version='x040'" in info and "blocks.1.att.time_first" in info
    plan = json.loads(cli("plan", cli_model, "--budget", "1MB").stdout)
    assert plan["fits"] and plan["gpu_bytes"] <= 1_000_000
    tensors = {t["name"]: t for t in plan["tensors"]}
    assert (
        tensors["blocks.0.att.time_decay"]["where"] == "gpu"
        and tensors["blocks.0.att.time_decay"]["precision"] == "f32"
    )
    logits = np.array(
        json.loads(cli("logits", cli_model, "--tokens", "1,2,255", "--backend", "numpy").stdout)["logits"]
    )
    expected, _ = load(cli_model).logits([1, 2, 255])
    np.testing.assert_array_equal(logits.astype(np.float32), expected)
    ids = json.loads(cli("generate", cli_model, "--tokens", "1,2", "--max-tokens", "4", "--temperature", "0").stdout)
    assert len(ids) == 4 and all(0 <= i < 256 for i in ids)


@pytest.mark.browser
def test_the_webgpu_backend_prints_the_same_json_as_numpy(cli_model):
    tokens = "1,7,255,0,42"
    gpu = np.array(json.loads(cli("logits", cli_model, "--tokens", tokens, "--backend", "webgpu").stdout)["logits"])
    ref = np.array(json.loads(cli("logits", cli_model, "--tokens", tokens, "--backend", "numpy").stdout)["logits"])
    assert gpu.shape == ref.shape == (5, 256)
    assert np.abs(gpu - ref).max() <= REFERENCE * (ref.max() - ref.min())
    greedy = [
        cli("generate", cli_model, "--tokens", "3,4", "--max-tokens", "6", "--temperature", "0", "--backend", b).stdout
        for b in ("numpy", "webgpu")
    ]
    assert greedy[0] == greedy[1]


def test_the_v4_graph_and_fresh_state_need_no_numpy():
    """The page builds plans and writes the fresh state in Pyodide, whose offline core has no numpy."""
    import subprocess
    import sys

    code = (
        "import sys, math; sys.modules['numpy'] = None\n"
        "from rwkvweb.config import ModelConfig, tensor_shapes, fresh_state\n"
        "from rwkvweb.safetensors import TensorInfo\n"
        "from rwkvweb.model import compile_model\n"
        "config = ModelConfig.default_for(1, 64, 100, version='x040')\n"
        "table, at = {}, 0\n"
        "for name, shape in tensor_shapes(config).items():\n"
        "    table[name] = TensorInfo(name, 'F32', shape, at, at + 4 * math.prod(shape))\n"
        "    at += 4 * math.prod(shape)\n"
        "compiled = compile_model(config, table)\n"
        "kernels = {k['shader'] for k in compiled.plan.to_json()['kernels']}\n"
        "print(sorted(kernels), compiled.state.size, len(fresh_state(config)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}  # this checkout's package, as test_cli.cli runs it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert "'wkv4.wgsl'" in out and "wkv7" not in out and out.strip().endswith("1280 1280")
