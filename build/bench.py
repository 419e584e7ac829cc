"""Speed, memory and quality, printed as markdown tables:  python -m build.bench [--tokens N] [--only NAME]

For RWKV-7 0.1B's shape (12 x 768 x 65536, random weights made here, cached in .cache/bench/):
  speed       fp16 and fp32 files: webgpu (the product path in headless Chromium: Pyodide
              worker, Python plan, WGSL on the browser's adapter, SwiftShader without a GPU,
              weights by Range, GPU sampling); numpy (the same plan on the numpy executor, the
              CPU fallback) and the numpy reference; then the matvec variants, one step each
  precisions  fp16 / int8 / NF4 matrices: load from the network and from the OPFS cache, bytes
              fetched, peak GPU bytes (the bridge's count), decode tokens/s
  budgets     the 0.4B shape under 700 MB and 1 GB: what the planner chose,
              the measured peak GPU bytes, load seconds, tokens/s
  overhead    decode tokens/s of the shipped model and the 0.1B shape, split into the GPU step and the rest
  prefill     a 512-token prompt in chunks (tokens/s) next to decode tokens/s, and embed() of 512
              tokens (ms), in the browser and on the numpy plan
  tokenizers  encode MB/s of the World and BPE tokenizers, in CPython and in the site's Pyodide
  quality     top-1 agreement with the float32 reference over teacher-forced tokens and the median
              max |Δlogit| / range, per precision and for int8+dp4a: the shipped trained model on
              held-out-style text (256 tokens), and the 0.1B shape (128)
  matvec      one matvec dispatch per shape, layout and dtype (build/bench_matvec.py)
  dp4a        int8 768×768 and 65536×768 matvecs with and without +dp4a, in the page and through wgpu
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "py")]

from build.bench_matvec import TIME_PLAN_JS, bench_dp4a, bench_matvec  # noqa: E402
from rwkvweb.api import Model  # noqa: E402
from rwkvweb.budget import parse_bytes  # noqa: E402
from rwkvweb.model import DEFAULT_CHUNK  # noqa: E402
from rwkvweb.config import ModelConfig  # noqa: E402
from rwkvweb.headless import headless_engine  # noqa: E402
from rwkvweb.reference import RWKV7, State  # noqa: E402
from rwkvweb.testmodel import write_test_model  # noqa: E402

SHAPE = ModelConfig.default_for(12, 768, 65536)
SHAPES = {"0.1B": SHAPE, "0.4B": ModelConfig.default_for(24, 1024, 65536)}
PROMPT = [int(t) for t in range(100, 108)]


def model_file(dtype: str, shape: str = "0.1B") -> str:
    path = os.path.join(ROOT, ".cache", "bench", f"rwkv7-{shape.lower()}-shape-{dtype}.st")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_test_model(path, SHAPES[shape], seed=0, dtype=dtype)
    return path


def spread(values: list[float], digits: int = 2) -> str:
    """min / median / max of repeated measurements, as every timing row prints them."""
    ordered = sorted(values)
    return " / ".join(f"{v:.{digits}f}" for v in (ordered[0], ordered[len(ordered) // 2], ordered[-1]))


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def weight_bytes_per_token(compiled) -> int:
    """GPU weight bytes one decode step reads: every stored weight once, but one row of the embedding table."""
    table = compiled.weight_bytes.get("emb.weight", 0)
    rows = compiled.config.vocab_size
    return sum(compiled.weight_bytes.values()) - table + table // rows


PRECISION_TOKENS = 8  # tokens per decode in the precisions table: half the speed table's, to keep the run short


def bench_precisions(tokens: int, repeats: int) -> list[str]:
    path = model_file("fp16")
    rows = []
    with headless_engine(path) as engine:
        engine.load(path)  # fills the OPFS cache
        for precision in ("fp16", "int8", "nf4"):
            progress(f"precisions, {precision}")
            network = engine.load(path, precision=precision, cache=False)
            cached = engine.load(path, precision=precision)
            engine.call("generate", {"prompt": PROMPT[:2], "options": {"max_tokens": 1}})  # warm the pipelines
            options = {"max_tokens": PRECISION_TOKENS, "temperature": 1.0, "top_p": 0.85}
            speeds = [
                engine.call("generate", {"prompt": PROMPT[:2], "options": options})["tokens_per_second"]
                for _ in range(repeats)
            ]
            peak = engine.call("info")["gpu"]["peakBytes"]
            rows.append(
                f"| 0.1B shape | {precision} | {network['seconds']:.1f} | {network['fetchedBytes'] / 1e6:.0f} | "
                f"{cached['seconds']:.1f} | {cached['fetchedBytes'] / 1e6:.0f} | {peak / 2**20:.0f} | "
                f"{spread(speeds)} |"
            )
    return [
        f"Decode tok/s as min / median / max of {repeats} runs of {PRECISION_TOKENS} tokens after a 2-token prompt.",
        "",
        "| model | matrices | load s (network) | MB fetched | load s (cache) | MB fetched | peak GPU MiB | tok/s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


# The budgets each shape is planned under, from the mission's 700 MB-2 GB: the 0.4B shape's fp16 matrices
# (876 MiB) fit 1 GB and 2 GB alike, so it shows the two budgets its plan changes at; the 0.1B's (375 MiB) fit
# all three (the precisions table has its peak).
BUDGETS = {"0.4B": ("700MB", "1GB")}
BUDGET_TOKENS = 4  # tokens decoded per budget, once: the table is about memory, the speed tables time decode


def bench_budgets(tokens: int, repeats: int) -> list[str]:
    rows = []
    for shape, budgets in BUDGETS.items():
        path = model_file("fp16", shape)
        with headless_engine(path) as engine:
            for budget in budgets:
                progress(f"budgets, {shape} under {budget}")
                loaded = engine.load(path, budget=parse_bytes(budget))
                engine.call("generate", {"prompt": PROMPT[:2], "options": {"max_tokens": 1}})  # warm the pipelines
                options = {"max_tokens": BUDGET_TOKENS, "temperature": 1.0}
                speed = engine.call("generate", {"prompt": PROMPT[:2], "options": options})["tokens_per_second"]
                peak = engine.call("info")["gpu"]["peakBytes"]
                chosen = ", ".join(f"{n} {p}" for p, n in loaded["matrices_by_precision"].items())
                rows.append(
                    f"| {shape} shape | {budget} | {chosen} | {loaded['gpu_bytes_planned'] / 1e6:.0f} | "
                    f"{peak / 1e6:.0f} | {loaded['seconds']:.1f} | {speed:.2f} |"
                )
    return [
        "What the planner chose under each budget, the peak GPU bytes the bridge counted, the load, and "
        f"{BUDGET_TOKENS} tokens decoded once after a 2-token prompt:",
        "",
        "| model | budget | matrices | planned MB | peak GPU MB | load s | tok/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


# Plans compared with the float32 reference: (column, precision, matvec variant). +dp4a's twin quantizes x exactly
# as the GPU does (numpy_exec.quantize_x), so the numpy plan shows the accuracy the variant has on a GPU.
QUALITY_PLANS = (
    ("fp16", "fp16", "cols"),
    ("int8", "int8", "cols"),
    ("int8+dp4a", "int8", "rows-wg+dp4a"),
    ("NF4", "nf4", "cols"),
)


def top1_agreement(path: str, tokens: list[int]) -> dict[str, tuple[float, float]]:
    """Per plan (QUALITY_PLANS), how often its argmax equals the float32 reference's, and its largest
    |Δlogit| as a fraction of the reference's logit range (per token, the median over tokens)."""
    import numpy as np

    expected = RWKV7.load(path).logits(tokens)[0]

    async def logits(precision, matvec):
        progress(f"quality, {os.path.basename(path)}: {precision} {matvec}")
        model = await Model.load(path, precision=precision, matvec=matvec, tokenizer_for=lambda c, m: None)
        return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])

    def compare(got):
        ranges = expected.max(axis=1) - expected.min(axis=1)
        delta = float(np.median(np.abs(got - expected).max(axis=1) / ranges))
        return float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))), delta

    return {column: compare(asyncio.run(logits(p, matvec))) for column, p, matvec in QUALITY_PLANS}


