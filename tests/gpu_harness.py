"""Run plans on the browser's WebGPU bridge (headless Chromium) and on the numpy executor, and check a
generated model run there against its numpy reference (the harness of test_model*_gpu.py, test_prefill_gpu.py).

The page is a blank document on the test server's origin, so `import()` loads the site's own
bridge modules; no Pyodide is involved: this tier tests kernels, the bridge and plans.
"""

from __future__ import annotations

import base64

import numpy as np

from rwkvweb.budget import parse_bytes, plan_budget
from rwkvweb.config import fresh_state
from rwkvweb.headless import open_blank
from rwkvweb.numpy_exec import NumpyExecutor
from rwkvweb.reference import load
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model

# Shared start of the page functions below: base64 out, the site's bridge on one cached device.
BRIDGE_SETUP_JS = """
  const toB64 = (buf) => {
    const u = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const { requestDevice } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  window.__gpu ??= await requestDevice();
  const bridge = new Bridge(window.__gpu.device, new URL("/shaders/", location.href), window.__gpu.adapter);
"""

RUN_PLAN_JS = (
    """
async ({plan, initial, program, steps, reads, model}) => {
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
"""
    + BRIDGE_SETUP_JS
    + """  try {
    await bridge.load(plan);
    if (model) {
      const file = await (await fetch(model)).arrayBuffer();
      await bridge.fill(plan.fills, (start, end) => file.slice(start, end));
    }
    for (const [buffer, data] of Object.entries(initial)) bridge.write(Number(buffer), 0, b64(data));
    const results = [];
    for (const writes of steps) {
      bridge.run(program, writes.map(([buffer, offset, data]) => ({ buffer, offset, data: b64(data) })));
      const read = {};
      for (const [buffer, offset, size] of reads) {
        read[`${buffer}:${offset}`] = toB64(await bridge.read(buffer, offset, size));
      }
      results.push(read);
    }
    return { results, info: bridge.info() };
  } finally {
    bridge.destroy();
  }
}
"""
)


def blank_page(page, server):
    return open_blank(page, server.url)


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


FEATURES_JS = (
    """
async () => {
"""
    + BRIDGE_SETUP_JS
    + """  return [...window.__gpu.device.features, ...(navigator.gpu.wgslLanguageFeatures || [])];
}
"""
)


def device_features(page) -> set[str]:
    """The WebGPU features of the device the kernels run on and the WGSL language features of its shader compiler
    (the page's, or a native GPU's `features`)."""
    if hasattr(page, "run_plan"):
        return set(page.features)
    return set(page.evaluate(FEATURES_JS))


def run_in_browser(
    page,
    plan: dict,
    initial: dict[int, bytes],
    program: str,
    steps: list[list[tuple[int, int, bytes]]],
    reads: list[tuple[int, int, int]],
    model_url: str | None = None,
    model_bytes: bytes | None = None,
):
    """Run `program` once per entry of `steps` (each a list of writes); read `reads` after each; the plan's
    fills come from the file at `model_url` (the page fetches it), the same as `model_bytes` (a native GPU's).
    `page` may also be a native GPU with the same run_plan (test_wgpu_exec.py runs test_kernels.py's cases so)."""
    if hasattr(page, "run_plan"):
        return page.run_plan(plan, initial, program, steps, reads, model_bytes)
    out = page.evaluate(
        RUN_PLAN_JS,
        {
            "plan": plan,
            "initial": {str(k): encode(v) for k, v in initial.items()},
            "program": program,
            "steps": [[[b, o, encode(d)] for b, o, d in writes] for writes in steps],
            "reads": [list(r) for r in reads],
            "model": model_url,
        },
    )
    results = [{key: base64.b64decode(value) for key, value in step.items()} for step in out["results"]]
    return results, out["info"]


def run_in_numpy(plan: dict, initial: dict[int, bytes], program: str, steps, reads, model_bytes: bytes | None = None):
    executor = NumpyExecutor(plan)
    if model_bytes is not None:
        executor.fill_from(model_bytes)
    for buffer, data in initial.items():
        executor.write(buffer, 0, data)
    results = []
    for writes in steps:
        for buffer, offset, data in writes:
            executor.write(buffer, offset, data)
        executor.run(program)
        results.append({f"{b}:{o}": executor.read(b, o, s) for b, o, s in reads})
    return results


def floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.float32)


