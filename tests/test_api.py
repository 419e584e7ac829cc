"""The public API on the numpy backend: generation, streaming, state export/import, fork, abort."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import run_async as run

from rwkvweb.api import Model
from rwkvweb.engine import Sampling
from rwkvweb.config import ModelConfig, fresh_state
from rwkvweb.reference import RWKV7
from rwkvweb.testmodel import write_test_model


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    file = tmp_path_factory.mktemp("api") / "m.st"
    write_test_model(str(file), ModelConfig.default_for(2, 128, 300), seed=8)
    return str(file)


@pytest.fixture(scope="module")
def world_path(tmp_path_factory):
    file = tmp_path_factory.mktemp("api") / "world.st"
    write_test_model(str(file), ModelConfig.default_for(1, 64, 65536), seed=9, dtype="fp16")
    return str(file)


def reference_greedy(path, prompt, steps):
    model = RWKV7.load(path)
    rows, state = model.logits(prompt)
    out, logits = [], rows[-1]
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        logits, state = model.forward(out[-1], state)
    return out


def test_greedy_generation_equals_the_reference(path):
    model = run(Model.load(path))
    result = run(model.generate([3, 1, 4, 1, 5], 20, temperature=0))
    assert result.tokens == reference_greedy(path, [3, 1, 4, 1, 5], 20)
    assert result.stats.stopped_by in ("length", "end_of_text") and result.stats.prompt_tokens == 5


def test_decode_time_splits_into_the_backend_and_the_engine_own(path):
    """backend_seconds counts the backend's calls only: a slow callback's time stays outside it."""
    model = run(Model.load(path))
    result = run(model.generate([3, 1, 4], 12, temperature=0, on_token=lambda token: time.sleep(0.01)))
    stats = result.stats
    assert stats.generated >= 2 and 0 < stats.backend_seconds < stats.decode_seconds
    assert stats.decode_seconds - stats.backend_seconds >= 0.01 * (stats.generated - 1)


def test_text_streams_in_whole_utf8_pieces(world_path):
    model = run(Model.load(world_path))
    pieces = []
    result = run(model.generate("Hello 世界", 30, temperature=1.0, seed=3, on_text=pieces.append))
    assert "".join(pieces) == result.text == model.decode(result.tokens)
    assert all(isinstance(p, str) and p for p in pieces)


def test_exported_state_continues_exactly_in_a_fresh_engine(path):
    a, b = run(Model.load(path)), run(Model.load(path))
    run(a.logits([9, 8, 7, 6]))
    blob = run(a.state())
    run(b.state(blob))
    assert run(a.logits([5, 4], keep_state=True)) == run(b.logits([5, 4], keep_state=True))
    assert (
        run(a.generate([2], 10, temperature=1.0, seed=1, keep_state=True)).tokens
        == run(b.generate([2], 10, temperature=1.0, seed=1, keep_state=True)).tokens
    )
    with pytest.raises(ValueError, match="another model's state"):
        run(b.state(blob[:-4]))


def test_forks_share_weights_but_not_state(path):
    model = run(Model.load(path))
    run(model.logits([1, 2, 3]))
    fork = run(model.fork())
    first = run(model.generate([4], 8, temperature=0, keep_state=True)).tokens
    second = run(fork.generate([4], 8, temperature=0, keep_state=True)).tokens  # from the same point
    assert first == second
    assert fork.engine is model.engine


def test_abort_stops_between_tokens_and_leaves_the_engine_usable(path):
    model = run(Model.load(path))
    seen = []
    result = run(model.generate([1, 2], 50, temperature=1.0, on_token=seen.append, should_stop=lambda: len(seen) >= 3))
    assert result.stats.stopped_by == "abort" and len(result.tokens) == 3
    assert run(model.generate([1, 2], 20, temperature=0)).tokens == reference_greedy(path, [1, 2], 20)


def stop_before_chunk(k: int):
    """A should_stop that lets k prompt chunks run and aborts before the next (it is polled once per chunk)."""
    polls = []
    return lambda: polls.append(1) or len(polls) > k


@pytest.mark.parametrize("keep_state", [False, True])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_an_abort_between_prompt_chunks_leaves_the_state_as_before_the_prompt(path, k, keep_state):
    """The prompt is fed whole or not at all (engine.py says why): after k of its 4-token chunks the state,
    the pending token and the next generation are those of the history alone, as the reference gives them."""
    model = run(Model.load(path, chunk=4))
    history = [7, 3, 9]
    run(model.generate(history, 2, temperature=0))  # the state holds history + 1 token, the 2nd pending
    before, pending = run(model.state()), model.engine.pending
    long = [1 + (5 * i) % 290 for i in range(18)]  # 5 chunks with the pending token
    aborted = run(model.generate(long, 10, temperature=0, keep_state=keep_state, should_stop=stop_before_chunk(k)))
    assert aborted.stats.stopped_by == "abort" and aborted.tokens == []
    assert aborted.stats.prefill_chunks == k
    fed = history + reference_greedy(path, history, 2) if keep_state else []
    if keep_state:
        assert model.engine.pending == pending and run(model.state()) == before
    else:  # the prompt started from a fresh state: that is the state before it
        assert model.engine.pending is None and run(model.state()) == fresh_state(model.config)
    then = run(model.generate([4, 2], 6, temperature=0, keep_state=True))
    assert then.tokens == reference_greedy(path, fed + [4, 2], 6)


def test_bad_options_are_refused_clearly(path):
    model = run(Model.load(path))
    with pytest.raises(ValueError, match="unknown sampling options \\['temprature'\\]"):
        run(model.generate([1], 5, temprature=0.5))
    with pytest.raises(ValueError, match="top_p must be in"):
        run(model.generate([1], 5, top_p=0))
    with pytest.raises(ValueError, match="token id 300 is outside"):
        run(model.generate([300], 5))
    with pytest.raises(ValueError, match="no tokenizer for a 300-token vocabulary"):
        run(model.generate("text", 5))


def test_generation_continues_from_where_the_last_one_ended(path):
    """Two generations with keep_state equal one long one: the last token is carried over."""
    model = run(Model.load(path))
    whole = run(model.generate([5, 6], 12, temperature=0)).tokens
    first = run(model.generate([5, 6], 5, temperature=0)).tokens
    rest = run(model.generate([], 7, temperature=0, keep_state=True)).tokens
    assert first + rest == whole
    nothing = run(model.generate([5, 6], 0, temperature=0))
    assert nothing.tokens == [] and run(model.generate([], 12, temperature=0, keep_state=True)).tokens == whole


def test_embed_is_the_reference_hidden_state_single_or_batched(path):
    model = run(Model.load(path, chunk=3))
    reference = RWKV7.load(path)
    inputs = [[5, 6, 7, 8, 9, 10, 11], [42], [1, 2]]
    for pooling in ("last", "mean"):
        batch = run(model.embed(inputs, pooling=pooling))
        assert len(batch) == 3
        for ids, vector in zip(inputs, batch):
            single = run(model.embed(ids, pooling=pooling))
            np.testing.assert_array_equal(single, vector)  # a batch is the same runs in a row
            assert np.abs(vector - reference.embed(ids, pooling)).max() <= 1e-5  # float32 in another order; values O(1)
    unit = run(model.embed(inputs[0], normalize=True))
    assert abs(float(np.linalg.norm(unit)) - 1) < 1e-6
    with pytest.raises(ValueError, match="pooling must be"):
        run(model.embed([1], pooling="max"))


def test_embed_leaves_the_conversation_state_alone(path):
    model = run(Model.load(path))
    run(model.logits([9, 8, 7]))
    before = run(model.state())
    run(model.embed([1, 2, 3, 4]))
    assert run(model.state()) == before


def test_prompt_in_chunks_generates_the_same_tokens_as_token_by_token(path):
    prompt = [int(t) for t in np.random.default_rng(4).integers(1, 300, 50)]
    results = [run(run(Model.load(path, chunk=chunk)).generate(prompt, 12, temperature=0)) for chunk in (1, 7, 64)]
    assert results[0].tokens == results[1].tokens == results[2].tokens == reference_greedy(path, prompt, 12)
    assert all(r.stats.prompt_tokens == 50 for r in results)


def generate_with_batch(path, batch, prompt, max_tokens, **options):
    """A generation whose decode steps are chained `batch` at a time (1: one submission per token), and the
    state after it."""
    import rwkvweb.engine as engine_module

    saved, engine_module.BATCH = engine_module.BATCH, batch
    try:
        model = run(Model.load(path))
        result = run(model.generate(prompt, max_tokens, **options))
        return result, run(model.state())
    finally:
        engine_module.BATCH = saved


@pytest.mark.parametrize(
    "sampling", [dict(temperature=0), dict(temperature=1.0, top_p=0.9, seed=11, repetition_penalty=1.2)]
)
def test_batched_decode_equals_one_token_per_submission(path, sampling):
    one, one_state = generate_with_batch(path, 1, [3, 1, 4], 40, **sampling)
    many, many_state = generate_with_batch(
        path, 16, [3, 1, 4], 40, **sampling
    )  # batches 1+2+4+8+16+9: the last one cut short
    assert many.tokens == one.tokens and len(one.tokens) == 40 and many.stats.stopped_by == "length"
    assert many_state == one_state  # state, and the pending last token, as if each token had its own submission


def test_a_stop_inside_a_batch_rolls_back_to_it(path):
    sampling = dict(temperature=1.0, seed=5)
    free, _ = generate_with_batch(path, 1, [7, 7], 30, **sampling)
    stop_at = 10  # inside the batch of 8 that covers tokens 7..14
    stop_token = free.tokens[stop_at]
    assert stop_token not in free.tokens[:stop_at]

    async def generate(batch):
        import rwkvweb.engine as engine_module

        saved, engine_module.BATCH = engine_module.BATCH, batch
        try:
            model = await Model.load(path)
            seen = []
            tokens, stats = await model.engine.generate(
                [7, 7], 30, Sampling(**sampling), on_token=lambda t: _stop_on(seen, t, stop_token)
            )
            return tokens, stats, seen, await model.state()
        finally:
            engine_module.BATCH = saved

    one, many = run(generate(1)), run(generate(16))
    assert many[0] == one[0] == free.tokens[: stop_at + 1] and many[1].stopped_by == one[1].stopped_by == "stop"
    assert many[2] == one[2]  # the callback saw exactly the kept tokens, none past the stop
    assert many[3] == one[3]


async def _stop_on(seen, token, stop_token):
    seen.append(token)
    return token == stop_token


def test_stop_strings_end_the_text_and_hold_back_what_may_start_one():
    from rwkvweb.api import StopStrings

    stops = StopStrings(["\n\nUser:", "END"])
    assert stops.push("Hello\n") == ("Hello", False)  # "\n" may start "\n\nUser:"
    assert stops.push("\nUs") == ("", False)
    assert stops.push("ually") == ("\n\nUsually", False)  # it did not
    assert stops.push(" EN") == (" ", False)
    assert stops.push("D and more") == ("", True)
    assert StopStrings(["x"]).push("abc") == ("abc", False)


def test_a_stop_string_ends_generation_like_its_text_says(world_path):
    model = run(Model.load(world_path))
    free = run(model.generate("Hello", 40, temperature=1.0, seed=3))
    stop = free.text[15:18]  # three characters from the middle of what it writes anyway
    assert stop and stop not in free.text[:15]
    pieces = []
    stopped = run(model.generate("Hello", 40, temperature=1.0, seed=3, stop=[stop], on_text=pieces.append))
    assert stopped.text == free.text[:15] == "".join(pieces) and stopped.stats.stopped_by == "stop"
    assert stopped.tokens == free.tokens[: len(stopped.tokens)] and len(stopped.tokens) < len(free.tokens)
