"""Byte-level BPE (rwkvweb.bpe) gives the same ids as the `tokenizers` package and decodes alike.

Nothing is downloaded: the reference tokenizers are trained here by `tokenizers` itself (ByteLevel
pre-tokenizer + BpeTrainer) on a corpus made from local text, or written by hand (GPT-NeoX-like
configs, adversarial merge orders); both sides read the same tokenizer.json text.
"""

from __future__ import annotations

import json
import os
import random
import unicodedata

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (  # noqa: E402 - after the importorskip that explains a missing package
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,  # noqa: E402
    pre_tokenizers,
    trainers,
)

from rwkvweb.bpe import BYTE_TO_CHAR, CHAR_TO_BYTE, BPETokenizer  # noqa: E402
from rwkvweb.bpe_pretokenizer import gpt2_pattern, unicode_classes  # noqa: E402
from rwkvweb.tokenizer import StreamDecoder, tokenizer_for  # noqa: E402

LICENSE = "/usr/share/common-licenses/GPL-3"  # Debian's base-files ships it
FRAGMENTS = [
    "a",
    "Z",
    "word",
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\r\n",
    " \t\n ",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'",
    "’",
    "0",
    "42",
    "3.14",
    "1,000",
    "²",
    "½",
    "Ⅻ",
    "٣",
    "é",
    "e\u0301",
    "ß",
    "İ",
    "中",
    "文字",
    "。",
    "한국어",
    "カタカナ",
    "🚀",
    "👩‍👩‍👧‍👦",
    "🇫🇷",
    "!",
    "?!",
    "...",
    "--",
    "_",
    "__init__",
    "#",
    "{",
    "}",
    "()",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x85",
    "\x1c",
    "\x00",
    "\u200b",
    "\ufeff",
    "<|endoftext|>",
    "<|padding|>",
]
SAMPLES = [
    "",
    " ",
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "don't you're I'll we've she'd it's I'M 'sup rock'n'roll",
    "a  b   c    d\t\te\n\n\nf \t \n g",
    "    leading",
    "trailing    ",
    "\n\n\n",
    "\t \t",
    "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n\n\n",
    "x = 1_000_000 + 0x1F",
    "你好，世界。我能吞下玻璃而不伤身体。",
    "こんにちは世界",
    "안녕하세요",
    "Привет, мир!",
    "नमस्ते दुनिया",
    "مرحبا بالعالم",
    "emoji 🌍🚀👩‍👩‍👧‍👦 and flags 🇫🇷🇩🇪",
    "1234567890 3.14159 ²½Ⅻ ١٢٣",
    "!!!??? ... --- ***",
    "<|endoftext|>hi<|endoftext|>",
    "café e\u0301 ﬁ Å",
    "\x1c\x1d a\x1fb \u200b\ufeff",
    "x\u3000\u3000y\u00a0z\u2028w\x85v",
]


def local_corpus() -> list[str]:
    """English (the GPL text, if the machine has it), Python code (stdlib source), generated CJK,
    emoji and whitespace: enough for BpeTrainer to learn merges of every kind."""
    rng = random.Random(0)
    english = open(LICENSE, encoding="utf-8").read() if os.path.exists(LICENSE) else " ".join(SAMPLES) * 20
    code = open(random.__file__, encoding="utf-8").read() + open(json.__file__, encoding="utf-8").read()
    cjk = "".join(chr(rng.randrange(0x4E00, 0x4E00 + 400)) + ("，" if rng.random() < 0.1 else "") for _ in range(8000))
    mixed = "".join(rng.choice(FRAGMENTS) for _ in range(6000))
    return [english, code, cjk, mixed, *SAMPLES]


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 40))) for _ in range(count)]


@pytest.fixture(scope="module")
def corpus():
    return local_corpus()


