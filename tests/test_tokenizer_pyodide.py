"""The tokenizers inside Pyodide (the site's wheel, Python 3.14, a newer Unicode database) give
the ids they give under CPython, and the benchmark's measurement runs there."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")

from build.bench_tokenizers import corpora, measure, run_in_pyodide, trained_bpe  # noqa: E402
from rwkvweb.bpe import BPETokenizer  # noqa: E402
from rwkvweb.headless import open_blank  # noqa: E402
from rwkvweb.tokenizer import WorldTokenizer  # noqa: E402

from test_bpe import SAMPLES, random_texts  # noqa: E402

pytestmark = pytest.mark.browser

SOURCE = """
from __future__ import annotations

def tokenize_everything(vocab_text, bpe_json, texts, bench_texts):
    from rwkvweb.bpe import BPETokenizer
    from rwkvweb.tokenizer import StreamDecoder, WorldTokenizer

    world, bpe = WorldTokenizer(vocab_text), BPETokenizer.from_json(bpe_json)
    streamed = []
    for text in texts:
        decoder = StreamDecoder(world)
        streamed.append("".join(decoder.push(i) for i in world.encode(text)) + decoder.flush())
    return {"world": [world.encode(t) for t in texts], "bpe": [bpe.encode(t) for t in texts], "streamed": streamed,
            "bench": measure(vocab_text, bpe_json, bench_texts, 1)}
"""


def test_pyodide_gives_the_same_ids_and_runs_the_benchmark(page, server):
    import inspect

    world = WorldTokenizer.from_file()
    bench_texts = corpora(1, world)
    bpe_json = trained_bpe(bench_texts)
    texts = [*SAMPLES, *random_texts(100, seed=9), *bench_texts.values()]
    source = SOURCE + "\n" + inspect.getsource(measure)
    open_blank(page, server.url)
    page.set_default_timeout(300_000)
    args = [bpe_json, texts, bench_texts]
    _, python, result = run_in_pyodide(page, server.url, source, "tokenize_everything(*args)", args)
    assert python.startswith("3.")
    bpe = BPETokenizer.from_json(bpe_json)
    assert result["world"] == [world.encode(t) for t in texts]
    assert result["bpe"] == [bpe.encode(t) for t in texts]
    assert result["streamed"] == texts
    measured = {(row["tokenizer"], row["text"]) for row in result["bench"]}
    assert measured == {(t, n) for t in ("World", "BPE") for n in bench_texts}
    assert all(row["us_per_kb"] > 0 and row["mb_per_s"] > 0 for row in result["bench"])
