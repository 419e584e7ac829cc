"""rwkvweb.js, the ES module API, imported by a page on the site's origin (headless Chromium)."""

from __future__ import annotations

import pytest

from rwkvweb.headless import open_blank

pytestmark = pytest.mark.browser


def test_the_module_loads_generates_streams_and_forks(page, server):
    open_blank(page, server.url)
    out = page.evaluate("""async () => {
      const { load } = await import("/rwkvweb.js");
      const progress = [];
      const model = await load(undefined, { onProgress: (p) => progress.push(p.bytesDone) });
      const ids = await model.encode("cat");
      const greedy = { max_tokens: 16, temperature: 0 };
      const run = model.generate("garden (noun): ", greedy);
      const pieces = [];
      for await (const piece of run) pieces.push(piece);
      const { text, stats } = await run.result;

      // state and fork, as in the Python API: a fork continues from a copy of the state
      await model.generate("cat (noun): ", { max_tokens: 4, temperature: 0 }).result;
      const saved = await model.state();
      const branch = await model.fork();
      const a = (await model.generate(" is", { ...greedy, keep_state: true }).result).text;
      const b = (await branch.generate(" is", { ...greedy, keep_state: true }).result).text;
      await model.state(saved);
      const c = (await model.generate(" is", { ...greedy, keep_state: true }).result).text;
      const embed = await model.embed("hello").then((v) => v.length, (e) => e.message);
      await model.unload();
      const after = await model.generate("x", greedy).result.then(() => "no error", (e) => e.message);
      return { name: model.name, ids, pieces, text, stats, progress: progress.length, stateBytes: saved.byteLength,
               a, b, c, embed, after };
    }""")
    assert out["name"] == "rwkv7-tiny-wordnet.st" and out["ids"] == list(b"cat") and out["progress"] > 0
    assert "".join(out["pieces"]) == out["text"] and len(out["pieces"]) > 1  # streamed piece by piece
    assert out["stats"]["generated"] == 16 and out["stats"]["prompt_tokens"] == len("garden (noun): ")
    assert out["stats"]["tokens_per_second"] > 0
    assert 0 < out["stats"]["backend_seconds"] <= out["stats"]["decode_seconds"]  # the time waiting for the GPU
    assert out["stateBytes"] == 4 * (4 * 192 * 2 + 4 * 3 * 64 * 64)
    assert out["a"] == out["b"] == out["c"] and out["a"]  # greedy from the same state: the same text
    assert out["embed"] == 192  # one vector of the hidden width
    assert "no model is loaded: load one first" in out["after"]
