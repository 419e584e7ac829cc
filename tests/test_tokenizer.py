"""The pure-Python World tokenizer: exact round trips, and the same ids as the reference."""

from __future__ import annotations

import random

import pytest

from rwkvweb.tokenizer import WorldTokenizer

MULTILINGUAL = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "你好，世界。我能吞下玻璃而不伤身体。",
    "こんにちは世界、カタカナとひらがな。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "Ελληνικά, Türkçe: çok güzel, Tiếng Việt: xin chào",
    "emoji 🌍🚀👩‍👩‍👧‍👦 and flags 🇫🇷 and zero-width\u200bjoiner",
    "code:\n\tdef f(x):\n\t\treturn {'a': [1, 2.5e-3]}  # comment\n\n\n",
    "    leading spaces, trailing spaces    ",
    "\r\n\x00\x01\x7f control characters",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return WorldTokenizer.from_file()


@pytest.fixture(scope="module")
def reference():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from rwkvweb.tokenizer import default_vocab_path

    return TRIE_TOKENIZER(default_vocab_path())


def test_the_vocabulary_is_read_exactly_as_the_reference_reads_it(tokenizer, reference):
    # Most lines skip ast.literal_eval (tokenizer._literal): every token's bytes must still agree.
    assert tokenizer.id_to_bytes == reference.idx2token


def test_ten_thousand_random_byte_strings_round_trip(tokenizer):
    rng = random.Random(1234)
    for _ in range(10_000):
        data = rng.randbytes(rng.randrange(0, 48))
        ids = tokenizer.encode_bytes(data)
        assert tokenizer.decode_bytes(ids) == data
        assert all(1 <= i < 65536 for i in ids)


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_multilingual_text_round_trips_and_matches_the_reference(tokenizer, reference, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert ids == reference.encode(text)


def test_random_bytes_match_the_reference(tokenizer, reference):
    rng = random.Random(99)
    # Bias towards bytes that form real tokens (ASCII letters/spaces) so long matches get exercised.
    alphabet = b" etaoinshrdlucmfwypvbgkqjxz\n" + bytes(range(256))
    for _ in range(500):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 80)))
        assert tokenizer.encode_bytes(data) == reference.encodeBytes(data)


def test_single_bytes_are_ids_1_to_256(tokenizer):
    assert [tokenizer.encode_bytes(bytes([b]))[0] for b in range(256)] == list(range(1, 257))
    assert tokenizer.decode([0]) == ""  # end-of-text has no bytes


def test_greedy_longest_match_prefers_the_whole_word(tokenizer):
    ids = tokenizer.encode(" hello")
    assert len(ids) == 1 and tokenizer.decode(ids) == " hello"


def test_a_cut_multibyte_character_decodes_to_the_replacement_char(tokenizer):
    ids = tokenizer.encode_bytes("é".encode()[:1])
    assert tokenizer.decode(ids) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tokenizer.decode(ids, errors="strict")


def test_unknown_id_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="token id 70000 is not in the World vocabulary"):
        tokenizer.decode([70000])


def test_embedding_rows_without_a_token_decode_to_nothing(tokenizer):
    # A 65536-row model can sample 65530-65535; a stream must not fail on them.
    assert tokenizer.decode([*tokenizer.encode("hi"), *range(65530, 65536), 0]) == "hi"


def test_malformed_vocabularies_are_refused():
    single_bytes = "".join(f"{b + 1} {bytes([b])!r} 1\n" for b in range(256))
    assert WorldTokenizer(single_bytes + "257 'ab' 2\n").encode("ab") == [257]
    with pytest.raises(ValueError, match="line 257: token is not 3 bytes long"):
        WorldTokenizer(single_bytes + "257 'ab' 3\n")
    with pytest.raises(ValueError, match="line 257 is malformed"):
        WorldTokenizer(single_bytes + "257 __import__('os') 2\n")
    with pytest.raises(ValueError, match="lacks single-byte tokens for 1 bytes, e.g. 0xff"):
        WorldTokenizer(single_bytes.replace("256 b'\\xff' 1\n", ""))


def test_byte_tokenizer_round_trips_any_text():
    from rwkvweb.tokenizer import ByteTokenizer

    tokenizer = ByteTokenizer()
    for text in MULTILINGUAL:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("é") == [0xC3, 0xA9]
    with pytest.raises(ValueError, match="ids must be 0-255"):
        tokenizer.decode([300])


@pytest.mark.parametrize(
    "vocab, metadata, expected",
    [
        (65536, {}, "world"),
        (256, {}, None),
        (300, {}, None),
        (256, {"rwkvweb.tokenizer": "bytes"}, "ByteTokenizer"),
        (65536, {"rwkvweb.tokenizer": "none"}, None),
        (65536, {"rwkvweb.tokenizer": "world"}, "world"),
    ],
)
def test_the_model_metadata_chooses_the_tokenizer(vocab, metadata, expected):
    from rwkvweb.tokenizer import tokenizer_for

    chosen = tokenizer_for(vocab, metadata, lambda: "world")
    assert (type(chosen).__name__ if chosen not in (None, "world") else chosen) == expected


@pytest.mark.parametrize(
    "vocab, metadata, message",
    [
        (300, {"rwkvweb.tokenizer": "bytes"}, "declares the bytes tokenizer \\(256 ids\\) but has 300"),
        (256, {"rwkvweb.tokenizer": "gpt2"}, "asks for tokenizer 'gpt2'; known: world, bytes, bpe, gpt-neox, none"),
    ],
)
def test_inconsistent_tokenizer_metadata_is_refused(vocab, metadata, message):
    from rwkvweb.tokenizer import tokenizer_for

    with pytest.raises(ValueError, match=message):
        tokenizer_for(vocab, metadata, lambda: "world")
