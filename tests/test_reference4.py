"""RWKV-4's numpy reference (reference4.py) against the WKV written out as plain sums, and its kernel twin.

The naive version is the definition, not the stable recurrence: float64 sums of e^{(t−1−i)·w + k_i}
over the whole past, no running maximum. float64 holds e^k for |k| up to ~700, so it is exact enough
to judge the float32 recurrence even where float32's own e^k overflows. Tolerance: 1e-5 relative,
float32 rounding (~6e-8 per op) over the few ops of each of 12 steps, with room to spare.
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkvweb import ops
from rwkvweb.numpy_exec import NumpyExecutor
from rwkvweb.plan import Plan
from rwkvweb.config4 import FRESH_PP
from rwkvweb.reference4 import decay, fresh_wkv_state, time_mix, wkv4

RTOL = 1e-5  # float32 recurrence vs float64 sums; see the module docstring


def naive_wkv(u, w, ks, vs):
    """wkv_t for every t from the definition, float64: [T, C]."""
    u, w, ks, vs = (np.asarray(a, np.float64) for a in (u, w, ks, vs))
    rows = []
    for t in range(len(ks)):
        past = [np.exp((t - 1 - i) * w + ks[i]) for i in range(t)]
        now = np.exp(u + ks[t])
        rows.append((sum(p * v for p, v in zip(past, vs)) + now * vs[t]) / (sum(past) + now))
    return np.array(rows)


def trained_like(rng, C: int, T: int, k_scale: float):
    u = rng.uniform(-2, 1, C).astype(np.float32)
    w = decay(rng.uniform(-5, 3, C).astype(np.float32))
    ks = (rng.standard_normal((T, C)) * k_scale).astype(np.float32)
    vs = rng.standard_normal((T, C)).astype(np.float32)
    return u, w, ks, vs


def run_reference(u, w, ks, vs):
    abp = fresh_wkv_state(1, ks.shape[1])[0]
    return np.array([wkv4(u, w, k, v, abp) for k, v in zip(ks, vs)]), abp


@pytest.mark.parametrize("k_scale", [1.0, 60.0])  # 60: |k| past 88, where float32's e^k is infinite
def test_the_recurrence_equals_the_sums(k_scale):
    rng = np.random.default_rng(int(k_scale))
    u, w, ks, vs = trained_like(rng, 64, 12, k_scale)
    got, _ = run_reference(u, w, ks, vs)
    expected = naive_wkv(u, w, ks, vs)
    assert np.isfinite(got).all()
    assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max()
    if k_scale > 1:
        with np.errstate(over="ignore", invalid="ignore"):
            naive32 = np.exp(ks) * vs  # the same sums in float32 without the running maximum overflow
        assert not np.isfinite(naive32).all()


def test_a_fresh_state_returns_the_first_value_whatever_its_weight():
    """One token: wkv = v exactly, even where e^{u+k} underflows (u + k = −200): FRESH_PP makes the
    empty past weigh e^{−1e30 − q} = 0, not 0/0."""
    u = np.array([-100.0, 0.0, 3.0], np.float32)
    k = np.array([-100.0, 50.0, -2.0], np.float32)
    v = np.array([0.5, -1.5, 2.0], np.float32)
    abp = fresh_wkv_state(1, 3)[0]
    assert (abp[2] == FRESH_PP).all() and not abp[:2].any()
    assert np.array_equal(wkv4(u, decay(np.zeros(3, np.float32)), k, v, abp), v)
    assert np.array_equal(abp[2], k)  # the past is now this token: pp = its exponent k, aa = v, bb = 1
    assert np.array_equal(abp[0], v) and np.array_equal(abp[1], np.ones(3, np.float32))


def test_time_mix_mixes_from_the_previous_token_and_projects():
    """time_mix against the same maths written out: xk = x·mix_k + prev·(1 − mix_k) etc."""
    rng = np.random.default_rng(4)
    C = 8
    p_ = {
        "time_mix_k": rng.uniform(0, 1, C),
        "time_mix_v": rng.uniform(0, 1, C),
        "time_mix_r": rng.uniform(0, 1, C),
        "time_first": rng.uniform(-1, 1, C),
        "time_decay": rng.uniform(-5, 3, C),
        **{f"{n}.weight": rng.standard_normal((C, C)) / 3 for n in ("key", "value", "receptance", "output")},
    }
    p_ = {name: t.astype(np.float32) for name, t in p_.items()}
    x, prev = rng.standard_normal((2, C)).astype(np.float32)
    shift, abp = prev.copy(), fresh_wkv_state(1, C)[0]
    out = time_mix(p_.__getitem__, x, shift, abp)
    mixed = {m: x * p_[f"time_mix_{m}"] + prev * (1 - p_[f"time_mix_{m}"]) for m in "kvr"}
    r = 1 / (1 + np.exp(-p_["receptance.weight"] @ mixed["r"]))
    expected = p_["output.weight"] @ (r * (p_["value.weight"] @ mixed["v"]))  # one token: wkv = v
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(shift, x)  # the state now remembers this token


@pytest.mark.parametrize("tokens, real", [(1, None), (8, 8), (16, 11)])
def test_the_kernel_twin_equals_the_reference(tokens, real):
    """numpy_exec.wkv4 (wkv4.wgsl's contract) vs rwkv4.wkv4 token by token, from a fresh state."""
    rng = np.random.default_rng(tokens)
    C = 64
    u, w_, ks, vs = trained_like(rng, C, tokens, 30.0)
    time_decay = rng.uniform(-5, 3, C).astype(np.float32)
    r = rng.uniform(0, 1, (tokens, C)).astype(np.float32)
    plan = Plan()
    views = {
        name: plan.buffer(name, size * 4, "scratch")
        for name, size in (("vecs", 3 * tokens * C), ("params", 2 * C), ("state", 3 * C), ("out", tokens * C))
    }
    count = None if real is None else plan.buffer("count", 4, "io")
    ops.wkv4(plan, "t", views["vecs"], views["params"], views["state"], views["out"], C, tokens=tokens, count=count)
    executor = NumpyExecutor(plan)
    executor.write(views["vecs"].buffer, 0, np.concatenate([r, ks, vs]).tobytes())
    executor.write(views["params"].buffer, 0, np.concatenate([u, time_decay]).tobytes())
    executor.write(views["state"].buffer, 0, fresh_wkv_state(1, C).tobytes())
    if count is not None:
        executor.write(count.buffer, 0, np.array([real], np.uint32).tobytes())
    executor.run("t")
    n = tokens if real is None else real
    expected, abp = run_reference(u, decay(time_decay), ks[:n], vs[:n])
    out = np.frombuffer(executor.read(views["out"].buffer, 0, tokens * C * 4), np.float32).reshape(tokens, C)
    assert np.allclose(out[:n], r[:n] * expected, rtol=1e-6, atol=0)
    assert not out[n:].any()
    state = np.frombuffer(executor.read(views["state"].buffer, 0, 3 * C * 4), np.float32).reshape(3, C)
    assert np.allclose(state, abp, rtol=1e-6, atol=0)


def test_the_op_checks_its_bindings():
    plan = Plan()
    small = plan.buffer("small", 4 * 64, "scratch")
    big = plan.buffer("big", 4 * 3 * 64, "scratch")
    with pytest.raises(ValueError, match=r"wkv4 state \(aa\|bb\|pp\): needs 768 bytes"):
        ops.wkv4(plan, "t", big, big, small, big, 64)


# --- the whole model ----------------------------------------------------------------------------


def naive_rwkv4_logits(weights: dict, cfg, tokens: list[int]) -> np.ndarray:
    """RWKV-4 from its definition in float64: the WKV as sums over every past token (no state
    rescaling), the token shift as x·mix + prev·(1 − mix), the channel mix r ⊙ (Wv·relu(Wk·xk)²)."""
    W = {name: np.asarray(w, np.float64).squeeze() for name, w in weights.items()}

    def norm(x, name):
        return (x - x.mean()) / np.sqrt(x.var() + 1e-5) * W[name + ".weight"] + W[name + ".bias"]

    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    C, L = cfg.n_embd, cfg.n_layer
    att_prev, ffn_prev = np.zeros((L, C)), np.zeros((L, C))
    past = [[] for _ in range(L)]  # per layer: (k, v) of every earlier token
    rows = []
    for token in tokens:
        x = norm(W["emb.weight"][token], "blocks.0.ln0")
        for i in range(L):
            a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
            xx = norm(x, f"blocks.{i}.ln1")
            mix = {m: xx * W[a + f"time_mix_{m}"] + att_prev[i] * (1 - W[a + f"time_mix_{m}"]) for m in "kvr"}
            att_prev[i] = xx
            k, v = W[a + "key.weight"] @ mix["k"], W[a + "value.weight"] @ mix["v"]
            r = sig(W[a + "receptance.weight"] @ mix["r"])
            w = -np.exp(W[a + "time_decay"])
            t = len(past[i])
            weights_ = [np.exp((t - 1 - j) * w + kj) for j, (kj, _) in enumerate(past[i])]
            now = np.exp(W[a + "time_first"] + k)
            wkv = (sum(e * vj for e, (_, vj) in zip(weights_, past[i])) + now * v) / (sum(weights_) + now)
            past[i].append((k, v))
            x = x + W[a + "output.weight"] @ (r * wkv)
            xx = norm(x, f"blocks.{i}.ln2")
            xk = xx * W[f + "time_mix_k"] + ffn_prev[i] * (1 - W[f + "time_mix_k"])
            xr = xx * W[f + "time_mix_r"] + ffn_prev[i] * (1 - W[f + "time_mix_r"])
            ffn_prev[i] = xx
            x = x + sig(W[f + "receptance.weight"] @ xr) * (
                W[f + "value.weight"] @ np.maximum(W[f + "key.weight"] @ xk, 0) ** 2
            )
        rows.append(W["head.weight"] @ norm(x, "ln_out"))
    return np.array(rows)


@pytest.fixture(scope="module")
def v4_model(tmp_path_factory):
    from rwkvweb.config import ModelConfig
    from rwkvweb.testmodel import write_test_model

    cfg = ModelConfig.default_for(2, 64, 120, version="x040")
    path = tmp_path_factory.mktemp("v4") / "v4.st"
    write_test_model(str(path), cfg, seed=3)
    return str(path)


def test_the_reference_equals_the_definition(v4_model):
    """Whole model, 12 tokens: float32 reference vs float64 sums, within 1e-4 of the logit range
    (float32 rounding through 2 layers is ~1e-6 of it; a wrong mix convention or a dropped
    time_first moves logits by far more, as the mutant below shows)."""
    from rwkvweb.reference import load
    from rwkvweb.safetensors import SafetensorsFile

    model = load(v4_model)
    assert type(model).__name__ == "RWKV4"
    file = SafetensorsFile(v4_model)
    weights = {name: file.read_array(name, "float32") for name in file.tensors}
    tokens = [int(t) for t in np.random.default_rng(5).integers(0, 120, 12)]
    expected = naive_rwkv4_logits(weights, model.config, tokens)
    got, _ = model.logits(tokens)
    scale = expected.max() - expected.min()
    assert np.abs(got - expected).max() <= 1e-4 * scale
    swapped = {n: (1 - w if ".time_mix_" in n else w) for n, w in weights.items()}  # the other shift convention
    assert np.abs(naive_rwkv4_logits(swapped, model.config, tokens) - got).max() > 100 * 1e-4 * scale


def test_an_exported_state_continues_exactly(v4_model):
    from rwkvweb.reference import State, load

    model = load(v4_model)
    fresh = State.zeros(model.config)
    assert fresh.wkv.shape == (2, 3, 64) and (fresh.wkv[:, 2] == FRESH_PP).all() and not fresh.wkv[:, :2].any()
    assert len(fresh.to_bytes()) == 2 * 5 * 64 * 4  # att_shift | aa | bb | pp | ffn_shift per layer
    tokens = [int(t) for t in np.random.default_rng(6).integers(0, 120, 10)]
    whole, _ = model.logits(tokens)
    _, state = model.logits(tokens[:6])
    restored = State.from_bytes(model.config, state.to_bytes())
    rest, _ = model.logits(tokens[6:], restored)
    assert np.array_equal(rest, whole[6:])
    with pytest.raises(ValueError, match="this model's state is 2560 bytes"):
        State.from_bytes(model.config, bytes(100))