RUN_MODEL_JS = (
    """
async ({plan, model, tokens, greedy, token, logits, state, fresh}) => {
"""
    + BRIDGE_SETUP_JS
    + """  try {
    await bridge.load(plan);
    const file = await (await fetch(model)).arrayBuffer();
    await bridge.fill(plan.fills, (start, end) => file.slice(start, end));
    bridge.write(state[0], state[1], Uint8Array.from(atob(fresh), (c) => c.charCodeAt(0)));
    const rows = [];
    const chosen = [];
    const vocab = logits[2] / 4;
    let next = tokens[0];
    const started = performance.now();
    for (let i = 0; i < tokens.length + greedy; i++) {
      const id = i < tokens.length ? tokens[i] : next;
      bridge.run("decode", [{ buffer: token[0], offset: token[1], data: new Uint32Array([id]) }]);
      const out = new Float32Array(await bridge.read(...logits));
      if (i < tokens.length) rows.push(toB64(out.buffer));
      let best = 0;
      for (let j = 1; j < vocab; j++) if (out[j] > out[best]) best = j;
      if (i >= tokens.length - 1) { chosen.push(best); next = best; }
    }
    const seconds = (performance.now() - started) / 1000;
    const finalState = toB64(await bridge.read(...state));
    return { rows, greedy: chosen.slice(0, greedy), state: finalState, info: bridge.info(), seconds };
  } finally {
    bridge.destroy();
  }
}
"""
)


def run_model_in_browser(page, compiled, model_url: str, tokens: list[int], greedy: int = 0) -> dict:
    """Teacher-force `tokens`, then decode `greedy` more by argmax; logits rows, greedy ids, final state."""
    view = lambda v: [v.buffer, v.offset, v.size]  # noqa: E731
    out = page.evaluate(
        RUN_MODEL_JS,
        {
            "plan": compiled.plan.to_json(),
            "model": model_url,
            "tokens": tokens,
            "greedy": greedy,
            "token": view(compiled.token),
            "logits": view(compiled.logits),
            "state": view(compiled.state),
            "fresh": encode(fresh_state(compiled.config)),  # what the engine writes (RWKV-4's pp is not 0)
        },
    )
    out["rows"] = np.stack([floats(base64.b64decode(r))[: compiled.config.vocab_size] for r in out["rows"]])
    out["state"] = base64.b64decode(out["state"])
    return out


RUN_PREFILL_JS = (
    """
async ({plan, model, tokens, chunk, views, fresh}) => {
"""
    + BRIDGE_SETUP_JS
    + """  const u32 = (...values) => new Uint32Array(values);
  const readLogits = async () => toB64(await bridge.read(...views.logits));
  const freshState = Uint8Array.from(atob(fresh), (c) => c.charCodeAt(0));
  try {
    await bridge.load(plan);
    const file = await (await fetch(model)).arrayBuffer();
    await bridge.fill(plan.fills, (start, end) => file.slice(start, end));
    bridge.write(views.state[0], views.state[1], freshState);
    const decode = [];
    for (const id of tokens) {
      bridge.run("decode", [{ buffer: views.token[0], offset: views.token[1], data: u32(id) }]);
      decode.push(await readLogits());
    }
    const decodeState = toB64(await bridge.read(...views.state));
    bridge.write(views.state[0], views.state[1], freshState);
    const prefill = [];
    for (let start = 0; start < tokens.length; start += chunk) {
      const ids = tokens.slice(start, start + chunk);
      bridge.run("prefill", [{ buffer: views.tokens[0], offset: views.tokens[1], data: u32(...ids) },
                             { buffer: views.count[0], offset: views.count[1], data: u32(ids.length) }]);
      for (let row = 0; row < ids.length; row++) {
        bridge.run("head_last", [{ buffer: views.count[0], offset: views.count[1], data: u32(row + 1) }]);
        prefill.push(await readLogits());
      }
    }
    return { decode, prefill, decodeState, prefillState: toB64(await bridge.read(...views.state)) };
  } finally {
    bridge.destroy();
  }
}
"""
)


def run_prefill_in_browser(page, compiled, model_url: str, tokens: list[int]) -> dict:
    """The same tokens through the plan twice: one decode submission per token, then prefill chunks
    of compiled.chunk with the head run for every row. Logits rows [T, V] and final state of each."""
    names = ("token", "tokens", "count", "logits", "state")
    views = {n: [getattr(compiled, n).buffer, getattr(compiled, n).offset, getattr(compiled, n).size] for n in names}
    out = page.evaluate(
        RUN_PREFILL_JS,
        {
            "plan": compiled.plan.to_json(),
            "model": model_url,
            "tokens": tokens,
            "chunk": compiled.chunk,
            "views": views,
            "fresh": encode(fresh_state(compiled.config)),  # what the engine writes (RWKV-4's pp is not 0)
        },
    )
    vocab = compiled.config.vocab_size
    for key in ("decode", "prefill"):
        out[key] = np.stack([floats(base64.b64decode(r))[:vocab] for r in out[key]])
    for key in ("decodeState", "prefillState"):
        out[key] = floats(base64.b64decode(out[key]))
    return out


# A generated model checked on the page: the same harness for every version (test_model*_gpu.py, test_prefill_gpu.py).


def plan_generated_model(path, cfg, seed: int, precision: str, matvec: str, chunk: int):
    """Write a generated model to `path` (fp32 for an fp32 plan, fp16 otherwise) and plan it at `precision`
    under a 1 GB budget, with 64 KiB bindings so that the head and embedding split into parts."""
    write_test_model(str(path), cfg, seed=seed, dtype="fp32" if precision == "fp32" else "fp16")
    tensors = SafetensorsFile(str(path)).tensors
    return plan_budget(cfg, tensors, parse_bytes("1GB"), precision, max_binding=64 * 1024, matvec=matvec, chunk=chunk)


