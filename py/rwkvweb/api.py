"""The public API, the same under CPython (numpy backend) and in the browser (WebGPU):

    model = await Model.load("m.st")                  # path, URL, or a reader from the page
    ids = model.encode("Hello");  text = model.decode(ids)
    result = await model.generate("Once upon", max_tokens=50, temperature=0.8, on_text=print)
    blob = await model.state();  await model.state(blob)   # export / import
    branch = await model.fork()                        # shares the weights, has its own state

Everything that touches the GPU is awaitable; `encode`/`decode` are plain calls.
"""

from __future__ import annotations

import array
import codecs
import math
from dataclasses import asdict, dataclass, fields

from .config import ModelError, model_config
from .engine import Engine, GenerationStats, Sampling
from .budget import DEFAULT_BUDGET, BudgetPlan, parse_bytes, plan_budget
from .model import DEFAULT_MAX_BINDING
from .quant import fold_quantized
from .safetensors import header_length, parse_header

async def read_bytes(source, start: int, end: int) -> bytes:
    """Bytes from a sync CPython source or an async JS reader alike."""
    data = source.read(start, end)
    if hasattr(data, "__await__"):
        data = await data
    return data if isinstance(data, bytes) else data.to_bytes()


async def read_header(source):
    """(tensors, metadata) from a safetensors source, reading only its header; pre-quantized
    matrices come as one tensor each (quant.fold_quantized)."""
    length = header_length(await read_bytes(source, 0, min(8, source.size)), source.size)
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
    def __init__(self, engine: Engine, tokenizer, metadata: dict[str, str], budget_plan: BudgetPlan, saved_state: bytes | None = None):
        """A handle on a loaded engine; with `saved_state` (a fork) it waits its turn on the GPU."""
        self.engine, self.tokenizer, self.metadata, self.budget_plan = engine, tokenizer, metadata, budget_plan
        self.config = engine.config
        self._saved_state = saved_state  # this handle's state while another handle's is on the GPU
        if saved_state is None:
            engine.owner = self

    @classmethod
    async def load(cls, source, *, backend=None, tokenizer_for=None, max_binding: int = DEFAULT_MAX_BINDING, header=None,
                   matvec: str = "cols", budget: int | str = DEFAULT_BUDGET, precision: str = "auto", planned: BudgetPlan | None = None) -> "Model":
        """Read the header, plan the GPU buffers within `budget` bytes, stream the weights in.
        Nothing else is fetched; a model that cannot fit is refused before any weight is.

        precision: auto (the widest per matrix that fits) | fp32 | fp16 | int8 | nf4 (budget.py).
        tokenizer_for(config, metadata) picks the tokenizer (None: ids only); the default gives
        World-vocabulary models the World tokenizer from the `rwkv` package's vocabulary file.
        `header` is read_header(source)'s result and `planned` plan_budget's when the caller made them
        already; `matvec` the weight layout and kernel variant (model.MATVEC_VARIANTS, model.choose_matvec)."""
        if isinstance(source, str):
            from .source import open_source

            source = open_source(source)
        tensors, metadata = header or await read_header(source)
        config = model_config(tensors)
        if backend is None:
            from .numpy_exec import NumpyBackend

            backend = NumpyBackend()
        planned = planned or plan_budget(config, tensors, parse_bytes(budget), precision, max_binding, matvec)
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
            raise ModelError(f"no tokenizer for a {self.config.vocab_size}-token vocabulary: pass token ids instead of text")
        return self.tokenizer

    # --- running ---------------------------------------------------------------

    async def generate(self, prompt: str | list[int], max_tokens: int = 100, *, on_text=None, on_token=None,
                       should_stop=lambda: False, keep_state: bool = False, **sampling) -> Generation:
        """Continue the prompt. on_text(piece) streams text as soon as it is whole UTF-8;
        should_stop() is polled before every token (abort); sampling: see engine.Sampling."""
        unknown = set(sampling) - {f.name for f in fields(Sampling)}
        if unknown:
            raise ValueError(f"unknown sampling options {sorted(unknown)}; known: {[f.name for f in fields(Sampling)]}")
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        await self._activate()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []

        async def stream(token: int) -> None:
            if on_token is not None:
                await _maybe_await(on_token(token))
            if self.tokenizer is not None:
                piece = utf8.decode(self.tokenizer.decode_bytes([token]))
                if piece:
                    pieces.append(piece)
                    if on_text is not None:
                        await _maybe_await(on_text(piece))

        tokens, stats = await self.engine.generate(ids, max_tokens, Sampling(**sampling), on_token=stream,
                                                   should_stop=should_stop, keep_state=keep_state)
        if self.tokenizer is not None:
            tail = utf8.decode(b"", final=True)
            if tail:
                pieces.append(tail)
        return Generation("".join(pieces), tokens, stats)

    async def logits(self, tokens: list[int], keep_state: bool = False) -> list[bytes]:
        """float32 logits bytes [V] after each token (from a fresh state unless keep_state)."""
        await self._activate()
        if not keep_state:
            await self.engine.reset()
        rows = []
        for position, token in enumerate(tokens):
            rows.append(await self.engine.forward(token))
            check_finite(rows[-1], position)
        return rows

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
        return {"config": asdict(self.config), "metadata": self.metadata, "buffers": plan.bytes_by_role(),
                "matvec": self.engine.compiled.matvec, "kernels": len(plan.kernels), "steps_per_token": len(plan.programs["generate"]),
                "budget": budget["budget"], "gpu_bytes_planned": budget["gpu_bytes"], "precision": budget["precision"],
                "matrices_by_precision": budget["matrices_by_precision"], "host_bytes": budget["host_bytes"]}


def check_finite(row: bytes, position: int) -> None:
    """Refuse float32 logits holding NaN or infinity (a damaged model): no caller can use them,
    and JSON cannot spell them. One C-speed sum finds both: NaN and ±inf survive any sum of
    floats, and 65536 float32 maxima stay far inside a double's range."""
    if not math.isfinite(sum(array.array("f", bytes(row)))):
        raise ModelError(f"the logits after token {position} are not finite (NaN or infinity): the model's weights hold "
                         f"NaN/Inf values or overflow float32; the file is damaged")


async def _maybe_await(value) -> None:
    if hasattr(value, "__await__"):
        await value
