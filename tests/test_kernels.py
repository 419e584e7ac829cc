"""Every WGSL kernel in headless Chromium (WebGPU on SwiftShader) against its numpy twin.

Inputs are random; each test builds a one-kernel plan with the same op constructor the model
uses, runs it on the GPU and in numpy (numpy_exec.py), and compares. The tolerance, relative
to the output's largest magnitude, comes from float32 arithmetic in a different order: a dot
product of K terms may differ by ~K·2^-24 relative, so 1e-5 covers K up to a few thousand,
and the GPU's tanh/exp/sigmoid are accurate to a few ulp. f16 weights are exact once unpacked
(the numpy twin widens the same bits), so they share the bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_harness import device_features, floats, run_in_browser, run_in_numpy
from rwkvweb import ops
from rwkvweb.plan import Plan
from rwkvweb.quant import SCHEMES, dequantize, quantize

pytestmark = pytest.mark.browser
RTOL = 1e-5  # float32 in another summation order; see the module docstring


def inputs(plan: Plan, **arrays):
    """One buffer per array, filled with its bytes: (views by name, initial contents by buffer id)."""
    views, initial = {}, {}
    for name, values in arrays.items():
        views[name] = plan.buffer(name, values.nbytes, "scratch")
        initial[views[name].buffer] = values.tobytes()
    return views, initial


def check(gpu_page, plan: Plan, initial: dict, outputs: list, rtol: float = RTOL) -> None:
    """Run the plan's 'test' program on the GPU and in numpy; every output view must agree."""
    reads = [(v.buffer, v.offset, v.size) for v in outputs]
    gpu, _ = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)
    ref = run_in_numpy(plan.to_json(), initial, "test", [[]], reads)
    for key, data in ref[0].items():
        expected, got = floats(data), floats(gpu[0][key])
        scale = max(float(np.abs(expected).max()), 1e-30)
        error = float(np.abs(got - expected).max()) / scale
        assert error <= rtol, f"buffer {key}: max error {error:.2e} of the output scale (allowed {rtol:.0e})"


def rand(rng, *shape, scale=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def weights(rng, shape, scale, dtype):
    """Random weights stored as dtype: the bytes a weight buffer holds (quantized by the oracle)."""
    w = rand(rng, *shape, scale=scale)
    if dtype in SCHEMES:
        return np.frombuffer(b"".join(quantize(w.reshape(-1), dtype)), np.uint8)
    return w.astype(np.float16 if dtype == "f16" else np.float32)


@pytest.mark.parametrize("dtype", ["f32", "f16", "int8", "nf4"])
@pytest.mark.parametrize(
    "row_major, row_threads, act, bias, accumulate, M, K, row_offset",
    [
        (True, 1, "none", False, False, 192, 256, 0),
        (True, 1, "relu2", False, False, 100, 64, 8),  # M not a multiple of the workgroup; a split-head offset
        (True, 1, "none", False, True, 64, 1024, 0),  # the residual add
        (True, 32, "none", False, True, 97, 768, 4),  # workgroup reduction, 2 rows per workgroup, odd M
        (True, 64, "relu2", False, False, 64, 256, 0),  # one row per workgroup
        (False, 1, "tanh", False, False, 32, 256, 0),  # LoRA down, x @ w1
        (False, 1, "decay", True, False, 256, 32, 0),  # LoRA up with bias and the decay transform
        (False, 1, "sigmoid", True, False, 128, 64, 0),
        (False, 1, "none", False, True, 301, 128, 3),  # a transposed head part: M padded to 304
    ],
)
def test_matvec(gpu_page, dtype, row_major, row_threads, act, bias, accumulate, M, K, row_offset):
    rng = np.random.default_rng(M * K)
    plan = Plan()
    shape = (M, K) if row_major else (K, -(-M // 4) * 4)
    v, initial = inputs(
        plan, w=weights(rng, shape, K**-0.5, dtype), x=rand(rng, K), b=rand(rng, M), out=rand(rng, row_offset + M)
    )
    ops.matvec(
        plan,
        "test",
        v["w"],
        dtype,
        v["x"],
        v["out"],
        M,
        K,
        row_major=row_major,
        row_threads=row_threads,
        act=act,
        bias=v["b"] if bias else None,
        accumulate=accumulate,
        row_offset=row_offset,
    )
    check(gpu_page, plan, initial, [v["out"]])


def test_tanh_saturates_for_large_sums(gpu_page):
    """SwiftShader's WGSL tanh returns NaN for arguments past ~44 (tanh(90.0)); matvec clamps the argument to
    ±10, where tanh in f32 is already ±1, so a LoRA down-projection with large sums stays exact."""
    rng = np.random.default_rng(3)
    plan = Plan()
    M, K = 32, 64
    v, initial = inputs(plan, w=rand(rng, K, M, scale=4.0), x=rand(rng, K, scale=4.0), out=rand(rng, M))
    sums = (initial[v["w"].buffer], initial[v["x"].buffer])
    sums = np.frombuffer(sums[1], np.float32) @ np.frombuffer(sums[0], np.float32).reshape(K, M)
    assert np.abs(sums).max() > 90  # the inputs reach the range where the unclamped tanh failed
    ops.matvec(plan, "test", v["w"], "f32", v["x"], v["out"], M, K, row_major=False, act="tanh")
    reads = [(v["out"].buffer, v["out"].offset, v["out"].size)]
    gpu = floats(run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)[0][0][f"{v['out'].buffer}:0"])
    assert np.all(np.isfinite(gpu)) and np.array_equal(gpu[np.abs(sums) > 10], np.sign(sums[np.abs(sums) > 10]))


@pytest.mark.parametrize("group, n_groups, eps", [(256, 1, 1e-5), (768, 1, 1e-5), (64, 4, 64e-5), (32, 3, 64e-5)])
def test_norm(gpu_page, group, n_groups, eps):
    rng = np.random.default_rng(group + n_groups)
    n = group * n_groups
    plan = Plan()
    v, initial = inputs(plan, x=rand(rng, n, scale=3) + 1, w=rand(rng, n), b=rand(rng, n), out=np.zeros(n, np.float32))
    ops.norm(plan, "test", v["x"], v["w"], v["b"], v["out"], group, n_groups, eps)
    check(gpu_page, plan, initial, [v["out"]])


def test_norm_epsilon_matters_for_tiny_inputs(gpu_page):
    """Variance ~ eps: a kernel that ignored EPS, or used another, would miss by far more than RTOL."""
    rng = np.random.default_rng(0)
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, 128, scale=3e-3),
        w=np.ones(128, np.float32),
        b=np.zeros(128, np.float32),
        out=np.zeros(128, np.float32),
    )
    ops.norm(plan, "test", v["x"], v["w"], v["b"], v["out"], 128, 1, 1e-5)
    check(gpu_page, plan, initial, [v["out"]])


