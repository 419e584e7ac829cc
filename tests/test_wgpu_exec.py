"""The native executor (wgpu_exec.py) on this machine's Vulkan adapter (lavapipe in CI) against numpy.

Three tiers, the browser's over again without a browser:
- every kernel case of test_kernels.py, run here on the native device (same plans, same numpy
  oracle, same tolerances: that module's docstring says why they hold);
- whole generated models (1-4 heads, fp32/fp16/int8/NF4, chunked prefill) through Model.load with
  the native backend vs the same plan on the numpy backend: float32 in another summation order only,
  ≤ 1e-5 of the logit range (the bound test_prefill_gpu.py holds on one plan; observed ~3e-7 here),
  and vs the numpy reference at test_model_gpu.py's 1e-3 for fp32/fp16 files;
- the CLI's `--backend wgpu` JSON vs `--backend numpy` (test_cli.py's bounds).
Skipped where wgpu-py or a Vulkan driver is missing, except under CI, where .ci/run installs both
and a skip would hide a broken install: there it fails.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import test_kernels
from conftest import run_async
from rwkvweb.api import Model
from rwkvweb.config import ModelConfig
from rwkvweb.plan import Plan
from rwkvweb.reference import load
from rwkvweb.testmodel import write_test_model
from rwkvweb.wgpu_exec import WgpuUnavailableError, request_adapter

SAME_PLAN = 1e-5  # native vs numpy on one plan; see the module docstring
REFERENCE = 1e-3  # vs the numpy reference, as in test_model_gpu.py
_NATIVE = []  # one device for the whole session: lavapipe compiles each pipeline once


def native_backend():
    if not _NATIVE:
        from rwkvweb.wgpu_exec import WgpuBackend

        try:
            _NATIVE.append(WgpuBackend())
        except WgpuUnavailableError as error:
            if os.environ.get("CI"):
                pytest.fail(f"CI installs wgpu and lavapipe (.ci/run), yet: {error}")
            pytest.skip(f"no native wgpu here: {error}")
    return _NATIVE[0]


class NativeGpu:
    """gpu_harness.run_in_browser's contract on the native backend (it delegates here)."""

    def __init__(self, backend):
        self.backend = backend
        self.features = [*backend.features, *backend.wgsl_features]  # WebGPU's names (gpu_harness.device_features)

    def run_plan(self, plan, initial, program, steps, reads, model_bytes=None):
        return run_async(self._run(plan, initial, program, steps, reads, model_bytes))

    async def _run(self, plan, initial, program, steps, reads, model_bytes):
        b = self.backend
        await b.load(plan)
        try:
            if model_bytes is not None:
                await b.fill(plan["fills"], BytesSource(model_bytes))
            for buffer, data in initial.items():
                await b.write(buffer, 0, data)
            results = []
            for writes in steps:
                await b.run([program], writes)
                results.append(
                    {f"{buffer}:{offset}": await b.read(buffer, offset, size) for buffer, offset, size in reads}
                )
            return results, b.info()
        finally:
            b.destroy()


class BytesSource:
    """A model file's bytes as the backend's fill() reads them."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, start: int, end: int) -> bytes:
        return self.data[start:end]


@pytest.fixture(scope="module")
def native():
    return native_backend()


@pytest.fixture(scope="module")
def gpu_page(native):
    """test_kernels.py's fixture name: its cases below run on the native device instead of the page."""
    return NativeGpu(native)


# Every kernel case of the browser suite, collected here as well (this module's fixtures and marks apply).
globals().update({name: test for name, test in vars(test_kernels).items() if name.startswith("test_")})


# --- the backend itself --------------------------------------------------------------------------


def test_the_adapter_and_its_variant_are_reported(native):
    info = native.info()
    assert info["backend"] in ("Vulkan", "Metal", "D3D12") and info["adapter"]
    layout = "cols" if info["adapter_type"] == "CPU" else "rows-wg"
    assert info["matvec"].split("+")[0] == layout  # then every option the device's features allow:
    assert ("+f16" in info["matvec"]) == ("shader-f16" in info["features"])  # lavapipe has shader-f16
    assert ("+subgroups" in info["matvec"]) == ("subgroups" in info["features"] and layout == "rows-wg")
    # Naga compiles dot4I8Packed (probed: wgpu-py reports no WGSL language features); +dp4a is never chosen unasked
    assert "packed_4x8_integer_dot_product" in info["wgslLanguageFeatures"] and "+dp4a" not in info["matvec"]
    assert info["maxStorageBufferBindingSize"] == native.max_binding >= 128 << 20  # raised to the adapter's max


