"""The memory budget planner: per matrix, the widest precision that lets the whole model fit.

Before a single weight byte is fetched, the header tells every tensor's shape; from it the
planner knows what each matrix costs at f32, f16, int8 and NF4 (model.compile_model counts the
real buffers), and what the rest costs (vectors, LoRA, state, activations, the sampler, and the
largest read-back the engine makes). With precision "auto" it starts every large matrix at the
file's width and lowers the biggest, widest ones a step at a time (f16 -> int8 -> NF4) until
the total fits; as a last resort the embedding table moves to host memory (HOST: the engine
writes each token's row, so quality is unchanged and the GPU holds no table). Small vectors and
the WKV state stay float32, and LoRA matrices keep the file's width: they are a few percent of
the bytes and the most sensitive. If nothing fits, it refuses, saying how many bytes are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import LARGE_MATRIX, ModelConfig, ModelError, wkv_state_floats
from .model import (
    DEFAULT_CHUNK,
    DEFAULT_MAX_BINDING,
    HOST,
    CompiledModel,
    allowed_precisions,
    compile_model,
    file_precision,
    fit_chunk,
)
from .safetensors import TensorInfo

DEFAULT_BUDGET = 2_000_000_000  # bytes (2 GB): what a mid-range laptop's browser gives one tab
MIN_BUDGET = 700_000_000  # the page's lowest setting (700 MB); the API accepts less for small models
PRECISIONS = ("auto", "fp32", "fp16", "int8", "nf4")
LEVELS = ("f32", "f16", "int8", "nf4", HOST)  # widest first; HOST: the embedding off the GPU, rows written per token
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class BudgetError(ModelError):
    """The model cannot fit the budget (or the request cannot be met): says what would."""


def parse_bytes(text: str | int) -> int:
    """'700MB' -> 700_000_000, '1.5GiB' -> 1610612736, 123 -> 123 (MB, GB decimal; MiB, GiB binary)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a size: write e.g. 700MB, 2GB or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def quantizable(tensors: dict[str, TensorInfo]) -> list[str]:
    """The large matrices: projections, FFN, the embedding and the head (not LoRA, not vectors)."""
    return [name for name in tensors if LARGE_MATRIX.fullmatch(name)]


@dataclass
class BudgetPlan:
    budget: int
    precision: str  # what was asked: auto | fp32 | fp16 | int8 | nf4
    precisions: dict[str, str]  # per large matrix: f32 | f16 | int8 | nf4
    compiled: CompiledModel
    reserve: int  # GPU bytes the engine allocates beyond the plan's buffers (its largest read-back)
    header: dict[str, TensorInfo]  # the file's tensors

    @property
    def gpu_bytes(self) -> int:
        """The most GPU memory the model will hold at once: the plan's buffers plus the reserve."""
        return self.compiled.plan.gpu_bytes() + self.reserve

    def to_json(self) -> dict:
        counts: dict[str, int] = {}
        for precision in self.precisions.values():
            counts[precision] = counts.get(precision, 0) + 1
        return {
            "budget": self.budget,
            "precision": self.precision,
            "matvec": self.compiled.matvec,
            "gpu_bytes": self.gpu_bytes,
            "fits": self.gpu_bytes <= self.budget,
            "bytes_by_role": {**self.compiled.plan.bytes_by_role(), "reserve": self.reserve},
            "matrices_by_precision": counts,
            "host_bytes": self.compiled.plan.bytes_by_role().get("host", 0),
            "tensors": [self._tensor(name, info) for name, info in self.header.items()],
        }

    def _tensor(self, name: str, info: TensorInfo) -> dict:
        """Where one file tensor lives and at what precision: large matrices as planned, LoRA at
        the file's width, vectors widened to f32; tensors the graph never reads stay unloaded."""
        if self.precisions.get(name) == HOST:
            return {"name": name, "precision": info.dtype.lower(), "bytes": info.nbytes, "where": "host"}
        if name not in self.compiled.weight_bytes:
            return {"name": name, "precision": None, "bytes": 0, "where": "unused"}
        precision = self.precisions.get(name) or (file_precision(info) if len(info.shape) == 2 else "f32")
        return {"name": name, "precision": precision, "bytes": self.compiled.weight_bytes[name], "where": "gpu"}


