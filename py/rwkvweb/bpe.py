"""Byte-level BPE from a Hugging Face `tokenizer.json`, in pure Python (it runs in Pyodide).

The GPT-2 / GPT-NeoX family (RWKV-4 "Pile" models use GPT-NeoX 20B's tokenizer; Llama 3 and
Qwen2 files have the same shape with a Split regex first): text is
  1. split on the added tokens (special ones like <|endoftext|>, and e.g. NeoX's runs of spaces),
  2. normalized (NFC/NFD/NFKC/NFKD, lowercase, or none),
  3. pre-tokenized (bpe_pretokenizer.py: the ByteLevel regex, after any Split regexes), each
     piece's UTF-8 bytes mapped to printable chars,
  4. merged by rank, exactly as the `tokenizers` package does (a min-heap on (rank, position)).
Decoding maps each token's chars back to bytes (the ByteLevel decoder), so a token may end inside
a multi-byte character: stream through tokenizer.StreamDecoder.

`encode` equals `tokenizers`' `encode(text, add_special_tokens=False).ids`: a post-processor's
template (BOS/EOS around the text) is not applied: a prompt continues a running state. Decoding
skips special tokens, like `decode(ids, skip_special_tokens=True)`.
"""

from __future__ import annotations

import heapq
import json
import re
import unicodedata

from .bpe_pretokenizer import WHITE_SPACE_CHARS, PreTokenizer

CACHE_LIMIT = 65536  # pre-token -> ids entries kept; cleared when full (text rarely has more distinct words)


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable char table: printable Latin-1 bytes map to themselves, the other
    68 (controls, space, soft hyphen...) to U+0100 onwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {char: byte for byte, char in enumerate(BYTE_TO_CHAR)}
_LATIN1_TO_BYTE_CHARS = str.maketrans({chr(b): c for b, c in enumerate(BYTE_TO_CHAR)})


