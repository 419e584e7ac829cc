"""One matvec per shape, layout and weight dtype, timed alone:  python -m build.bench --only matvec

The kernel lab for matvec.wgsl's variants (model.MATVEC_VARIANTS and MATVEC_OPTIONS): a plan of DISPATCHES
copies of one dispatch (the same bindings, no accumulation: every copy does the same work), weights left
zero (timing only: the work does not depend on the values), timed per dispatch
  - in headless Chromium on the page's adapter (SwiftShader here) through the bridge, and
  - natively through wgpu (lavapipe here), where the f16 and subgroup options can run.
Each cell is min / median / max over `repeats` timings of RUNS submissions of the program.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from rwkvweb import ops
from rwkvweb.headless import headless_engine
from rwkvweb.model import matvec_variant
from rwkvweb.plan import Plan

DISPATCHES = 8  # one submission's dispatches: the ~0.3 ms of a submit and read-back shared by 8
RUNS = 3
SHAPES = ((768, 768), (3072, 768))  # [M, K]: 0.1B's projections and its FFN key (its value, 768 × 3072, times alike)
# (weight dtype, variant name): what each backend compares; quantized "rows" is what a "cols" plan stored them
# as before k-major blocks, quantized "cols" the k-major blocks
PAGE_CASES = [
    ("f16", "cols"),
    ("int8", "rows"),
    ("int8", "cols"),
    ("nf4", "rows"),
    ("nf4", "cols"),
    ("f16", "rows-wg"),
    ("f16", "rows-wg+subgroups"),
]
NATIVE_CASES = [
    ("f16", "cols"),
    ("f16", "cols+f16"),
    ("f16", "rows-wg"),
    ("f16", "rows-wg+subgroups"),
    ("f16", "rows-wg+subgroups+f16"),
    ("int8", "rows"),
    ("int8", "cols"),
    ("nf4", "rows"),
    ("nf4", "cols"),
]

# int8 weights with and without packed dot products (+dp4a: each matvec with its quantize_x dispatch, as in a plan):
# the 0.1B's projections and its head
DP4A_SHAPES = ((768, 768), (65536, 768))
DP4A_CASES = [
    ("int8", "rows"),  # what a "cols" plan stores int8 as (model.K_MAJOR_SCHEMES)
    ("int8", "cols"),
    ("int8", "rows-wg"),
    ("int8", "rows-wg+dp4a"),
    ("int8", "rows-wg+subgroups"),
    ("int8", "rows-wg+subgroups+dp4a"),
]

# The time of one submission of a plan's `programs` through the site's bridge in the page (ms): `timings` of them,
# each the mean over `runs` submissions, after one that compiles and warms. One bridge serves every plan a page
# times: its pipelines compile once.
TIME_PLAN_JS = """
async ([plan, runs, programs, timings = 1]) => {
  const { requestDevice } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  window.__gpu ??= await requestDevice();
  window.__bridge ??= new Bridge(window.__gpu.device, new URL("/shaders/", location.href), window.__gpu.adapter);
  const bridge = window.__bridge;
  try {
    await bridge.load(plan);  // timing only: weights stay zero, the work is the same
    bridge.run(programs);
    await bridge.read(0, 0, 4);
    const times = [];
    for (let timing = 0; timing < timings; timing++) {
      const started = performance.now();
      for (let i = 0; i < runs; i++) bridge.run(programs);
      await bridge.read(0, 0, 4);
      times.push((performance.now() - started) / runs);
    }
    return times;
  } finally {
    bridge.destroy();
  }
}
"""


def repeats_for(M: int, K: int) -> tuple[int, int]:
    """(dispatches per submission, submissions per timing): DISPATCHES and RUNS, but one of each for a head-sized
    matrix (65536 × 768: seconds a dispatch on SwiftShader in the rows-wg layout)."""
    return (DISPATCHES, RUNS) if M * K <= 1 << 23 else (1, 1)


def matvec_plan(dtype: str, variant: str, M: int, K: int) -> dict:
    """DISPATCHES copies of one [M, K] matvec in the variant's layout (+dp4a: each after its quantize_x)."""
    options = matvec_variant(variant)
    plan = Plan()
    if options.pop("dp4a"):
        options["xq"] = plan.buffer("xq", ops.quantized_x_bytes(K, 1), "scratch")
    m_pad = M if options["row_major"] else -(-M // 4) * 4
    weight = plan.buffer("w", ops.weight_bytes(dtype, m_pad * K), "weight")
    x, out = plan.buffer("x", K * 4, "scratch"), plan.buffer("out", M * 4, "scratch")
    for _ in range(repeats_for(M, K)[0]):
        ops.matvec(plan, "timed", weight, dtype, x, out, M, K, **options)
    return plan.to_json()


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return " / ".join(f"{v:.2f}" for v in (ordered[0], ordered[len(ordered) // 2], ordered[-1]))


def page_times(repeats: int, cases=PAGE_CASES, shapes=SHAPES) -> dict[tuple, list[float]]:
    """ms per dispatch in headless Chromium for every case × shape (PAGE_CASES × SHAPES)."""
    times = {}
    with tempfile.TemporaryDirectory() as folder:
        with headless_engine(os.path.join(folder, "none.st")) as engine:  # the site's bridge; no model loaded
            for case in cases:
                for M, K in shapes:
                    plan, (dispatches, runs) = matvec_plan(*case, M, K), repeats_for(M, K)
                    timings = engine.page.evaluate(TIME_PLAN_JS, [plan, runs, ["timed"], repeats])
                    times[(*case, M, K)] = [ms / dispatches for ms in timings]
                    print(f"  {case} {M}x{K}: {spread(times[(*case, M, K)])} ms", file=sys.stderr, flush=True)
    return times


def native_times(repeats: int, cases=NATIVE_CASES, shapes=SHAPES) -> dict[tuple, list[float]]:
    """ms per dispatch through wgpu (wgpu_exec.py) for every case × shape the device allows."""
    import asyncio

    from rwkvweb.wgpu_exec import WgpuBackend

    backend, times = WgpuBackend(), {}
    for dtype, variant in cases:
        if "+f16" in variant and "shader-f16" not in backend.features:
            continue
        if "+subgroups" in variant and "subgroups" not in backend.features:
            continue
        if "+dp4a" in variant and ops.DP4A_FEATURE not in backend.wgsl_features:
            continue
        for M, K in shapes:
            asyncio.run(backend.load(matvec_plan(dtype, variant, M, K)))
            dispatches, submissions = repeats_for(M, K)
            runs = []
            for _ in range(repeats + 1):  # the first compiles and warms
                started = time.perf_counter()
                for _ in range(submissions):
                    asyncio.run(backend.run(["timed"], []))
                asyncio.run(backend.read(0, 0, 4))
                runs.append((time.perf_counter() - started) * 1000 / submissions / dispatches)
            times[(dtype, variant, M, K)] = runs[1:]
            backend.destroy()
    return times


def table(title: str, times: dict[tuple, list[float]], shapes=SHAPES) -> list[str]:
    lines = [title, "", "| weights | variant | layout | " + " | ".join(f"{M}×{K} ms" for M, K in shapes) + " |"]
    lines.append("|---|---|---|" + "---|" * len(shapes))
    cases = list(dict.fromkeys(key[:2] for key in times))
    for dtype, variant in cases:
        layout = "k-major" if variant.startswith("cols") else "row-major"
        cells = [spread(times[(dtype, variant, M, K)]) for M, K in shapes]
        lines.append(f"| {dtype} | {variant} | {layout} | " + " | ".join(cells) + " |")
    return lines


def bench_matvec(tokens: int, repeats: int) -> list[str]:
    lines = table(
        f"One matvec dispatch in headless Chromium (ms, min / median / max of {repeats}):", page_times(repeats)
    )
    try:
        native = native_times(repeats)
    except Exception as error:  # no wgpu or no Vulkan driver: the browser table stands alone
        return lines + ["", f"(native wgpu skipped: {error})"]
    return lines + [""] + table(f"The same natively through wgpu (ms, min / median / max of {repeats}):", native)


def bench_dp4a(tokens: int, repeats: int) -> list[str]:
    """int8 matvecs with and without +dp4a (DP4A_CASES × DP4A_SHAPES), in the page and natively."""
    lines = table(
        f"int8 matvec dispatches (+dp4a: with its quantize_x) in headless Chromium (ms, min / median / max of "
        f"{repeats}, load average {os.getloadavg()[0]:.1f} at the start: the machine is shared):",
        page_times(repeats, DP4A_CASES, DP4A_SHAPES),
        DP4A_SHAPES,
    )
    load = os.getloadavg()[0]
    try:
        native = native_times(repeats, DP4A_CASES, DP4A_SHAPES)
    except Exception as error:  # no wgpu or no Vulkan driver: the browser table stands alone
        return lines + ["", f"(native wgpu skipped: {error})"]
    title = f"The same natively through wgpu (ms, load average {load:.1f} at its start):"
    return lines + [""] + table(title, native, DP4A_SHAPES)
