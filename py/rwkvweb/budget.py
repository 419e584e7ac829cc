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

from .config import ModelConfig, ModelError
from .model import DEFAULT_MAX_BINDING, HOST, CompiledModel, allowed_precisions, compile_model, file_precision
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
    big = re.compile(r"(emb|head)\.weight|blocks\.\d+\.(att\.(receptance|key|value|output)|ffn\.(key|value))\.weight")
    return [name for name in tensors if big.fullmatch(name)]


@dataclass
class BudgetPlan:
    budget: int
    precision: str  # what was asked: auto | fp32 | fp16 | int8 | nf4
    precisions: dict[str, str]  # per large matrix: f32 | f16 | int8 | nf4
    compiled: CompiledModel
    reserve: int  # GPU bytes the engine allocates beyond the plan's buffers (its largest read-back)

    @property
    def gpu_bytes(self) -> int:
        """The most GPU memory the model will hold at once: the plan's buffers plus the reserve."""
        return self.compiled.plan.gpu_bytes() + self.reserve

    def to_json(self) -> dict:
        weights = self.compiled.weight_bytes
        counts: dict[str, int] = {}
        for precision in self.precisions.values():
            counts[precision] = counts.get(precision, 0) + 1
        return {
            "budget": self.budget, "precision": self.precision, "gpu_bytes": self.gpu_bytes, "fits": self.gpu_bytes <= self.budget,
            "bytes_by_role": {**self.compiled.plan.bytes_by_role(), "reserve": self.reserve}, "matrices_by_precision": counts,
            "host_bytes": self.compiled.plan.bytes_by_role().get("host", 0),
            "tensors": [{"name": name, "precision": precision, "bytes": weights.get(name, 0), "where": "host" if precision == HOST else "gpu"}
                        for name, precision in self.precisions.items()],
        }


def plan_budget(config: ModelConfig, tensors: dict[str, TensorInfo], budget: int = DEFAULT_BUDGET, precision: str = "auto",
                max_binding: int = DEFAULT_MAX_BINDING, matvec: str = "cols") -> BudgetPlan:
    """Choose each large matrix's precision so the model fits `budget` GPU bytes, or refuse."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    names = quantizable(tensors)
    compile_with = lambda chosen: compile_model(config, tensors, max_binding, matvec, chosen)  # noqa: E731
    reserve = max(config.vocab_size * 4, config.n_layer * (2 * config.n_embd + config.n_head * config.head_size**2) * 4)

    if precision != "auto":
        level = "f" + precision[2:] if precision.startswith("fp") else precision
        refused = [n for n in names if level not in allowed_precisions(tensors[n])]
        if refused:
            raise BudgetError(f"{refused[0]} is {tensors[refused[0]].dtype} in the file and cannot be stored as {precision}; "
                              f"use precision auto, fp32, int8 or nf4")
        plan = BudgetPlan(budget, precision, {n: level for n in names}, compile_with({n: level for n in names}), reserve)
        if plan.gpu_bytes > budget:
            raise BudgetError(f"at {precision} this model needs {_mb(plan.gpu_bytes)} of GPU memory, over the {_mb(budget)} budget; "
                              f"raise the budget or choose a smaller precision (auto picks one that fits)")
        return plan

    # Each matrix's cost at each level, from three real compilations; everything else is fixed.
    cost = {level: compile_with({n: level for n in names if level in allowed_precisions(tensors[n])}).weight_bytes for level in LEVELS}
    chosen = {n: file_precision(tensors[n]) for n in names}
    first = compile_with(chosen)
    fixed = first.plan.gpu_bytes() + reserve - sum(first.weight_bytes[n] for n in names)
    total = fixed + sum(cost[chosen[n]].get(n, 0) for n in names)
    narrower = lambda n: [level for level in LEVELS[LEVELS.index(chosen[n]) + 1 :] if level in allowed_precisions(tensors[n])]  # noqa: E731
    while total > budget:
        lowerable = [n for n in names if narrower(n)]
        if not lowerable:
            raise BudgetError(f"this model needs at least {_mb(total)} of GPU memory even with every large matrix in NF4 and the embedding off the GPU, "
                              f"over the {_mb(budget)} budget: raise the budget to {_mb(total)} or more, or choose a smaller model")
        # the widest first, and among those the biggest: quality is lost where it buys the most bytes
        name = min(lowerable, key=lambda n: (LEVELS.index(chosen[n]), -cost[chosen[n]].get(n, 0)))
        lower = narrower(name)[0]
        total += cost[lower].get(name, 0) - cost[chosen[name]][name]
        chosen[name] = lower
    # The last step may have freed more than was needed: widen back, one level at a time, the
    # narrowest matrices that still fit (an embedding in host memory is already at full width).
    for name in sorted(names, key=lambda n: (-LEVELS.index(chosen[n]), cost[chosen[n]].get(n, 0))):
        while chosen[name] not in (HOST, file_precision(tensors[name])):
            wider = [level for level in LEVELS[: LEVELS.index(chosen[name])] if level in allowed_precisions(tensors[name])][-1]
            if total + cost[wider][name] - cost[chosen[name]][name] > budget:
                break
            total += cost[wider][name] - cost[chosen[name]][name]
            chosen[name] = wider
    plan = BudgetPlan(budget, "auto", chosen, compile_with(chosen), reserve)
    assert plan.gpu_bytes == total, f"planner arithmetic {total} != compiled {plan.gpu_bytes}"
    return plan


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 10**7 else f"{nbytes:,} bytes"