def train(corpus, *, prefix_space=False, normalizer=None, added=(), vocab_size=3000, split=None) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    if split is not None:  # Llama 3 / Qwen2 style: a Split regex, then ByteLevel without its own regex
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|padding|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens(list(added))
    return tokenizer


def assert_same_as_reference(reference: Tokenizer, texts, json_text: str | None = None) -> BPETokenizer:
    ours = BPETokenizer.from_json(json_text or reference.to_str())
    for text in texts:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == expected, f"ids differ for {text[:60]!r}"
        assert ours.decode(expected) == reference.decode(expected), f"decode differs for {text[:60]!r}"
    return ours


# --- trained by `tokenizers` -------------------------------------------------------------------

# The Split patterns of Llama 3's and Qwen2's tokenizer.json files.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
NEOX_SPACES = [AddedToken(" " * n, normalized=True) for n in range(2, 25)]  # GPT-NeoX 20B adds runs of spaces


@pytest.mark.parametrize(
    "name, options",
    [
        ("gpt2-like", {}),
        ("neox-like: NFC + added space runs", {"normalizer": normalizers.NFC(), "added": NEOX_SPACES}),
        ("prefix space", {"prefix_space": True}),
        ("NFKC + lowercase", {"normalizer": normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])}),
        (
            "added tokens with lstrip/rstrip/single_word",
            {
                "prefix_space": True,
                "added": [
                    AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False),
                    AddedToken("word", single_word=True, normalized=True),
                    AddedToken("中文", normalized=False),
                ],
            },
        ),
        ("llama3-like Split + ByteLevel", {"split": LLAMA3_SPLIT}),
        ("qwen2-like Split + ByteLevel, NFC", {"split": QWEN2_SPLIT, "normalizer": normalizers.NFC()}),
    ],
)
def test_trained_tokenizers_give_the_same_ids_on_the_corpus(corpus, name, options):
    reference = train(corpus, **options)
    texts = [*corpus, *SAMPLES, *random_texts(300, seed=len(name)), "a <mask> b<mask>c", "swordfish word words"]
    ours = assert_same_as_reference(reference, texts)
    assert len(ours.encode(corpus[0])) < len(corpus[0].encode()) / 2  # the merges were really exercised


def test_old_style_merges_ignore_merges_and_no_regex(corpus):
    reference = train(corpus, vocab_size=1000)
    spec = json.loads(reference.to_str())
    spec["model"]["merges"] = [" ".join(pair) for pair in spec["model"]["merges"]]  # the GPT-NeoX file's format
    spec["model"]["ignore_merges"] = True
    texts = [*SAMPLES, *random_texts(200, seed=3)]
    assert_same_as_reference(Tokenizer.from_str(json.dumps(spec)), texts, json.dumps(spec))
    spec["pre_tokenizer"]["use_regex"] = False
    assert_same_as_reference(Tokenizer.from_str(json.dumps(spec)), texts, json.dumps(spec))


# --- written by hand ----------------------------------------------------------------------------


def byte_level_spec(vocab: dict[str, int], merges: list, *, added=(), normalizer=None) -> dict:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": list(added),
        "normalizer": normalizer,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def test_merge_order_follows_ranks_even_when_a_merge_outranks_its_parts():
    # Merges in random order, so a merge of merged tokens may rank before the merges that make
    # its parts: only a (rank, position) heap like tokenizers' gets these the same.
    rng = random.Random(7)
    for trial in range(60):
        vocab = {char: byte for byte, char in enumerate(BYTE_TO_CHAR)}
        pieces, merges = ["a", "b", "c", BYTE_TO_CHAR[ord(" ")]], []
        for _ in range(rng.randrange(3, 30)):
            left, right = rng.choice(pieces), rng.choice(pieces)
            if left + right not in vocab:
                vocab[left + right] = len(vocab)
                pieces.append(left + right)
                merges.append([left, right])
        rng.shuffle(merges)
        spec = json.dumps(byte_level_spec(vocab, merges))
        texts = ["".join(rng.choice("abc  ") for _ in range(rng.randrange(0, 24))) for _ in range(100)]
        assert_same_as_reference(Tokenizer.from_str(spec), texts, spec)