class BPETokenizer:
    """encode(text) -> ids, decode_bytes(ids) -> bytes, decode(ids) -> str; from tokenizer.json."""

    def __init__(self, spec: dict):
        model = spec.get("model") or {}
        if model.get("type", "BPE") != "BPE":
            raise ValueError(
                f"tokenizer.json: model type {model.get('type')!r} is not supported; only byte-level BPE is"
            )
        _refuse_unsupported(model)
        self.vocab: dict[str, int] = dict(model.get("vocab") or {})
        self.merges = _merge_table(model.get("merges") or [], self.vocab)
        self.ignore_merges = bool(model.get("ignore_merges"))
        self.unk_id = self.vocab.get(model["unk_token"]) if model.get("unk_token") is not None else None
        self.fuse_unk = bool(model.get("fuse_unk"))
        self.normalize = _normalizer(spec.get("normalizer"))
        self.pre_tokenizer = PreTokenizer(spec.get("pre_tokenizer"))
        _require_byte_level_decoder(spec.get("decoder"))
        self.added = AddedTokens(spec.get("added_tokens") or [], self.normalize)
        self.id_to_token = {i: t for t, i in self.vocab.items()} | {t.id: t.content for t in self.added.tokens}
        self.special_ids = {t.id for t in self.added.tokens if t.special}
        self.vocab_size = max(self.id_to_token, default=-1) + 1
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        try:
            spec = json.loads(text)
        except ValueError as error:
            raise ValueError(f"tokenizer.json is not valid JSON: {error}") from None
        if not isinstance(spec, dict):
            raise ValueError("tokenizer.json must be a JSON object with a 'model' entry")
        return cls(spec)

    @classmethod
    def from_file(cls, path) -> "BPETokenizer":
        with open(path, encoding="utf-8") as file:
            return cls.from_json(file.read())

    def clear_cache(self) -> None:
        """Forget the words encoded so far (the benchmark times the merges, not the cache)."""
        self._cache.clear()

    # --- encoding ---------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, added_id in self.added.split(text, normalized=False):
            if added_id is not None:
                ids.append(added_id)
                continue
            piece = self.normalize(piece) if self.normalize else piece
            for part, part_id in self.added.split(piece, normalized=True):
                if part_id is not None:
                    ids.append(part_id)
                else:
                    self._encode_plain(part, ids)
        return ids

    def encode_bytes(self, data: bytes) -> list[int]:
        try:
            return self.encode(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("byte-level BPE encodes text: these bytes are not valid UTF-8") from None

    def _encode_plain(self, text: str, ids: list[int]) -> None:
        if not text:
            return
        cache = self._cache
        for word in self.pre_tokenizer.pieces(text):
            found = cache.get(word)
            if found is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                found = cache[word] = self._merge_word(byte_level(word))
            ids.extend(found)

    def _merge_word(self, word: str) -> tuple[int, ...]:
        if self.ignore_merges and word in self.vocab:
            return (self.vocab[word],)
        symbols = self._initial_symbols(word)
        return tuple(merge_symbols(symbols, self.merges)) if len(symbols) > 1 else tuple(symbols)

    def _initial_symbols(self, word: str) -> list[int]:
        symbols, vocab, unk = [], self.vocab, self.unk_id
        for char in word:
            found = vocab.get(char)
            if found is None:
                if unk is None:
                    continue  # as `tokenizers` does: a char outside the vocabulary, with no unk token, is dropped
                if self.fuse_unk and symbols and symbols[-1] == unk:
                    continue
                found = unk
            symbols.append(found)
        return symbols

    # --- decoding ---------------------------------------------------------------

    def decode_bytes(self, ids) -> bytes:
        """Special tokens and ids without a token decode to nothing, as in `tokenizers`: models pad
        their embedding rows (GPT-NeoX's 50277 ids in 50304 rows) and may sample a padding id."""
        parts = []
        for i in ids:
            token = self.id_to_token.get(i)
            if token is not None and i not in self.special_ids:
                parts.append(_token_bytes(token))
        return b"".join(parts)

    def decode(self, ids, errors: str = "replace") -> str:
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


def byte_level(text: str) -> str:
    """The text's UTF-8 bytes as GPT-2's printable chars (str.translate: C speed)."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_CHARS)


def _token_bytes(token: str) -> bytes:
    """The ByteLevel decoder: every char mapped back to its byte, or (an added token in plain
    text, e.g. a run of spaces) the token's own UTF-8 when any char is outside the table."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


def merge_symbols(symbols: list[int], merges: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Apply merges lowest rank first, ties leftmost first, as `tokenizers`' Word::merge_all.

    symbols are linked by prev/next so merging is O(1); a heap entry whose pair has changed
    since it was pushed is stale and skipped. merges: (left id, right id) -> (rank, merged id)."""
    count = len(symbols)
    ids = list(symbols)
    alive = [True] * count
    prev = list(range(-1, count - 1))
    nxt = list(range(1, count + 1))
    heap = []
    for pos in range(count - 1):
        found = merges.get((ids[pos], ids[pos + 1]))
        if found is not None:
            heap.append((found[0], pos, found[1]))
    heapq.heapify(heap)
    while heap:
        rank, pos, new_id = heapq.heappop(heap)
        right = nxt[pos]
        if not alive[pos] or right >= count:
            continue
        found = merges.get((ids[pos], ids[right]))
        if found is None or found[1] != new_id:
            continue  # stale: this position's pair changed after the entry was pushed
        ids[pos], alive[right] = new_id, False
        nxt[pos] = nxt[right]
        if nxt[pos] < count:
            prev[nxt[pos]] = pos
        if prev[pos] >= 0:
            found = merges.get((ids[prev[pos]], new_id))
            if found is not None:
                heapq.heappush(heap, (found[0], prev[pos], found[1]))
        if nxt[pos] < count:
            found = merges.get((new_id, ids[nxt[pos]]))
            if found is not None:
                heapq.heappush(heap, (found[0], pos, found[1]))
    return [ids[i] for i in range(count) if alive[i]]


def _merge_table(merges: list, vocab: dict[str, int]) -> dict[tuple[int, int], tuple[int, int]]:
    table = {}
    for rank, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"tokenizer.json: merge {rank} is {merge!r}; expected 'left right' or [left, right]")
        left, right = parts
        missing = [t for t in (left, right, left + right) if t not in vocab]
        if missing:
            raise ValueError(
                f"tokenizer.json: merge {rank} {merge!r} uses {missing[0]!r}, which is not in the vocabulary"
            )
        table[vocab[left], vocab[right]] = (rank, vocab[left + right])
    return table


def _refuse_unsupported(model: dict) -> None:
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(
                f"tokenizer.json: BPE with {key} {model[key]!r} is not supported (byte-level BPE has none)"
            )
    if model.get("dropout"):
        raise ValueError("tokenizer.json: BPE dropout makes encoding random; set it to null for inference")
    if model.get("byte_fallback"):
        raise ValueError(
            "tokenizer.json: byte_fallback BPE (SentencePiece style) is not supported; only byte-level BPE"
        )


NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Sequence"}


def _normalizer(spec):
    """A function str -> str for the supported normalizers, None for none."""
    if spec is None:
        return None
    kind = spec.get("type")
    if kind not in NORMALIZERS:
        raise ValueError(
            f"tokenizer.json: normalizer {kind!r} is not supported; supported: {sorted(NORMALIZERS)} or null"
        )
    if kind == "Sequence":
        steps = [step for step in (_normalizer(s) for s in spec.get("normalizers", [])) if step]
        return (lambda text: _apply_all(steps, text)) if steps else None
    if kind == "Lowercase":
        return str.lower
    return lambda text: unicodedata.normalize(kind, text)


def _apply_all(steps, text: str) -> str:
    for step in steps:
        text = step(text)
    return text


def _require_byte_level_decoder(spec) -> None:
    if not spec or spec.get("type") != "ByteLevel":
        kind = spec.get("type") if spec else None
        raise ValueError(
            f"tokenizer.json: decoder {kind!r} is not supported; byte-level BPE needs the ByteLevel decoder"
        )


class AddedToken:
    def __init__(self, entry: dict):
        if not isinstance(entry.get("id"), int) or not isinstance(entry.get("content"), str) or not entry["content"]:
            raise ValueError(f"tokenizer.json: added token {entry!r} needs an integer id and non-empty content")
        self.id, self.content = entry["id"], entry["content"]
        self.special = bool(entry.get("special"))
        self.normalized = bool(entry.get("normalized", not self.special))
        self.single_word, self.lstrip, self.rstrip = (bool(entry.get(k)) for k in ("single_word", "lstrip", "rstrip"))


class AddedTokens:
    """Splits text on added tokens: leftmost-longest matches, as `tokenizers`' AddedVocabulary.

    Tokens with normalized=false match the raw text; the others match the normalized text (and
    are normalized themselves). single_word, lstrip and rstrip follow its find_matches."""

    def __init__(self, entries: list[dict], normalize):
        self.tokens = [AddedToken(e) for e in entries]
        self._sets = {}
        for normalized in (False, True):
            chosen = {}
            for token in self.tokens:
                if token.normalized == normalized:
                    content = normalize(token.content) if normalized and normalize else token.content
                    chosen.setdefault(content, token)
            # Python's alternation takes the first alternative that matches: longest first = leftmost-longest.
            alternatives = sorted(chosen, key=len, reverse=True)
            pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
            self._sets[normalized] = (pattern, chosen)

    def split(self, text: str, normalized: bool):
        """(piece, None) for plain text and (match, id) for added tokens, covering the text."""
        pattern, by_content = self._sets[normalized]
        if pattern is None:
            yield text, None
            return
        start = 0
        for match in pattern.finditer(text):
            token = by_content[match.group()]
            begin, end = match.span()
            if token.single_word and (_ends_with_word(text[:begin]) or _starts_with_word(text[end:])):
                continue
            if token.lstrip:
                begin = max(len(text[:begin].rstrip(WHITE_SPACE_CHARS)), start)
            if token.rstrip:
                end = len(text) - len(text[end:].lstrip(WHITE_SPACE_CHARS))
            if start < begin:
                yield text[start:begin], None
            yield text[begin:end], token.id
            start = end
        if start < len(text):
            yield text[start:], None


# Rust regex's \w (what `tokenizers` tests single_word with): Alphabetic, marks, Nd, Pc, Join_Control.
# Alphabetic is the letters, Nl, and Other_Alphabetic: marks (above) plus the circled and squared
# Latin letters below (category So), which Python's database cannot tell apart otherwise.
_WORD_CATEGORIES = {"Mn", "Mc", "Me", "Nd", "Nl", "Pc"}
_ALPHABETIC_SYMBOLS = ((0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189))


def _is_word_char(char: str) -> bool:
    if char.isalpha() or char in "\u200c\u200d" or unicodedata.category(char) in _WORD_CATEGORIES:
        return True
    return any(low <= ord(char) <= high for low, high in _ALPHABETIC_SYMBOLS)


def _ends_with_word(text: str) -> bool:
    return bool(text) and _is_word_char(text[-1])


def _starts_with_word(text: str) -> bool:
    return bool(text) and _is_word_char(text[0])