@pytest.mark.parametrize("n_mix", [6, 1])
def test_token_shift_mixes_and_remembers(gpu_page, n_mix):
    rng = np.random.default_rng(n_mix)
    C = 192
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, C),
        prev=rand(rng, C),
        mix=rng.uniform(0, 1, n_mix * C).astype(np.float32),
        out=np.zeros(n_mix * C, np.float32),
    )
    ops.token_shift(plan, "test", v["x"], v["prev"], v["mix"], v["out"], C, n_mix)
    check(gpu_page, plan, initial, [v["out"], v["prev"]])


@pytest.mark.parametrize("C, head_size", [(256, 64), (128, 32)])
def test_wkv7_state_update_and_readout(gpu_page, C, head_size):
    rng = np.random.default_rng(C)
    r, k, v_, a = rand(rng, C), rand(rng, C), rand(rng, C), rng.uniform(0.05, 0.95, C).astype(np.float32)
    w = np.exp(-0.606531 * rng.uniform(0, 1, C)).astype(np.float32)
    params = np.concatenate([rng.uniform(0.5, 1.5, C), rng.uniform(0.5, 1.5, C), rand(rng, C, scale=0.5)]).astype(
        np.float32
    )
    plan = Plan()
    v, initial = inputs(
        plan,
        vecs=np.concatenate([r, w, k, v_, a]),
        params=params,
        state=rand(rng, C * head_size),
        out=np.zeros(2 * C, np.float32),
    )
    ops.wkv7(plan, "test", v["vecs"], v["params"], v["state"], v["out"], C, head_size)
    check(gpu_page, plan, initial, [v["out"], v["state"]])


def test_norm_gated_epilogue(gpu_page):
    """(GroupNorm(y) + bonus) ⊙ g in one dispatch, for 3 tokens of 2 heads."""
    rng = np.random.default_rng(9)
    group, heads, tokens = 64, 2, 3
    n = group * heads
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, tokens * n, scale=2),
        w=rand(rng, n),
        b=rand(rng, n),
        add=rand(rng, tokens * n),
        gate=rng.uniform(0, 1, tokens * n).astype(np.float32),
        out=np.zeros(tokens * n, np.float32),
    )
    ops.norm(
        plan, "test", v["x"], v["w"], v["b"], v["out"], group, heads, 64e-5, tokens=tokens, add=v["add"], gate=v["gate"]
    )
    check(gpu_page, plan, initial, [v["out"]])


@pytest.mark.parametrize("tokens", [1, 4])
def test_matvec_moves_toward_a_target(gpu_page, tokens):
    """The value residual in the LoRA's epilogue: out += (toward − out)·sigmoid(W·x + bias)."""
    rng = np.random.default_rng(tokens)
    M, K = 128, 32
    plan = Plan()
    v, initial = inputs(
        plan,
        w=weights(rng, (K, M), K**-0.5, "f32"),
        x=rand(rng, tokens * K),
        b=rand(rng, M),
        out=rand(rng, tokens * M),
        toward=rand(rng, tokens * M),
    )
    ops.matvec(
        plan,
        "test",
        v["w"],
        "f32",
        v["x"],
        v["out"],
        M,
        K,
        row_major=False,
        act="sigmoid",
        bias=v["b"],
        tokens=tokens,
        toward=v["toward"],
    )
    check(gpu_page, plan, initial, [v["out"]])


@pytest.mark.parametrize("dtype", ["f32", "f16", "int8", "nf4"])
@pytest.mark.parametrize(
    "token, row_start", [(0, 0), (49, 0), (60, 50), (10, 50)]
)  # the last: another part's row, no write
def test_embed_gathers_one_row(gpu_page, dtype, token, row_start):
    rng = np.random.default_rng(token)
    rows, C = 50, 128
    plan = Plan()
    v, initial = inputs(
        plan, table=weights(rng, (rows, C), 1.0, dtype), token=np.array([token], np.uint32), out=rand(rng, C)
    )
    ops.embed(plan, "test", v["table"], dtype, v["token"], v["out"], rows, C, row_start=row_start)
    check(
        gpu_page, plan, initial, [v["out"]], rtol=0 if dtype in ("f32", "f16") else RTOL
    )  # a copy: exact unless dequantized


def sampler_params(temperature=1.0, top_p=1.0, top_k=0, presence=0.0, frequency=0.0, repetition=1.0, seed=0) -> bytes:
    """The sampler's parameter bytes, packed by the engine's own Sampling (step 0)."""
    from rwkvweb.engine import Sampling

    return Sampling(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        presence_penalty=presence,
        frequency_penalty=frequency,
        repetition_penalty=repetition,
        seed=seed,
    ).pack()


def sampler_plan(V: int, draws: int):
    """`draws` samples in one program, each copied out to results[i]."""
    plan = Plan()
    views = {
        name: plan.buffer(name, size, "scratch")
        for name, size in (
            ("logits", V * 4),
            ("counts", V * 4),
            ("params", ops.SAMPLER_PARAMS),
            ("probs", V * 4),
            ("token", 4),
            ("results", draws * 4),
        )
    }
    for i in range(draws):
        ops.sample(plan, "test", views["logits"], views["counts"], views["params"], views["probs"], views["token"], V)
        plan.copy("test", views["token"], views["results"].slot(i, 4))
    return plan, views


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.0),
        dict(temperature=1.0, top_k=1),
        dict(temperature=0.0, presence=0.5, frequency=0.3, repetition=1.3),
    ],
)
def test_greedy_sampling_is_the_penalised_argmax(gpu_page, settings):
    rng = np.random.default_rng(1)
    V = 1000
    logits = rand(rng, V, scale=3)
    counts = rng.integers(0, 3, V).astype(np.uint32)
    plan, v = sampler_plan(V, 4)
    initial = {
        v["logits"].buffer: logits.tobytes(),
        v["counts"].buffer: counts.tobytes(),
        v["params"].buffer: sampler_params(**settings),
    }
    reads = [(v["results"].buffer, 0, 16), (v["counts"].buffer, 0, V * 4)]
    gpu, _ = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)
    ref = run_in_numpy(plan.to_json(), initial, "test", [[]], reads)
    assert gpu == ref  # same tokens, same counts afterwards
    if not settings.get("presence"):
        assert np.frombuffer(gpu[0][f"{v['results'].buffer}:0"], np.uint32)[0] == np.argmax(logits)


