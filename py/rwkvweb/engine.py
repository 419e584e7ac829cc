"""The engine: a compiled model on a backend, and the only generation loop.

A backend executes plans: `await load(plan)`, `await fill(fills, source)`, `run(programs, writes)`,
`await read(buffer, offset, size) -> bytes`. Two exist: NumpyBackend (CPython) and the browser's
WebGPU bridge (browser.py wraps it). Everything here is async so one loop serves both.

State semantics: the engine holds the recurrent state of every token fed so far. `generate`
starts from a fresh state unless `keep_state=True`; the last sampled token is fed before the
next step, so a generation that stops (or is aborted) leaves the state consistent with all the
text it produced except that last token, which `pending` remembers.

An abort while the prompt runs (checked before each prefill chunk) undoes the chunks already run: the
state and `pending` are those from before the prompt (fresh, unless keep_state), and nothing was
generated. A prompt is fed whole or not at all because its callers speak text: a chunk boundary can
fall inside a UTF-8 character or between tokens that the rest of the text would have tokenized together,
so "the first k chunks" has no text a transcript could record (chat.Conversation) or a caller re-send.
After an abort, `generated == 0` says the prompt was not fed; one token or more says it was, whole.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from .config import ModelError, fresh_state
from .model import BATCH, DECODE, HEAD_LAST, POOL, PREFILL, RESTORE, SAMPLE, SNAPSHOT, CompiledModel, keep
from .ops import NOT_FINITE, SAMPLER_FORMAT

END_OF_TEXT = 0


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 0.85
    top_k: int = 0  # 0: no top-k
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (0 <= self.seed < 2**32, "seed must fit in 32 bits"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"sampling: {message}")

    def pack(self) -> bytes:
        return struct.pack(
            SAMPLER_FORMAT,
            self.temperature,
            self.top_p,
            self.top_k,
            self.presence_penalty,
            self.frequency_penalty,
            self.repetition_penalty,
            self.seed,
            0,
        )


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated: int = 0
    prefill_chunks: int = 0  # prefill submissions run (an aborted prompt: those before the abort, since undone)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    # of decode_seconds, the time in the backend's calls: in the browser almost all of it awaiting each batch's
    # read-back while the GPU works; on numpy the executor's work. The rest is the engine's own per-token cost.
    backend_seconds: float = 0.0
    stopped_by: str = ""  # "length" | "end_of_text" | "stop" (on_token said so: a stop string) | "abort"

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: tokens after the first (whose time includes the prompt) per second."""
        return (self.generated - 1) / self.decode_seconds if self.decode_seconds else 0.0


