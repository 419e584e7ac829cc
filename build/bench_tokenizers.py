"""Tokenizer speed, µs per KB and MB/s of UTF-8 text:  python -m build.bench_tokenizers [--kb N] [--no-browser]

World encode and byte-level BPE encode, on English, Chinese and code, under CPython and inside
Pyodide (the built site's Pyodide and rwkvweb wheel, in headless Chromium on a blank page of the
site's origin). The same function (`measure`) runs in both, so the numbers compare like for like.

Every text is local, nothing is downloaded:
  English  Debian's licence texts (/usr/share/common-licenses), else docstrings of the stdlib
  Chinese  generated from the World vocabulary's Han tokens (seeded), with Chinese punctuation
  code     Python stdlib source
The BPE is trained here by the `tokenizers` package (ByteLevel + BpeTrainer, 8192 ids) on those
texts; its tokenizer.json goes to both runtimes. BPE numbers are with an empty word cache (it is
cleared before each run), so they count the merges, not only cache hits.
For context the CPython rows also give the `rwkv` package's TRIE_TOKENIZER and the Rust `tokenizers`.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import inspect
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "py")]

from rwkvweb.tokenizer import WorldTokenizer, default_vocab_path  # noqa: E402

LICENSES = "/usr/share/common-licenses"
BPE_VOCAB = 8192
REPEATS = 3  # best of: the machine is shared, the minimum is the least disturbed run


def measure(vocab_text: str, bpe_json: str, texts: dict, repeats: int) -> list:
    """Rows {tokenizer, text, kb, us_per_kb, mb_per_s, build_ms}: the best of `repeats` encodes.
    Self-contained (its source is sent to Pyodide as is)."""
    import time

    from rwkvweb.bpe import BPETokenizer
    from rwkvweb.bpe_pretokenizer import translate, unicode_classes
    from rwkvweb.tokenizer import WorldTokenizer

    def timed(make):
        started = time.perf_counter()
        made = make()
        return made, (time.perf_counter() - started) * 1000

    # One untimed round first: V8 compiles Pyodide's wasm in tiers, so its first seconds run slower.
    for tokenizer in (WorldTokenizer(vocab_text), BPETokenizer.from_json(bpe_json)):
        for text in texts.values():
            tokenizer.encode(text)
    world, world_ms = timed(lambda: WorldTokenizer(vocab_text))
    unicode_classes.cache_clear()  # a first BPE builds the regex classes: count that
    translate.cache_clear()
    bpe, bpe_ms = timed(lambda: BPETokenizer.from_json(bpe_json))
    rows = []
    for name, text in texts.items():
        size = len(text.encode("utf-8"))
        for label, tokenizer, build_ms in (("World", world, world_ms), ("BPE", bpe, bpe_ms)):
            best = float("inf")
            for _ in range(repeats):
                if label == "BPE":
                    tokenizer.clear_cache()
                started = time.perf_counter()
                tokenizer.encode(text)
                best = min(best, time.perf_counter() - started)
            rows.append(
                {
                    "tokenizer": label,
                    "text": name,
                    "kb": size / 1024,
                    "us_per_kb": best * 1e6 / (size / 1024),
                    "mb_per_s": size / best / 1e6,
                    "build_ms": build_ms,
                }
            )
    return rows


def corpora(kb: int, world: WorldTokenizer) -> dict[str, str]:
    return {
        "English": _cut(english_text(), kb),
        "Chinese": _cut(chinese_text(world, kb), kb),
        "code": _cut(code_text(), kb),
    }


def english_text() -> str:
    files = sorted(glob.glob(os.path.join(LICENSES, "*")))
    texts = [open(path, encoding="utf-8", errors="ignore").read() for path in files if os.path.isfile(path)]
    if texts:
        return "\n\n".join(texts)
    # Without Debian's licence texts: English prose that every Python has, the stdlib's docstrings.
    modules = [importlib.import_module(name) for name in ("argparse", "inspect", "json", "textwrap", "random")]
    return "\n\n".join(
        obj.__doc__
        for module in modules
        for obj in vars(module).values()
        if getattr(obj, "__module__", None) == module.__name__ and obj.__doc__
    )


def chinese_text(world: WorldTokenizer, kb: int) -> str:
    han = []
    for token in world.id_to_bytes.values():
        text = token.decode("utf-8", errors="replace")
        if text and all("\u4e00" <= char <= "\u9fff" for char in text):
            han.append(text)
    rng, parts = random.Random(0), []
    while sum(map(len, parts)) * 3 < kb * 1024 * 1.2:
        sentence = "".join(rng.choice(han) for _ in range(rng.randrange(4, 14)))
        parts.append(sentence + rng.choice("，，，。。！？"))
    return "".join(parts)


def code_text() -> str:
    names = ("argparse", "json.decoder", "json.encoder", "random", "textwrap")
    modules = [importlib.import_module(name) for name in names]
    return "\n".join(open(module.__file__, encoding="utf-8").read() for module in modules)


def _cut(text: str, kb: int) -> str:
    """The first kb KB of the text (repeated if it is shorter), ending on a whole character."""
    data = text.encode("utf-8")
    data = data * (kb * 1024 // len(data) + 1)
    return data[: kb * 1024].decode("utf-8", errors="ignore")


def trained_bpe(texts: dict[str, str]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts.values()), trainer)
    return tokenizer.to_str()


def cpython_rows(vocab_text: str, bpe_json: str, texts: dict, repeats: int) -> list[dict]:
    runtime = f"CPython {sys.version.split()[0]}"
    rows = [{"runtime": runtime, **row} for row in measure(vocab_text, bpe_json, texts, repeats)]
    return rows + reference_rows(runtime, bpe_json, texts, repeats)


def reference_rows(runtime: str, bpe_json: str, texts: dict, repeats: int) -> list[dict]:
    """The `rwkv` package's pure-Python TRIE_TOKENIZER and Rust `tokenizers`, for scale."""
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    from tokenizers import Tokenizer

    trie, rust = TRIE_TOKENIZER(default_vocab_path()), Tokenizer.from_str(bpe_json)
    rows = []
    for name, text in texts.items():
        size = len(text.encode("utf-8"))
        for label, encode in (
            ("World, rwkv package TRIE_TOKENIZER", trie.encode),
            ("BPE, Rust tokenizers", rust.encode),
        ):
            best = min(_seconds(encode, text) for _ in range(repeats))
            rows.append(
                {
                    "runtime": runtime,
                    "tokenizer": label,
                    "text": name,
                    "kb": size / 1024,
                    "us_per_kb": best * 1e6 / (size / 1024),
                    "mb_per_s": size / best / 1e6,
                    "build_ms": None,
                }
            )
    return rows