def check_prefill_and_reference(
    page, url: str, path, compiled, tokens: list[int], same_plan: float, reference: float | None, against: str
) -> None:
    """Teacher-force `tokens` through `compiled` on the page twice (run_prefill_in_browser, the model at `url`)
    and assert prefill equals decode, logits and final state, within `same_plan` of the logit range (of the
    state's scale, at least 1). Unless `reference` is None (a quantized plan: the numpy reference does not
    quantize), the `against` path's ("decode" or "prefill") logits and state must equal the numpy reference
    of the file at `path` within `reference` of its range (of the same state scale). The callers state why
    their bounds hold."""
    got = run_prefill_in_browser(page, compiled, url, tokens)
    scale = got["decode"].max() - got["decode"].min()
    state_scale = max(1.0, np.abs(got["decodeState"]).max())
    print(f"prefill vs decode: {np.abs(got['prefill'] - got['decode']).max() / scale:.1e} of the range")
    assert np.abs(got["prefill"] - got["decode"]).max() <= same_plan * scale
    assert np.abs(got["prefillState"] - got["decodeState"]).max() <= same_plan * state_scale
    if reference is None:
        return
    expected, state = load(str(path)).logits(tokens)
    error = np.abs(got[against] - expected).max() / (expected.max() - expected.min())
    print(f"{against} vs reference: {error:.1e} of the range")
    assert error <= reference
    assert np.abs(got[against + "State"] - floats(state.to_bytes())).max() <= reference * state_scale


def greedy_reference(model, tokens: list[int], steps: int):
    """The reference's logits rows for the teacher-forced `tokens`, the `steps` ids that argmax decoding
    then chooses, and the state after them (what run_model_in_browser's greedy run must reproduce)."""
    rows, state = model.logits(tokens)
    chosen, logits = [], rows[-1]
    for _ in range(steps):
        chosen.append(int(np.argmax(logits)))
        logits, state = model.forward(chosen[-1], state)
    return rows, chosen, state


def check_greedy(got: dict, path, tokens: list[int], steps: int, bound: float) -> None:
    """run_model_in_browser's `got` (teacher-forced `tokens`, then `steps` greedy ids) against the numpy
    reference of the file at `path`: logits rows within `bound` of their range, the same ids, and the final
    state within `bound` of the GPU state's scale (at least 1)."""
    expected, chosen, state = greedy_reference(load(str(path)), tokens, steps)
    assert np.abs(got["rows"] - expected).max() <= bound * (expected.max() - expected.min())
    assert got["greedy"] == chosen
    gpu_state = floats(got["state"])
    assert np.abs(gpu_state - floats(state.to_bytes())).max() <= bound * max(1.0, np.abs(gpu_state).max())


def check_dp4a_logits(got: np.ndarray, same_plan: np.ndarray, plain: np.ndarray) -> None:
    """A +dp4a plan's logits from a GPU (`got`) and from numpy on the same plan (`same_plan`), both against the float
    int8 plan (`plain`, the same weights with x unrounded). Not the 1e-5 of other same-plan tests: both round x to 8
    bits per block, and where the GPU's f32 x differs from numpy's in the last bits next to a rounding boundary, a
    code differs by one (about one per token in these models), and the recurrent state carries that on; two runs are
    then two draws of the same activation-rounding noise (measured: the GPU's deviation from the float plan is 0.8-1.3
    times numpy's on six generated models, lavapipe and SwiftShader). So: the GPU's deviation is at most twice
    numpy's, and numpy's is real (x was rounded). A wrong slice, scale or code breaks this by tens of times (a
    deviation of 0.1-1 of the range)."""
    scale = plain.max() - plain.min()
    ours, theirs = (float(np.abs(rows - plain).max() / scale) for rows in (got, same_plan))
    print(f"+dp4a vs the float int8 plan: gpu {ours:.1e}, numpy {theirs:.1e} of the range")
    assert got.shape == same_plan.shape == plain.shape
    assert 1e-5 < theirs and ours <= 2 * theirs


def dp4a_plan(folder) -> dict:
    """A one-layer RWKV-7 (C = 128: every K holds whole blocks of 128) with its matrices int8, planned under
    rows-wg+dp4a: what an executor without the WGSL feature must refuse."""
    from rwkvweb.config import ModelConfig
    from rwkvweb.model import compile_model

    path = str(folder / "dp4a.st")
    config = ModelConfig.default_for(1, 128, 256, head_size=64)
    write_test_model(path, config, seed=3, dtype="fp16")
    tensors = SafetensorsFile(path).tensors
    int8 = {name: "int8" for name, info in tensors.items() if len(info.shape) == 2 and name != "emb.weight"}
    return compile_model(config, tensors, matvec="rows-wg+dp4a", precisions=int8).plan.to_json()
