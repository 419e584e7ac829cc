"""Run a plan natively through wgpu (wgpu-py on Vulkan: Mesa's lavapipe here, a real GPU's driver elsewhere).

The third executor over the same plan (plan.py), beside the numpy one (numpy_exec.py) and the
browser's bridge (web/gpu/bridge.js), which this file follows step for step: the same WGSL files
with the same one templating step (the `include` preludes prepended), the same override constants,
the same fill conversions, the same byte accounting against plan["budget"], host buffers kept in
CPU memory, and every program of one run() in ONE command-buffer submission. CPython only.

    backend = WgpuBackend()        # the adapter and device, limits raised to the adapter's maximum
    model = await Model.load(path, backend=backend, matvec=backend.matvec, max_binding=backend.max_binding)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .model import choose_matvec
from .ops import DP4A_FEATURE
from .numpy_exec import quantized_column_writes, widened_fill
from .quant import quantize

SHADER_DIR = Path(__file__).resolve().parents[2] / "shaders"  # the checkout's kernels, as the site serves them
WGPU_PIN = "wgpu==0.32.0"  # pyproject's dev extra pins the same


class WgpuUnavailableError(ValueError):
    """wgpu-py, or an adapter for it, is missing: the message says what to install (a ValueError so the
    CLI reports it like any other bad choice of options)."""


def _import_wgpu():
    try:
        import wgpu
    except ImportError as error:
        raise WgpuUnavailableError(
            f"the wgpu backend needs wgpu-py: python -m pip install '{WGPU_PIN}' ({error})"
        ) from None
    return wgpu


def request_adapter(wgpu):
    """The best adapter wgpu sees: a real GPU before a CPU one (lavapipe), Vulkan/Metal/D3D12 only
    (wgpu's OpenGL fallback lacks storage-buffer features the kernels need)."""
    try:
        adapters = wgpu.gpu.enumerate_adapters_sync()
    except Exception as error:  # the native library failed to load or to find any driver
        raise WgpuUnavailableError(
            f"wgpu found no GPU adapter ({error}): install a Vulkan driver "
            "(Debian: apt-get install mesa-vulkan-drivers for lavapipe on the CPU)"
        ) from None
    usable = [a for a in adapters if a.info.get("backend_type") in ("Vulkan", "Metal", "D3D12")]
    if not usable:
        found = ", ".join(f"{a.info.get('device')} ({a.info.get('backend_type')})" for a in adapters) or "none"
        raise WgpuUnavailableError(
            f"wgpu found no Vulkan adapter (found: {found}): install a Vulkan driver "
            "(Debian: apt-get install mesa-vulkan-drivers for lavapipe on the CPU)"
        )
    return min(usable, key=lambda a: a.info.get("adapter_type") == "CPU")


# wgpu-native's names for the features web/gpu/device.js asks for, by their WebGPU names (which the
# plan's choice, model.choose_matvec, reads).
NATIVE_FEATURES = {"shader-f16": "shader-f16", "subgroups": "subgroup"}


def native_matvec(info: dict, features: list[str], wgsl_features: list[str] = ()) -> str:
    """model.choose_matvec for a native adapter with these (WebGPU-named) device features and WGSL language
    features: a CPU adapter (lavapipe, SwiftShader) gets SwiftShader's "cols" layout; a GPU what
    model.choose_matvec gives a GPU."""
    cpu = info.get("adapter_type") == "CPU"
    adapter = {**({"architecture": "swiftshader"} if cpu else info), "features": features}
    return choose_matvec({**adapter, "wgslLanguageFeatures": list(wgsl_features)})


# The WGSL language features the kernels may use, each with a probe that uses it. wgpu-py 0.32 reports none
# (wgpu.gpu.wgsl_language_features is an empty set) though Naga compiles them, so each is tried once instead.
WGSL_PROBES = {
    DP4A_FEATURE: (
        "@group(0) @binding(0) var<storage, read_write> o: array<i32>;\n"
        "@compute @workgroup_size(1) fn main() { o[0] = dot4I8Packed(pack4xI8(vec4<i32>(o[1])), 0x01010101u); }"
    ),
}


def wgsl_language_features(wgpu, device) -> list[str]:
    """The WGSL language features (WGSL_PROBES) this device's shader compiler takes: reported, or probed."""
    reported = set(getattr(wgpu.gpu, "wgsl_language_features", ()) or ())
    found = []
    for name, probe in WGSL_PROBES.items():
        if name not in reported:
            try:
                module = device.create_shader_module(code=probe)
                device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
            except Exception:  # the compiler lacks it: the plan never chooses a variant that needs it
                continue
        found.append(name)
    return found


def _native_wgsl(text: str) -> str:
    """A shader file as Naga takes it: Naga enables subgroup operations with the device feature and refuses
    the `enable subgroups;` directive that browsers require (lib/enable_subgroups.wgsl)."""
    return text.replace("enable subgroups;", "")


class WgpuBackend:
    """The engine's backend interface (engine.py) on a native wgpu device."""

    def __init__(self):
        self.wgpu = _import_wgpu()
        self.adapter = request_adapter(self.wgpu)
        limits = {
            name: value for name, value in self.adapter.limits.items() if value
        }  # every limit at the adapter's max
        wanted = {name: native for name, native in NATIVE_FEATURES.items() if native in self.adapter.features}
        self.device = self.adapter.request_device_sync(required_features=list(wanted.values()), required_limits=limits)
        self.features = sorted(wanted)  # as web/gpu/device.js asks: each where the adapter has it
        self.wgsl_features = wgsl_language_features(self.wgpu, self.device)
        self.adapter_info = dict(self.adapter.info)
        self.matvec = native_matvec(self.adapter_info, self.features, self.wgsl_features)
        self.max_binding = int(self.device.limits["max-storage-buffer-binding-size"])
        self.buffers: list = []
        self.programs: dict[str, list] = {}
        self.pipelines: dict[str, object] = {}  # kernel key -> compute pipeline, kept across loads
        self.modules: dict[tuple, object] = {}
        self.bytes_allocated = self.peak_bytes = 0
        self.budget = None

    def info(self) -> dict:
        """What the page's bridge.info() says, for the native adapter."""
        limits = self.device.limits
        return {
            "adapter": self.adapter_info.get("device", ""),
            "adapter_type": self.adapter_info.get("adapter_type", ""),
            "backend": self.adapter_info.get("backend_type", ""),
            "description": self.adapter_info.get("description", ""),
            "adapter_features": sorted(self.adapter.features),
            "features": self.features,  # WebGPU's names, as bridge.info() gives them
            "wgslLanguageFeatures": self.wgsl_features,  # as device.js's describe()
            "native_features": sorted(self.device.features),
            "matvec": self.matvec,
            "maxBufferSize": limits["max-buffer-size"],
            "maxStorageBufferBindingSize": self.max_binding,
            "bytesAllocated": self.bytes_allocated,
            "peakBytes": self.peak_bytes,
        }

    # --- the backend interface ---------------------------------------------------------------

    async def load(self, plan: dict) -> None:
        self.destroy()
        self._check_limits(plan)
        self.budget = plan.get("budget")
        self.peak_bytes = self.bytes_allocated
        planned = sum(max(4, b["bytes"]) for b in plan["buffers"] if b["role"] != "host")
        if self.budget is not None and self.bytes_allocated + planned > self.budget:
            raise MemoryError(
                f"the plan needs {planned} bytes of GPU memory ({self.bytes_allocated} already held) but the "
                f"budget is {self.budget}: unload first or raise the budget"
            )
        self.buffers = [
            np.zeros(b["bytes"], np.uint8) if b["role"] == "host" else self._create_buffer(b["bytes"], b["name"])
            for b in plan["buffers"]
        ]
        kernels = [self._pipeline(k) for k in plan["kernels"]]
        self.programs = {
            name: [self._prepare(step, kernels) for step in steps] for name, steps in plan["programs"].items()
        }

    async def fill(self, fills: list[dict], source) -> None:
        """Weights: file bytes [start, end) into buffers, converted as each fill says (plan.Plan.fill)."""
        for f in fills:
            self._upload(f, np.frombuffer(source.read(f["start"], f["end"]), np.uint8))

    async def write(self, buffer: int, offset: int, data: bytes) -> None:
        self._write(buffer, offset, data)

    async def run(self, programs: list[str], writes) -> None:
        """Writes first, then the programs in order, as ONE command buffer (bridge.js's run)."""
        steps = []
        for name in [programs] if isinstance(programs, str) else programs:
            if name not in self.programs:
                raise ValueError(f"no program named {name!r} in the plan")
            steps += self.programs[name]
        for buffer, offset, data in writes:
            self._write(buffer, offset, data)
        encoder = self.device.create_command_encoder()
        compute = None
        for step in steps:
            if "copy" in step:
                if compute:
                    compute.end()
                    compute = None
                encoder.copy_buffer_to_buffer(*step["copy"])
                continue
            compute = compute or encoder.begin_compute_pass()
            compute.set_pipeline(step["pipeline"])
            compute.set_bind_group(0, step["bind_group"])
            compute.dispatch_workgroups(*step["workgroups"])
        if compute:
            compute.end()
        self.device.queue.submit([encoder.finish()])

    async def read(self, buffer: int, offset: int, size: int) -> bytes:
        target = self.buffers[buffer]
        if isinstance(target, np.ndarray):  # host memory
            return target[offset : offset + size].tobytes()
        padded = -(-size // 4) * 4  # copies move whole 4-byte words
        self._account(padded)
        staging = self.device.create_buffer(
            size=padded, usage=self.wgpu.BufferUsage.MAP_READ | self.wgpu.BufferUsage.COPY_DST
        )
        try:
            encoder = self.device.create_command_encoder()
            encoder.copy_buffer_to_buffer(target, offset, staging, 0, padded)
            self.device.queue.submit([encoder.finish()])
            staging.map_sync(self.wgpu.MapMode.READ)
            data = bytes(staging.read_mapped())[:size]
            staging.unmap()
            return data
        finally:
            staging.destroy()
            self._account(-padded)

    def destroy(self) -> None:
        """Release the plan's buffers (the pipelines stay: a next plan may reuse them)."""
        for buffer in self.buffers:
            if not isinstance(buffer, np.ndarray):
                self._account(-buffer.size)
                buffer.destroy()
        self.buffers, self.programs = [], {}

    # --- the plan on the device ----------------------------------------------------------------

    def _check_limits(self, plan: dict) -> None:
        """Say which limit a plan exceeds, in words, before wgpu fails with a validation error."""
        limits = self.device.limits
        missing = sorted({f for k in plan["kernels"] for f in k.get("needs", ())} - set(self.wgsl_features))
        if missing:
            raise ValueError(
                f"the plan's kernels use WGSL language features this device lacks, {', '.join(missing)}: "
                f"plan with matvec={self.matvec!r}"
            )
        for b in plan["buffers"]:
            if b["role"] != "host" and b["bytes"] > limits["max-buffer-size"]:
                raise ValueError(
                    f'buffer "{b["name"]}" needs {b["bytes"]} bytes but this adapter\'s maxBufferSize is '
                    f"{limits['max-buffer-size']}: the model is too large for this device"
                )
        for steps in plan["programs"].values():
            for step in steps:
                for buffer, _, size in step.get("bindings", []):
                    if size > self.max_binding:
                        raise ValueError(
                            f'a binding of "{plan["buffers"][buffer]["name"]}" is {size} bytes but this adapter\'s '
                            f"maxStorageBufferBindingSize is {self.max_binding}: "
                            f"plan with max_binding={self.max_binding}"
                        )

    def _create_buffer(self, size: int, label: str):
        size = max(4, size)
        self._account(size)
        usage = self.wgpu.BufferUsage.STORAGE | self.wgpu.BufferUsage.COPY_DST | self.wgpu.BufferUsage.COPY_SRC
        return self.device.create_buffer(label=label, size=size, usage=usage)

    def _account(self, delta: int) -> None:
        """Every device byte counts against the plan's budget; going over is a plan bug, so it fails loudly."""
        if delta > 0 and self.budget is not None and self.bytes_allocated + delta > self.budget:
            raise MemoryError(f"GPU memory budget exceeded: {self.bytes_allocated} + {delta} bytes > {self.budget}")
        self.bytes_allocated += delta
        self.peak_bytes = max(self.peak_bytes, self.bytes_allocated)

    def _module(self, include: list[str], shader: str):
        key = (*include, shader)
        if key not in self.modules:
            # The one templating step: preludes (lib/weights_*.wgsl) are prepended to the kernel.
            files = [SHADER_DIR / name for name in key]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise FileNotFoundError(
                    f"shader files {missing} not found: the wgpu backend runs from a source checkout"
                )
            self.modules[key] = self.device.create_shader_module(
                label=shader, code="\n".join(_native_wgsl(f.read_text()) for f in files)
            )
        return self.modules[key]

    def _pipeline(self, kernel: dict):
        key = repr((kernel["shader"], kernel["include"], kernel["entry"], sorted(kernel["constants"].items())))
        if key not in self.pipelines:
            constants = {
                name: float(value) for name, value in kernel["constants"].items()
            }  # bools as 0/1, as JS Number()
            try:
                module = self._module(kernel["include"], kernel["shader"])
                self.pipelines[key] = self.device.create_compute_pipeline(
                    label=f"{kernel['shader']}:{kernel['entry']}",
                    layout="auto",
                    compute={"module": module, "entry_point": kernel["entry"], "constants": constants},
                )
            except FileNotFoundError:
                raise
            except Exception as error:
                raise RuntimeError(
                    f"compiling {kernel['shader']} ({kernel['entry']}) with {kernel['constants']}: {error}"
                ) from None
        return self.pipelines[key]

    def _prepare(self, step: dict, kernels: list):
        if "copy" in step:
            src, src_offset, dst, dst_offset, size = step["copy"]
            return {"copy": (self.buffers[src], src_offset, self.buffers[dst], dst_offset, size)}
        pipeline = kernels[step["kernel"]]
        entries = [
            {"binding": i, "resource": {"buffer": self.buffers[b], "offset": o, "size": s}}
            for i, (b, o, s) in enumerate(step["bindings"])
        ]
        bind_group = self.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
        return {"pipeline": pipeline, "bind_group": bind_group, "workgroups": step["workgroups"]}

    # --- weights and writes --------------------------------------------------------------------

    def _upload(self, f: dict, chunk: np.ndarray) -> None:
        """One fill's bytes into its buffer, converted as bridge.js's upload() and NumpyExecutor.fill do."""
        chunk = widened_fill(chunk, f["convert"])
        if f.get("quantize") and f.get("transpose"):
            for buffer, offset, data in quantized_column_writes(f, chunk):
                self._write(buffer, offset, data)
        elif f.get("quantize"):
            codes, params = quantize(chunk.view(np.float32), f["quantize"])
            self._write(f["buffer"], f["offset"], codes)
            self._write(f["buffer"], f["params_offset"], params)
        elif f.get("transpose"):
            rows, cols, padded = f["transpose"]
            element = chunk.size // (rows * cols)
            columns = np.ascontiguousarray(chunk.view(f"u{element}").reshape(rows, cols).T)
            if rows == padded:  # the whole k-major matrix: one write
                self._write(f["buffer"], f["offset"], columns.tobytes())
                return
            for k in range(cols):  # column k of these rows lands in row k of the k-major matrix
                self._write(f["buffer"], f["offset"] + k * padded * element, columns[k].tobytes())
        else:
            self._write(f["buffer"], f["offset"], chunk.tobytes())

    def _write(self, buffer: int, offset: int, data) -> None:
        data = bytes(data)
        target = self.buffers[buffer]
        if isinstance(target, np.ndarray):  # host memory
            target[offset : offset + len(data)] = np.frombuffer(data, np.uint8)
            return
        if len(data) % 4:  # write_buffer takes whole 4-byte words
            data += bytes(4 - len(data) % 4)
        self.device.queue.write_buffer(target, offset, data)