@pytest.mark.parametrize(
    "settings, allowed",
    [
        (dict(temperature=1.0), None),
        (dict(temperature=0.7, top_k=5), "top_k"),
        (dict(temperature=1.0, top_p=0.6), "top_p"),
        (dict(temperature=1.2, top_k=20, top_p=0.9, seed=12345), "both"),
    ],
)
def test_sampling_draws_follow_the_distribution(gpu_page, settings, allowed):
    rng = np.random.default_rng(2)
    V, draws = 64, 600
    logits = rand(rng, V, scale=1.5)
    plan, v = sampler_plan(V, draws)
    initial = {v["logits"].buffer: logits.tobytes(), v["params"].buffer: sampler_params(**settings)}
    reads = [(v["results"].buffer, 0, draws * 4)]
    gpu = np.frombuffer(
        run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)[0][0][f"{v['results'].buffer}:0"],
        np.uint32,
    )
    ref = np.frombuffer(
        run_in_numpy(plan.to_json(), initial, "test", [[]], reads)[0][f"{v['results'].buffer}:0"], np.uint32
    )
    # The same seeded stream on both sides: only a draw landing within float rounding of a
    # boundary between two tokens' mass may differ.
    assert (gpu == ref).mean() >= 0.98
    p = np.exp((logits - logits.max()) / settings["temperature"])
    order = np.argsort(-p)
    keep = np.zeros(V, bool)
    keep[order[: settings.get("top_k") or V]] = True
    if settings.get("top_p", 1.0) < 1.0:
        nucleus = np.zeros(V, bool)
        nucleus[order[: np.searchsorted(np.cumsum(p[order]), settings["top_p"] * p.sum()) + 1]] = True
        keep &= nucleus
    assert keep[gpu].all(), "a token outside top-k / top-p was drawn"
    q = np.where(keep, p, 0) / np.where(keep, p, 0).sum()
    frequency = np.bincount(gpu, minlength=V) / draws
    assert np.abs(frequency - q).max() <= 5 * np.sqrt(q.max() * (1 - q.max()) / draws) + 1e-9  # 5 sigma


def test_seeds_are_reproducible_and_distinct(gpu_page):
    rng = np.random.default_rng(3)
    V = 128
    logits = rand(rng, V)
    plan, v = sampler_plan(V, 50)
    reads = [(v["results"].buffer, 0, 200)]
    runs = []
    for seed in (7, 7, 8):
        initial = {v["logits"].buffer: logits.tobytes(), v["params"].buffer: sampler_params(seed=seed)}
        runs.append(run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)[0][0])
    assert runs[0] == runs[1] != runs[2]


# --- chunked kernels: T token rows per dispatch (prefill), `count` of them real ---------------------


# The adapter-feature variants (model.MATVEC_OPTIONS) against the same numpy twin and bound: the subgroup
# reduction only reorders f32 sums, and f16 weights read natively are the same values unpack2x16float gives.
NEEDS = {"subgroups": "subgroups", "native_f16": "shader-f16"}