def plan_budget(
    config: ModelConfig,
    tensors: dict[str, TensorInfo],
    budget: int = DEFAULT_BUDGET,
    precision: str = "auto",
    max_binding: int = DEFAULT_MAX_BINDING,
    matvec: str = "cols",
    chunk: int = DEFAULT_CHUNK,
) -> BudgetPlan:
    """Choose each large matrix's precision so the model fits `budget` GPU bytes, or refuse. The prefill
    chunk is at most `chunk` tokens: smaller where its activations would crowd a tight budget
    (model.fit_chunk), and halved down to 1 token before the model is refused (the refusal's numbers
    are those of 1-token chunks, so the budget it names does fit)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    chunk = fit_chunk(config, budget, chunk)
    while True:
        try:
            return _plan(config, tensors, budget, precision, max_binding, matvec, chunk)
        except BudgetError:
            if chunk == 1:
                raise
            chunk //= 2


def _plan(
    config: ModelConfig,
    tensors: dict[str, TensorInfo],
    budget: int,
    precision: str,
    max_binding: int,
    matvec: str,
    chunk: int,
) -> BudgetPlan:
    names = quantizable(tensors)
    compile_with = lambda chosen: compile_model(config, tensors, max_binding, matvec, chosen, chunk)  # noqa: E731
    reserve = max(config.vocab_size * 4, config.n_layer * (2 * config.n_embd + wkv_state_floats(config)) * 4)

    if precision != "auto":
        level = "f" + precision[2:] if precision.startswith("fp") else precision
        refused = [n for n in names if level not in allowed_precisions(tensors[n])]
        if refused:
            raise BudgetError(
                f"{refused[0]} is {tensors[refused[0]].dtype} in the file and cannot be stored as {precision}; "
                f"use precision auto, fp32, int8 or nf4"
            )
        plan = BudgetPlan(
            budget, precision, {n: level for n in names}, compile_with({n: level for n in names}), reserve, tensors
        )
        if plan.gpu_bytes > budget:
            raise BudgetError(
                f"at {precision} this model needs {_mb(plan.gpu_bytes)} of GPU memory, over the {_mb(budget)} budget; "
                f"raise the budget or choose a smaller precision (auto picks one that fits)"
            )
        return plan

    # What each matrix costs at each level, from one real compilation per level; the rest is fixed.
    cost = {
        level: compile_with({n: level for n in names if level in allowed_precisions(tensors[n])}).weight_bytes
        for level in LEVELS
    }
    widest = compile_with({})
    fixed = widest.plan.gpu_bytes() + reserve - sum(widest.weight_bytes[n] for n in names)
    chosen = _fit({n: file_precision(tensors[n]) for n in names}, tensors, cost, fixed, budget)
    plan = BudgetPlan(budget, "auto", chosen, compile_with(chosen), reserve, tensors)
    assert plan.gpu_bytes == fixed + sum(cost[p].get(n, 0) for n, p in chosen.items()), (
        "planner arithmetic differs from the compiled plan"
    )
    return plan


def _fit(
    chosen: dict[str, str], tensors: dict[str, TensorInfo], cost: dict[str, dict[str, int]], fixed: int, budget: int
) -> dict[str, str]:
    """Lower matrices a level at a time until they fit beside the `fixed` bytes, the widest and then the
    biggest first (quality is lost where it buys the most bytes); then widen back, narrowest and
    smallest first, whatever still fits (the last step down may have freed more than needed)."""
    levels = {n: [level for level in LEVELS if level in allowed_precisions(tensors[n])] for n in chosen}
    bytes_of = lambda n, level: cost[level].get(n, 0)  # noqa: E731 - an embedding in host memory costs no GPU bytes
    total = fixed + sum(bytes_of(n, p) for n, p in chosen.items())
    while total > budget:
        lowerable = [n for n in chosen if chosen[n] != levels[n][-1]]
        if not lowerable:
            raise BudgetError(
                f"this model needs at least {_mb(total)} of GPU memory even with every large matrix in NF4 and "
                f"the embedding off the GPU, over the {_mb(budget)} budget: raise the budget to {_mb(total)} or more, "
                f"or choose a smaller model"
            )
        name = min(lowerable, key=lambda n: (LEVELS.index(chosen[n]), -bytes_of(n, chosen[n])))
        lower = levels[name][levels[name].index(chosen[name]) + 1]
        total += bytes_of(name, lower) - bytes_of(name, chosen[name])
        chosen[name] = lower
    for name in sorted(chosen, key=lambda n: (-LEVELS.index(chosen[n]), bytes_of(n, chosen[n]))):
        while chosen[name] not in (
            HOST,
            file_precision(tensors[name]),
        ):  # host rows are the file's own, already full width
            wider = levels[name][levels[name].index(chosen[name]) - 1]
            if total + bytes_of(name, wider) - bytes_of(name, chosen[name]) > budget:
                break
            total += bytes_of(name, wider) - bytes_of(name, chosen[name])
            chosen[name] = wider
    return chosen


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 10**7 else f"{nbytes:,} bytes"
