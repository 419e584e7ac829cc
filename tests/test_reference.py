"""The numpy reference against an independent, deliberately naive re-computation.

The naive version below is written from the RWKV-7 equations, not from
reference.py: float64, one output element at a time, weights indexed
W[out, in] explicitly, the WKV state updated element by element. Agreement is
required to 1e-4 of the logit range: the reference computes in float32
(relative rounding ~1e-7 per op, growing to ~1e-5 over a few layers), so 1e-4
is loose for rounding yet tight for real mistakes. Two mutation checks show
the comparison would catch a transposed weight and a wrong LayerNorm epsilon.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rwkvweb.config import ModelConfig, ModelError
from rwkvweb.reference import RWKV7, State
from rwkvweb.testmodel import random_weights, write_test_model

TOLERANCE = 1e-4  # of the logit range; float32 reference vs float64 naive, see above


def naive_logits(weights, cfg: ModelConfig, tokens, ln_eps=1e-5):
    W = {name: np.asarray(w, np.float64) for name, w in weights.items()}
    vec = lambda name: W[name].reshape(-1)  # noqa: E731
    C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size

    def matvec(M, x):  # y[i] = sum_j M[i, j] x[j]
        return np.array([sum(M[i, j] * x[j] for j in range(M.shape[1])) for i in range(M.shape[0])])

    def vecmat(x, M):  # y[j] = sum_i x[i] M[i, j]   (LoRA: x @ w1)
        return np.array([sum(x[i] * M[i, j] for i in range(M.shape[0])) for j in range(M.shape[1])])

    def norm(x, w, b, eps):
        mean = sum(x) / len(x)
        var = sum((t - mean) ** 2 for t in x) / len(x)
        return np.array([(t - mean) / math.sqrt(var + eps) for t in x]) * w + b

    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    att_shift = [np.zeros(C) for _ in range(cfg.n_layer)]
    ffn_shift = [np.zeros(C) for _ in range(cfg.n_layer)]
    S = [np.zeros((H, N, N)) for _ in range(cfg.n_layer)]
    out = []
    for token in tokens:
        x = norm(W["emb.weight"][token], vec("blocks.0.ln0.weight"), vec("blocks.0.ln0.bias"), ln_eps)
        v_first = None
        for layer in range(cfg.n_layer):
            p = lambda n: (  # noqa: E731
                W[f"blocks.{layer}.att.{n}"]
                if W[f"blocks.{layer}.att.{n}"].ndim == 2 and n != "r_k"
                else vec(f"blocks.{layer}.att.{n}")
            )
            xx = norm(x, vec(f"blocks.{layer}.ln1.weight"), vec(f"blocks.{layer}.ln1.bias"), ln_eps)
            dx = att_shift[layer] - xx
            att_shift[layer] = xx
            mixed = {m: xx + dx * p("x_" + m) for m in "rwkvag"}
            r = matvec(W[f"blocks.{layer}.att.receptance.weight"], mixed["r"])
            k = matvec(W[f"blocks.{layer}.att.key.weight"], mixed["k"])
            v = matvec(W[f"blocks.{layer}.att.value.weight"], mixed["v"])
            w = p("w0") + vecmat(np.tanh(vecmat(mixed["w"], p("w1"))), p("w2"))
            a = sig(p("a0") + vecmat(vecmat(mixed["a"], p("a1")), p("a2")))
            g = vecmat(sig(vecmat(mixed["g"], p("g1"))), p("g2"))
            kk = k * p("k_k")
            for h in range(H):
                block = kk[h * N : (h + 1) * N]
                kk[h * N : (h + 1) * N] = block / max(math.sqrt(sum(t * t for t in block)), 1e-12)
            k = k * (1 + (a - 1) * p("k_a"))
            if layer == 0:
                v_first = v
            else:
                v = v + (v_first - v) * sig(p("v0") + vecmat(vecmat(mixed["v"], p("v1")), p("v2")))
            decay = np.exp(-math.exp(-0.5) * sig(w))
            y = np.zeros(C)
            for h in range(H):
                o = h * N
                Sh = S[layer][h]
                sa = [sum(Sh[i, j] * -kk[o + j] for j in range(N)) for i in range(N)]  # S·(−kk)
                for i in range(N):  # value row
                    for j in range(N):  # key column
                        Sh[i, j] = Sh[i, j] * decay[o + j] + sa[i] * kk[o + j] * a[o + j] + v[o + i] * k[o + j]
                y[o : o + N] = [sum(Sh[i, j] * r[o + j] for j in range(N)) for i in range(N)]
            ln_w, ln_b = vec(f"blocks.{layer}.att.ln_x.weight"), vec(f"blocks.{layer}.att.ln_x.bias")
            r_k = vec(f"blocks.{layer}.att.r_k")
            for h in range(H):
                sl = slice(h * N, (h + 1) * N)
                y[sl] = norm(y[sl], ln_w[sl], ln_b[sl], 64e-5) + sum(r[sl] * k[sl] * r_k[sl]) * v[sl]
            x = x + matvec(W[f"blocks.{layer}.att.output.weight"], y * g)
            xx = norm(x, vec(f"blocks.{layer}.ln2.weight"), vec(f"blocks.{layer}.ln2.bias"), ln_eps)
            dx = ffn_shift[layer] - xx
            ffn_shift[layer] = xx
            hidden = (
                np.maximum(matvec(W[f"blocks.{layer}.ffn.key.weight"], xx + dx * vec(f"blocks.{layer}.ffn.x_k")), 0)
                ** 2
            )
            x = x + matvec(W[f"blocks.{layer}.ffn.value.weight"], hidden)
        out.append(matvec(W["head.weight"], norm(x, vec("ln_out.weight"), vec("ln_out.bias"), ln_eps)))
    return np.array(out)


@pytest.fixture(scope="module")
def small():
    """2 layers, 4 heads (per-head norms differ from whole-vector ones), embeddings small enough
    (variance ~1e-5, like the LayerNorm epsilon) that ln0's epsilon visibly matters."""
    cfg = ModelConfig.default_for(2, 256, 50)
    weights = random_weights(cfg, seed=3)
    weights["emb.weight"] *= np.float32(3e-3)
    return cfg, weights, [5, 17, 5, 42]