@pytest.mark.parametrize(
    "option, dtype, row_major, row_threads, M, K, tokens",
    [
        ("subgroups", "f32", True, 32, 97, 768, 1),  # 2 rows per workgroup, odd M
        ("subgroups", "f16", True, 64, 64, 256, 1),  # one row per workgroup
        ("subgroups", "int8", True, 32, 40, 256, 16),  # one token per workgroup row of a prefill
        ("subgroups", "nf4", True, 4, 50, 128, 1),  # rows narrower than a subgroup (lavapipe: 8; GPUs: 64-wide waves)
        ("native_f16", "f16", True, 1, 100, 64, 1),
        ("native_f16", "f16", True, 32, 97, 768, 1),
        ("native_f16", "f16", False, 1, 301, 128, 1),  # k-major, M padded to 304
        ("native_f16", "f16", False, 1, 100, 128, 32),  # k-major prefill tiles
    ],
)
def test_matvec_feature_variants(gpu_page, option, dtype, row_major, row_threads, M, K, tokens):
    if NEEDS[option] not in device_features(gpu_page):
        pytest.skip(f"this adapter has no {NEEDS[option]} (the native wgpu tests run this case on lavapipe)")
    rng = np.random.default_rng(M * K + tokens)
    plan = Plan()
    shape = (M, K) if row_major else (K, -(-M // 4) * 4)
    v, initial = inputs(
        plan,
        w=weights(rng, shape, K**-0.5, dtype),
        x=rand(rng, tokens * K),
        b=rand(rng, M),
        out=rand(rng, tokens * M),
    )
    options = {"row_major": row_major, "row_threads": row_threads, option: True}
    ops.matvec(plan, "test", v["w"], dtype, v["x"], v["out"], M, K, act="tanh", bias=v["b"], tokens=tokens, **options)
    prelude = {"subgroups": "lib/reduce_subgroup.wgsl", "native_f16": "lib/weights_native_f16.wgsl"}[option]
    assert prelude in plan.kernels[0]["include"]  # the variant under test is the one compiled
    check(gpu_page, plan, initial, [v["out"]])


@pytest.mark.parametrize("scheme, chunk", [("int8", 128), ("nf4", 300), ("nf4", 64)])
def test_k_major_quantized_weights_load_and_multiply(gpu_page, server, model_dir, scheme, chunk):
    """Quantized at load into k-major blocks (Plan.fill with transpose and quantize: the loader's fills of
    `chunk` rows, padded to whole blocks), then multiplied by the k-major branch with M_PAD = those rows:
    the bridge's quantizer (web/gpu/quantize.js) is bit-exact with numpy's, so the shared bound holds."""
    from rwkvweb.plan import View

    M, K = 300, 64
    block = SCHEMES[scheme].block
    padded = -(-M // block) * block
    rng = np.random.default_rng(chunk)
    w = rand(rng, M, K, scale=K**-0.5)
    (model_dir / f"kmajor-{scheme}.bin").write_bytes(w.tobytes())
    plan = Plan()
    weight = plan.buffer("w", SCHEMES[scheme].stored_bytes(padded * K), "weight")
    for r0 in range(0, M, chunk):
        n = min(chunk, M - r0)
        at = SCHEMES[scheme].code_bytes(r0)
        params = SCHEMES[scheme].param_offset(padded * K) + r0 // block * SCHEMES[scheme].param_bytes
        plan.fill(
            View(weight.buffer, at, weight.size - at),
            r0 * K * 4,
            (r0 + n) * K * 4,
            None,
            (n, K, padded),
            scheme,
            params,
        )
    v, initial = inputs(plan, x=rand(rng, K), out=rand(rng, M))
    ops.matvec(plan, "test", weight, scheme, v["x"], v["out"], M, K, row_major=False, m_pad=padded, act="tanh")
    assert plan.kernels[0]["constants"]["M_PAD"] == padded
    reads = [(v["out"].buffer, 0, v["out"].size)]
    url = server.url + f"test-models/kmajor-{scheme}.bin"
    gpu, _ = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads, url, w.tobytes())
    ref = run_in_numpy(plan.to_json(), initial, "test", [[]], reads, w.tobytes())
    expected, got = floats(ref[0][f"{v['out'].buffer}:0"]), floats(gpu[0][f"{v['out'].buffer}:0"])
    assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max()
    x = floats(initial[v["x"].buffer])
    # and near the unquantized product: each weight within half a code step (int8: range/510; NF4: the widest
    # gap between levels, 1 − 0.7230, halved, of the absmax), so W·x within that times Σ|x| (tanh: 1-Lipschitz)
    per_weight = {"int8": np.ptp(w) / 510, "nf4": np.abs(w).max() * (1 - 0.7229568) / 2}[scheme]
    assert np.abs(expected - np.tanh(w @ x)).max() <= per_weight * np.abs(x).sum() * (1 + 1e-5)


def count_buffer(plan: Plan, initial: dict, n: int):
    view = plan.buffer("count", 4, "io")
    initial[view.buffer] = np.array([n], np.uint32).tobytes()
    return view


@pytest.mark.parametrize("dtype", ["f32", "f16", "int8", "nf4"])
@pytest.mark.parametrize(
    "row_major, row_threads, tokens, real, M, K, out_stride",
    [
        (False, 1, 32, 32, 100, 128, None),  # k-major, two tiles of 16, M padded to 100
        (False, 1, 64, 19, 64, 256, None),  # a last chunk: 19 real of 64 (the rest of `out` untouched)
        (True, 1, 7, 5, 96, 64, 128),  # row-major, a 7-token tile; rows of `out` 128 apart (a split head)
        (True, 32, 16, 16, 40, 256, None),  # the workgroup reduction: one token per workgroup row
    ],
)
def test_matvec_over_token_rows(gpu_page, dtype, row_major, row_threads, tokens, real, M, K, out_stride):
    rng = np.random.default_rng(tokens * M)
    plan = Plan()
    shape = (M, K) if row_major else (K, -(-M // 4) * 4)
    stride = out_stride or M
    v, initial = inputs(
        plan,
        w=weights(rng, shape, K**-0.5, dtype),
        x=rand(rng, tokens * K),
        b=rand(rng, M),
        out=rand(rng, tokens * stride),
    )
    count = count_buffer(plan, initial, real)
    ops.matvec(
        plan,
        "test",
        v["w"],
        dtype,
        v["x"],
        v["out"],
        M,
        K,
        row_major=row_major,
        row_threads=row_threads,
        act="tanh",
        bias=v["b"],
        accumulate=True,
        out_stride=out_stride,
        tokens=tokens,
        count=count,
    )
    check(gpu_page, plan, initial, [v["out"]])


def test_norm_over_token_rows_repeats_its_parameters(gpu_page):
    rng = np.random.default_rng(5)
    group, heads, tokens = 32, 4, 6  # GroupNorm of 4 heads for 6 tokens: weight/bias [4 * 32] used 6 times
    plan = Plan()
    n = group * heads
    v, initial = inputs(
        plan, x=rand(rng, tokens * n, scale=2), w=rand(rng, n), b=rand(rng, n), out=np.zeros(tokens * n, np.float32)
    )
    ops.norm(plan, "test", v["x"], v["w"], v["b"], v["out"], group, heads, 64e-5, tokens=tokens)
    check(gpu_page, plan, initial, [v["out"]])


@pytest.mark.parametrize("n_mix, tokens, real", [(6, 8, 8), (1, 16, 11)])
def test_token_shift_over_a_chunk(gpu_page, n_mix, tokens, real):
    rng = np.random.default_rng(n_mix * tokens)
    C = 128
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, tokens * C),
        prev=rand(rng, C),
        mix=rng.uniform(0, 1, n_mix * C).astype(np.float32),
        out=np.zeros(n_mix * tokens * C, np.float32),
    )
    count = count_buffer(plan, initial, real)
    ops.token_shift(plan, "test", v["x"], v["prev"], v["mix"], v["out"], C, n_mix, tokens=tokens, count=count)
    check(gpu_page, plan, initial, [v["out"], v["prev"]])  # prev: the last real token's x


@pytest.mark.parametrize("C, head_size, tokens, real", [(256, 64, 8, 8), (128, 32, 16, 5)])
def test_wkv7_walks_a_chunk_in_order(gpu_page, C, head_size, tokens, real):
    rng = np.random.default_rng(C + tokens)
    T = tokens
    r, k, v_ = rand(rng, T * C), rand(rng, T * C), rand(rng, T * C)
    a = rng.uniform(0.05, 0.95, T * C).astype(np.float32)
    w = np.exp(-0.606531 * rng.uniform(0, 1, T * C)).astype(np.float32)
    params = np.concatenate([rng.uniform(0.5, 1.5, C), rng.uniform(0.5, 1.5, C), rand(rng, C, scale=0.5)]).astype(
        np.float32
    )
    plan = Plan()
    v, initial = inputs(
        plan,
        vecs=np.concatenate([r, w, k, v_, a]),
        params=params,
        state=rand(rng, C * head_size),
        out=np.zeros(2 * T * C, np.float32),
    )
    count = count_buffer(plan, initial, real)
    ops.wkv7(plan, "test", v["vecs"], v["params"], v["state"], v["out"], C, head_size, tokens=T, count=count)
    check(gpu_page, plan, initial, [v["out"], v["state"]])


@pytest.mark.parametrize("dtype", ["f16", "nf4"])
def test_embed_gathers_a_chunk_of_rows(gpu_page, dtype):
    rng = np.random.default_rng(7)
    rows, C, tokens = 50, 64, 5
    plan = Plan()
    ids = np.array([60, 3, 49, 50, 0], np.uint32)  # 60 and 50 belong to another part: those rows stay as they were
    v, initial = inputs(plan, table=weights(rng, (rows, C), 1.0, dtype), token=ids, out=rand(rng, tokens * C))
    ops.embed(plan, "test", v["table"], dtype, v["token"], v["out"], rows, C, tokens=tokens)
    check(gpu_page, plan, initial, [v["out"]], rtol=0 if dtype == "f16" else RTOL)


@pytest.mark.parametrize("real", [1, 6, 9])
def test_rows_last_and_sum(gpu_page, real):
    rng = np.random.default_rng(real)
    C, tokens = 96, 9
    plan = Plan()
    v, initial = inputs(plan, x=rand(rng, tokens * C), last=np.zeros(C, np.float32), total=rand(rng, C))
    count = count_buffer(plan, initial, real)
    ops.rows(plan, "test", "last", v["x"], count, v["last"], C, tokens)
    ops.rows(plan, "test", "sum", v["x"], count, v["total"], C, tokens)
    check(gpu_page, plan, initial, [v["last"], v["total"]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_sampler_refuses_non_finite_logits(gpu_page, bad):
    """A damaged model's NaN/inf logit gives ops.NOT_FINITE, not a token drawn from garbage, and counts nothing."""
    rng = np.random.default_rng(4)
    V = 300
    logits = rand(rng, V)
    logits[123] = bad
    plan, v = sampler_plan(V, 1)
    initial = {v["logits"].buffer: logits.tobytes(), v["params"].buffer: sampler_params(temperature=0.8)}
    reads = [(v["results"].buffer, 0, 4), (v["counts"].buffer, 0, V * 4)]
    gpu, _ = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)
    assert gpu == run_in_numpy(plan.to_json(), initial, "test", [[]], reads)
    assert np.frombuffer(gpu[0][f"{v['results'].buffer}:0"], np.uint32)[0] == ops.NOT_FINITE
    assert not np.frombuffer(gpu[0][f"{v['counts'].buffer}:0"], np.uint32).any()


# --- RWKV-4 ----------------------------------------------------------------------------------------

WKV4_STATE_RTOL = 1e-4  # aa and bb alone: see test_wkv4_walks_a_chunk_in_order


def wkv4_inputs(rng, C: int, tokens: int, fresh: bool):
    """r | k | v, time_first | time_decay and a state as a trained RWKV-4 layer sees them: decays
    exp(−exp(time_decay)) from 0.007 to 0.99 (time_decay in (−5, 3), the official init's spread), and a
    quarter of the channels with |k| up to 120, where e^k is infinite in float32: only the running
    maximum pp keeps the sums finite."""
    r = 1 / (1 + np.exp(-rand(rng, tokens * C)))
    k = rand(rng, tokens, C, scale=2)
    big = rng.uniform(0, 1, C) < 0.25
    k[:, big] = rng.uniform(-120, 120, (tokens, int(big.sum())))
    params = np.concatenate([rng.uniform(-2, 1, C), rng.uniform(-5, 3, C)]).astype(np.float32)
    if fresh:  # aa = bb = 0, pp = "minus infinity" (reference4.FRESH_PP)
        state = np.concatenate([np.zeros(2 * C), np.full(C, -1e30)])
    else:  # a state some tokens in: bb >= 1 (one of its terms is e^0), pp the largest exponent so far
        state = np.concatenate([rand(rng, C, scale=2), rng.uniform(1, 5, C), rng.uniform(-3, 100, C)])
    vecs = np.concatenate([r, k.reshape(-1), rand(rng, tokens * C)]).astype(np.float32)
    return vecs, params, state.astype(np.float32), big


@pytest.mark.parametrize(
    "C, tokens, real, fresh",
    [(128, 1, None, True), (192, 1, None, False), (256, 8, 8, True), (96, 16, 5, False)],  # decode, then chunks
)
def test_wkv4_walks_a_chunk_in_order(gpu_page, C, tokens, real, fresh):
    """Three runs of the dispatch (the state carries over) on the GPU and in numpy: out = r ⊙ wkv within
    RTOL of its scale. pp within RTOL of its scale too (a max of sums that round alike). aa and bb are
    stored divided by e^pp, so one ulp of pp (|pp|·2⁻²³ ≈ 1.2e-5 at |pp| = 100, from a 1-ulp
    difference in the GPU's exp of time_decay) rescales both by that much: WKV4_STATE_RTOL for them,
    while their ratio, all that wkv reads, is held to RTOL."""
    rng = np.random.default_rng(C + tokens)
    vecs, params, state, big = wkv4_inputs(rng, C, tokens, fresh)
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(vecs[tokens * C : 2 * tokens * C])).any()  # a naive e^k would overflow
    plan = Plan()
    v, initial = inputs(plan, vecs=vecs, params=params, state=state, out=np.zeros(tokens * C, np.float32))
    count = count_buffer(plan, initial, real) if real is not None else None
    ops.wkv4(plan, "test", v["vecs"], v["params"], v["state"], v["out"], C, tokens=tokens, count=count)
    s = v["state"]
    reads = [(v["out"].buffer, 0, v["out"].size)] + [(s.buffer, s.offset + i * C * 4, C * 4) for i in range(3)]
    gpu, _ = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]] * 3, reads)
    ref = run_in_numpy(plan.to_json(), initial, "test", [[]] * 3, reads)
    for step, (got, expected) in enumerate(zip(gpu, ref)):
        out, aa, bb, pp = (floats(expected[f"{b}:{o}"]) for b, o, _ in reads)
        out_gpu, aa_gpu, bb_gpu, pp_gpu = (floats(got[f"{b}:{o}"]) for b, o, _ in reads)
        assert np.isfinite(out_gpu).all() and np.isfinite(aa_gpu).all() and np.isfinite(bb_gpu).all()
        for what, e, g, rtol in (
            ("out", out, out_gpu, RTOL),
            ("pp", pp, pp_gpu, RTOL),
            ("aa/bb", aa / bb, aa_gpu / bb_gpu, RTOL),
            ("aa", aa, aa_gpu, WKV4_STATE_RTOL),
            ("bb", bb, bb_gpu, WKV4_STATE_RTOL),
        ):
            error = float(np.abs(g - e).max()) / max(float(np.abs(e).max()), 1e-30)
            assert error <= rtol, f"run {step}: {what} max error {error:.2e} of its scale (allowed {rtol:.0e})"
    if real is not None:  # rows past the count are left as they were
        assert not floats(gpu[-1][f"{v['out'].buffer}:0"])[real * C :].any()