def test_no_vulkan_adapter_is_a_clear_error():
    class NoAdapters:
        class gpu:
            enumerate_adapters_sync = staticmethod(lambda: [])

    with pytest.raises(WgpuUnavailableError, match="install a Vulkan driver .*mesa-vulkan-drivers"):
        request_adapter(NoAdapters)


def test_missing_wgpu_says_what_to_install(monkeypatch):
    from rwkvweb.wgpu_exec import WGPU_PIN, WgpuBackend

    monkeypatch.setitem(sys.modules, "wgpu", None)  # `import wgpu` raises ImportError
    with pytest.raises(WgpuUnavailableError, match=f"pip install '{WGPU_PIN}'"):
        WgpuBackend()


def test_the_budget_is_enforced_and_host_buffers_stay_in_cpu_memory(native):
    plan = Plan()
    device, host = plan.buffer("device", 4096, "scratch"), plan.buffer("table", 1 << 20, "host")
    plan.budget = 4095
    with pytest.raises(MemoryError, match="budget is 4095"):
        run_async(native.load(plan.to_json()))
    plan.budget = 4096 + 4  # the host table does not count; a read's staging buffer does, as in the bridge
    run_async(native.load(plan.to_json()))
    try:
        assert native.bytes_allocated == 4096
        run_async(native.write(host.buffer, 100, b"abc"))
        run_async(native.write(device.buffer, 8, b"xyz"))  # not a whole word: padded like the bridge's writes
        assert run_async(native.read(host.buffer, 99, 5)) == b"\0abc\0"
        assert run_async(native.read(device.buffer, 8, 3)) == b"xyz"
        assert native.bytes_allocated == 4096  # the read's staging buffer came and went
        with pytest.raises(ValueError, match="no program named 'decode'"):
            run_async(native.run(["decode"], []))
    finally:
        native.destroy()
    assert native.bytes_allocated == 0


# --- whole models ------------------------------------------------------------------------------


async def _load_pair(path, backend, precision, chunk, matvec):
    """The same plan on the native backend and on numpy (so quantized codes are the same on both)."""
    options = dict(precision=precision, chunk=chunk, matvec=matvec, tokenizer_for=lambda config, metadata: None)
    native = await Model.load(path, backend=backend, max_binding=64 * 1024, **options)
    numpy = await Model.load(path, max_binding=64 * 1024, **options)
    return native, numpy


async def _logits(model, tokens):
    return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])


@pytest.mark.parametrize(
    "width, head_size, precision, chunk, matvec, version",
    [
        (256, 64, "fp32", 64, None, "x070"),  # 4 heads; 40 tokens in one partial chunk
        (256, 64, "fp16", 16, None, "x070"),
        (128, 32, "fp32", 7, None, "x070"),  # 4 heads of 32; chunks that are not whole token tiles
        (192, 64, "int8", 16, None, "x070"),  # 3 heads
        (128, 64, "nf4", 7, None, "x070"),
        (64, 64, "fp16", 1, None, "x070"),  # one head; token by token through the prefill kernels
        (128, 64, "fp16", 16, "rows-wg", "x070"),  # the workgroup-reduction variant, checked on this adapter too
        (128, 64, "fp16", 16, "rows-wg+subgroups+f16", "x070"),  # what a real GPU with both features gets
        (192, 64, "int8", 7, "rows-wg+subgroups", "x070"),
        (128, 32, "fp32", 7, None, "x060"),  # RWKV-6 (reference56.py)
        (64, 8, "fp16", 16, None, "x052"),  # RWKV-5.2, 8 heads of 8
        (128, 64, "int8", 16, "rows-wg", "x060"),
        (128, 64, "fp32", 7, None, "x040"),  # RWKV-4 (reference4.py; head_size unused)
        (64, 64, "nf4", 16, "rows-wg", "x040"),
    ],
)
def test_model_equals_numpy_on_the_same_plan(native, tmp_path, width, head_size, precision, chunk, matvec, version):
    path = str(tmp_path / "m.st")
    config = ModelConfig.default_for(2, width, 300, head_size=head_size, version=version)
    write_test_model(path, config, seed=width + head_size, dtype="fp32" if precision == "fp32" else "fp16")
    tokens = [int(t) for t in np.random.default_rng(chunk).integers(0, 300, 40)]

    async def compare():
        gpu, ref = await _load_pair(path, native, precision, chunk, matvec or native.matvec)
        got, expected = await _logits(gpu, tokens), await _logits(ref, tokens)
        gpu_state, ref_state = np.frombuffer(await gpu.state(), np.uint8), np.frombuffer(await ref.state(), np.uint8)
        greedy = [(await m.generate([5, 6], 6, temperature=0)).tokens for m in (gpu, ref)]
        return got, expected, gpu_state, ref_state, greedy

    got, expected, gpu_state, ref_state, greedy = run_async(compare())
    scale = expected.max() - expected.min()
    print(f"native vs numpy: {np.abs(got - expected).max() / scale:.1e} of the range")
    assert got.shape == expected.shape == (40, 300)
    assert np.abs(got - expected).max() <= SAME_PLAN * scale
    assert gpu_state.size == ref_state.size > 0
    assert greedy[0] == greedy[1]  # decode + the GPU sampler: the same ids
    if precision in ("fp32", "fp16"):
        reference, _ = load(path).logits(tokens)
        assert np.abs(got - reference).max() <= REFERENCE * (reference.max() - reference.min())


