"""Tokenizers in pure Python (no numpy, no native code: they run in Pyodide), and the choice of one.

A model says which tokenizer it needs in its safetensors metadata, key `rwkvweb.tokenizer`:
    "world"     the RWKV World vocabulary (65536 ids), below
    "bytes"     ids 0-255 are the bytes of UTF-8 text (256 ids)
    "bpe"       byte-level BPE (bpe.py) from the tokenizer.json text in metadata `rwkvweb.tokenizer_json`
    "gpt-neox"  GPT-NeoX 20B's byte-level BPE (RWKV Pile models): that same metadata key, or a file
    "none"      token ids only
Without the key: a `rwkvweb.tokenizer_json` means "bpe", a 65536-entry vocabulary "world" (official
checkpoints carry no metadata), 50277 or 50304 entries "gpt-neox", anything else ids only.

The RWKV World tokenizer:

The vocabulary file `rwkv_vocab_v20230424.txt` has one token per line:
`<id> <Python literal of str or bytes> <byte length>`. Ids 1..256 are the 256
single bytes, so every byte string can be encoded; id 0 is end-of-text and has
no bytes. Encoding is greedy longest match over the UTF-8 bytes, exactly as
the reference `TRIE_TOKENIZER` in the `rwkv` package does, walking a trie of
nested dicts (about 1.5-2.5x faster than probing a dict of every token prefix).

Streaming text out of any of them goes through StreamDecoder (no broken characters).
"""

from __future__ import annotations

import ast
import codecs
import functools
import importlib.util
import os

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"
WORLD_IDS = 65536
TOKEN_ID = 256  # the trie key under which a node keeps its token id (byte keys are 0..255)


class WorldTokenizer:
    def __init__(self, vocab_text: str):
        self.id_to_bytes: dict[int, bytes] = {}
        for line_number, line in enumerate(vocab_text.splitlines(), 1):
            if line.strip():
                token_id, token = _parse_line(line, line_number)
                self.id_to_bytes[token_id] = token
        self.trie = _build_trie(self.id_to_bytes)
        missing = [b for b in range(256) if TOKEN_ID not in self.trie.get(b, {})]
        if missing:
            raise ValueError(
                f"vocabulary lacks single-byte tokens for {len(missing)} bytes, e.g. {missing[0]:#04x}: "
                "some text could not be encoded"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None) -> "WorldTokenizer":
        with open(path or default_vocab_path(), encoding="utf-8") as file:
            return cls(file.read())

    def encode_bytes(self, data: bytes) -> list[int]:
        """Greedy longest match: from each position, walk the trie as far as the bytes go and
        take the last token passed. (The inner loop is the hot path: kept to two dict lookups a byte.)"""
        ids, position, size, root = [], 0, len(data), self.trie
        append = ids.append
        while position < size:
            node = root[data[position]]
            best_id, best_end, end = node[TOKEN_ID], position + 1, position + 1
            while end < size:
                node = node.get(data[end])
                if node is None:
                    break
                end += 1
                if TOKEN_ID in node:
                    best_id, best_end = node[TOKEN_ID], end
            append(best_id)
            position = best_end
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        """Ids without bytes (0, end-of-text; 65530-65535, embedding rows the vocabulary leaves
        unused, which a model may still sample) decode to nothing; ids past 65535 are refused."""
        parts, table = [], self.id_to_bytes
        for i in ids:
            token = table.get(i)
            if token is not None:
                parts.append(token)
            elif not 0 <= i < WORLD_IDS:
                raise ValueError(f"token id {i} is not in the World vocabulary (ids 0-{WORLD_IDS - 1})")
        return b"".join(parts)

    def decode(self, ids, errors: str = "replace") -> str:
        """Text for the ids; bytes that are not valid UTF-8 (a cut multi-byte char) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


class ByteTokenizer:
    """Token id = byte value: any text round-trips through its UTF-8 bytes."""

    def encode_bytes(self, data: bytes) -> list[int]:
        return list(data)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        try:
            return bytes(ids)
        except ValueError:
            wrong = [i for i in ids if not 0 <= i < 256][:3]
            raise ValueError(f"byte tokenizer: ids must be 0-255, got {wrong}") from None

    def decode(self, ids, errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


class StreamDecoder:
    """Text from token ids one at a time, never a broken character: the bytes of a multi-byte
    UTF-8 character cut between tokens are held back until the token that completes it; bytes
    that can never become valid UTF-8 come out as U+FFFD, as `decode` would give them. The pieces
    joined (after `flush`) equal tokenizer.decode(all ids)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text that token_id completes ('' while a character is still partial)."""
        return self._utf8.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """At the end of the stream: a trailing partial character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)


METADATA_KEY = "rwkvweb.tokenizer"
JSON_METADATA_KEY = "rwkvweb.tokenizer_json"
VOCAB_SIZES = {"world": WORLD_IDS, "bytes": 256}
# GPT-NeoX 20B's tokenizer has 50277 ids: RWKV-4 Pile models have exactly that many embedding
# rows, RWKV-7 Pile models pad them to 50304 (a multiple of 64).
GPT_NEOX_SIZES = (50277, 50304)
GPT_NEOX_ENV = "RWKVWEB_GPT_NEOX_TOKENIZER"
KNOWN = ("world", "bytes", "bpe", "gpt-neox", "none")