# RWKV-5.2 / RWKV-6 (issue 11 part 3): the WKV with bonus u, and the options their blocks use.


def wkv5_inputs(rng, C, tokens):
    """r d k v [4, T, C] and params time_decay | time_faaaa [2, C] spread like a trained model's
    (decays exp(−exp(d)) in (0.55, 0.998), bonuses of both signs) so a dropped term shows."""
    T = tokens
    r, k, v_ = rand(rng, T * C), rand(rng, T * C), rand(rng, T * C)
    d = rng.uniform(-6.0, -0.5, T * C).astype(np.float32)  # per token (RWKV-6)
    params = np.concatenate([rng.uniform(-6.0, -0.5, C), rng.uniform(-0.5, 1.0, C)]).astype(np.float32)
    return np.concatenate([r, d, k, v_]), params


@pytest.mark.parametrize("per_token_decay", [False, True])
@pytest.mark.parametrize("C, head_size, tokens, real", [(256, 64, 1, 1), (128, 32, 8, 8), (64, 8, 16, 5)])
def test_wkv5_state_update_and_readout(gpu_page, per_token_decay, C, head_size, tokens, real):
    """One decode step and chunks (a partial one too), decay per channel (5.2) or per token (6)."""
    rng = np.random.default_rng(C + tokens + per_token_decay)
    vecs, params = wkv5_inputs(rng, C, tokens)
    plan = Plan()
    v, initial = inputs(
        plan, vecs=vecs, params=params, state=rand(rng, C * head_size), out=np.zeros(tokens * C, np.float32)
    )
    count = count_buffer(plan, initial, real) if tokens > 1 else None
    ops.wkv5(plan, "test", v["vecs"], v["params"], v["state"], v["out"], C, head_size, per_token_decay, tokens, count)
    check(gpu_page, plan, initial, [v["out"], v["state"]])


