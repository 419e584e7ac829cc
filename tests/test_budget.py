"""The memory budget planner (budget.py): fits, refuses in words, and counts what the GPU holds.

The 0.1B and 0.4B shapes (12 x 768 and 24 x 1024, 65536 tokens) are planned from their
headers alone (testmodel.tensor_table), so these run in milliseconds; the GPU tests
(test_budget_gpu.py) load real files under the same plans and measure the bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CountingSource, run_async

from rwkvweb.api import Model
from rwkvweb.budget import BudgetError, parse_bytes, plan_budget, quantizable
from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import tensor_table, write_test_model

SHAPES = {"0.1B": (12, 768), "0.4B": (24, 1024)}
BUDGETS = ["700MB", "1GB", "2GB"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_the_released_shapes_fit_every_budget(shape, budget):
    config = ModelConfig.default_for(*SHAPES[shape], 65536)
    planned = plan_budget(config, tensor_table(config, "fp16"), parse_bytes(budget))
    buffers = sum(b["bytes"] for b in planned.compiled.plan.buffers)
    assert planned.gpu_bytes == buffers + planned.reserve <= parse_bytes(budget)
    assert set(planned.precisions) == set(quantizable(tensor_table(config)))


def test_auto_keeps_fp16_where_it_fits_and_lowers_the_biggest_first():
    config = ModelConfig.default_for(24, 1024, 65536)
    table = tensor_table(config, "fp16")
    roomy = plan_budget(config, table, parse_bytes("2GB"))
    assert set(roomy.precisions.values()) == {"f16"}  # 0.4B in fp16 is 0.92 GB
    tight = plan_budget(config, table, parse_bytes("700MB"))
    lowered = {name for name, p in tight.precisions.items() if p != "f16"}
    assert lowered and set(tight.precisions[n] for n in lowered) == {"int8"}
    kept = set(tight.precisions) - lowered
    assert min(table[n].nbytes for n in lowered) >= max(table[n].nbytes for n in kept)  # biggest matrices go first
    # a tighter budget never makes any matrix wider
    tighter = plan_budget(config, table, parse_bytes("400MB"))
    order = ["f32", "f16", "int8", "nf4"]
    assert all(
        order.index(tighter.precisions[n]) >= order.index(tight.precisions[n]) for n in table if n in tight.precisions
    )


def test_refuses_with_the_bytes_needed():
    config = ModelConfig.default_for(24, 1024, 65536)
    table = tensor_table(config, "fp16")
    from rwkvweb.model import compile_model

    narrowest = {**{n: "nf4" for n in quantizable(table)}, "emb.weight": "host"}
    reserve = plan_budget(config, table, parse_bytes("2GB")).reserve
    smallest = (
        compile_model(config, table, precisions=narrowest, chunk=1).plan.gpu_bytes() + reserve
    )  # refusals count 1-token chunks
    with pytest.raises(BudgetError, match=f"at least {smallest / 1e6:.1f} MB"):
        plan_budget(config, table, parse_bytes("200MB"))
    # 919.5 MB of weights, state and decode buffers + 0.1 MB of activations for 1-token prefill chunks
    # + 6.7 MB for the copy of the state (and sampler counts) that a batch of decode steps rolls back to
    with pytest.raises(BudgetError, match="at fp16 this model needs 926.3 MB"):
        plan_budget(config, table, parse_bytes("700MB"), precision="fp16")
    with pytest.raises(BudgetError, match="F32 in the file and cannot be stored as fp16"):
        plan_budget(config, tensor_table(config, "fp32"), parse_bytes("2GB"), precision="fp16")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("700MB", 700_000_000),
        ("2GB", 2_000_000_000),
        ("1.5GiB", 3 * 2**29),
        ("512 MiB", 2**29),
        (123, 123),
        ("64kb", 64_000),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "7 parsecs", "", "-5MB"])
def test_parse_bytes_refuses_nonsense(text):
    with pytest.raises(ValueError, match="cannot read"):
        parse_bytes(text)


def test_a_model_that_cannot_fit_is_refused_before_any_weight_is_read(tmp_path):
    config = ModelConfig.default_for(2, 128, 300)
    write_test_model(str(tmp_path / "m.st"), config, dtype="fp16")
    source = CountingSource((tmp_path / "m.st").read_bytes())
    with pytest.raises(BudgetError, match="raise the budget"):
        run_async(Model.load(source, budget="100kB", tokenizer_for=lambda c, m: None))
    header_end = 8 + int.from_bytes(source.data[:8], "little")
    assert all(end <= header_end for _, end in source.reads), source.reads


@pytest.mark.parametrize("precision", ["int8", "nf4"])
def test_quantized_plans_run_on_numpy_and_stay_near_the_reference(tmp_path, precision):
    """The numpy executor runs the quantized plan (quant.py's dequantization as the shaders do it);
    its logits stay near the float32 reference. Bounds, as a fraction of the logit range, from
    the formats: int8's step is 1/255 of a block's range (about 1/40 of a weight's std for
    Gaussian weights, so ~1% relative error per matrix product), NF4's ~1/10 of the absmax; the
    errors of 14 matrix products per layer partly cancel. Measured: int8 0.6%, NF4 9.7% of the range;
    the bounds (3%, 20%) are the per-product errors above with room for depth, not fits to these."""
    config = ModelConfig.default_for(2, 128, 300)
    path = str(tmp_path / "m.st")
    write_test_model(path, config, dtype="fp16")
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 300, 16)]

    async def logits(precision):
        model = await Model.load(path, precision=precision, tokenizer_for=lambda c, m: None)
        assert set(model.budget_plan.precisions.values()) == {precision if precision != "fp16" else "f16"}
        return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])

    exact, quantized = run_async(logits("fp16")), run_async(logits(precision))
    error = np.abs(quantized - exact).max() / (exact.max() - exact.min())
    print(f"{precision}: max |Δlogit| {error:.4f} of the range")
    assert 0 < error <= {"int8": 0.03, "nf4": 0.2}[precision], error


def host_embedding_budget(config) -> int:
    """A budget one byte under everything-NF4 (with 1-token prefill chunks, the planner's last resort before
    the embedding): only moving the embedding off the GPU fits it."""
    return (
        plan_budget(config, tensor_table(config, "fp16"), parse_bytes("10GB"), precision="nf4", chunk=1).gpu_bytes - 1
    )


def test_the_embedding_leaves_the_gpu_only_as_the_last_resort():
    config = ModelConfig.default_for(2, 128, 65536)  # a vocabulary-heavy model: the table is most of it
    planned = plan_budget(config, tensor_table(config, "fp16"), host_embedding_budget(config), chunk=1)
    assert planned.precisions["emb.weight"] == "host"  # every matrix in NF4 with the table on the GPU is 1 byte over
    report = planned.to_json()
    assert report["host_bytes"] == 65536 * 128 * 2  # the file's fp16 rows, untouched
    assert next(t for t in report["tensors"] if t["name"] == "emb.weight")["where"] == "host"
    assert planned.gpu_bytes == planned.compiled.plan.gpu_bytes() + planned.reserve <= host_embedding_budget(config)


def test_rows_written_by_the_engine_give_the_same_logits_and_tokens(tmp_path):
    """The host table's rows widened in Python equal what the embedding kernel gathers."""
    from rwkvweb.engine import Engine, Sampling
    from rwkvweb.model import compile_model
    from rwkvweb.numpy_exec import NumpyBackend
    from rwkvweb.safetensors import SafetensorsFile

    config = ModelConfig.default_for(2, 128, 300)
    path = str(tmp_path / "m.st")
    write_test_model(path, config, seed=3, dtype="fp16")
    file = SafetensorsFile(path)

    async def run(precisions):
        compiled = compile_model(config, file.tensors, precisions=precisions)
        assert (compiled.host_embedding is not None) == bool(precisions)
        engine = await Engine.create(compiled, NumpyBackend(), file.source)
        rows = [await engine.forward(t) for t in [5, 6, 7]]
        tokens, _ = await engine.generate([8, 9], 12, Sampling(temperature=0))
        return rows, tokens

    assert run_async(run({"emb.weight": "host"})) == run_async(run({}))


@pytest.mark.parametrize(
    "shape, budget", [((24, 1024), "700MB"), ((24, 1024), "400MB"), ((12, 768), "200MB"), ((2, 128), None)]
)
def test_no_matrix_could_be_one_level_wider(shape, budget):
    """After lowering, the planner widens back what still fits, so no matrix is narrower than
    the budget forces: widening any one of them by a level would go over."""
    from rwkvweb.budget import LEVELS
    from rwkvweb.model import allowed_precisions, compile_model

    config = ModelConfig.default_for(*shape, 65536)
    table = tensor_table(config, "fp16")
    limit = parse_bytes(budget) if budget else host_embedding_budget(config)
    planned = plan_budget(config, table, limit)
    for name, level in planned.precisions.items():
        wider = [w for w in LEVELS[: LEVELS.index(level)] if w in allowed_precisions(table[name])]
        if level in ("f16", "host") or not wider:
            continue
        widened = compile_model(config, table, precisions={**planned.precisions, name: wider[-1]})
        assert widened.plan.gpu_bytes() + planned.reserve > limit, f"{name} could be {wider[-1]}"
