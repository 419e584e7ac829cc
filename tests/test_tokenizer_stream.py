"""StreamDecoder, property-tested with seeded random token streams: no piece is ever broken
UTF-8 (a lone surrogate or a half character), and the pieces join to the whole decode."""

from __future__ import annotations

import random

import pytest

from rwkvweb.tokenizer import ByteTokenizer, StreamDecoder, WorldTokenizer

STREAMS = 3000


@pytest.fixture(scope="module")
def world():
    return WorldTokenizer.from_file()


def stream(tokenizer, ids) -> list[str]:
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def assert_well_formed(pieces: list[str]) -> None:
    for piece in pieces:
        piece.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate


def world_multibyte_ids(world) -> list[int]:
    """Tokens that are not whole UTF-8 (a character cut at either end): the stream must stitch them."""
    cut = []
    for token_id, token in world.id_to_bytes.items():
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            cut.append(token_id)
    return cut


def test_random_world_token_streams_never_emit_broken_text(world):
    rng = random.Random(2024)
    cut = world_multibyte_ids(world)
    assert len(cut) > 100  # the vocabulary has many byte tokens that split characters
    every = list(world.id_to_bytes)
    for _ in range(STREAMS):
        ids = [rng.choice(cut if rng.random() < 0.6 else every) for _ in range(rng.randrange(0, 24))]
        pieces = stream(world, ids)
        assert_well_formed(pieces)
        assert "".join(pieces) == world.decode(ids)


def test_random_byte_streams_never_emit_broken_text():
    rng = random.Random(7)
    tokenizer = ByteTokenizer()
    for _ in range(STREAMS):
        ids = list(rng.randbytes(rng.randrange(0, 40)))
        pieces = stream(tokenizer, ids)
        assert_well_formed(pieces)
        assert "".join(pieces) == tokenizer.decode(ids)


@pytest.mark.parametrize("text", ["你好，世界", "emoji 🌍🚀👩‍👩‍👧‍👦 🇫🇷", "Ελληνικά é ü ß", "\U0010ffff\u0800\x7f"])
def test_valid_text_split_into_single_bytes_streams_without_replacement_chars(text):
    # Byte tokens cut every multi-byte character; the partial bytes are held until complete.
    pieces = stream(ByteTokenizer(), list(text.encode("utf-8")))
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) == text
    assert all(len(piece) <= 1 for piece in pieces)  # each character appears once, when its last byte arrives


def test_random_cuts_of_valid_world_text_stream_without_replacement_chars(world):
    rng = random.Random(11)
    alphabet = "ab 你好世界。🌍🚀éü\n"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        pieces = stream(world, world.encode(text))
        assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)


def test_a_stream_that_ends_inside_a_character_flushes_one_replacement_char():
    decoder = StreamDecoder(ByteTokenizer())
    assert [decoder.push(b) for b in "é".encode("utf-8")[:1]] == [""]
    assert decoder.flush() == "\ufffd"
