"""Speed, memory and quality, printed as markdown tables:  python -m build.bench [--tokens N] [--only NAME]

For RWKV-7 0.1B's shape (12 x 768 x 65536, random weights made here, cached in .cache/bench/):
  speed       fp16 and fp32 files: webgpu (the product path in headless Chromium: Pyodide
              worker, Python plan, WGSL on the browser's adapter, SwiftShader without a GPU,
              weights by Range, GPU sampling); numpy (the same plan on the numpy executor, the
              CPU fallback) and the numpy reference; then the matvec variants, one step each
  precisions  fp16 / int8 / NF4 matrices: load from the network and from the OPFS cache, bytes
              fetched, peak GPU bytes (the bridge's count), decode tokens/s
  budgets     the 0.1B and 0.4B shapes under 700 MB, 1 GB and 2 GB: what the planner chose,
              the measured peak GPU bytes, tokens/s
  quality     top-1 agreement with the float32 reference over 256 teacher-forced tokens, per
              precision: the shipped trained model on held-out-style text, and the 0.1B shape
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "py")]

from rwkvweb.api import Model  # noqa: E402
from rwkvweb.budget import parse_bytes  # noqa: E402
from rwkvweb.config import ModelConfig  # noqa: E402
from rwkvweb.headless import headless_engine  # noqa: E402
from rwkvweb.reference import RWKV7, State  # noqa: E402
from rwkvweb.testmodel import write_test_model  # noqa: E402

SHAPE = ModelConfig.default_for(12, 768, 65536)
SHAPES = {"0.1B": SHAPE, "0.4B": ModelConfig.default_for(24, 1024, 65536)}
PROMPT = [int(t) for t in range(100, 108)]

VARIANT_JS = """
async ([plan, runs]) => {
  const { requestDevice } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  const gpu = await requestDevice();
  const bridge = new Bridge(gpu.device, new URL("/shaders/", location.href), gpu.adapter);
  await bridge.load(plan);  // timing only: weights stay zero, the work is the same
  bridge.run("decode");
  await bridge.read(0, 0, 4);
  const started = performance.now();
  for (let i = 0; i < runs; i++) bridge.run("decode");
  await bridge.read(0, 0, 4);
  const ms = (performance.now() - started) / runs;
  bridge.destroy();
  return ms;
}
"""


def model_file(dtype: str, shape: str = "0.1B") -> str:
    path = os.path.join(ROOT, ".cache", "bench", f"rwkv7-{shape.lower()}-shape-{dtype}.st")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_test_model(path, SHAPES[shape], seed=0, dtype=dtype)
    return path


def bench_webgpu(path: str, tokens: int) -> dict:
    with headless_engine(path) as engine:
        loaded = engine.load(path)
        engine.call("generate", {"prompt": PROMPT, "options": {"max_tokens": 2}})  # warm the pipelines
        result = engine.call("generate", {"prompt": PROMPT, "options": {"max_tokens": tokens, "temperature": 1.0, "top_p": 0.85}})
        variants = {}
        from rwkvweb.model import MATVEC_VARIANTS, compile_model
        from rwkvweb.safetensors import SafetensorsFile

        tensors = SafetensorsFile(path).tensors
        for variant in MATVEC_VARIANTS:
            plan = compile_model(SHAPE, tensors, matvec=variant).plan.to_json()
            plan["fills"] = []
            variants[variant] = engine.page.evaluate(VARIANT_JS, [plan, 3])
    return {"load_s": loaded["seconds"], "gpu_bytes": loaded["gpu"]["bytesAllocated"], "tok_s": result["tokens_per_second"],
            "adapter": loaded["device"]["architecture"] or loaded["device"]["vendor"], "matvec": loaded["matvec"], "variants": variants}


def bench_numpy(path: str, tokens: int) -> dict:
    async def run():
        model = await Model.load(path)
        result = await model.generate(PROMPT, tokens, temperature=1.0, top_p=0.85)
        return result.stats.tokens_per_second

    plan_speed = asyncio.run(run())
    reference = RWKV7.load(path)
    state = State.zeros(SHAPE)
    started = time.perf_counter()
    for token in range(tokens):
        _, state = reference.forward(token, state)
    return {"plan_tok_s": plan_speed, "reference_tok_s": tokens / (time.perf_counter() - started)}


def bench_precisions(tokens: int) -> list[str]:
    path = model_file("fp16")
    rows = []
    with headless_engine(path) as engine:
        engine.load(path)  # fills the OPFS cache
        for precision in ("fp16", "int8", "nf4"):
            network = engine.load(path, precision=precision, cache=False)
            cached = engine.load(path, precision=precision)
            engine.call("generate", {"prompt": PROMPT, "options": {"max_tokens": 2}})
            result = engine.call("generate", {"prompt": PROMPT, "options": {"max_tokens": tokens, "temperature": 1.0, "top_p": 0.85}})
            peak = engine.call("info")["gpu"]["peakBytes"]
            rows.append(f"| 0.1B shape | {precision} | {network['seconds']:.1f} | {network['fetchedBytes'] / 1e6:.0f} | "
                        f"{cached['seconds']:.1f} | {cached['fetchedBytes'] / 1e6:.0f} | {peak / 2**20:.0f} | {result['tokens_per_second']:.2f} |")
    return ["| model | matrices | load s (network) | MB fetched | load s (cache) | MB fetched | peak GPU MiB | tok/s |",
            "|---|---|---|---|---|---|---|---|", *rows]


def bench_budgets(tokens: int) -> list[str]:
    rows = []
    for shape in SHAPES:
        path = model_file("fp16", shape)
        with headless_engine(path) as engine:
            for budget in ("700MB", "1GB", "2GB"):
                loaded = engine.load(path, budget=parse_bytes(budget))
                result = engine.call("generate", {"prompt": PROMPT[:2], "options": {"max_tokens": tokens}})
                peak = engine.call("info")["gpu"]["peakBytes"]
                chosen = ", ".join(f"{n} {p}" for p, n in loaded["matrices_by_precision"].items())
                rows.append(f"| {shape} shape | {budget} | {chosen} | {loaded['gpu_bytes_planned'] / 1e6:.0f} | {peak / 1e6:.0f} | "
                            f"{result['tokens_per_second']:.2f} |")
    return ["| model | budget | matrices | planned MB | peak GPU MB | tok/s |", "|---|---|---|---|---|---|", *rows]


def top1_agreement(path: str, tokens: list[int]) -> dict[str, float]:
    """Per precision, how often the quantized plan's argmax equals the float32 reference's."""
    import numpy as np

    expected = RWKV7.load(path).logits(tokens)[0].argmax(axis=1)

    async def argmaxes(precision):
        model = await Model.load(path, precision=precision, tokenizer_for=lambda c, m: None)
        return np.array([np.frombuffer(row, np.float32).argmax() for row in await model.logits(tokens)])

    return {p: float(np.mean(asyncio.run(argmaxes(p)) == expected)) for p in ("fp16", "int8", "nf4")}


def bench_quality(steps: int = 256) -> list[str]:
    import random

    rows = []
    shipped = os.path.join(ROOT, "models", "rwkv7-tiny-wordnet.st")
    text = "garden (noun): a plot of ground where plants are cultivated; river (noun): a large natural stream of water " \
           "flowing in a channel to the sea or a lake; stone (noun): a lump or piece of hard solid mineral matter; " \
           "quick (adjective): moving fast or doing something in a short time; " \
           "listen (verb): give one's attention to a sound; "
    ids = list(text.encode())
    assert len(ids) >= steps, len(ids)
    agreement = top1_agreement(shipped, ids[:steps])
    rows.append("| rwkv7-tiny-wordnet (trained, fp16 file) | " + " | ".join(f"{agreement[p]:.3f}" for p in agreement) + " |")
    rng = random.Random(0)
    agreement = top1_agreement(model_file("fp16"), [rng.randrange(65536) for _ in range(steps)])
    rows.append("| 0.1B shape (random weights) | " + " | ".join(f"{agreement[p]:.3f}" for p in agreement) + " |")
    return [f"| model ({steps} teacher-forced tokens) | fp16 | int8 | NF4 |", "|---|---|---|---|", *rows]


def bench_speed(tokens: int) -> list[str]:
    rows, variant_rows = [], []
    for dtype in ("fp16", "fp32"):
        path = model_file(dtype)
        gpu, cpu = bench_webgpu(path, tokens), bench_numpy(path, tokens)
        rows.append(f"| 0.1B shape | {dtype} | {gpu['tok_s']:.2f} | {cpu['plan_tok_s']:.1f} | {cpu['reference_tok_s']:.1f} | "
                    f"{gpu['load_s']:.1f} | {gpu['gpu_bytes'] / 2**20:.0f} | {gpu['adapter']} / {gpu['matvec']} |")
        variant_rows += [f"| {dtype} | {name} | {ms:.0f} |" for name, ms in gpu["variants"].items()]
    return [f"Decode speed, {tokens} tokens after an {len(PROMPT)}-token prompt (tokens/s):", "",
            "| model | weights | webgpu (browser) | numpy plan | numpy reference | load s | GPU MiB | adapter / matvec |",
            "|---|---|---|---|---|---|---|---|", *rows, "", "One decode step by matvec variant on the browser's adapter (ms):", "",
            "| weights | variant | ms/token |", "|---|---|---|", *variant_rows]


def bench_wgpu(tokens: int, prompt_tokens: int = 512) -> list[str]:
    """The 0.1B shape natively through wgpu (what `python -m rwkvweb generate … --backend wgpu` loads): decode, and
    prefill of a synthetic prompt (the CLI's --prompt-tokens ids), after one warm-up that compiles the pipelines."""
    from rwkvweb.wgpu_exec import WgpuBackend

    async def run():
        backend = WgpuBackend()
        model = await Model.load(model_file("fp16"), backend=backend, matvec=backend.matvec, max_binding=backend.max_binding,
                                 tokenizer_for=lambda config, metadata: None)
        await model.generate(PROMPT, 2)
        prompt = [(7919 * i) % 255 + 1 for i in range(prompt_tokens)]
        stats = (await model.generate(prompt, tokens, temperature=1.0, top_p=0.85)).stats
        precisions = "/".join(sorted(model.budget_plan.to_json()["matrices_by_precision"]))
        return backend.info(), stats, precisions

    info, stats, precisions = asyncio.run(run())
    return [f"Native (wgpu-py on {info['backend']}, adapter: {info['adapter']}), 0.1B shape, fp16 file "
            f"({tokens} tokens after a {prompt_tokens}-token prompt):", "",
            "| model | matrices | decode tok/s | prefill tok/s | matvec | adapter |", "|---|---|---|---|---|---|",
            f"| 0.1B shape | {precisions} | {stats.tokens_per_second:.2f} | {stats.prompt_tokens / stats.prefill_seconds:.1f} | "
            f"{info['matvec']} | native: {info['adapter']} ({info['adapter_type']}) |"]


BENCHES = {"speed": bench_speed, "precisions": bench_precisions, "budgets": bench_budgets, "quality": lambda tokens: bench_quality(),
           "wgpu": bench_wgpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16, help="tokens to decode per measurement")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these tables")
    args = parser.parse_args()
    for name in args.only or BENCHES:
        print(f"\n## {name}\n")
        print("\n".join(BENCHES[name](args.tokens)), flush=True)


if __name__ == "__main__":
    main()