class Engine:
    def __init__(self, compiled: CompiledModel, backend):
        self.compiled, self.backend = compiled, backend
        self.config = compiled.config
        self.pending: int | None = None
        self.owner = None  # the api.Model handle whose state is on the GPU (forks swap it)

    @classmethod
    async def create(cls, compiled: CompiledModel, backend, source) -> "Engine":
        """Allocate the plan on the backend and fill the weights from `source` (bytes by range)."""
        await backend.load(compiled.plan.to_json())
        await backend.fill(compiled.plan.fills, source)
        engine = cls(compiled, backend)
        await engine.reset()
        return engine

    async def reset(self) -> None:
        await self._write(self.compiled.state, fresh_state(self.config))  # RWKV-4's pp starts at -1e30, not 0
        self.pending = None

    async def _write(self, view, data: bytes) -> None:
        await self.backend.write(view.buffer, view.offset, data)

    async def _read(self, view) -> bytes:
        return await self.backend.read(view.buffer, view.offset, view.size)

    def _check_token(self, token: int) -> int:
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token id {token} is outside the model's vocabulary [0, {self.config.vocab_size})")
        return token

    async def feed(
        self, tokens: list[int], then: tuple[str, ...] = (), should_stop: Callable[[], bool] | None = None
    ) -> tuple[bool, int]:
        """Advance the state over tokens, `chunk` per submission, reading no results back; the programs
        in `then` run in the last chunk's submission (HEAD_LAST: its last token's logits).
        Returns (whole, chunks run). With `should_stop`, it is polled before each chunk, and a True
        undoes the chunks run (RESTORE of the SNAPSHOT the first one took): whole is then False and
        the state and `pending` are as before the call."""
        pending, size = self.pending, self.compiled.chunk
        if pending is not None:
            tokens, self.pending = [pending, *tokens], None
        chunks = [tokens[start : start + size] for start in range(0, len(tokens), size)]
        undoable = should_stop is not None and len(chunks) > 1
        for index, chunk in enumerate(chunks):
            if should_stop is not None and should_stop():
                if index:
                    await self.backend.run([RESTORE], [])
                self.pending = pending
                return False, index
            last = index == len(chunks) - 1
            first = (SNAPSHOT,) if undoable and index == 0 else ()  # in the same submission: no extra one
            await self._run_chunk(chunk, then if last else (), before=first)
            if undoable and not last:
                await self._settle()
        return True, len(chunks)

    async def _settle(self) -> None:
        """Wait for the GPU to finish what was submitted (a 4-byte read-back). Between prefill chunks this
        is what lets an abort land: submissions return at once, so without it every chunk is queued before
        the first has run; and the wait yields to the page worker's event loop, which delivers the abort."""
        await self._read(self.compiled.count)

    async def _run_chunk(self, chunk: list[int], then: tuple[str, ...] = (), before: tuple[str, ...] = ()) -> None:
        """One prefill submission: the chunk's ids and count written, `before`, the layers run, then `then`."""
        c = self.compiled
        ids = struct.pack(f"<{len(chunk)}I", *(self._check_token(t) for t in chunk))
        writes = [
            (c.tokens.buffer, c.tokens.offset, ids),
            (c.count.buffer, c.count.offset, struct.pack("<I", len(chunk))),
        ]
        await self.backend.run([*before, PREFILL, *then], writes + await self._embedding(chunk, c.chunk_input))

    async def _embedding(self, tokens: list[int], target) -> list[tuple[int, int, bytes]]:
        """The writes that give a program its input rows when the table is in host memory
        (model.HostEmbedding, the budget's last resort); none when the GPU gathers them."""
        host = self.compiled.host_embedding
        if host is None:
            return []
        row_bytes = self.config.n_embd * (4 if host.dtype == "F32" else 2)
        rows = [
            await self.backend.read(host.table.buffer, host.table.offset + t * row_bytes, row_bytes) for t in tokens
        ]
        return [(target.buffer, target.offset, b"".join(_widen(raw, host.dtype) for raw in rows))]

    async def _decode_input(self) -> list[tuple[int, int, bytes]]:
        """The decode step's embedding row when the table is in host memory (the pending token's)."""
        host = self.compiled.host_embedding
        return await self._embedding([self.pending], host.row) if host else []

    async def forward(self, token: int) -> bytes:
        """Feed one token; return the logits as float32 bytes [V]."""
        return (await self.forward_all([token]))[0]

    async def forward_all(self, tokens: list[int]) -> list[bytes]:
        """Feed tokens a chunk per submission; return every token's logits (float32 bytes [V] each):
        after each chunk the head runs once per row of it (`count` = row + 1 picks the row)."""
        c, rows = self.compiled, []
        if self.pending is not None:
            await self.feed([])
        for start in range(0, len(tokens), c.chunk):
            chunk = tokens[start : start + c.chunk]
            await self._run_chunk(chunk)
            for row in range(len(chunk)):
                await self.backend.run([HEAD_LAST], [(c.count.buffer, c.count.offset, struct.pack("<I", row + 1))])
                rows.append((await self._read(c.logits))[: 4 * self.config.vocab_size])
        return rows

    async def pool(self, tokens: list[int]) -> tuple[bytes, bytes]:
        """Feed tokens and return (Σ, last) of their hidden states after ln_out, float32 bytes [C] each
        (the head is not run): embed()'s mean and last pooling."""
        if not tokens:
            raise ValueError("embed needs at least one token")
        c = self.compiled
        await self._write(c.pooled, bytes(c.pooled.size))
        if self.pending is not None:
            await self.feed([])
        for start in range(0, len(tokens), c.chunk):
            await self._run_chunk(tokens[start : start + c.chunk], (POOL,))
        return await self._read(c.pooled), await self._read(c.pooled_last)

    async def export_state(self) -> bytes:
        """The state of every token fed so far, in State.to_bytes() order (float32)."""
        if self.pending is not None:
            await self.feed([])
        return await self._read(self.compiled.state)

    async def import_state(self, data: bytes) -> None:
        if len(data) != self.compiled.state.size:
            raise ValueError(
                f"state is {len(data)} bytes; this model's state is {self.compiled.state.size} bytes "
                f"(another model's state?)"
            )
        await self._write(self.compiled.state, data)
        self.pending = None

    async def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        sampling: Sampling = Sampling(),
        *,
        on_token: Callable[[int], Awaitable[bool | None]] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        keep_state: bool = False,
        stop_tokens: tuple[int, ...] = (END_OF_TEXT,),
    ) -> tuple[list[int], GenerationStats]:
        """Sample up to max_tokens after the prompt; `await on_token(id)` sees each id as it arrives and
        may return True to stop after it (a stop string; api.Model.generate adapts the user's callbacks).

        The first token comes from the prompt's last prefill submission. After it, decode + sample steps
        are chained `batch` at a time in one submission (doubling up to model.BATCH), each sampled id
        feeding the next step's embedding on the GPU and all of them read back at once. A batch that
        runs past a stop (end of text, a stop string, max_tokens) is undone: the state taken aside
        before it is restored and only the steps up to the stop run again, so state, counts and ids
        are those of one step per submission. should_stop() (abort) is polled before each prompt chunk (an
        abort there leaves the state as before the prompt: the module's docstring says why) and between batches."""
        if not prompt and (self.pending is None or not keep_state):
            raise ValueError("generate needs at least one prompt token")
        if not keep_state:
            await self.reset()
        stats = GenerationStats(prompt_tokens=len(prompt) + (self.pending is not None))  # the tokens the prefill runs
        started = time.perf_counter()
        await self._write(self.compiled.counts, bytes(self.compiled.counts.size))
        await self._write(self.compiled.sampler, sampling.pack())
        out: list[int] = []
        if max_tokens == 0:  # nothing is sampled: the prompt is fed, all but its last token (kept pending)
            stats.stopped_by = "length"
            tokens = [*([self.pending] if self.pending is not None else []), *prompt]
            self.pending = None
            stats.prefill_chunks = (await self.feed(tokens[:-1]))[1]
            self.pending = tokens[-1]
            return out, stats
        # the last chunk's logits give the first token; an abort before that chunk leaves the prompt unfed
        whole, stats.prefill_chunks = await self.feed(prompt, (HEAD_LAST, SAMPLE, keep(0)), should_stop)
        if not whole:
            stats.stopped_by = "abort"
            stats.prefill_seconds = time.perf_counter() - started
            return out, stats
        batch = 1
        ids = await self._read_history(1)
        stats.prefill_seconds = time.perf_counter() - started
        decode_started = time.perf_counter()
        while True:
            for step, token in enumerate(ids):
                out.append(token)
                self.pending = token  # the sampler also copied it into `token`: the next decode step's input
                stop = await on_token(token) if on_token is not None else None
                reason = (
                    "end_of_text"
                    if token in stop_tokens
                    else "stop"
                    if stop
                    else "length"
                    if len(out) == max_tokens
                    else ""
                )
                if reason:
                    if step < len(ids) - 1:  # the batch ran on past this token: undo it, redo it up to here
                        await self._timed(stats, self.backend.run([RESTORE, *self._decode_steps(step + 1)], []))
                    stats.stopped_by = reason
                    break
            if stats.stopped_by:
                break
            if should_stop():
                stats.stopped_by = "abort"
                break
            batch = 1 if self.compiled.host_embedding else min(2 * batch, BATCH, max_tokens - len(out))
            if batch == 1:
                await self._timed(stats, self.backend.run(self._decode_steps(1), await self._decode_input()))
            else:
                await self._timed(stats, self.backend.run([SNAPSHOT, *self._decode_steps(batch)], []))
            ids = await self._timed(stats, self._read_history(batch))
        stats.generated = len(out)
        if len(out) > 1:
            stats.decode_seconds = time.perf_counter() - decode_started
        return out, stats

    @staticmethod
    async def _timed(stats: GenerationStats, call: Awaitable):
        """The result of awaiting a backend call, its time added to stats.backend_seconds."""
        started = time.perf_counter()
        result = await call
        stats.backend_seconds += time.perf_counter() - started
        return result

    @staticmethod
    def _decode_steps(n: int) -> list[str]:
        """n chained steps: decode the pending token, sample the next (it becomes the input), record it."""
        return [name for i in range(n) for name in (DECODE, SAMPLE, keep(i))]

    async def _read_history(self, n: int) -> list[int]:
        history = self.compiled.history
        ids = list(struct.unpack(f"<{n}I", await self.backend.read(history.buffer, history.offset, 4 * n)))
        if NOT_FINITE in ids:
            raise ModelError(
                "the logits are not finite (NaN or infinity), so nothing can be sampled: the model's weights "
                "hold NaN/Inf values or overflow float32; the file is damaged"
            )
        return ids


def _widen(raw: bytes, dtype: str) -> bytes:
    """A row of file values (F32, F16 or BF16) as float32 bytes, without numpy (Pyodide)."""
    if dtype == "F16":
        n = len(raw) // 2
        return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", raw))
    if dtype == "BF16":
        n = len(raw) // 2
        return struct.pack(f"<{n}I", *(half << 16 for half in struct.unpack(f"<{n}H", raw)))
    return raw
