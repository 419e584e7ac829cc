"""The public API, the same under CPython (numpy backend) and in the browser (WebGPU):

    model = await Model.load("m.st")                  # path, URL, or a reader from the page
    ids = model.encode("Hello");  text = model.decode(ids)
    result = await model.generate("Once upon", max_tokens=50, temperature=0.8, on_text=print)
    blob = await model.state();  await model.state(blob)   # export / import
    branch = await model.fork()                        # shares the weights, has its own state

Everything that touches the GPU is awaitable; `encode`/`decode` are plain calls.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import asdict, dataclass, fields

from .config import ModelError, model_config
from .engine import Engine, GenerationStats, Sampling
from .budget import DEFAULT_BUDGET, BudgetPlan, parse_bytes, plan_budget
from .model import DEFAULT_CHUNK, DEFAULT_MAX_BINDING
from .pth import is_pth, read_pth_header_async
from .quant import fold_quantized
from .safetensors import header_length, parse_header
from .tokenizer import StreamDecoder


async def read_bytes(source, start: int, end: int) -> bytes:
    """Bytes from a sync CPython source or an async JS reader alike."""
    data = source.read(start, end)
    if hasattr(data, "__await__"):
        data = await data
    return data if isinstance(data, bytes) else data.to_bytes()


async def read_header(source):
    """(tensors, metadata) from a safetensors or torch.save (`.pth`, told by its magic bytes)
    source, reading only its header; pre-quantized matrices come as one tensor each (quant.fold_quantized)."""
    prefix = await read_bytes(source, 0, min(8, source.size))
    if is_pth(prefix):
        tensors, metadata = await read_pth_header_async(source)
    else:
        length = header_length(prefix, source.size)
        tensors, metadata = parse_header(await read_bytes(source, 8, 8 + length), source.size)
    return fold_quantized(tensors, metadata), metadata


def default_tokenizer(config, metadata):
    """The declared tokenizer (tokenizer.tokenizer_for), World loaded from the `rwkv` package's file."""
    from .tokenizer import WorldTokenizer, tokenizer_for

    return tokenizer_for(config.vocab_size, metadata, WorldTokenizer.from_file)


@dataclass
class Generation:
    text: str
    tokens: list[int]
    stats: GenerationStats