@pytest.mark.parametrize(
    "width, chunk, matvec, version",
    [
        (256, 16, "rows-wg+dp4a", "x070"),
        (128, 7, "rows-wg+subgroups+dp4a", "x070"),
        (128, 16, "rows-wg+dp4a", "x060"),  # RWKV-6's block (model56.py) through the same builder
        (128, 7, "rows-wg+subgroups+dp4a", "x040"),  # RWKV-4's (model4.py)
    ],
)
def test_dp4a_model_is_as_close_to_the_float_int8_plan_as_numpys(native, tmp_path, width, chunk, matvec, version):
    """A whole model under +dp4a (every int8 matrix but the embedding: K = C and 4C, whole blocks) on the native
    device and on numpy, each against the float int8 plan (gpu_harness.check_dp4a_logits says why not 1e-5)."""
    from gpu_harness import check_dp4a_logits

    path = str(tmp_path / "m.st")
    config = ModelConfig.default_for(2, width, 300, head_size=64, version=version)
    write_test_model(path, config, seed=width, dtype="fp16")
    tokens = [int(t) for t in np.random.default_rng(chunk).integers(0, 300, 40)]

    async def compare():
        gpu, ref = await _load_pair(path, native, "int8", chunk, matvec)
        assert gpu.info()["matvec"] == matvec  # the name round-trips into the loaded model
        plain = await Model.load(path, max_binding=64 * 1024, precision="int8", chunk=chunk, matvec="rows-wg",
                                 tokenizer_for=lambda config, metadata: None)  # fmt: skip
        return [await _logits(m, tokens) for m in (gpu, ref, plain)]

    check_dp4a_logits(*run_async(compare()))


# --- the command line ----------------------------------------------------------------------------


def test_cli_backend_wgpu_prints_the_same_json_as_numpy(native, tmp_path):
    from test_cli import cli

    path = str(tmp_path / "m.st")
    cli("testmodel", path, "--layers", "2", "--width", "128", "--vocab", "256", "--seed", "4", "--dtype", "fp16")
    tokens = "1,7,255,0,42"
    rows = {
        b: np.array(json.loads(cli("logits", path, "--tokens", tokens, "--backend", b).stdout)["logits"])
        for b in ("numpy", "wgpu")
    }
    assert rows["wgpu"].shape == rows["numpy"].shape == (5, 256)
    assert np.abs(rows["wgpu"] - rows["numpy"]).max() <= REFERENCE * np.ptp(rows["numpy"])  # test_cli.py's bound
    quantized = {
        b: np.array(
            json.loads(
                cli("logits", path, "--tokens", tokens, "--precision", "int8", "--chunk", "2", "--backend", b).stdout
            )["logits"]
        )
        for b in ("numpy", "wgpu")
    }
    assert np.abs(quantized["wgpu"] - quantized["numpy"]).max() <= SAME_PLAN * np.ptp(quantized["numpy"])  # one plan
    generated = [
        cli("generate", path, "--tokens", "3,4,5", "--max-tokens", "8", "--temperature", "0", "--backend", b).stdout
        for b in ("numpy", "wgpu")
    ]
    assert generated[0] == generated[1] and len(json.loads(generated[0])) == 8
    embedded = [
        np.array(
            json.loads(cli("embed", path, "--tokens", "3,9,27", "--pooling", "mean", "--backend", b).stdout)[
                "embedding"
            ]
        )
        for b in ("numpy", "wgpu")
    ]
    assert embedded[0].shape == (128,) and np.abs(embedded[0] - embedded[1]).max() <= 1e-5  # test_cli.py's embed bound


def test_a_dp4a_plan_is_refused_clearly_without_the_wgsl_feature(native, tmp_path):
    from gpu_harness import dp4a_plan

    plan = dp4a_plan(tmp_path)
    features, native.wgsl_features = native.wgsl_features, []
    try:
        with pytest.raises(ValueError, match="lacks, packed_4x8_integer_dot_product: plan with matvec="):
            run_async(native.load(plan))
    finally:
        native.wgsl_features = features
        native.destroy()
