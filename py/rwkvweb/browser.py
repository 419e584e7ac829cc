"""What the Web Worker calls into: the Python side of the page, running in Pyodide.

The worker (web/worker.js) imports this module after installing the wheels and calls these
functions with plain values (JS objects arrive as proxies and are converted here); results are
plain values or bytes, so nothing crosses back as a proxy that someone must free.
"""

from __future__ import annotations

import ast
import contextlib
import io
from dataclasses import asdict

from .api import Model, read_header
from .chat import Conversation, default_template
from .bridge import WebGPUBackend
from .budget import DEFAULT_BUDGET, parse_bytes, plan_budget
from .config import model_config
from .model import DEFAULT_CHUNK, choose_matvec
from .tokenizer import WorldTokenizer, tokenizer_for

_tokenizer: WorldTokenizer | None = None
_model: Model | None = None
_identity: dict = {}  # the loaded model's name, size and shape: what a saved conversation must match
_conversation: Conversation | None = None
_abort_requested = False


def package_versions() -> dict[str, str]:
    """Versions of the vendored packages, proving they import in this Python."""
    import jinja2
    import markupsafe
    import micropip

    from . import __version__

    return {
        "rwkvweb": __version__,
        "micropip": micropip.__version__,
        "jinja2": jinja2.__version__,
        "markupsafe": markupsafe.__version__,
    }


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


async def load(
    js_bridge, reader, max_binding: int, adapter=None, budget=None, precision: str = "auto", chunk=None
) -> dict:
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
    planned = plan_budget(
        config, header[0], budget, precision, int(max_binding), matvec, chunk
    )  # refuses before anything is unloaded
    await unload(js_bridge)
    world = lambda config, metadata: tokenizer_for(config.vocab_size, metadata, _require_tokenizer)  # noqa: E731
    try:
        _model = await Model.load(
            reader,
            backend=WebGPUBackend(js_bridge),
            tokenizer_for=world,
            max_binding=int(max_binding),
            header=header,
            planned=planned,
        )
    except BaseException:
        js_bridge.destroy()  # failed half way (network, abort, lost device): no GPU bytes stay behind
        raise
    _set_identity(str(getattr(reader, "name", "model")), int(reader.size))
    info = _model.info()
    info["chat_template"] = default_template(_model.metadata)
    info["chat_model"] = is_chat_model(_model)
    return info


def catalog() -> list[dict]:
    """The official models the page lists (catalog.py): title, URL, download size, licence."""
    from .catalog import MODELS

    return [model.to_json() for model in MODELS]


def catalog_verdict(model_id: str, max_binding: int, adapter=None, budget=None) -> dict:
    """Whether a catalog model fits this device's budget, from its official shapes: no byte downloaded."""
    from .catalog import MODELS, fit_verdict, official_header

    (model,) = [m for m in MODELS if m.id == model_id] or [None]
    if model is None:
        raise ValueError(f"no model {model_id!r} in the catalog")
    budget = DEFAULT_BUDGET if budget is None else parse_bytes(_py(budget))
    return fit_verdict(official_header(model), budget, int(max_binding), choose_matvec(_py(adapter)))


async def verdict(reader, max_binding: int, adapter=None, budget=None) -> dict:
    """Whether the model at a URL fits, from its header alone (a few small Range reads)."""
    from .catalog import verdict_for_source

    budget = DEFAULT_BUDGET if budget is None else parse_bytes(_py(budget))
    return await verdict_for_source(reader, budget, int(max_binding), choose_matvec(_py(adapter)))


def _set_identity(name: str, size: int) -> None:
    global _identity, _conversation
    _identity = {"name": name, "bytes": size, "config": asdict(_require_model().config)}
    _conversation = None


def is_chat_model(model: Model) -> bool:
    """World-vocabulary models are RWKV's chat models; others only when they carry a template."""
    from .chat import METADATA_KEY
    from .tokenizer import VOCAB_SIZES

    return bool(model.metadata.get(METADATA_KEY)) or model.config.vocab_size == VOCAB_SIZES["world"]


async def unload(js_bridge) -> None:
    global _model, _conversation
    _model, _conversation = None, None
    js_bridge.destroy()


