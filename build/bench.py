"""Decode speed and memory, printed as a markdown table:  python -m build.bench [--tokens N]

For RWKV-7 0.1B's shape (12 x 768 x 65536, random weights made here, cached in .cache/bench/),
at fp16 and fp32:
  webgpu   the product path in headless Chromium: Pyodide worker, Python plan, WGSL on the
           browser's adapter (SwiftShader without a GPU), weights by Range, GPU sampling
  numpy    the same plan on the numpy executor (the CPU fallback), and the numpy reference
Then the matvec variants (model.MATVEC_VARIANTS) on the browser's adapter, one decode step each.
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
from rwkvweb.config import ModelConfig  # noqa: E402
from rwkvweb.headless import headless_engine  # noqa: E402
from rwkvweb.reference import RWKV7, State  # noqa: E402
from rwkvweb.testmodel import write_test_model  # noqa: E402

SHAPE = ModelConfig.default_for(12, 768, 65536)
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


def model_file(dtype: str) -> str:
    path = os.path.join(ROOT, ".cache", "bench", f"rwkv7-0.1b-shape-{dtype}.st")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_test_model(path, SHAPE, seed=0, dtype=dtype)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16, help="tokens to decode per measurement")
    args = parser.parse_args()
    rows, variant_rows = [], []
    for dtype in ("fp16", "fp32"):
        path = model_file(dtype)
        gpu, cpu = bench_webgpu(path, args.tokens), bench_numpy(path, args.tokens)
        rows.append(f"| 0.1B shape | {dtype} | {gpu['tok_s']:.2f} | {cpu['plan_tok_s']:.1f} | {cpu['reference_tok_s']:.1f} | "
                    f"{gpu['load_s']:.1f} | {gpu['gpu_bytes'] / 2**20:.0f} | {gpu['adapter']} / {gpu['matvec']} |")
        variant_rows += [f"| {dtype} | {name} | {ms:.0f} |" for name, ms in gpu["variants"].items()]
    print(f"Decode speed, {args.tokens} tokens after an {len(PROMPT)}-token prompt (tokens/s):\n")
    print("| model | weights | webgpu (browser) | numpy plan | numpy reference | load s | GPU MiB | adapter / matvec |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nOne decode step by matvec variant on the browser's adapter (ms):\n")
    print("| weights | variant | ms/token |\n|---|---|---|")
    print("\n".join(variant_rows))


if __name__ == "__main__":
    main()