class Model:
    def __init__(
        self,
        engine: Engine,
        tokenizer,
        metadata: dict[str, str],
        budget_plan: BudgetPlan,
        saved_state: bytes | None = None,
    ):
        """A handle on a loaded engine; with `saved_state` (a fork) it waits its turn on the GPU."""
        self.engine, self.tokenizer, self.metadata, self.budget_plan = engine, tokenizer, metadata, budget_plan
        self.config = engine.config
        self._saved_state = saved_state  # this handle's state while another handle's is on the GPU
        if saved_state is None:
            engine.owner = self

    @classmethod
    async def load(
        cls,
        source,
        *,
        backend=None,
        tokenizer_for=None,
        max_binding: int = DEFAULT_MAX_BINDING,
        header=None,
        matvec: str = "cols",
        budget: int | str = DEFAULT_BUDGET,
        precision: str = "auto",
        planned: BudgetPlan | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> "Model":
        """Read the header, plan the GPU buffers within `budget` bytes, stream the weights in.
        Nothing else is fetched; a model that cannot fit is refused before any weight is.

        precision: auto (the widest per matrix that fits) | fp32 | fp16 | int8 | nf4 (budget.py).
        tokenizer_for(config, metadata) picks the tokenizer (None: ids only); the default gives
        World-vocabulary models the World tokenizer from the `rwkv` package's vocabulary file.
        `header` is read_header(source)'s result and `planned` plan_budget's when the caller made them
        already; `matvec` the weight layout and kernel variant (model.MATVEC_VARIANTS, model.choose_matvec);
        `chunk` the most prompt tokens one prefill submission runs (1: token by token)."""
        if isinstance(source, str):
            from .source import open_source

            source = open_source(source)
        tensors, metadata = header or await read_header(source)
        config = model_config(tensors)
        if backend is None:
            from .numpy_exec import NumpyBackend

            backend = NumpyBackend()
        elif backend == "webgpu-remote":  # CPython only: this process runs the engine, a headless page the bridge
            from .remote import remote_backend

            backend = remote_backend(source.name)
            matvec, max_binding = backend.matvec, backend.max_binding  # what the page's GPU wants
        elif isinstance(backend, str):
            raise ValueError(f"unknown backend {backend!r}: give a backend object, or 'webgpu-remote'")
        planned = planned or plan_budget(config, tensors, parse_bytes(budget), precision, max_binding, matvec, chunk)
        planned.compiled.plan.budget = planned.budget
        engine = await Engine.create(planned.compiled, backend, source)
        return cls(engine, (tokenizer_for or default_tokenizer)(config, metadata), metadata, planned)

    # --- text ------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self._require_tokenizer().encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._require_tokenizer().decode(ids)

    def _require_tokenizer(self):
        if self.tokenizer is None:
            from .tokenizer import missing_tokenizer

            raise ModelError(missing_tokenizer(self.config.vocab_size))
        return self.tokenizer

    # --- running ---------------------------------------------------------------

    async def generate(
        self,
        prompt: str | list[int],
        max_tokens: int = 100,
        *,
        on_text=None,
        on_token=None,
        should_stop=lambda: False,
        keep_state: bool = False,
        stop: str | list[str] | None = None,
        **sampling,
    ) -> Generation:
        """Continue the prompt. on_text(piece) streams text as soon as it is whole UTF-8 (and cannot be
        the start of a stop string); `stop`: text that ends the generation where it appears (it is not
        part of the result); should_stop() is polled between tokens (abort); sampling: see engine.Sampling."""
        unknown = set(sampling) - {f.name for f in fields(Sampling)}
        if unknown:
            raise ValueError(f"unknown sampling options {sorted(unknown)}; known: {[f.name for f in fields(Sampling)]}")
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        await self._activate()
        text_stream = StreamDecoder(self.tokenizer) if self.tokenizer is not None else None
        stops = StopStrings([stop] if isinstance(stop, str) else list(stop or []))
        if stops.stops and text_stream is None:
            raise ModelError("stop strings need a tokenizer: this model has none")
        pieces: list[str] = []

        async def emit(piece: str) -> None:
            if piece:
                pieces.append(piece)
                if on_text is not None:
                    await _maybe_await(on_text(piece))

        async def stream(token: int) -> bool:
            if on_token is not None:
                await _maybe_await(on_token(token))
            if text_stream is None:
                return False
            piece, stopped = stops.push(text_stream.push(token))
            await emit(piece)
            return stopped

        tokens, stats = await self.engine.generate(
            ids, max_tokens, Sampling(**sampling), on_token=stream, should_stop=should_stop, keep_state=keep_state
        )
        if text_stream is not None and stats.stopped_by != "stop":
            await emit(stops.push(text_stream.flush())[0] + stops.flush())
        return Generation("".join(pieces), tokens, stats)

    async def logits(self, tokens: list[int], keep_state: bool = False) -> list[bytes]:
        """float32 logits bytes [V] after each token (from a fresh state unless keep_state)."""
        await self._activate()
        if not keep_state:
            await self.engine.reset()
        rows = await self.engine.forward_all(list(tokens))
        for position, row in enumerate(rows):
            check_finite(row, position)
        return rows

    async def embed(self, inputs, pooling: str = "last", normalize: bool = False):
        """The hidden state after ln_out (the head is not run) for a text or a list of ids, or for each
        item of a list of them. pooling "last": the final token's vector, which carries the whole input
        through the recurrence (retrieval, classification heads); "mean": the average over every
        token (similarity of longer passages, less dominated by how a text ends). Each input runs
        from a fresh state, and this handle's own state is kept. Returns float32 vectors [C] (a batch:
        one per item): numpy arrays under CPython, `array('f')` where numpy is absent (Pyodide)."""
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
        batch = isinstance(inputs, (list, tuple)) and bool(inputs) and not isinstance(inputs[0], int)
        items = [
            self.encode(item) if isinstance(item, str) else [int(t) for t in item]
            for item in (inputs if batch else [inputs])
        ]
        await self._activate()
        saved = await self.engine.export_state()
        try:
            vectors = [await self._embed_one(ids, pooling, normalize) for ids in items]
        finally:
            await self.engine.import_state(saved)
        return _float_vectors(vectors) if batch else _float_vectors(vectors)[0]

    async def _embed_one(self, ids: list[int], pooling: str, normalize: bool) -> list[float]:
        await self.engine.reset()
        total, last = await self.engine.pool(ids)
        n = self.config.n_embd
        vector = (
            struct.unpack(f"<{n}f", last[: 4 * n])
            if pooling == "last"
            else [v / len(ids) for v in struct.unpack(f"<{n}f", total[: 4 * n])]
        )
        if normalize:
            length = math.sqrt(sum(v * v for v in vector)) or 1.0
            vector = [v / length for v in vector]
        return list(vector)

    async def state(self, blob: bytes | None = None) -> bytes | None:
        """Export the recurrent state (no argument) or import one (the bytes an export gave)."""
        await self._activate()
        if blob is None:
            return await self.engine.export_state()
        await self.engine.import_state(bytes(blob))
        return None

    async def fork(self) -> "Model":
        """A handle on the same weights with a copy of this state; each continues on its own."""
        return Model(self.engine, self.tokenizer, self.metadata, self.budget_plan, saved_state=await self.state())

    async def _activate(self) -> None:
        """Swap this handle's state onto the GPU if another fork ran last."""
        owner = self.engine.owner
        if owner is not self:
            owner._saved_state = await self.engine.export_state()
            await self.engine.import_state(self._saved_state)
            self.engine.owner = self

    def info(self) -> dict:
        plan = self.engine.compiled.plan
        budget = self.budget_plan.to_json()
        return {
            "config": asdict(self.config),
            "metadata": self.metadata,
            "buffers": plan.bytes_by_role(),
            "matvec": self.engine.compiled.matvec,
            "kernels": len(plan.kernels),
            "steps_per_token": len(plan.programs["decode"]) + len(plan.programs["sample"]),
            "budget": budget["budget"],
            "gpu_bytes_planned": budget["gpu_bytes"],
            "precision": budget["precision"],
            "matrices_by_precision": budget["matrices_by_precision"],
            "host_bytes": budget["host_bytes"],
        }


class StopStrings:
    """Streamed text against stop strings: text that may be the start of one is held back until it
    is known not to be; push() says when one is complete and returns the text before it."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, piece: str) -> tuple[str, bool]:
        text = self.held + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[: min(found)], True
        keep = max(
            (k for s in self.stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])), default=0
        )
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def _float_vectors(vectors: list[list[float]]):
    """float32 vectors as numpy where it is installed (CPython), else as array('f') (Pyodide)."""
    try:
        import numpy as np
    except ImportError:
        return [array("f", v) for v in vectors]
    return [np.asarray(v, np.float32) for v in vectors]


def check_finite(row: bytes, position: int) -> None:
    """Refuse float32 logits holding NaN or infinity (a damaged model): no caller can use them,
    and JSON cannot spell them. One C-speed sum finds both: NaN and ±inf survive any sum of
    floats, and 65536 float32 maxima stay far inside a double's range."""
    if not math.isfinite(sum(array("f", bytes(row)))):
        raise ModelError(
            f"the logits after token {position} are not finite (NaN or infinity): the model's weights hold "
            f"NaN/Inf values or overflow float32; the file is damaged"
        )


async def _maybe_await(value) -> None:
    if hasattr(value, "__await__"):
        await value