def _seconds(function, argument) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


PYODIDE_JS = """
async ([wheels, vocabUrl, source, args, expression]) => {
  const { loadPyodide } = await import("/pyodide/pyodide.mjs");
  const pyodide = await loadPyodide({ indexURL: "/pyodide/" });
  await pyodide.loadPackage(wheels, { messageCallback: () => {} });
  const response = await fetch(vocabUrl);
  if (!response.ok) throw new Error(vocabUrl + ": " + response.status);
  const vocab = await response.text();
  pyodide.runPython(source);
  pyodide.globals.set("args", pyodide.toPy([vocab, ...args]));
  const version = pyodide.runPython("import sys; sys.version.split()[0]");
  return [pyodide.version, version, pyodide.runPython("import json; json.dumps(" + expression + ")")];
}
"""


def run_in_pyodide(page, base_url: str, source: str, expression: str, args: list):
    """Evaluate `expression` in a fresh Pyodide on `page` (a blank page of the served site's
    origin) with the site's rwkvweb wheel installed, after running `source`; `args` is the list
    [World vocabulary text, *args]. Returns (Pyodide version, Python version, the value via JSON)."""
    from build import site

    manifest = json.load(open(os.path.join(site.SITE, "asset-manifest.json")))
    wheels = [
        base_url + path for path in manifest["files"] if path.startswith("wheels/rwkvweb-") and path.endswith(".whl")
    ]
    vocab_url = base_url + "vocab/rwkv_vocab_v20230424.txt"
    pyodide, python, value = page.evaluate(PYODIDE_JS, [wheels, vocab_url, source, args, expression])
    return pyodide, python, json.loads(value)


def pyodide_rows(bpe_json: str, texts: dict, repeats: int) -> list[dict]:
    """`measure` inside the built site's Pyodide, with the site's rwkvweb wheel, in headless Chromium."""
    import serve
    from build import site
    from playwright.sync_api import sync_playwright
    from rwkvweb.headless import CHROMIUM, CHROMIUM_ARGS, open_blank

    if site.is_stale():
        site.build()
    server = serve.serve_in_thread(site.SITE)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = open_blank(browser.new_page(), server.url)
            page.set_default_timeout(600_000)
            source = "from __future__ import annotations\n" + inspect.getsource(measure)
            args = [bpe_json, texts, repeats]
            pyodide, python, rows = run_in_pyodide(page, server.url, source, "measure(*args)", args)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return [{"runtime": f"Pyodide {pyodide} (Python {python}), Chromium", **row} for row in rows]


def tokenizer_table(kb: int = 64, browser: bool = True, repeats: int = REPEATS) -> list[dict]:
    """Rows {runtime, tokenizer, text, kb, us_per_kb, mb_per_s, build_ms}; CPython, then Pyodide."""
    vocab_text = open(default_vocab_path(), encoding="utf-8").read()
    texts = corpora(kb, WorldTokenizer(vocab_text))
    bpe_json = trained_bpe(texts)
    rows = cpython_rows(vocab_text, bpe_json, texts, repeats)
    if browser:
        rows += pyodide_rows(bpe_json, texts, repeats)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| runtime | tokenizer | text | µs/KB | MB/s | build |", "|---|---|---|---|---|---|"]
    for row in rows:
        build = f"{row['build_ms']:.0f} ms" if row["build_ms"] is not None else ""
        lines.append(
            f"| {row['runtime']} | {row['tokenizer']} | {row['text']} ({row['kb']:.0f} KB) | "
            f"{row['us_per_kb']:.0f} | {row['mb_per_s']:.2f} | {build} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=64, help="KB of each text (default 64)")
    parser.add_argument("--no-browser", action="store_true", help="CPython only (no Chromium)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    print(markdown(tokenizer_table(args.kb, not args.no_browser, args.repeats)))


if __name__ == "__main__":
    main()
