"""What the Web Worker calls into: the Python side of the page, running in Pyodide.

The worker (web/worker.js) imports this module after installing the wheels and
calls these functions with plain values; results are plain values too, so
nothing crosses the JS/Python boundary as a proxy that someone must free.
"""

from __future__ import annotations

from .tokenizer import WorldTokenizer

_tokenizer: WorldTokenizer | None = None


def package_versions() -> dict[str, str]:
    """Versions of the vendored packages, proving they import in this Python."""
    import jinja2
    import markupsafe
    import micropip

    from . import __version__

    return {"rwkvweb": __version__, "micropip": micropip.__version__, "jinja2": jinja2.__version__, "markupsafe": markupsafe.__version__}


def init_tokenizer(vocab_text: str) -> int:
    """Build the World tokenizer from the vocabulary's text; returns its token count."""
    global _tokenizer
    _tokenizer = WorldTokenizer(vocab_text)
    return len(_tokenizer.id_to_bytes)


def encode(text: str) -> list[int]:
    return _require_tokenizer().encode(text)


def decode(ids: list[int]) -> str:
    return _require_tokenizer().decode(ids)


def _require_tokenizer() -> WorldTokenizer:
    if _tokenizer is None:
        raise RuntimeError("the tokenizer is not loaded yet: wait for the worker's 'ready' message")
    return _tokenizer