def added_token(token_id: int, content: str, special: bool) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": not special,
        "special": special,
    }


def test_a_gpt_neox_like_hand_written_config():
    # The shape of GPT-NeoX 20B's tokenizer.json: <|endoftext|> = 0 and <|padding|> = 1 special,
    # the 256 byte chars, "left right" merges, NFC, runs of spaces as normalized added tokens.
    vocab = {"<|endoftext|>": 0, "<|padding|>": 1}
    vocab.update({char: 2 + byte for byte, char in enumerate(BYTE_TO_CHAR)})
    merges = []
    for word in ["Ġthe", "Ġwor", "Ġworld", "he", "llo", "Ġhello", "ĠĠ", "ÃĹ", "ä¸Ń", "ĊĊ", "12", "123"]:
        for cut in range(1, len(word)):
            left, right = word[:cut], word[cut:]
            if left in vocab and right in vocab and word not in vocab:
                vocab[word] = len(vocab)
                merges.append(f"{left} {right}")
    added = [added_token(0, "<|endoftext|>", special=True), added_token(1, "<|padding|>", special=True)]
    added += [added_token(len(vocab) + n, " " * (n + 2), special=False) for n in range(10)]
    spec = json.dumps(byte_level_spec(vocab, merges, added=added, normalizer={"type": "NFC"}))
    reference = Tokenizer.from_str(spec)
    ours = assert_same_as_reference(reference, [*SAMPLES, *random_texts(300, seed=5), " the world hello 123"], spec)
    assert ours.encode("<|endoftext|>") == [0] and ours.decode([0, 1]) == ""  # special tokens decode to nothing
    padded = [*ours.encode("hi"), ours.vocab_size + 5]  # a padding row of the embedding: no text, as in tokenizers
    assert ours.decode(padded) == reference.decode(padded) == "hi"
    assert ours.decode(ours.encode("a" + " " * 12 + "b")) == "a" + " " * 12 + "b"


# --- the pre-tokenizer's character classes ---------------------------------------------------


def test_letter_and_number_classes_equal_a_scan_of_every_code_point():
    import re

    letter, number = unicode_classes()
    letters, numbers = re.compile(f"[{letter}]"), re.compile(f"[{number}]")
    for code_point in range(0x110000):
        char = chr(code_point)
        category = unicodedata.category(char)
        assert bool(letters.match(char)) == (category[0] == "L"), f"U+{code_point:04X} {category}"
        assert bool(numbers.match(char)) == (category[0] == "N"), f"U+{code_point:04X} {category}"


def test_white_space_is_oniguruma_s_not_python_s():
    # U+001C..U+001F are whitespace to Python's str.isspace but not to Unicode White_Space.
    reference = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for code_point in [*range(0x20 + 1), 0x85, 0xA0, 0x1680, *range(0x2000, 0x2030), 0x205F, 0x3000, 0xFEFF]:
        text = f"a{chr(code_point) * 2}!b"
        pieces = [piece for piece, _ in reference.pre_tokenize_str(text)]
        expected = [bytes(CHAR_TO_BYTE[c] for c in piece).decode("utf-8") for piece in pieces]
        assert gpt2_pattern().findall(text) == expected, f"U+{code_point:04X}"


# --- streaming, and the model's choice ------------------------------------------------------


def test_random_bpe_token_streams_never_emit_broken_text(corpus):
    ours = BPETokenizer.from_json(train(corpus).to_str())
    rng = random.Random(3)
    ids = list(range(ours.vocab_size))
    for _ in range(2000):
        stream = [rng.choice(ids) for _ in range(rng.randrange(0, 16))]
        decoder = StreamDecoder(ours)
        pieces = [decoder.push(i) for i in stream] + [decoder.flush()]
        for piece in pieces:
            piece.encode("utf-8")  # no lone surrogates
        assert "".join(pieces) == ours.decode(stream)
    text = "你好 🚀 é"
    decoder = StreamDecoder(ours)
    assert "".join(decoder.push(i) for i in ours.encode(text)) + decoder.flush() == text