async def generate(prompt, options, on_text) -> dict:
    """Stream a generation; on_text(piece) is a JS callback. Returns text, ids and speed."""
    options = dict(_py(options) or {})
    max_tokens = int(options.pop("max_tokens", 100))
    prompt = _py(prompt)
    result = await _require_model().generate(
        prompt, max_tokens, on_text=on_text, should_stop=lambda: _abort_requested, **options
    )
    if _conversation is not None:
        _conversation.fed_text = ""  # the engine's state is no longer the conversation's
    return {"text": result.text, "tokens": result.tokens, **_stats(result.stats)}


def _stats(stats) -> dict:
    return {
        "stopped_by": stats.stopped_by,
        "prompt_tokens": stats.prompt_tokens,
        "prefill_chunks": stats.prefill_chunks,
        "generated": stats.generated,
        "prefill_seconds": stats.prefill_seconds,
        "decode_seconds": stats.decode_seconds,
        "backend_seconds": stats.backend_seconds,
        "tokens_per_second": stats.tokens_per_second,
    }


def clear_abort() -> None:
    """A request takes the engine: an abort meant for an earlier one does not carry over. The worker
    calls this synchronously as the request starts: an async function's body runs only on a later turn
    of the event loop, after an abort that followed the request's message, which it must not undo."""
    global _abort_requested
    _abort_requested = False


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


# --- chat ----------------------------------------------------------------------


def _require_conversation() -> Conversation:
    global _conversation
    model = _require_model()
    if _conversation is None:
        _conversation = Conversation(template=default_template(model.metadata))
    return _conversation


def chat_new(template: str | None = None, system: str | None = None) -> dict:
    """Start a conversation (template: world | g1 | model; None: the model's own if it has one, else world)."""
    global _conversation
    model = _require_model()
    template = _py(template) or default_template(model.metadata)
    from .chat import template_source

    template_source(template, model.metadata)  # refuse an unknown template now, not at the first turn
    _conversation = Conversation(template=template)
    if system:
        _conversation.messages.append({"role": "system", "content": str(system)})
    return chat_transcript()


def chat_transcript() -> dict:
    conversation = _require_conversation()
    return {"template": conversation.template, "messages": [dict(m) for m in conversation.messages]}


async def chat_send(text, options, on_text) -> dict:
    """Add the user's message and stream the answer; prompt_tokens counts only the text fed now."""
    conversation = _require_conversation()
    conversation.messages.append({"role": "user", "content": str(_py(text))})
    try:
        return await _answer(conversation, options, on_text)
    except BaseException:
        if conversation.messages and conversation.messages[-1]["role"] == "user":
            conversation.messages.pop()  # a refused turn leaves the transcript as it was
        raise


async def chat_regenerate(options, on_text) -> dict:
    """Answer the last user message again, from the state before the previous answer."""
    conversation = _require_conversation()
    await conversation.rewind(_require_model())
    return await _answer(conversation, options, on_text)


async def _answer(conversation: Conversation, options, on_text) -> dict:
    options = dict(_py(options) or {})
    max_tokens = int(options.pop("max_tokens", 200))
    model = _require_model()
    reply, result = await conversation.answer(
        model, max_tokens, on_text=on_text, should_stop=lambda: _abort_requested, metadata=model.metadata, **options
    )
    return {"reply": reply, "text": result.text, **_stats(result.stats)}


async def chat_save() -> bytes:
    return await _require_conversation().save(_require_model(), _identity)


async def chat_restore(data) -> dict:
    global _conversation
    data = data.to_bytes() if hasattr(data, "to_bytes") else bytes(data)
    _conversation = await Conversation.restore(_require_model(), data, _identity)
    return chat_transcript()


# --- the Python cell (the main page only: web/embed.js never forwards it) -------


async def run_cell(code: str) -> dict:
    """Run the user's Python with `model` (api.Model) in scope; top-level await works.
    Returns what it printed and the value of a last bare expression, as text."""
    namespace = {"model": _model, "__name__": "__cell__"}
    tree = ast.parse(str(_py(code)), "<cell>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    value = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        await _run(tree, namespace, "exec")
        if last is not None:
            value = await _run(ast.Expression(last.value), namespace, "eval")
    return {"output": out.getvalue(), "value": None if value is None else repr(value)}


async def _run(tree, namespace: dict, mode: str):
    code = compile(tree, "<cell>", mode, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - the user's own code, in their own page's sandboxed worker
    return await result if hasattr(result, "__await__") else result
