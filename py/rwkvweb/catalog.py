"""A short list of official RWKV checkpoints, and the budget planner's verdict on one before download.

The files are BlinkDL's releases on Hugging Face (bf16 `.pth`, loaded as they are: rwkvweb.pth).
Hugging Face serves them by Range with CORS from its `resolve/` URLs, so the page reads them
directly. `download_bytes` is the tensors' bytes (bf16) from the official shapes; the file adds a
few tens of KB of zip and pickle (the 0.1B World file is 382,195,690 bytes).

`fit_verdict(tensors)` says, from a header alone (api.read_header: one or two small Range reads for
safetensors, a few for a `.pth`), what the planner would do on this device: the precision per large
matrix and the GPU bytes, or why it cannot fit. It is exactly budget.plan_budget's answer, which
`python -m rwkvweb plan` prints too (tests/test_catalog.py checks they agree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .budget import DEFAULT_BUDGET, BudgetError, plan_budget
from .config import ModelConfig, ModelError, model_config, tensor_shapes
from .model import DEFAULT_MAX_BINDING
from .safetensors import TensorInfo

HUB = "https://huggingface.co/BlinkDL"
VERSION_TAGS = {7: "x070", 6: "x060", 5: "x052"}  # the versions whose official shapes config.py knows
APACHE = "Apache-2.0"


@dataclass(frozen=True)
class CatalogModel:
    id: str
    title: str
    version: int  # RWKV architecture: 7 = "x070", 6 = "x060" (VERSION_TAGS)
    n_layer: int
    n_embd: int
    vocab_size: int
    url: str
    licence: str
    tokenizer: str = "world"

    @property
    def download_bytes(self) -> int | None:
        """The bf16 tensors' bytes (the file is a few tens of KB more); None where the shapes are not known here."""
        if self.version not in VERSION_TAGS:
            return None
        return sum(2 * math.prod(shape) for shape in tensor_shapes(self.config()).values())

    def config(self) -> ModelConfig:
        return ModelConfig.default_for(self.n_layer, self.n_embd, self.vocab_size, version=VERSION_TAGS[self.version])

    def to_json(self) -> dict:
        return {**asdict(self), "download_bytes": self.download_bytes}


def _v7(id: str, title: str, repo: str, file: str, n_layer: int, n_embd: int) -> CatalogModel:
    return CatalogModel(id, title, 7, n_layer, n_embd, 65536, f"{HUB}/{repo}/resolve/main/{file}", APACHE)


MODELS: tuple[CatalogModel, ...] = (
    _v7("rwkv7-g1-0.1b", "RWKV-7 G1 0.1B", "rwkv7-g1", "rwkv7-g1-0.1b-20250307-ctx4096.pth", 12, 768),
    _v7("rwkv7-g1-0.4b", "RWKV-7 G1 0.4B", "rwkv7-g1", "rwkv7-g1-0.4b-20250324-ctx4096.pth", 24, 1024),
    _v7("rwkv7-g1-1.5b", "RWKV-7 G1 1.5B", "rwkv7-g1", "rwkv7-g1-1.5b-20250429-ctx4096.pth", 24, 2048),
    _v7("rwkv7-g1-2.9b", "RWKV-7 G1 2.9B", "rwkv7-g1", "rwkv7-g1-2.9b-20250519-ctx4096.pth", 32, 2560),
    _v7(
        "rwkv7-world-0.1b",
        "RWKV-7 World 0.1B (v2.8)",
        "rwkv-7-world",
        "RWKV-x070-World-0.1B-v2.8-20241210-ctx4096.pth",
        12,
        768,
    ),
    _v7(
        "rwkv7-world-0.4b",
        "RWKV-7 World 0.4B (v2.9)",
        "rwkv-7-world",
        "RWKV-x070-World-0.4B-v2.9-20250107-ctx4096.pth",
        24,
        1024,
    ),
    _v7(
        "rwkv7-world-1.5b",
        "RWKV-7 World 1.5B (v3)",
        "rwkv-7-world",
        "RWKV-x070-World-1.5B-v3-20250127-ctx4096.pth",
        24,
        2048,
    ),
    _v7(
        "rwkv7-world-2.9b",
        "RWKV-7 World 2.9B (v3)",
        "rwkv-7-world",
        "RWKV-x070-World-2.9B-v3-20250211-ctx4096.pth",
        32,
        2560,
    ),
    CatalogModel(
        "rwkv6-world-1.6b",
        "RWKV-6 Finch World 1.6B (v2.1)",
        6,
        24,
        2048,
        65536,
        f"{HUB}/rwkv-6-world/resolve/main/RWKV-x060-World-1B6-v2.1-20240328-ctx4096.pth",
        APACHE,
    ),
)


def official_header(model: CatalogModel) -> dict[str, TensorInfo]:
    """The tensor table an official bf16 checkpoint of this shape has (names, shapes, contiguous
    ranges): what the planner needs, before the real header is fetched."""
    if model.version not in VERSION_TAGS:
        raise ModelError(f"{model.title}: this runtime does not know RWKV-{model.version}'s shapes")
    tensors, at = {}, 0
    for name, shape in tensor_shapes(model.config()).items():
        tensors[name] = TensorInfo(name, "BF16", shape, at, at + 2 * math.prod(shape))
        at += 2 * math.prod(shape)
    return tensors


def fit_verdict(
    tensors: dict[str, TensorInfo],
    budget: int = DEFAULT_BUDGET,
    max_binding: int = DEFAULT_MAX_BINDING,
    matvec: str = "cols",
) -> dict:
    """What the planner would do with this header on this device (precision auto):
    {"supported", "fits", "gpu_bytes", "matrices_by_precision", "message"} - plain values for the page."""
    try:
        config = model_config(tensors)
    except ModelError as error:
        return {
            "supported": False,
            "fits": False,
            "gpu_bytes": None,
            "matrices_by_precision": {},
            "message": str(error),
        }
    try:
        plan = plan_budget(config, tensors, budget, "auto", max_binding, matvec).to_json()
    except BudgetError as error:
        return {"supported": True, "fits": False, "gpu_bytes": None, "matrices_by_precision": {}, "message": str(error)}
    by_precision = plan["matrices_by_precision"]
    summary = ", ".join(f"{count} {precision}" for precision, count in sorted(by_precision.items()))
    return {
        "supported": True,
        "fits": True,
        "gpu_bytes": plan["gpu_bytes"],
        "matrices_by_precision": by_precision,
        "message": f"fits in {plan['gpu_bytes'] / 1e6:.0f} MB of the {budget / 1e6:.0f} MB budget "
        f"({summary} large matrices)",
    }


async def verdict_for_source(
    source, budget: int = DEFAULT_BUDGET, max_binding: int = DEFAULT_MAX_BINDING, matvec: str = "cols"
) -> dict:
    """fit_verdict from a source's header alone (a path, URL or the page's reader): nothing else is read."""
    from .api import read_header

    if isinstance(source, str):
        from .source import open_source

        source = open_source(source)
    tensors, _metadata = await read_header(source)
    return fit_verdict(tensors, budget, max_binding, matvec)