def test_the_model_metadata_chooses_a_bpe_tokenizer(corpus):
    text = train(corpus, vocab_size=500).to_str()
    world = lambda: "world"  # noqa: E731
    chosen = tokenizer_for(512, {"rwkvweb.tokenizer": "bpe", "rwkvweb.tokenizer_json": text}, world)
    assert isinstance(chosen, BPETokenizer) and chosen.vocab_size == 500
    assert isinstance(tokenizer_for(512, {"rwkvweb.tokenizer_json": text}, world), BPETokenizer)  # implied by the JSON
    assert isinstance(tokenizer_for(50304, {}, world, gpt_neox=lambda: text), BPETokenizer)  # a Pile-sized vocabulary
    with pytest.raises(ValueError, match="tokenizer.json has 500 ids but the model only 300 embedding rows"):
        tokenizer_for(300, {"rwkvweb.tokenizer_json": text}, world)


@pytest.mark.parametrize(
    "vocab, metadata, message",
    [
        (
            50277,
            {},
            "needs GPT-NeoX 20B's tokenizer \\(RWKV Pile models\\) but carries none: .* rwkvweb.tokenizer_json, "
            "or set \\$RWKVWEB_GPT_NEOX_TOKENIZER",
        ),
        (1000, {"rwkvweb.tokenizer": "bpe"}, "needs a byte-level BPE tokenizer but carries none"),
        (1000, {"rwkvweb.tokenizer": "bpe", "rwkvweb.tokenizer_json": "{"}, "tokenizer.json is not valid JSON"),
    ],
)
def test_a_model_without_the_bpe_tokenizer_it_needs_is_refused_clearly(vocab, metadata, message, monkeypatch):
    monkeypatch.delenv("RWKVWEB_GPT_NEOX_TOKENIZER", raising=False)
    with pytest.raises(ValueError, match=message):
        tokenizer_for(vocab, metadata, lambda: "world")
    assert tokenizer_for(vocab, {**metadata, "rwkvweb.tokenizer": "none"}, lambda: "world") is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["model"].update(type="WordPiece"), "model type 'WordPiece' is not supported"),
        (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer \\['Whitespace'\\] is not supported"),
        (lambda s: s.update(decoder=None), "decoder None is not supported"),
        (
            lambda s: s.update(
                pre_tokenizer={
                    "type": "Sequence",
                    "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": r"\w+"}, "behavior": "Isolated", "invert": False},
                        s["pre_tokenizer"],
                    ],
                }
            ),
            r"regex uses \\w, which is not supported",
        ),
        (
            lambda s: s.update(
                pre_tokenizer={
                    "type": "Sequence",
                    "pretokenizers": [
                        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
                        s["pre_tokenizer"],
                    ],
                }
            ),
            "Split with behavior 'Removed' is not supported",
        ),
        (lambda s: s.update(normalizer={"type": "BertNormalizer"}), "normalizer 'BertNormalizer' is not supported"),
        (lambda s: s["model"]["merges"].append("Ġ q"), "merge 1 'Ġ q' uses 'Ġq', which is not in the vocabulary"),
        (lambda s: s["model"]["merges"].append("a b c"), "merge 1 is 'a b c'; expected 'left right'"),
        (lambda s: s["model"].update(dropout=0.1), "dropout makes encoding random"),
    ],
)
def test_unsupported_or_broken_tokenizer_json_is_refused(change, message):
    vocab = {char: byte for byte, char in enumerate(BYTE_TO_CHAR)} | {"ab": 256}
    spec = byte_level_spec(vocab, ["a b"])
    change(spec)
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_json(json.dumps(spec))
