"""+dp4a on CPython: the variant's name and choice (model.py), its plan (which matrices take it), and the twins
(numpy_exec.quantize_x / matvec_dp4a) against the float int8 path with a derived bound.

The bound. int8 weights are w_k = min_b + range_b·c_k/255 per block b of 128; +dp4a rounds x per token per block
to x_k ≈ sx_b·q_k with q_k = round(x_k / sx_b) (never clamped: max|x| / sx_b ≤ 127.004), so |sx_b·q_k − x_k| ≤ sx_b/2.
It computes Σ_b [min_b·Σx_b + range_b/255·sx_b·Σ_k c_k·q_k] with Σx_b exact (up to f32), against the float path's
Σ_b Σ_k (min_b + range_b·c_k/255)·x_k: the min term cancels, leaving
    |dp4a − float| = |Σ_b Σ_k range_b·c_k/255·(sx_b·q_k − x_k)| ≤ Σ_b sx_b/2 · Σ_k range_b·c_k/255,
plus both sides' f32 rounding (RTOL of test_kernels.py, relative to the terms summed).
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkvweb import ops
from rwkvweb.config import ModelConfig
from rwkvweb.model import choose_matvec, compile_model, matvec_variant
from rwkvweb.numpy_exec import NumpyExecutor, quantize_x_block_scale, quantize_x_rows
from rwkvweb.plan import Plan
from rwkvweb.quant import SCHEMES, quantize
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

RTOL = 1e-5  # float32 in another order, relative to the terms summed (test_kernels.py)


def test_the_twin_rounds_half_to_even_within_half_a_step():
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    x[1, :128] *= 1e3  # blocks scale independently
    x[2, 128] = 15.875  # a block whose scale makes exact ties: x = (q + ½)·sx
    sx = quantize_x_block_scale(np.float32(15.875))
    ties = np.array([0.5, 1.5, 2.5, -2.5, -3.5, 126.5], np.float32)
    x[2, 129:135] = ties * sx
    q, params = quantize_x_rows(x)
    assert (q[2, 129:135] == [0, 2, 2, -2, -4, 126]).all()  # ties to the even neighbour
    scales = params[..., 0]
    assert ((scales.view(np.uint32) & 0xFF) == 0).all()  # 16 significant bits: q·sx is exact in f32
    blocks = x.reshape(3, 2, 128).astype(np.float64)
    error = np.abs(q.reshape(3, 2, 128) * scales[..., None].astype(np.float64) - blocks)
    assert (error <= scales[..., None] / 2).all()
    assert np.abs(q).max() == 127  # the largest magnitude of a block takes the full range
    assert (params[..., 2] == q.reshape(3, 2, 128).sum(axis=2)).all()  # Σq, exact
    assert np.allclose(params[..., 1], x.reshape(3, 2, 128).sum(axis=2), rtol=1e-6, atol=1e-3)  # Σx in f32


def test_zero_blocks_quantize_to_zero():
    x = np.zeros((1, 128), np.float32)
    q, params = quantize_x_rows(x)
    assert not q.any() and not params.any()


def _run(plan: Plan, initial: dict, out) -> np.ndarray:
    executor = NumpyExecutor(plan)
    for buffer, data in initial.items():
        executor.write(buffer, 0, data)
    executor.run("test")
    return np.frombuffer(executor.read(out.buffer, out.offset, out.size), np.float32)


@pytest.mark.parametrize("M, K, tokens, spread", [(64, 768, 1, 1.0), (48, 256, 4, 30.0)])
def test_the_twin_stays_within_the_derived_bound_of_the_float_int8_path(M, K, tokens, spread):
    rng = np.random.default_rng(K + tokens)
    w = (rng.standard_normal((M, K)) * K**-0.5).astype(np.float32)
    x = rng.standard_normal((tokens, K)).astype(np.float32) * np.exp(rng.uniform(0, np.log(spread), K)).astype(
        np.float32
    )  # per-element magnitudes spread over `spread`: a block's scale is set by its largest
    stored = np.frombuffer(b"".join(quantize(w.reshape(-1), "int8")), np.uint8)
    results = {}
    for dp4a in (False, True):
        plan = Plan()
        views = {n: plan.buffer(n, a.nbytes, "scratch") for n, a in (("w", stored), ("x", x), ("out", x[:, :M]))}
        initial = {views["w"].buffer: stored.tobytes(), views["x"].buffer: x.tobytes()}
        xq = plan.buffer("xq", ops.quantized_x_bytes(K, tokens), "scratch") if dp4a else None
        ops.matvec(
            plan, "test", views["w"], "int8", views["x"], views["out"], M, K, row_threads=32, tokens=tokens, xq=xq
        )
        results[dp4a] = _run(plan, initial, views["out"]).reshape(tokens, M)

    codes = stored[: M * K].reshape(M, K // 128, 128).astype(np.float64)
    params = stored[SCHEMES["int8"].param_offset(M * K) :].view(np.float32).reshape(M, K // 128, 2)
    scaled = params[..., 1:2].astype(np.float64) * codes / 255  # range_b·c_k/255, ≥ 0
    sx = quantize_x_rows(x)[1][..., 0].astype(np.float64)  # [tokens, blocks]
    bound = np.einsum("mb,tb->tm", scaled.sum(axis=2), sx / 2)
    terms = np.einsum("mbk,tbk->tm", np.abs(scaled) + np.abs(params[..., 0:1]), np.abs(x.reshape(tokens, -1, 128)))
    error = np.abs(results[True] - results[False])
    assert (error <= bound + RTOL * terms).all()
    assert error.max() > 1e-3 * bound.max()  # the twin did quantize x: not the float path under another name
    worst, rms = float((error / bound).max()), float(np.sqrt((error**2).mean()))
    print(f"dp4a vs float int8: worst {worst:.2f} of the bound, rms {rms:.1e}")


# --- the variant -------------------------------------------------------------------------------------


def test_dp4a_names_parse_and_refuse_other_layouts():
    assert matvec_variant("rows-wg+dp4a")["dp4a"] and matvec_variant("rows-wg+subgroups+dp4a")["subgroups"]
    assert not matvec_variant("rows-wg")["dp4a"]
    for name in ("cols+dp4a", "rows+dp4a"):
        with pytest.raises(ValueError, match=r"use rows-wg\+dp4a"):
            matvec_variant(name)


@pytest.mark.parametrize(
    "adapter",
    [
        {"architecture": "ampere", "features": ["subgroups"], "wgslLanguageFeatures": [ops.DP4A_FEATURE]},
        {"architecture": "swiftshader", "features": ["subgroups"], "wgslLanguageFeatures": [ops.DP4A_FEATURE]},
    ],
)
def test_the_plan_never_chooses_dp4a_unasked(adapter):
    """Off by default where available too: activation quantization costs accuracy (README, `python -m build.bench
    --only quality`); SwiftShader keeps cols."""
    chosen = choose_matvec(adapter)
    assert "dp4a" not in chosen and chosen.split("+")[0] == (
        "cols" if adapter["architecture"] == "swiftshader" else "rows-wg"
    )


def _tensors(tmp_path, width: int, dtype: str = "fp16"):
    path = str(tmp_path / f"m{width}.st")
    config = ModelConfig.default_for(2, width, 300, head_size=64)
    write_test_model(path, config, seed=width, dtype=dtype)
    return config, SafetensorsFile(path).tensors


def _matrices(compiled, entry: str) -> list[tuple[int, int]]:
    return [
        (k["constants"]["M"], k["constants"]["K"])
        for k in compiled.plan.kernels
        if k["shader"] == "matvec.wgsl" and k["entry"] == entry
    ]


def test_int8_matrices_whose_k_is_whole_blocks_take_dp4a_and_the_rest_keep_their_path(tmp_path):
    config, tensors = _tensors(tmp_path, 192)  # C = 192: only ffn.value (K = 4C = 768) has whole blocks along K
    int8 = {name: "int8" for name, info in tensors.items() if len(info.shape) == 2 and name != "emb.weight"}
    compiled = compile_model(config, tensors, matvec="rows-wg+dp4a", precisions=int8)
    assert compiled.matvec == "rows-wg+dp4a"
    assert {mk for mk in _matrices(compiled, "dp4a")} == {(192, 768)}
    assert (768, 192) in _matrices(compiled, "main")  # ffn.key: K = 192, the plain int8 path
    decode = compiled.plan.programs["decode"]
    steps = [compiled.plan.kernels[s["kernel"]]["shader"] for s in decode if "kernel" in s]
    assert steps.count("quantize_x.wgsl") == config.n_layer  # once per input: ffn.value's, in each layer

    fp16 = compile_model(config, tensors, matvec="rows-wg+dp4a")  # no int8 matrix: the plan is rows-wg's
    plain = compile_model(config, tensors, matvec="rows-wg")
    assert fp16.plan.to_json()["kernels"] == plain.plan.to_json()["kernels"]


def test_a_group_reading_three_inputs_quantizes_them_in_one_dispatch(tmp_path):
    config, tensors = _tensors(tmp_path, 256)
    int8 = {name: "int8" for name, info in tensors.items() if len(info.shape) == 2 and name != "emb.weight"}
    compiled = compile_model(config, tensors, matvec="rows-wg+subgroups+dp4a", precisions=int8, chunk=16)
    kernels, plan = compiled.plan.kernels, compiled.plan
    for program in ("decode", "prefill"):
        steps = [(kernels[s["kernel"]], s) for s in plan.programs[program] if "kernel" in s]
        quantizes = [s for k, s in steps if k["shader"] == "quantize_x.wgsl"]
        # per layer: r/k/v (3 slices, one dispatch), output, ffn.key, ffn.value; then the head (decode only)
        assert len(quantizes) == 4 * config.n_layer + (program == "decode")
        assert sorted({tuple(s["workgroups"]) for s in quantizes}) == sorted(
            {(2, 1 if program == "decode" else 16, n) for n in (1, 3)} | {(8, 1 if program == "decode" else 16, 1)}
        )
    grouped = [k for k in kernels if k["entry"] == "dp4a" and "START1" in k["constants"]]
    assert grouped and all("lib/reduce_subgroup.wgsl" in k["include"] for k in grouped)
    assert {(k["constants"].get("XQ_SLICE1"), k["constants"].get("XQ_SLICE2")) for k in grouped} == {(1, 2)}


def test_the_name_round_trips_through_plan_and_info(tmp_path):
    import json

    from conftest import run_async
    from rwkvweb.api import Model
    from test_cli import cli

    path = str(tmp_path / "m.st")
    cli("testmodel", path, "--layers", "1", "--width", "128", "--vocab", "256", "--seed", "2", "--dtype", "fp16")
    planned = json.loads(cli("plan", path, "--precision", "int8", "--matvec", "rows-wg+subgroups+dp4a").stdout)
    assert planned["matvec"] == "rows-wg+subgroups+dp4a"
    refused = cli("plan", path, "--matvec", "cols+dp4a", check=False)
    assert refused.returncode and b"use rows-wg+dp4a" in refused.stderr

    async def loaded():
        model = await Model.load(path, precision="int8", matvec="rows-wg+dp4a", tokenizer_for=lambda c, m: None)
        return model.info()["matvec"], await model.logits([1, 2])

    name, rows = run_async(loaded())
    assert name == "rows-wg+dp4a" and len(rows) == 2
