"""build/bench_tokenizers.py under CPython: the table has a row per runtime, tokenizer and text."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")

from build.bench_tokenizers import markdown, tokenizer_table  # noqa: E402


def test_the_cpython_table_measures_every_tokenizer_on_every_text():
    rows = tokenizer_table(kb=2, browser=False, repeats=1)
    kinds = {(row["tokenizer"], row["text"]) for row in rows}
    assert {(t, n) for t in ("World", "BPE") for n in ("English", "Chinese", "code")} <= kinds
    for row in rows:
        assert 1.5 < row["kb"] <= 2  # cut at a character boundary within 2 KB
        assert row["us_per_kb"] > 0
        assert row["mb_per_s"] * row["us_per_kb"] == pytest.approx(1024)  # the same time in both units (1 KB = 1024 B)
    assert markdown(rows).count("\n") == len(rows) + 1