def bench_quality(steps: int = 256, large_steps: int = 128) -> list[str]:
    """Top-1 agreement over `steps` teacher-forced tokens for the shipped model and `large_steps` for the 0.1B shape
    (each of its numpy plans costs ~0.1-0.4 s a token here)."""
    import random

    rows = []
    text = (
        "garden (noun): a plot of ground where plants are cultivated; river (noun): a large natural stream of water "
        "flowing in a channel to the sea or a lake; stone (noun): a lump or piece of hard solid mineral matter; "
        "quick (adjective): moving fast or doing something in a short time; "
        "listen (verb): give one's attention to a sound; "
    )
    ids = list(text.encode())
    assert len(ids) >= steps, len(ids)
    rng = random.Random(0)
    for name, path, tokens in (
        ("rwkv7-tiny-wordnet (trained, fp16 file)", SHIPPED, ids[:steps]),
        ("0.1B shape (random weights)", model_file("fp16"), [rng.randrange(65536) for _ in range(large_steps)]),
    ):
        agreement = top1_agreement(path, tokens)
        cells = " | ".join(f"{top1:.3f} ({delta:.1e})" for top1, delta in agreement.values())
        rows.append(f"| {name} | {len(tokens)} | {cells} |")
    columns = [column for column, _, _ in QUALITY_PLANS]
    return [
        "Top-1 agreement with the float32 reference over teacher-forced tokens, and in brackets the median over "
        "tokens of max |Δlogit| / the reference's logit range:",
        "",
        f"| model | tokens | {' | '.join(columns)} |",
        "|---" * (len(columns) + 2) + "|",
        *rows,
    ]


