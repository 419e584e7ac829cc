"""What the Web Worker calls into: the Python side of the page, running in Pyodide.

The worker (web/worker.js) imports this module after installing the wheels and calls these
functions with plain values (JS objects arrive as proxies and are converted here); results are
plain values or bytes, so nothing crosses back as a proxy that someone must free.
"""

from __future__ import annotations

from .api import Model, read_header
from .bridge import WebGPUBackend
from .budget import DEFAULT_BUDGET, parse_bytes, plan_budget
from .config import model_config
from .model import DEFAULT_CHUNK, choose_matvec
from .tokenizer import WorldTokenizer, tokenizer_for

_tokenizer: WorldTokenizer | None = None
_model: Model | None = None
_abort_requested = False


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


def _text_tokenizer():
    """The loaded model's tokenizer, else World (the page can tokenize before a model loads)."""
    return _model.tokenizer if _model is not None and _model.tokenizer is not None else _require_tokenizer()


def encode(text: str) -> list[int]:
    return _text_tokenizer().encode(text)


def decode(ids) -> str:
    return _text_tokenizer().decode(_py(ids))


def _require_tokenizer() -> WorldTokenizer:
    if _tokenizer is None:
        raise RuntimeError("the tokenizer is not loaded yet: wait for the worker's 'ready' message")
    return _tokenizer


def _py(value):
    return value.to_py() if hasattr(value, "to_py") else value


def _require_model() -> Model:
    if _model is None:
        raise RuntimeError("no model is loaded: load one first")
    return _model


async def load(js_bridge, reader, max_binding: int, adapter=None, budget=None, precision: str = "auto", chunk=None) -> dict:
    """Load a model from a JS reader (URL or file) onto the bridge's device, within `budget` bytes.

    The header is read and checked first, and the budget planned: a malformed or unsupported
    file, or one that cannot fit, is refused while the model loaded before stays loaded."""
    global _model
    header = await read_header(reader)
    config = model_config(header[0])
    tokenizer_for(config.vocab_size, header[1], lambda: None)  # refuse an unknown tokenizer before unloading
    budget = DEFAULT_BUDGET if budget is None else parse_bytes(_py(budget))
    matvec = choose_matvec(_py(adapter))
    chunk = DEFAULT_CHUNK if chunk is None else int(chunk)
    planned = plan_budget(config, header[0], budget, precision, int(max_binding), matvec, chunk)  # refuses before anything is unloaded
    await unload(js_bridge)
    world = lambda config, metadata: tokenizer_for(config.vocab_size, metadata, _require_tokenizer)  # noqa: E731
    _model = await Model.load(reader, backend=WebGPUBackend(js_bridge), tokenizer_for=world, max_binding=int(max_binding),
                              header=header, planned=planned)
    return _model.info()


async def unload(js_bridge) -> None:
    global _model
    _model = None
    js_bridge.destroy()


async def generate(prompt, options, on_text) -> dict:
    """Stream a generation; on_text(piece) is a JS callback. Returns text, ids and speed."""
    global _abort_requested
    _abort_requested = False
    options = dict(_py(options) or {})
    max_tokens = int(options.pop("max_tokens", 100))
    prompt = _py(prompt)
    result = await _require_model().generate(prompt, max_tokens, on_text=on_text, should_stop=lambda: _abort_requested, **options)
    stats = result.stats
    return {"text": result.text, "tokens": result.tokens, "stopped_by": stats.stopped_by, "prompt_tokens": stats.prompt_tokens,
            "generated": stats.generated, "prefill_seconds": stats.prefill_seconds, "decode_seconds": stats.decode_seconds,
            "tokens_per_second": stats.tokens_per_second}


def abort() -> None:
    """Ask the running generation to stop before its next token."""
    global _abort_requested
    _abort_requested = True


async def logits(tokens, keep_state: bool = False) -> list[bytes]:
    return await _require_model().logits([int(t) for t in _py(tokens)], keep_state=bool(keep_state))


async def embed(inputs, pooling: str = "last", normalize: bool = False):
    """Model.embed for the worker: float32 bytes [C] for one text or id list, a list of them for a batch."""
    vectors = await _require_model().embed(_py(inputs), pooling=pooling, normalize=bool(normalize))
    return [v.tobytes() for v in vectors] if isinstance(vectors, list) else vectors.tobytes()


async def export_state() -> bytes:
    return await _require_model().state()


async def import_state(blob) -> None:
    await _require_model().state(blob.to_bytes() if hasattr(blob, "to_bytes") else bytes(blob))