def tokenizer_for(vocab_size: int, metadata: dict[str, str], world, gpt_neox=None):
    """The tokenizer a model declares (or implies); `world()` supplies the World tokenizer and
    `gpt_neox()` GPT-NeoX 20B's tokenizer.json text, or None when it has none (default: the file
    named by $RWKVWEB_GPT_NEOX_TOKENIZER)."""
    name = metadata.get(METADATA_KEY) or _implied(vocab_size, metadata)
    if name == "none":
        return None
    if name not in KNOWN:
        raise ValueError(
            f"the model asks for tokenizer {name!r}; known: {', '.join(KNOWN)} (metadata key {METADATA_KEY})"
        )
    if name in ("bpe", "gpt-neox"):
        return _bpe_for(name, vocab_size, metadata, gpt_neox or default_gpt_neox)
    if vocab_size != VOCAB_SIZES[name]:
        raise ValueError(
            f"the model declares the {name} tokenizer ({VOCAB_SIZES[name]} ids) but has {vocab_size} embedding rows"
        )
    return world() if name == "world" else ByteTokenizer()


def _implied(vocab_size: int, metadata: dict[str, str]) -> str:
    if JSON_METADATA_KEY in metadata:
        return "bpe"
    if vocab_size == VOCAB_SIZES["world"]:
        return "world"
    return "gpt-neox" if vocab_size in GPT_NEOX_SIZES else "none"


def _bpe_for(name: str, vocab_size: int, metadata: dict[str, str], gpt_neox):
    text = metadata.get(JSON_METADATA_KEY) or (gpt_neox() if name == "gpt-neox" else None)
    if not text:
        needs = "GPT-NeoX 20B's tokenizer (RWKV Pile models)" if name == "gpt-neox" else "a byte-level BPE tokenizer"
        or_file = f", or set ${GPT_NEOX_ENV} to the file (20B_tokenizer.json)" if name == "gpt-neox" else ""
        raise ValueError(
            f"the model needs {needs} but carries none: put its tokenizer.json text in the model's "
            f"metadata key {JSON_METADATA_KEY}{or_file}; or set {METADATA_KEY} to 'none' "
            "to use token ids only"
        )
    tokenizer = _parse_bpe(text)
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"the model's tokenizer.json has {tokenizer.vocab_size} ids but the model only {vocab_size} embedding rows"
        )
    return tokenizer


@functools.lru_cache(maxsize=2)  # the page checks the tokenizer before loading, then loads: parse once
def _parse_bpe(text: str):
    from .bpe import BPETokenizer

    return BPETokenizer.from_json(text)


def default_gpt_neox() -> str | None:
    """GPT-NeoX 20B's tokenizer.json text from $RWKVWEB_GPT_NEOX_TOKENIZER, None when unset."""
    path = os.environ.get(GPT_NEOX_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        return file.read()


def _build_trie(id_to_bytes: dict[int, bytes]) -> dict:
    """Nested dicts over bytes: trie[b0][b1]... is the node for the prefix b0 b1 ...; a node that
    ends a token holds its id under TOKEN_ID."""
    root: dict = {}
    for token_id, token in id_to_bytes.items():
        node = root
        for byte in token:
            child = node.get(byte)
            if child is None:
                child = node[byte] = {}
            node = child
        node[TOKEN_ID] = token_id
    return root


def _parse_line(line: str, line_number: int) -> tuple[int, bytes]:
    try:
        token_id = int(line[: line.index(" ")])
        literal = _literal(line[line.index(" ") : line.rindex(" ")].strip())
        length = int(line[line.rindex(" ") :])
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"vocabulary line {line_number} is malformed: {line[:60]!r}") from error
    token = literal.encode("utf-8") if isinstance(literal, str) else literal
    if not isinstance(token, bytes) or len(token) != length:
        raise ValueError(f"vocabulary line {line_number}: token is not {length} bytes long")
    return token_id, token


def _literal(text: str):
    """The str/bytes literal of a vocabulary line. Most are plain quoted text without escapes:
    those are read directly (ast.literal_eval was ~70% of building the tokenizer under CPython)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and "\\" not in text and text[0] not in text[1:-1]:
        return text[1:-1]
    return ast.literal_eval(text)


def default_vocab_path() -> str:
    """The World vocabulary: $RWKVWEB_WORLD_VOCAB, else the copy inside the `rwkv` package."""
    if os.environ.get("RWKVWEB_WORLD_VOCAB"):
        return os.environ["RWKVWEB_WORLD_VOCAB"]
    spec = importlib.util.find_spec("rwkv")  # finds the package without importing it
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = os.path.join(folder, WORLD_VOCAB_FILE)
            if os.path.exists(candidate):
                return candidate
    raise FileNotFoundError(
        f"{WORLD_VOCAB_FILE} not found: `pip install rwkv` (it ships the file) or set RWKVWEB_WORLD_VOCAB to its path"
    )


def missing_tokenizer(vocab_size: int) -> str:
    """Why text cannot be used with a model that has no tokenizer, and what to do instead."""
    because = ""
    if vocab_size in GPT_NEOX_SIZES:
        because = (
            f" (a {vocab_size}-token vocabulary is GPT-NeoX 20B's BPE: put its tokenizer.json in the model's "
            f"metadata as {JSON_METADATA_KEY}, or name the file in ${GPT_NEOX_ENV})"
        )
    return f"no tokenizer for a {vocab_size}-token vocabulary{because}: pass token ids instead of text"