@pytest.mark.parametrize("tokens", [1, 4])
def test_matvec_gated_silu_and_strided_input(gpu_page, tokens):
    """The channel mix's x += (Wv·k) ⊙ r (GATED, accumulating), the gate's silu, and v6's ddlerp LoRA
    up-projection reading slice j of a [T, 5D] row (X_OFFSET, X_STRIDE)."""
    rng = np.random.default_rng(40 + tokens)
    M, K, D = 128, 64, 32
    plan = Plan()
    v, initial = inputs(
        plan,
        w=weights(rng, (M, K), K**-0.5, "f32"),
        x=rand(rng, tokens * K),
        out=rand(rng, tokens * M),
        gate=rng.uniform(0, 1, tokens * M).astype(np.float32),
        silu_out=np.zeros(tokens * M, np.float32),
        up=weights(rng, (D, M), D**-0.5, "f32"),
        hidden=rand(rng, tokens * 5 * D),
        b=rand(rng, M),
        mixes=np.zeros(tokens * M, np.float32),
    )
    chunk = {"tokens": tokens}
    ops.matvec(plan, "test", v["w"], "f32", v["x"], v["out"], M, K, accumulate=True, gate=v["gate"], **chunk)
    ops.matvec(plan, "test", v["w"], "f32", v["x"], v["silu_out"], M, K, act="silu", **chunk)
    ops.matvec(
        plan, "test", v["up"], "f32", v["hidden"], v["mixes"], M, D, row_major=False, bias=v["b"], x_offset=2 * D,
        x_stride=5 * D, **chunk,
    )  # fmt: skip
    check(gpu_page, plan, initial, [v["out"], v["silu_out"], v["mixes"]])


@pytest.mark.parametrize("tokens, real", [(1, 1), (8, 6)])
def test_token_shift_variants(gpu_page, tokens, real):
    """RWKV-4/5's lerp toward the current token (CURRENT), RWKV-6's per-token mixes (MIX_PER_TOKEN),
    and a shift that leaves prev alone (KEEP_PREV): prev must be unchanged after it."""
    rng = np.random.default_rng(50 + tokens)
    C = 128
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, tokens * C),
        prev=rand(rng, C),
        kept=rand(rng, C),
        mix=rng.uniform(0, 1, 2 * C).astype(np.float32),
        per_token=rng.uniform(-0.5, 1.5, 6 * tokens * C).astype(np.float32),
        current=np.zeros(2 * tokens * C, np.float32),
        moved=np.zeros(6 * tokens * C, np.float32),
        first=np.zeros(tokens * C, np.float32),
    )
    count = count_buffer(plan, initial, real) if tokens > 1 else None
    chunk = {"tokens": tokens, "count": count}
    ops.token_shift(plan, "test", v["x"], v["kept"], v["mix"], v["first"], C, 1, keep_prev=True, **chunk)
    ops.token_shift(plan, "test", v["x"], v["kept"], v["per_token"], v["moved"], C, 6, mix_per_token=True, **chunk)
    ops.token_shift(plan, "test", v["x"], v["prev"], v["mix"], v["current"], C, 2, current=True, **chunk)
    check(gpu_page, plan, initial, [v["first"], v["moved"], v["current"], v["prev"], v["kept"]])


def test_norm_gate_without_an_added_term(gpu_page):
    """RWKV-5.2/6's GroupNorm(y; ln_x, eps 64e-5) ⊙ silu(g), for 3 tokens of 4 heads of 8."""
    rng = np.random.default_rng(11)
    group, heads, tokens = 8, 4, 3
    n = group * heads
    plan = Plan()
    v, initial = inputs(
        plan,
        x=rand(rng, tokens * n, scale=2),
        w=rand(rng, n),
        b=rand(rng, n),
        gate=rand(rng, tokens * n),
        out=np.zeros(tokens * n, np.float32),
    )
    ops.norm(plan, "test", v["x"], v["w"], v["b"], v["out"], group, heads, 64e-5, tokens=tokens, gate=v["gate"])
    check(gpu_page, plan, initial, [v["out"]])


GROUP_PARTS = [(32, "tanh"), (64, "none"), (96, "sigmoid"), (32, "none")]  # RWKV-7's four LoRA downs, smaller


