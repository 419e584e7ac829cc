"""The pre-tokenizer of a byte-level BPE tokenizer.json: text -> the pieces BPE merges within.

`tokenizers` runs its regexes with Oniguruma, whose \\p{L}, \\p{N} and \\s Python's `re` lacks
(or, for \\s, defines differently); `translate` rewrites such a pattern for `re`, with the
letter and number classes built from Python's own Unicode database (`unicode_classes`), and \\s
as Unicode White_Space (Oniguruma's \\s; Python's also matches U+001C..U+001F).

Supported steps, as `tokenizers` applies them to each piece in turn:
  ByteLevel  optional prefix space; with use_regex, GPT-2's regex (below). It must come last:
             after it the text is byte-level chars, which the BPE model reads.
  Split      a Regex (or String) pattern, behavior "Isolated" (matches and the gaps between them
             are pieces), as Llama 3's and Qwen2's tokenizer.json use before ByteLevel.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

# GPT-2's pattern, which the ByteLevel pre-tokenizer uses (as written in `tokenizers`).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Unicode White_Space: what Oniguruma's \s matches (and Rust regex's, for added tokens' lstrip/rstrip).
WHITE_SPACE_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
WHITE_SPACE = "".join(f"\\u{ord(char):04x}" for char in WHITE_SPACE_CHARS)  # as a regex class body
# Code points above this are unassigned (planes 4-13), tags/variation selectors (plane 14) or
# private use (planes 15-16): none is a letter or a number, so the class scan stops here.
LAST_LETTER_PLANE_END = 0x40000
# Oniguruma escapes with another meaning in Python's re (\w, \b: other word definitions) or none.
UNSUPPORTED_ESCAPES = set("wWbBhHpPXRK")


@cache
def unicode_classes() -> tuple[str, str]:
    """Regex character-class bodies for \\p{L} (letters: Lu Ll Lt Lm Lo) and \\p{N} (Nd Nl No).

    Built at C speed: Python's `[^\\W_]` is letters + numbers; `str.isalpha` is exactly the L
    categories, so a run of `[^\\W_]` that is all alpha is all L and only mixed runs go char by char.
    """
    everything = "".join(map(chr, range(LAST_LETTER_PLANE_END)))
    letters, numbers = [], []
    for run in re.finditer(r"[^\W_]+", everything):
        text, start = run.group(), run.start()
        if text.isalpha():
            letters.append((start, run.end() - 1))
            continue
        for offset, char in enumerate(text):
            kind = "L" if char.isalpha() else unicodedata.category(char)[0]
            if kind in "LN":
                _add_code_point(letters if kind == "L" else numbers, start + offset)
    return _class_body(letters), _class_body(numbers)


def _add_code_point(ranges: list[tuple[int, int]], code_point: int) -> None:
    if ranges and ranges[-1][1] == code_point - 1:
        ranges[-1] = (ranges[-1][0], code_point)
    else:
        ranges.append((code_point, code_point))


def _class_body(ranges) -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@cache
def translate(pattern: str) -> re.Pattern:
    """An Oniguruma pattern of the kind tokenizer.json files carry, compiled for Python's re."""
    letter, number = unicode_classes()
    bodies = {r"\p{L}": letter, r"\p{N}": number, r"\s": WHITE_SPACE}
    out, i, in_class = [], 0, False
    while i < len(pattern):
        if pattern[i] == "\\":
            escape = next((e for e in bodies if pattern.startswith(e, i)), None)
            if escape:
                out.append(bodies[escape] if in_class else f"[{bodies[escape]}]")
                i += len(escape)
                continue
            if pattern.startswith(r"\S", i) and not in_class:
                out.append(f"[^{WHITE_SPACE}]")
            elif pattern[i + 1 : i + 2] in UNSUPPORTED_ESCAPES or pattern[i + 1 : i + 2] == "S":
                raise ValueError(
                    f"tokenizer.json: the pre-tokenizer regex uses {pattern[i : i + 2]}, which is not "
                    "supported (Python's re would not match it as Oniguruma does); "
                    "supported: \\p{L} \\p{N} \\s \\S \\d"
                )
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if pattern[i] == "[" and not in_class:
            in_class = True
        elif pattern[i] == "]" and in_class:
            in_class = False
        out.append(pattern[i])
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as error:
        raise ValueError(
            f"tokenizer.json: the pre-tokenizer regex {pattern!r} does not translate to Python: {error}"
        ) from None


def gpt2_pattern() -> re.Pattern:
    return translate(GPT2_PATTERN)


class PreTokenizer:
    """pieces(text) -> the byte-level pieces' source text, in order; from a tokenizer.json entry."""

    def __init__(self, spec):
        steps = spec.get("pretokenizers", []) if spec and spec.get("type") == "Sequence" else [spec]
        kinds = [step.get("type") if step else None for step in steps]
        if not kinds or kinds[-1] != "ByteLevel" or any(kind != "Split" for kind in kinds[:-1]):
            raise ValueError(
                f"tokenizer.json: pre-tokenizer {kinds} is not supported; byte-level BPE needs ByteLevel, "
                "optionally after Split steps"
            )
        self.splits = [_split_pattern(step) for step in steps[:-1]]
        self.add_prefix_space = bool(steps[-1].get("add_prefix_space", True))
        self.byte_level = gpt2_pattern() if steps[-1].get("use_regex", True) else None

    def pieces(self, text: str) -> list[str]:
        pieces = [text]
        for pattern in self.splits:
            pieces = [part for piece in pieces for part in _isolate(pattern, piece)]
        if self.add_prefix_space:
            pieces = [piece if piece.startswith(" ") else " " + piece for piece in pieces]
        if self.byte_level is not None:
            pieces = [word for piece in pieces for word in self.byte_level.findall(piece)]
        return pieces


def _split_pattern(step: dict) -> re.Pattern:
    if step.get("behavior") != "Isolated" or step.get("invert"):
        raise ValueError(
            f"tokenizer.json: Split with behavior {step.get('behavior')!r}"
            f"{' inverted' if step.get('invert') else ''} is not supported; only 'Isolated'"
        )
    pattern = step.get("pattern") or {}
    if "Regex" in pattern:
        return translate(pattern["Regex"])
    if "String" in pattern:
        return re.compile(re.escape(pattern["String"]))
    raise ValueError(f"tokenizer.json: Split pattern {pattern!r} needs a 'Regex' or 'String'")


def _isolate(pattern: re.Pattern, text: str) -> list[str]:
    """Matches and the gaps between them, in order, without empty pieces (Split's "Isolated")."""
    parts, start = [], 0
    for match in pattern.finditer(text):
        if match.start() > start:
            parts.append(text[start : match.start()])
        if match.end() > match.start():
            parts.append(match.group())
        start = max(start, match.end())
    if start < len(text):
        parts.append(text[start:])
    return parts
