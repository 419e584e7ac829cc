"""RWKV-5.2 ("x052") and RWKV-6 ("x060") without a browser: the graph on the numpy executor against
reference56.py, state export/import, official .pth checkpoints, quantized plans.

Bounds: the numpy executor and the reference compute in float32 from the same weights in another
order (prefill: the chunk's rows; the ddlerp LoRA split in five), so they differ by float32 rounding,
~1e-7 of the logit range (measured 2.5e-7); 1e-5 leaves room and still fails a dropped term, which
moves logits by a tenth of the range or more.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_async
from pth_writer import write_pth
from rwkvweb.api import Model
from rwkvweb.config import ModelConfig, detect_config, tensor_shapes
from rwkvweb.reference import State, load, shift_mix
from rwkvweb.reference56 import RWKV5, RWKV6
from rwkvweb.testmodel import random_weights, write_test_model

PLAN = 1e-5  # of the logit range; see the module docstring
VERSIONS = ["x052", "x060"]


def ids(n: int, vocab: int = 300, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


async def plan_logits(path, tokens, **options) -> np.ndarray:
    model = await Model.load(path, tokenizer_for=lambda config, metadata: None, **options)
    return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("layers, width, head_size", [(1, 64, 8), (2, 128, 32), (2, 128, 64)])
def test_the_plan_on_numpy_matches_the_reference(tmp_path, version, layers, width, head_size):
    """Prefill chunks of 7 (the last one partial) and, through generate, greedy decode steps."""
    config = ModelConfig.default_for(layers, width, 300, head_size=head_size, version=version)
    path = str(tmp_path / "m.st")
    write_test_model(path, config, seed=layers + width)
    reference = load(path)
    assert type(reference) is {"x052": RWKV5, "x060": RWKV6}[version]
    tokens = ids(19)
    expected, state = reference.logits(tokens)
    got = run_async(plan_logits(path, tokens, chunk=7))
    assert np.abs(got - expected).max() <= PLAN * (expected.max() - expected.min())

    async def greedy():
        model = await Model.load(path, tokenizer_for=lambda config, metadata: None)
        return (await model.generate(tokens, 6, temperature=0)).tokens

    chosen, logits = [], expected[-1]
    for _ in range(6):
        chosen.append(int(np.argmax(logits)))
        logits, state = reference.forward(chosen[-1], state)
    assert run_async(greedy()) == chosen


@pytest.mark.parametrize("version", VERSIONS)
def test_exported_state_continues_exactly(tmp_path, version):
    """Reference: State bytes round trip; engine: export after a prefix, import into a fresh load, continue."""
    config = ModelConfig.default_for(2, 64, 300, head_size=8, version=version)
    path = str(tmp_path / "m.st")
    write_test_model(path, config, seed=3)
    reference, tokens = load(path), ids(12, seed=1)
    whole, _ = reference.logits(tokens)
    _, state = reference.logits(tokens[:7])
    blob = state.to_bytes()
    assert len(blob) == 4 * config.n_layer * (2 * config.n_embd + config.n_head * config.head_size**2)
    rest, _ = reference.logits(tokens[7:], State.from_bytes(config, blob))
    np.testing.assert_array_equal(rest, whole[7:])

    async def engine_round_trip():
        first = await Model.load(path, tokenizer_for=lambda c, m: None)
        await first.logits(tokens[:7])
        exported = await first.state()
        second = await Model.load(path, tokenizer_for=lambda c, m: None)
        await second.state(exported)
        return exported, await second.logits(tokens[7:], keep_state=True)

    exported, rows = run_async(engine_round_trip())
    state_scale = max(1.0, np.abs(np.frombuffer(blob, np.float32)).max())
    assert np.abs(np.frombuffer(exported, np.float32) - np.frombuffer(blob, np.float32)).max() <= PLAN * state_scale
    got = np.stack([np.frombuffer(row, np.float32) for row in rows])
    assert np.abs(got - whole[7:]).max() <= PLAN * (whole.max() - whole.min())


def test_a_v6_pth_checkpoint_loads_and_runs(tmp_path):
    """An official-style bf16 .pth (torch.save's layout, written by tests/pth_writer.py) of an RWKV-6 model:
    detected as x060 by the reference and the plan alike, which agree on its logits (bf16 widened on the way)."""
    config = ModelConfig.default_for(2, 64, 300, head_size=8, version="x060")
    weights = random_weights(config, seed=5)
    write_pth(tmp_path / "m.pth", weights, bf16=True)
    reference = load(str(tmp_path / "m.pth"))
    assert type(reference) is RWKV6 and reference.config == config
    tokens = ids(9, seed=2)
    expected, _ = reference.logits(tokens)
    got = run_async(plan_logits(str(tmp_path / "m.pth"), tokens))
    assert np.abs(got - expected).max() <= PLAN * (expected.max() - expected.min())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_quantized_plans_cover_the_new_matrices(tmp_path, version, precision):
    """att.gate and ffn.receptance are large matrices (config.LARGE_MATRIX): quantized with the rest, and
    the logits stay near fp16's (the bounds of test_budget.py's RWKV-7 test: int8 3%, NF4 20% of the range)."""
    config = ModelConfig.default_for(2, 128, 300, head_size=32, version=version)
    path = str(tmp_path / "m.st")
    write_test_model(path, config, dtype="fp16")
    tokens = ids(16, seed=3)

    async def run(precision):
        model = await Model.load(path, precision=precision, tokenizer_for=lambda c, m: None)
        for name in ("blocks.1.att.gate.weight", "blocks.1.ffn.receptance.weight"):
            assert model.budget_plan.precisions[name] == (precision if precision != "fp16" else "f16")
        return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])

    exact, quantized = run_async(run("fp16")), run_async(run(precision))
    error = np.abs(quantized - exact).max() / (exact.max() - exact.min())
    assert 0 < error <= {"int8": 0.03, "nf4": 0.2}[precision], error


def test_the_two_token_shift_conventions_are_one_lerp():
    """RWKV-4/5's time_mix (weight on the current token) is RWKV-6/7's maa with 1 − mix."""
    rng = np.random.default_rng(0)
    x, prev, mix = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(shift_mix(x, prev, mix, current=True), shift_mix(x, prev, 1 - mix, current=False), 1e-6)


@pytest.mark.parametrize("version", VERSIONS)
def test_generated_models_look_trained(version):
    """Decays spread over (0.55, 0.998) and bonuses of both signs: a kernel that drops w or u changes the output."""
    config = ModelConfig.default_for(1, 64, 100, head_size=8, version=version)
    weights = random_weights(config, seed=0)
    decay = np.exp(-np.exp(weights["blocks.0.att.time_decay"]))
    assert 0.5 < decay.min() and decay.max() < 0.999 and decay.max() - decay.min() > 0.3
    u = weights["blocks.0.att.time_faaaa"]
    assert u.min() < 0 < u.max()
    assert detect_config(tensor_shapes(config)) == config


def test_the_graph_needs_no_numpy():
    """The page builds plans in Pyodide, whose offline core has no numpy: compile both versions with it
    made unimportable (the references, which need it, are never imported by the graph)."""
    import subprocess
    import sys

    code = (
        "import sys, math; sys.modules['numpy'] = None\n"
        "from rwkvweb.config import ModelConfig, tensor_shapes\n"
        "from rwkvweb.safetensors import TensorInfo\n"
        "from rwkvweb.model import compile_model\n"
        "for version in ('x052', 'x060'):\n"
        "    config = ModelConfig.default_for(1, 64, 100, head_size=8, version=version)\n"
        "    table, at = {}, 0\n"
        "    for name, shape in tensor_shapes(config).items():\n"
        "        table[name] = TensorInfo(name, 'F32', shape, at, at + 4 * math.prod(shape))\n"
        "        at += 4 * math.prod(shape)\n"
        "    print(version, len(compile_model(config, table).plan.to_json()['programs']['decode']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("x052 ") and "\nx060 " in out