@pytest.mark.parametrize(
    "dtype, row_major, row_threads",
    [
        ("f32", False, 1),  # k-major blocks side by side: SwiftShader's layout
        ("f16", False, 1),
        ("f32", True, 1),
        ("f16", True, 32),  # the workgroup reduction: two rows per workgroup, groups change inside one
        ("int8", True, 1),  # quantized: every part's codes, then every part's block parameters
        ("nf4", True, 32),
    ],
)
@pytest.mark.parametrize("tokens, real, with_bias", [(1, 1, False), (16, 11, False), (1, 1, True), (16, 16, True)])
def test_grouped_matvec_reads_and_writes_each_parts_slots(
    gpu_page, dtype, row_major, row_threads, tokens, real, with_bias
):
    """Four matrices of one K in one dispatch, each reading its own slot of x ([slots, T, K]) and writing its
    own columns of a [T, ΣM] output with its own activation (and its own biases, side by side in one
    buffer: RWKV-7's w0 | a0), against act(W_p · x_p + b_p) computed part by part."""
    rng = np.random.default_rng(tokens + row_threads)
    K, T = 128, tokens
    Ms = [M for M, _ in GROUP_PARTS]
    parts = [ops.Part(M, (3 - i) * T * K, sum(Ms[:i]), act) for i, (M, act) in enumerate(GROUP_PARTS)]  # slots reversed
    matrices = [rand(rng, M, K, scale=K**-0.5) for M in Ms]
    stored = np.concatenate([(m if row_major else m.T).reshape(-1) for m in matrices])  # each part as if alone
    if dtype in SCHEMES:
        w = np.frombuffer(b"".join(quantize(stored, dtype)), np.uint8)
    else:
        w = stored.astype(np.float16 if dtype == "f16" else np.float32)
    plan = Plan()
    x, out, bias = rand(rng, 4 * T * K), rand(rng, T * sum(Ms)), rand(rng, sum(Ms))
    v, initial = inputs(plan, w=w, x=x, out=out, b=bias)
    count = count_buffer(plan, initial, real) if tokens > 1 else None
    kind = {"row_major": row_major, "row_threads": row_threads}
    ops.matvec_group(plan, "test", v["w"], dtype, v["x"], v["out"], parts, K, x_stride=K, out_stride=sum(Ms),
                     tokens=tokens, count=count, bias=v["b"] if with_bias else None, **kind)  # fmt: skip
    check(gpu_page, plan, initial, [v["out"]])

    # the numpy twin's grouping, against the maths part by part (weights as the GPU reads them)
    reads = [(v["out"].buffer, 0, v["out"].size)]
    got = floats(run_in_numpy(plan.to_json(), initial, "test", [[]], reads)[0][f"{v['out'].buffer}:0"])
    widened = dequantize(w, dtype, stored.size) if dtype in SCHEMES else w.astype(np.float32)
    expected = out.reshape(T, -1).copy()
    activations = {"none": lambda t: t, "tanh": np.tanh, "sigmoid": lambda t: 1 / (1 + np.exp(-t))}
    for i, (part, matrix) in enumerate(zip(parts, matrices)):
        at = sum(m.size for m in matrices[:i])
        weight = widened[at : at + matrix.size].reshape(matrix.shape if row_major else matrix.T.shape)
        weight = weight if row_major else weight.T
        xs = x[part.x_offset :][: T * K].reshape(T, K)[:real]
        biases = bias[part.out_offset : part.out_offset + part.M] if with_bias else 0  # out columns = bias order
        expected[:real, part.out_offset : part.out_offset + part.M] = activations[part.act](xs @ weight.T + biases)
    assert np.abs(got.reshape(T, -1) - expected).max() <= RTOL * np.abs(expected).max()


@pytest.mark.parametrize("n_mix, tokens, real", [(6, 1, 1), (1, 1, 1), (6, 16, 11), (1, 8, 8)])
def test_norm_shift_normalises_then_mixes_and_remembers(gpu_page, n_mix, tokens, real):
    """LayerNorm fused with the token shift: the mixes of every real token and the new shift state (the last
    real token's normalised row); its numpy twin is norm's then token_shift's, checked here against the maths."""
    rng = np.random.default_rng(n_mix + tokens)
    C = 192  # three channels per invocation of a workgroup of 64
    plan = Plan()
    x, params, prev = rand(rng, tokens * C, scale=2) + 1, rand(rng, 2 * C), rand(rng, C)
    mix = rng.uniform(0, 1, n_mix * C).astype(np.float32)
    v, initial = inputs(plan, x=x, params=params, prev=prev, mix=mix, out=np.zeros(n_mix * tokens * C, np.float32))
    count = count_buffer(plan, initial, real) if tokens > 1 else None
    ops.norm_shift(plan, "test", v["x"], v["params"], v["prev"], v["mix"], v["out"], C, n_mix, 1e-5, tokens, count)
    check(gpu_page, plan, initial, [v["out"], v["prev"]])

    reads = [(v[name].buffer, 0, v[name].size) for name in ("out", "prev")]
    got = run_in_numpy(plan.to_json(), initial, "test", [[]], reads)[0]
    rows = x.reshape(tokens, C)[:real]
    y = (rows - rows.mean(1, keepdims=True)) / np.sqrt(rows.var(1, keepdims=True) + 1e-5) * params[:C] + params[C:]
    before = np.concatenate([prev[None], y[:-1]])
    expected = np.zeros((n_mix, tokens, C), np.float32)
    expected[:, :real] = y[None] + (before - y)[None] * mix.reshape(n_mix, 1, C)
    for name, want in (("out", expected), ("prev", y[-1])):
        have = floats(got[f"{v[name].buffer}:0"])
        assert np.abs(have - want.reshape(-1)).max() <= RTOL * np.abs(want).max(), name


# --- packed int8 dot products (+dp4a): quantize_x.wgsl, then matvec.wgsl's entry `dp4a` ---------------------------
# Against the twins (numpy_exec.quantize_x, matvec_dp4a), which quantize x to the same codes bit for bit (asserted
# below), so the integer sums are identical and only the f32 parts differ in order: Σx (a tree of 128 vs numpy's
# pairwise sum), the per-step scaling and the row reduction: the shared RTOL's K·2^-24 argument holds.
DP4A = "packed_4x8_integer_dot_product"


def needs_dp4a(gpu_page):
    if DP4A not in device_features(gpu_page):
        pytest.skip(f"this adapter's WGSL has no {DP4A}")


@pytest.mark.parametrize(
    "M, K, row_threads, tokens, counted, subgroups, act",
    [
        (97, 768, 32, 1, False, False, "none"),  # the decode step: 2 rows per workgroup, odd M, 6 blocks
        (64, 256, 64, 1, False, True, "sigmoid"),  # one row per workgroup, subgroup sums
        (40, 384, 4, 16, True, False, "relu2"),  # a prefill chunk: 16 token rows, 11 of them real; narrow rows
        (33, 128, 32, 3, False, True, "tanh"),  # one block per row; tied_x's large block saturates tanh
    ],
)
def test_matvec_dp4a(gpu_page, M, K, row_threads, tokens, counted, subgroups, act):
    needs_dp4a(gpu_page)
    if subgroups and "subgroups" not in device_features(gpu_page):
        pytest.skip("this adapter has no subgroups")
    rng = np.random.default_rng(M + K + tokens)
    plan = Plan()
    v, initial = inputs(
        plan,
        w=weights(rng, (M, K), K**-0.5, "int8"),
        x=tied_x(rng, tokens, K),
        b=rand(rng, M),
        out=rand(rng, tokens * M),
        count=np.array([11 if counted else tokens], np.uint32),
        xq=np.zeros(ops.quantized_x_bytes(K, tokens), np.uint8),
    )
    options = {"row_threads": row_threads, "subgroups": subgroups, "tokens": tokens, "xq": v["xq"]}
    options |= {"count": v["count"]} if counted else {}
    ops.matvec(plan, "test", v["w"], "int8", v["x"], v["out"], M, K, act=act, bias=v["b"], **options)
    assert [k["shader"] for k in plan.kernels] == ["quantize_x.wgsl", "matvec.wgsl"]
    assert plan.kernels[1]["entry"] == "dp4a" and "lib/matvec_dp4a.wgsl" in plan.kernels[1]["include"]
    check(gpu_page, plan, initial, [v["out"]], dp4a_rtol(initial[v["w"].buffer], initial[v["x"].buffer], M, K))
    check_codes(gpu_page, plan, initial, v["xq"], 11 if counted else tokens, K, tokens)