def relative_error(a, b):
    return np.abs(a - b).max() / (b.max() - b.min())


def test_reference_equals_naive_recomputation(small):
    cfg, weights, tokens = small
    expected = naive_logits(weights, cfg, tokens)
    got, _ = RWKV7(cfg, weights).logits(tokens)
    assert got.dtype == np.float32
    assert relative_error(got, expected) < TOLERANCE


def test_comparison_catches_a_transposed_weight(small):
    cfg, weights, tokens = small
    mutated = dict(weights)
    mutated["blocks.1.att.receptance.weight"] = weights["blocks.1.att.receptance.weight"].T.copy()
    got, _ = RWKV7(cfg, mutated).logits(tokens)
    assert relative_error(got, naive_logits(weights, cfg, tokens)) > 10 * TOLERANCE


def test_comparison_catches_a_wrong_layernorm_epsilon(small):
    cfg, weights, tokens = small
    got, _ = RWKV7(cfg, weights).logits(tokens[:2])
    assert relative_error(got, naive_logits(weights, cfg, tokens[:2], ln_eps=1e-6)) > 10 * TOLERANCE


def test_exported_state_continues_exactly(tmp_path):
    cfg = ModelConfig.default_for(2, 128, 64)
    model = RWKV7(cfg, random_weights(cfg, seed=1))
    tokens = [3, 9, 27, 1, 0, 63, 8, 8]
    whole, _ = model.logits(tokens)
    _, state = model.logits(tokens[:5])
    blob = state.to_bytes()
    assert len(blob) == 4 * cfg.n_layer * (2 * cfg.n_embd + cfg.n_head * cfg.head_size**2)
    rest, _ = model.logits(tokens[5:], State.from_bytes(cfg, blob))
    np.testing.assert_array_equal(rest, whole[5:])
    with pytest.raises(ValueError, match="another model's state"):
        State.from_bytes(cfg, blob[:-4])


def test_forward_does_not_mutate_the_callers_state():
    cfg = ModelConfig.default_for(1, 64, 16)
    model = RWKV7(cfg, random_weights(cfg))
    state = State.zeros(cfg)
    model.forward(3, state)
    assert not state.wkv.any() and not state.att_shift.any()


def test_token_outside_the_vocabulary_is_refused():
    cfg = ModelConfig.default_for(1, 64, 16)
    with pytest.raises(ModelError, match="token id 16 is outside the vocabulary"):
        RWKV7(cfg, random_weights(cfg)).forward(16, State.zeros(cfg))


def test_generated_models_behave_like_trained_ones():
    """Not saturated, not vanishing: the properties GPU tests rely on to be meaningful."""
    cfg = ModelConfig.default_for(4, 256, 512)
    model = RWKV7(cfg, random_weights(cfg, seed=7))
    logits, state = model.logits(list(range(0, 512, 16)))  # 32 tokens
    assert 0.5 < logits.std(axis=1).mean() < 10
    assert len(set(logits.argmax(axis=1))) > 8  # the prediction depends on the input
    assert np.isfinite(state.wkv).all() and 1e-3 < np.abs(state.wkv).max() < 100
    w0 = model.w["blocks.0.att.w0"]
    decay = np.exp(-0.606531 / (1 + np.exp(-w0)))
    assert decay.min() < 0.7 and decay.max() > 0.99


def test_fp16_file_is_the_fp32_model_rounded(tmp_path):
    cfg = ModelConfig.default_for(2, 128, 100)
    write_test_model(str(tmp_path / "a.st"), cfg, seed=5, dtype="fp32")
    write_test_model(str(tmp_path / "b.st"), cfg, seed=5, dtype="fp16")
    full, half = RWKV7.load(str(tmp_path / "a.st")), RWKV7.load(str(tmp_path / "b.st"))
    assert full.config == half.config == cfg
    for name, w in full.w.items():
        np.testing.assert_array_equal(half.w[name], w.astype(np.float16).astype(np.float32))
    # fp16 weights carry ~3 significant digits (rel. error 2^-11 ≈ 5e-4 per weight); through
    # 2 layers the logits move by a few times that relative to their range.
    a, _ = full.logits([1, 2, 3])
    b, _ = half.logits([1, 2, 3])
    assert relative_error(b, a) < 1e-2


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = ModelConfig.default_for(1, 64, 32)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_test_model(str(tmp_path / f"{name}.st"), cfg, seed=seed)
    assert (tmp_path / "a.st").read_bytes() == (tmp_path / "b.st").read_bytes() != (tmp_path / "c.st").read_bytes()


@pytest.mark.slow
def test_the_0_1b_shape_generates_loads_and_runs(tmp_path):
    cfg = ModelConfig.default_for(12, 768, 65536)
    path = tmp_path / "rwkv7-0.1b-shape-fp16.st"
    write_test_model(str(path), cfg, seed=0, dtype="fp16")
    model = RWKV7.load(str(path))
    assert model.config == cfg
    params = sum(w.size for w in model.w.values())
    assert 180e6 < params < 200e6 and path.stat().st_size > 2 * params
    logits, _ = model.logits([0, 65535])
    assert logits.shape == (2, 65536) and np.isfinite(logits).all() and 0.5 < logits.std() < 10