def bench_speed(tokens: int, repeats: int) -> list[str]:
    """Decode in the page, on the numpy plan, the numpy reference and the `rwkv` package (the CPU peer), in one run."""
    rows, variant_rows = [], []
    peer = peer_speed(model_file("fp32"), tokens, repeats)
    for dtype in ("fp16", "fp32"):
        gpu, cpu = page_run(dtype, tokens, repeats), numpy_run(dtype, tokens, repeats)
        page = median(gpu["decode"])
        versus_peer = f"{page / median(peer['decode']):.3f}x" if peer else "-"
        rows.append(
            f"| {dtype} | {spread(gpu['decode'])} | {versus_peer} | "
            f"{gpu['bytes_per_token'] / 1e6:.0f} MB, {gpu['bytes_per_token'] * page / 1e9:.2f} GB/s | "
            f"{spread(cpu['decode'], 1)} | {spread(cpu['reference'], 1)} | "
            f"{gpu['load_s']:.1f} | {gpu['gpu_bytes'] / 2**20:.0f} | {gpu['adapter']} / {gpu['matvec']} |"
        )
        variant_rows += [f"| {dtype} | {name} | {ms:.0f} |" for name, ms in gpu["variants"].items()]
    peer_row = (
        f"| fp32 | {spread(peer['decode'], 1)} | `rwkv` {peer['version']}, torch {peer['torch']} CPU |"
        if peer
        else "| - | - | not run: torch is not installed (`pip install torch==2.13.0`) |"
    )
    return [
        f"Decode speed, 0.1B shape, {tokens} tokens after an {len(PROMPT)}-token prompt, tokens/s as "
        f"min / median / max of {repeats} runs:",
        "",
        "| weights | webgpu (browser) | page / peer (median) | weights read per token, at that speed | "
        "numpy plan | numpy reference | load s | GPU MiB | adapter / matvec |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "The peer on the same weights (tokens/s, min / median / max):",
        "",
        "| weights | decode | engine |",
        "|---|---|---|",
        peer_row,
        "",
        "One decode step by matvec variant on the browser's adapter (ms):",
        "",
        "| weights | variant | ms/token |",
        "|---|---|---|",
        *variant_rows,
    ]