def dp4a_rtol(w: bytes, x: bytes, M: int, K: int) -> float:
    """RTOL, scaled from the output to the terms summed: per block min·Σx and range/255·sx·Σc·q, which cancel
    (min ≈ −range/2) and, in tied_x's block 50 times larger than the rest, exceed the result many times; f32 error
    is relative to them (the plain int8 path sums w·x per element, where that block's terms do not cancel)."""
    from rwkvweb.numpy_exec import quantize_x_rows

    at = SCHEMES["int8"].param_offset(M * K)
    codes = np.frombuffer(w, np.uint8)[: M * K].reshape(M, K // 128, 128).astype(np.float64)
    params = np.frombuffer(w, np.uint8)[at:].view(np.float32).reshape(M, K // 128, 2).astype(np.float64)
    xs = np.frombuffer(x, np.float32).reshape(-1, K)
    q, xp = quantize_x_rows(xs)
    cq = np.einsum("mbk,tbk->tmb", codes, q.reshape(-1, K // 128, 128).astype(np.float64))
    terms = np.abs(params[None, :, :, 0] * xp[:, None, :, 1]) + np.abs(
        params[None, :, :, 1] / 255 * xp[:, None, :, 0] * cq
    )
    result = np.abs(np.einsum("mk,tk->tm", dequantize(w, "int8", M * K).reshape(M, K), xs))
    return RTOL * max(1.0, float(terms.sum(axis=2).max() / result.max()))


def check_codes(gpu_page, plan: Plan, initial: dict, xq, rows: int, K: int, tokens: int) -> None:
    """quantize_x's codes and block scales equal the twin's bit for bit in the `rows` real rows of each slice
    (a counted chunk's padding rows are never written)."""
    reads = [(xq.buffer, xq.offset, xq.size)]
    gpu = run_in_browser(gpu_page, plan.to_json(), initial, "test", [[]], reads)[0][0]
    ref = run_in_numpy(plan.to_json(), initial, "test", [[]], reads)[0]
    per_row = ops.quantized_x_bytes(K, 1)
    got, expected = (np.frombuffer(d[f"{xq.buffer}:{xq.offset}"], np.uint8).reshape(-1, per_row) for d in (gpu, ref))
    real = np.arange(len(got)) % tokens < rows
    assert (got[real, :K] == expected[real, :K]).all(), "quantize_x's codes differ from the twin's"
    scales = lambda d: d[real, K:].copy().view(np.float32)[:, 0::4]  # noqa: E731
    assert (scales(got) == scales(expected)).all(), "quantize_x's block scales differ from the twin's"


def tied_x(rng, tokens: int, K: int) -> np.ndarray:
    """Random x with a block 50 times larger than the rest, exact zeros, and a block holding exact ties
    (x = (q + ½)·sx): the codes must still agree bit for bit, ties going to the even neighbour."""
    from rwkvweb.numpy_exec import quantize_x_block_scale

    x = rand(rng, tokens, K)
    x[:, :128] *= 50
    x[:, 128 % K : 128 % K + 4] = 0
    last = x[:, K - 128 :]
    last[:, 0] = 15.875  # the block's largest magnitude
    sx = quantize_x_block_scale(np.float32(15.875))
    last[:, 1:9] = np.array([0.5, 1.5, 2.5, -2.5, -3.5, 5.5, 6.5, -0.5], np.float32) * sx  # exact: few bits each
    return x.reshape(-1)


@pytest.mark.parametrize("tokens, real, shared", [(1, 1, False), (16, 11, True), (3, 3, True)])
def test_grouped_matvec_dp4a(gpu_page, tokens, real, shared):
    """RWKV-7's r/k/v as one dp4a dispatch: three int8 parts of K = 256, each reading its own slot of x (one
    quantize_x dispatch, three slices), or (`shared`) two parts reading the same x: that x is quantized once
    and both read its slice. Against the twins, with test_matvec_dp4a's bound."""
    needs_dp4a(gpu_page)
    rng = np.random.default_rng(tokens + shared)
    K, T, Ms = 256, tokens, [64, 32, 96]
    slots = [0, 2, 0] if shared else [2, 0, 1]
    parts = [ops.Part(M, slot * T * K, sum(Ms[:i]), "none") for i, (M, slot) in enumerate(zip(Ms, slots))]
    w = np.frombuffer(b"".join(quantize(rand(rng, sum(Ms) * K, scale=K**-0.5), "int8")), np.uint8)
    plan = Plan()
    distinct = len(set(slots))
    v, initial = inputs(
        plan,
        w=w,
        x=tied_x(rng, 3 * T, K),
        out=rand(rng, T * sum(Ms)),
        b=rand(rng, sum(Ms)),
        xq=np.zeros(ops.quantized_x_bytes(K, T, distinct), np.uint8),
    )
    count = count_buffer(plan, initial, real) if tokens > 1 else None
    ops.matvec_group(plan, "test", v["w"], "int8", v["x"], v["out"], parts, K, x_stride=K, out_stride=sum(Ms),
                     tokens=T, count=count, bias=v["b"], row_threads=32, xq=v["xq"])  # fmt: skip
    quantize_steps = [k for k in plan.kernels if k["shader"] == "quantize_x.wgsl"]
    assert len(quantize_steps) == 1 and sum(len(p) for p in plan.programs.values()) == 2
    assert plan.programs["test"][0]["workgroups"] == [K // 128, T, distinct]
    x_rows = np.frombuffer(initial[v["x"].buffer], np.float32).reshape(3, T, K)
    bound = max(
        dp4a_rtol(part_bytes(w, Ms, i, K), x_rows[slot].tobytes(), M, K) for i, (M, slot) in enumerate(zip(Ms, slots))
    )
    check(gpu_page, plan, initial, [v["out"]], bound)
    check_codes(gpu_page, plan, initial, v["xq"], real, K, T)


def part_bytes(w: np.ndarray, Ms: list[int], i: int, K: int) -> bytes:
    """Part i of a grouped int8 buffer (all codes, then all block parameters) as a buffer of its own."""
    int8, total = SCHEMES["int8"], sum(Ms) * K
    first, n = sum(Ms[:i]) * K, Ms[i] * K
    params = w[int8.param_offset(total) :][first // 128 * 8 : (first + n) // 128 * 8]
    return w[first : first + n].tobytes() + params.tobytes()
