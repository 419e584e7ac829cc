"""The model the site ships (models/, trained by build/train.py): it writes real words.

Not an exact string: greedy output from a fixed prompt must be mostly dictionary words, by a
word list from a package (Debian `wamerican`: /usr/share/dict/words), and the browser engine
must write the same continuation as the numpy backend.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from rwkvweb.api import Model
from conftest import run_async as run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "rwkv7-tiny-wordnet.st")
CARD = os.path.join(ROOT, "models", "rwkv7-tiny-wordnet.json")
WORDS = "/usr/share/dict/words"
PROMPT = "garden (noun): "
THRESHOLD = 0.70  # share of whitespace-separated words found in the word list


@pytest.fixture(scope="module")
def greedy():
    model = run(Model.load(MODEL))
    return run(model.generate(PROMPT, 100, temperature=0))


def dictionary_share(text: str) -> tuple[float, list[str]]:
    if not os.path.exists(WORDS):
        pytest.fail(f"{WORDS} is missing: install Debian's wamerican (apt-get install wamerican); .ci/run does")
    vocabulary = {w.strip().lower() for w in open(WORDS, encoding="utf-8", errors="ignore")}
    words = [re.sub(r"^[^a-z]+|[^a-z]+$", "", w.lower()) for w in text.split()]
    words = [w.removesuffix("'s") for w in words if w]
    misses = [w for w in words if w not in vocabulary]
    return 1 - len(misses) / max(1, len(words)), misses


def test_the_card_states_data_licence_size_time_and_loss():
    card = json.load(open(CARD))
    assert "WordNet" in card["data"]["source"] and "license" in card["data"]
    assert card["parameters"] < 5_000_000 and card["training"]["minutes"] > 0
    assert 0 < card["training"]["held_out_bits_per_byte"] < 3


def test_the_model_declares_its_tokenizer():
    from rwkvweb.safetensors import SafetensorsFile

    assert SafetensorsFile(MODEL).metadata["rwkvweb.tokenizer"] == "bytes"


def test_greedy_output_is_mostly_dictionary_words(greedy):
    share, misses = dictionary_share(greedy.text)
    assert len(greedy.tokens) == 100
    assert share >= THRESHOLD, f"{share:.0%} dictionary words; not found: {misses[:10]}; text: {greedy.text!r}"


@pytest.mark.browser
def test_the_browser_engine_writes_the_same_continuation(browser, server, greedy):
    from gpu_harness import blank_page
    from rwkvweb.headless import CALL_JS

    page = blank_page(browser.new_page(), server)
    try:
        page.evaluate(CALL_JS, ["load", {"url": "/models/rwkv7-tiny-wordnet.st"}])  # shipped in _site/models/
        result = page.evaluate(
            CALL_JS, ["generate", {"prompt": PROMPT, "options": {"max_tokens": 100, "temperature": 0}}]
        )
    finally:
        page.close()
    assert result["tokens"] == greedy.tokens
