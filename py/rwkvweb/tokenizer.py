"""Tokenizers in pure Python (no numpy, no native code: they run in Pyodide), and the choice of one.

A model says which tokenizer it needs in its safetensors metadata, key `rwkvweb.tokenizer`:
    "world"   the RWKV World vocabulary (65536 ids), below
    "bytes"   ids 0-255 are the bytes of UTF-8 text (256 ids)
    "none"    token ids only
Without the key, a 65536-entry vocabulary means World (official checkpoints carry no metadata)
and anything else means ids only.

The RWKV World tokenizer:

The vocabulary file `rwkv_vocab_v20230424.txt` has one token per line:
`<id> <Python literal of str or bytes> <byte length>`. Ids 1..256 are the 256
single bytes, so every byte string can be encoded; id 0 is end-of-text and has
no bytes. Encoding is greedy longest match over the UTF-8 bytes, exactly as
the reference `TRIE_TOKENIZER` in the `rwkv` package does.
"""

from __future__ import annotations

import ast
import importlib.util
import os

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"
NOT_A_TOKEN = -1  # marks a byte string that is only a prefix of tokens


class WorldTokenizer:
    def __init__(self, vocab_text: str):
        self.id_to_bytes: dict[int, bytes] = {}
        for line_number, line in enumerate(vocab_text.splitlines(), 1):
            if line.strip():
                token_id, token = _parse_line(line, line_number)
                self.id_to_bytes[token_id] = token
        # One dict answers both "is this a token?" and "can a longer token start like this?":
        # every prefix of every token maps to NOT_A_TOKEN unless it is a token itself.
        self.table: dict[bytes, int] = {}
        for token_id, token in self.id_to_bytes.items():
            for end in range(1, len(token)):
                self.table.setdefault(token[:end], NOT_A_TOKEN)
        for token_id, token in self.id_to_bytes.items():
            self.table[token] = token_id
        missing = [b for b in range(256) if self.table.get(bytes([b]), NOT_A_TOKEN) == NOT_A_TOKEN]
        if missing:
            raise ValueError(f"vocabulary lacks single-byte tokens for {len(missing)} bytes, e.g. {missing[0]:#04x}: some text could not be encoded")
        self.max_token_bytes = max(len(t) for t in self.id_to_bytes.values())

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None) -> "WorldTokenizer":
        with open(path or default_vocab_path(), encoding="utf-8") as file:
            return cls(file.read())

    def encode_bytes(self, data: bytes) -> list[int]:
        ids, position, size, table = [], 0, len(data), self.table
        while position < size:
            best_end, best_id = position + 1, table[data[position : position + 1]]
            limit = min(size, position + self.max_token_bytes)
            end = position + 2
            while end <= limit:
                found = table.get(data[position:end])
                if found is None:
                    break
                if found != NOT_A_TOKEN:
                    best_end, best_id = end, found
                end += 1
            ids.append(best_id)
            position = best_end
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        try:
            return b"".join(self.id_to_bytes[i] for i in ids if i != 0)
        except KeyError as error:
            raise ValueError(f"token id {error.args[0]} is not in the World vocabulary") from None

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
            raise ValueError(f"byte tokenizer: ids must be 0-255, got {[i for i in ids if not 0 <= i < 256][:3]}") from None

    def decode(self, ids, errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


METADATA_KEY = "rwkvweb.tokenizer"
VOCAB_SIZES = {"world": 65536, "bytes": 256}


def tokenizer_for(vocab_size: int, metadata: dict[str, str], world):
    """The tokenizer a model declares (or implies); `world()` supplies the World tokenizer."""
    name = metadata.get(METADATA_KEY) or ("world" if vocab_size == VOCAB_SIZES["world"] else "none")
    if name == "none":
        return None
    if name not in VOCAB_SIZES:
        raise ValueError(f"the model asks for tokenizer {name!r}; known: world, bytes, none (metadata key {METADATA_KEY})")
    if vocab_size != VOCAB_SIZES[name]:
        raise ValueError(f"the model declares the {name} tokenizer ({VOCAB_SIZES[name]} ids) but has {vocab_size} embedding rows")
    return world() if name == "world" else ByteTokenizer()


def _parse_line(line: str, line_number: int) -> tuple[int, bytes]:
    try:
        token_id = int(line[: line.index(" ")])
        literal = ast.literal_eval(line[line.index(" ") : line.rindex(" ")].strip())
        length = int(line[line.rindex(" ") :])
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"vocabulary line {line_number} is malformed: {line[:60]!r}") from error
    token = literal.encode("utf-8") if isinstance(literal, str) else literal
    if not isinstance(token, bytes) or len(token) != length:
        raise ValueError(f"vocabulary line {line_number}: token is not {length} bytes long")
    return token_id, token


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
    raise FileNotFoundError(f"{WORLD_VOCAB_FILE} not found: `pip install rwkv` (it ships the file) or set RWKVWEB_WORLD_VOCAB to its path")


# Vocabularies known by their size whose tokenizer this runtime does not have yet (issue 11, part 4).
UNSUPPORTED_VOCABULARIES = {
    50277: "GPT-NeoX 20B's BPE (RWKV-4 Pile and Raven models), which needs a tokenizer.json: not supported yet",
}


def missing_tokenizer(vocab_size: int) -> str:
    """Why text cannot be used with a model that has no tokenizer, and what to do instead."""
    known = UNSUPPORTED_VOCABULARIES.get(vocab_size)
    because = f" (a {vocab_size}-token vocabulary is {known})" if known else ""
    return f"no tokenizer for a {vocab_size}-token vocabulary{because}: pass token ids instead of text"