PREFILL_PROMPT = [(7919 * i) % 65000 + 1 for i in range(512)]
SHIPPED = os.path.join(ROOT, "models", "rwkv7-tiny-wordnet.st")


def bench_overhead(tokens: int, repeats: int) -> list[str]:
    """Where a decoded token's time goes in the page: the GPU work of one step (decode + sample, timed on
    the bridge alone, one submission each) against the whole token as generate() delivers it."""
    rows, rows_profile = [], []
    for name, run in (
        ("rwkv7-tiny-wordnet (shipped)", page_run("shipped", max(tokens, 200), repeats)),
        ("0.1B shape fp16", page_run("fp16", tokens, repeats)),
    ):
        rows_profile.append((name, run["profile"]))
        typical, step_ms, read = median(run["decode"]), run["step_ms"], run["bytes_per_token"]
        rows.append(
            f"| {name} | {spread(run['decode'], 1)} | {1000 / typical:.2f} | {step_ms:.2f} | "
            f"{spread(run['outside_ms'])} | {run['dispatches']} ({run['per_layer']:.0f} per layer) | "
            f"{read / 1e6:.1f} MB, {read / step_ms / 1e6:.2f} GB/s |"
        )
    return [
        *kernel_profile(rows_profile),
        "",
        f"Decode in the page: tokens/s (min / median / max of {repeats} runs); the GPU work of one step (decode + "
        "sample on the bridge alone,",
        "one submission each); and the time per token outside the GPU: the decode time the engine spent anywhere but",
        "in the bridge's calls (submitting batches, awaiting their read-backs), i.e. Python in Pyodide, text, "
        "messages (stats.backend_seconds):",
        "",
        "| model | tok/s | ms/token | GPU step ms | outside the GPU ms/token | dispatches per token | weights read per "
        "step, GPU step's rate |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def profile_by_kernel(page, plan: dict, programs: list[str], runs: int = 10) -> dict[str, tuple[int, float]]:
    """Where a decode step's GPU time goes, without timestamp queries: per shader file, a program of only
    that shader's dispatches (same bindings, same order) timed on the bridge alone. {shader: (dispatches, ms)}"""
    steps = [step for program in programs for step in plan["programs"][program] if "kernel" in step]
    shaders = sorted({plan["kernels"][step["kernel"]]["shader"] for step in steps})
    profile = {}
    for shader in shaders:
        only = [step for step in steps if plan["kernels"][step["kernel"]]["shader"] == shader]
        subset = {**plan, "programs": {"profiled": only}}
        profile[shader] = (len(only), page.evaluate(TIME_PLAN_JS, [subset, runs, ["profiled"]])[0])
    return profile


def kernel_profile(rows: list[tuple[str, dict]]) -> list[str]:
    lines = [
        "Where a decode step's GPU time goes: per shader, a program of only its dispatches timed on the bridge "
        "alone (ms; the sum can differ from the whole step's time a little):",
        "",
        "| model | shader | dispatches | ms | µs per dispatch |",
        "|---|---|---|---|---|",
    ]
    for name, profile in rows:
        for shader, (count, ms) in sorted(profile.items(), key=lambda item: -item[1][1]):
            lines.append(f"| {name} | {shader} | {count} | {ms:.2f} | {1000 * ms / count:.0f} |")
    return lines


PAGE_PROMPT = 64  # the page's prefill rows: one chunk of 64 (a 512-token prompt takes minutes on SwiftShader)


def bench_file(name: str) -> str:
    """The shipped model, or the 0.1B shape stored as fp16 / fp32."""
    return SHIPPED if name == "shipped" else model_file(name)


def progress(message: str) -> None:
    """A line on stderr while a table is measured: the full run takes minutes, and this says where they go."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def page_run(name: str, tokens: int, repeats: int) -> dict:
    """Everything the tables measure of one model file in the page, in one session (a 0.1B load costs 10-20 s, a
    token ~0.7 s on SwiftShader, so the speed, overhead and prefill tables share it): load; `repeats` decodes of
    `tokens` with the time spent outside the GPU; then, except for the fp32 file (the speed table's second row):
    prefill of PAGE_PROMPT tokens and one embed() of them, the GPU step alone and by shader, one step per
    matvec variant."""
    from rwkvweb.config import model_config
    from rwkvweb.model import DECODE, MATVEC_VARIANTS, SAMPLE, compile_model, keep
    from rwkvweb.pth import open_model_file

    path = bench_file(name)
    tensors = open_model_file(path).tensors
    config = model_config(tensors)
    prompt = [t % config.vocab_size for t in PREFILL_PROMPT[:PAGE_PROMPT]]  # the shipped model has 256 ids
    detail = name != "fp32"

    def timing_plan(matvec: str):
        compiled = compile_model(config, tensors, matvec=matvec)
        plan = compiled.plan.to_json()
        plan["fills"] = []  # timing only: weights stay zero, the work is the same
        return compiled, plan

    with headless_engine(path) as engine:
        progress(f"page, {name}: load")
        loaded = engine.load(path)
        engine.call("generate", {"prompt": PROMPT, "options": {"max_tokens": 2}})  # warm the pipelines
        progress(f"page, {name}: decode")
        options = {"max_tokens": tokens, "temperature": 1.0, "top_p": 0.85}
        decodes = [engine.call("generate", {"prompt": PROMPT, "options": options}) for _ in range(repeats)]
        compiled, plan = timing_plan(loaded["matvec"])
        prefills, embed_ms, step_ms, profile, variants = [], None, None, None, {}
        if detail:
            progress(f"page, {name}: prefill and embed")
            prefills = [
                engine.call("generate", {"prompt": prompt, "options": {"max_tokens": 1}}) for _ in range(repeats)
            ]
            started = time.perf_counter()
            engine.call("embed", {"ids": prompt})
            embed_ms = (time.perf_counter() - started) * 1000
            progress(f"page, {name}: the GPU step, by shader and by variant")
            step_ms = engine.page.evaluate(TIME_PLAN_JS, [plan, 10, [DECODE, SAMPLE, keep(0)]])[0]
            profile = profile_by_kernel(engine.page, plan, [DECODE, SAMPLE])
            variants = {
                v: engine.page.evaluate(TIME_PLAN_JS, [timing_plan(v)[1], 1, [DECODE]])[0] for v in MATVEC_VARIANTS
            }
    kernels = [step for program in (DECODE, SAMPLE) for step in plan["programs"][program] if "kernel" in step]
    return {
        "load_s": loaded["seconds"],
        "gpu_bytes": loaded["gpu"]["bytesAllocated"],
        "adapter": loaded["device"]["architecture"] or loaded["device"]["vendor"],
        "matvec": loaded["matvec"],
        "bytes_per_token": weight_bytes_per_token(compiled),
        "decode": [r["tokens_per_second"] for r in decodes],
        "outside_ms": [1000 * (r["decode_seconds"] - r["backend_seconds"]) / (r["generated"] - 1) for r in decodes],
        "prefill": [len(prompt) / r["prefill_seconds"] for r in prefills],
        "embed_ms": embed_ms,
        "step_ms": step_ms,
        "profile": profile,
        "dispatches": len(kernels),
        "per_layer": sum(1 for step in plan["programs"][DECODE] if "kernel" in step) / config.n_layer,
        "variants": variants,
    }


@functools.lru_cache(maxsize=None)
def numpy_run(dtype: str, tokens: int, repeats: int) -> dict:
    """The same plan on the numpy executor (the CPU fallback): decode after PROMPT; for fp16, the 512-token prompt
    and one embed() of it; and the numpy reference token by token (it has no prefill of its own)."""
    path = model_file(dtype)
    progress(f"numpy, {dtype}")

    async def plan_runs():
        model = await Model.load(path, tokenizer_for=lambda c, m: None)
        decodes = [(await model.generate(PROMPT, tokens, temperature=1.0, top_p=0.85)).stats for _ in range(repeats)]
        if dtype == "fp32":
            return decodes, [], None, model.engine.compiled.chunk
        prefills = [(await model.generate(PREFILL_PROMPT, 1)).stats for _ in range(repeats)]
        started = time.perf_counter()
        await model.embed(PREFILL_PROMPT)
        return decodes, prefills, (time.perf_counter() - started) * 1000, model.engine.compiled.chunk

    decodes, prefills, embed_ms, chunk = asyncio.run(plan_runs())
    reference, reference_speeds = RWKV7.load(path), []
    for _ in range(repeats):
        state = State.zeros(SHAPE)
        started = time.perf_counter()
        for token in PREFILL_PROMPT[:tokens]:
            _, state = reference.forward(token, state)
        reference_speeds.append(tokens / (time.perf_counter() - started))
    return {
        "decode": [stats.tokens_per_second for stats in decodes],
        "prefill": [len(PREFILL_PROMPT) / stats.prefill_seconds for stats in prefills],
        "embed_ms": embed_ms,
        "chunk": chunk,
        "reference": reference_speeds,
    }


@functools.lru_cache(maxsize=None)
def peer_speed(path: str, tokens: int, repeats: int) -> dict | None:
    """The `rwkv` pip package (torch CPU, RWKV_V7_ON=1) on the same weights, converted in memory to
    the .pth it reads: decode and the 512-token prompt in one call, `repeats` times each."""
    try:
        import torch
    except ImportError:
        return None
    import tempfile

    os.environ["RWKV_V7_ON"] = "1"  # read when rwkv.model is imported
    from rwkv.model import RWKV

    from rwkvweb.safetensors import SafetensorsFile

    progress("the peer: converting the weights, then decode and prefill")
    file = SafetensorsFile(path)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(
            {name: torch.from_numpy(file.read_array(name, "float32").copy()) for name in file.tensors},
            os.path.join(folder, "m.pth"),
        )
        model = RWKV(model=os.path.join(folder, "m"), strategy="cpu fp32")
    decode, prefill = [], []
    for _ in range(repeats):
        out, state = model.forward(PREFILL_PROMPT[:8], None)
        started = time.perf_counter()
        for _ in range(tokens):
            out, state = model.forward([int(out.argmax())], state)
        decode.append(tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        model.forward(PREFILL_PROMPT, None)
        prefill.append(len(PREFILL_PROMPT) / (time.perf_counter() - started))
    version = importlib.metadata.version("rwkv")
    return {"decode": decode, "prefill": prefill, "torch": torch.__version__, "version": version}


def bench_prefill(tokens: int, repeats: int) -> list[str]:
    """Prefill vs decode per token and embed(), the page beside the CPU paths and the peer."""
    rows = []
    for dtype in ("fp16", "fp32"):  # fp32 decode only: the speed table's second row
        rows.append(_speed_row(f"webgpu (browser), {dtype}", DEFAULT_CHUNK, page_run(dtype, tokens, repeats)))
        plan = numpy_run(dtype, tokens, repeats)
        rows.append(_speed_row(f"numpy plan, {dtype}", plan["chunk"], plan))
    rows.append(_speed_row("numpy reference, fp32", 1, {"decode": numpy_run("fp32", tokens, repeats)["reference"]}))
    peer = peer_speed(model_file("fp32"), tokens, repeats)
    rows.append(
        _speed_row(f"`rwkv` {peer['version']}, torch {peer['torch']} CPU fp32", "-", peer)
        if peer
        else "| `rwkv` package | - | not run: torch is not installed (`pip install torch==2.13.0`) |"
    )
    return [
        f"RWKV-7 0.1B shape: prefill of a {len(PREFILL_PROMPT)}-token prompt (the page: its first {PAGE_PROMPT}) and "
        f"decode of {tokens} tokens after an {len(PROMPT)}-token one, tokens/s as min / median / max of {repeats} "
        "runs; one embed() of the prompt; fp32 decodes only (the speed table):",
        "",
        "| engine | chunk | prefill tok/s | decode tok/s | prefill / decode (medians) | embed ms |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _speed_row(engine: str, chunk, speed: dict) -> str:
    prefill, decode = speed.get("prefill"), speed["decode"]
    ratio = f"{median(prefill) / median(decode):.1f}x" if prefill else "-"
    embed = f"{speed['embed_ms']:.0f}" if speed.get("embed_ms") else "-"
    return f"| {engine} | {chunk} | {spread(prefill, 1) if prefill else '-'} | {spread(decode)} | {ratio} | {embed} |"


def bench_tokenizers() -> list[str]:
    """The tokenizer table (build/bench_tokenizers.py): CPython and the site's Pyodide."""
    from build.bench_tokenizers import markdown, tokenizer_table

    return [
        "Tokenizer encode speed (`python -m build.bench_tokenizers` prints this table alone):",
        "",
        markdown(tokenizer_table()),
    ]


def bench_wgpu(tokens: int, repeats: int) -> list[str]:
    """The 0.1B shape natively through wgpu (what `python -m rwkvweb generate … --backend wgpu` loads): decode, and
    prefill of a synthetic prompt (the CLI's --prompt-tokens ids), after one warm-up that compiles the pipelines.
    On a GPU: a 512-token prompt, `repeats` runs; on a CPU adapter (lavapipe decodes ~1 tok/s and prefills ~5 here,
    and the page's tables already time a CPU) a PAGE_PROMPT-token prompt, one run."""
    from rwkvweb.wgpu_exec import WgpuBackend

    async def run():
        backend = WgpuBackend()
        cpu = backend.info()["adapter_type"] == "CPU"
        prompt_tokens, count = (PAGE_PROMPT, 1) if cpu else (len(PREFILL_PROMPT), repeats)
        model = await Model.load(
            model_file("fp16"),
            backend=backend,
            matvec=backend.matvec,
            max_binding=backend.max_binding,
            tokenizer_for=lambda config, metadata: None,
        )
        await model.generate(PROMPT, 2)
        prompt = [(7919 * i) % 255 + 1 for i in range(prompt_tokens)]
        runs = [(await model.generate(prompt, tokens, temperature=1.0, top_p=0.85)).stats for _ in range(count)]
        precisions = "/".join(sorted(model.budget_plan.to_json()["matrices_by_precision"]))
        return backend.info(), runs, precisions, weight_bytes_per_token(model.engine.compiled), prompt_tokens

    info, runs, precisions, read, prompt_tokens = asyncio.run(run())
    decode = [stats.tokens_per_second for stats in runs]
    return [
        f"Native (wgpu-py on {info['backend']}, adapter: {info['adapter']}), 0.1B shape, fp16 file "
        f"({tokens} tokens after a {prompt_tokens}-token prompt; min / median / max of {len(runs)} runs):",
        "",
        "| model | matrices | decode tok/s | prefill tok/s | weights read per token, at the median | matvec "
        "| adapter |",
        "|---|---|---|---|---|---|---|",
        f"| 0.1B shape | {precisions} | {spread(decode)} | "
        f"{spread([stats.prompt_tokens / stats.prefill_seconds for stats in runs], 1)} | "
        f"{read / 1e6:.0f} MB, {read * median(decode) / 1e9:.2f} GB/s | "
        f"{info['matvec']} | native: {info['adapter']} ({info['adapter_type']}) |",
    ]


BENCHES = {
    "speed": bench_speed,
    "overhead": bench_overhead,
    "prefill": bench_prefill,
    "precisions": bench_precisions,
    "budgets": bench_budgets,
    "quality": lambda tokens, repeats: bench_quality(),
    "tokenizers": lambda tokens, repeats: bench_tokenizers(),
    "wgpu": bench_wgpu,
    "matvec": bench_matvec,
    "dp4a": bench_dp4a,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16, help="tokens to decode per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (min / median / max printed)")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these tables")
    args = parser.parse_args()
    started = time.perf_counter()
    for name in args.only or BENCHES:
        print(f"\n## {name}\n")
        section = time.perf_counter()
        print("\n".join(BENCHES[name](args.tokens, args.repeats)), flush=True)
        print(f"\n({name}: {time.perf_counter() - section:.0f} s)", flush=True)
    print(f"\n(all: {(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
