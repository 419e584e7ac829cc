"""The plan: what the GPU should hold and run, as plain data the JavaScript bridge executes.

Python compiles a model once into a Plan:
  buffers   id -> (name, bytes, role)             role: weight | state | scratch | io on the GPU,
                                                  host: CPU memory kept by the bridge (never bound)
  fills     which file byte ranges go into which buffer offsets (and any widening on the way)
  kernels   id -> (shader file, preludes, entry point, override constants)   deduplicated
  programs  name -> ordered steps: dispatches {kernel, bindings, workgroups} and buffer copies

The bridge (web/gpu/bridge.js) knows buffers, pipelines and dispatch lists, not RWKV;
`numpy_exec.py` runs the same plan under CPython, so the graph is testable without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONVERSIONS = (None, "f16-f32", "bf16-f32", "bf16-f16")  # what a fill may do to the file's bytes on the way
ALIGN = 256  # minStorageBufferOffsetAlignment on every adapter we know: binding offsets must be multiples


@dataclass(frozen=True)
class View:
    """A byte range of a buffer, as bound to a kernel."""

    buffer: int
    offset: int
    size: int

    def slot(self, index: int, size: int) -> "View":
        """The index-th consecutive sub-range of `size` bytes (e.g. the k slot of r|w|k|v|a)."""
        assert (index + 1) * size <= self.size, f"slot {index} of {size} bytes overruns a {self.size}-byte view"
        return View(self.buffer, self.offset + index * size, size)


@dataclass
class Plan:
    buffers: list[dict] = field(default_factory=list)
    fills: list[dict] = field(default_factory=list)
    kernels: list[dict] = field(default_factory=list)
    programs: dict[str, list[dict]] = field(default_factory=dict)
    budget: int | None = None  # GPU bytes the bridge may allocate in all (budget.py); None: no limit
    _kernel_ids: dict[tuple, int] = field(default_factory=dict, repr=False)

    def buffer(self, name: str, nbytes: int, role: str) -> View:
        assert role in ("weight", "state", "scratch", "io", "host"), role
        padded = -(-nbytes // 4) * 4  # WebGPU sizes and copies are multiples of 4 bytes
        self.buffers.append({"id": len(self.buffers), "name": name, "bytes": padded, "role": role})
        return View(len(self.buffers) - 1, 0, padded)

    def fill(
        self,
        view: View,
        start: int,
        end: int,
        convert: str | None = None,
        transpose: tuple[int, int, int] | None = None,
        quantize: str | None = None,
        params_offset: int | None = None,
    ) -> None:
        """Copy file bytes [start, end) into the buffer at view.offset, on the way:
        convert    f16-f32 | bf16-f32 (widen), bf16-f16 (round to nearest, refusing values beyond f16's range);
        transpose  (rows, cols, padded_rows): the bytes are `rows` rows of a row-major matrix with
                   `cols` columns, stored k-major: column k goes to view.offset + k·padded_rows elements;
        quantize   int8 | nf4 (quant.py): codes at view.offset, block parameters at params_offset;
                   with transpose too (k-major blocks, quant.quantize_columns): each column, padded to whole
                   blocks, is quantized on its own; its codes go to view.offset + k·padded_rows·bits/8 and its
                   parameters to params_offset + k·padded_rows/block·param_bytes (padded_rows whole blocks)."""
        assert convert in CONVERSIONS, convert
        assert quantize in (None, "int8", "nf4") and (quantize is None) == (params_offset is None), (
            quantize,
            params_offset,
        )
        assert view.offset + view.size <= self.buffers[view.buffer]["bytes"], f"fill of {view} overruns its buffer"
        self.fills.append(
            {
                "buffer": view.buffer,
                "offset": view.offset,
                "start": start,
                "end": end,
                "convert": convert,
                "transpose": list(transpose) if transpose else None,
                "quantize": quantize,
                "params_offset": params_offset,
            }
        )

    def kernel(
        self, shader: str, constants: dict, entry: str = "main", include: tuple[str, ...] = (), needs: tuple = ()
    ) -> int:
        """The id of the kernel `shader` (with its preludes `include`) specialised by `constants`; `needs`: the
        WGSL language features it uses, which each executor checks for before it compiles anything."""
        key = (shader, entry, include, tuple(sorted(constants.items())))
        if key not in self._kernel_ids:
            self._kernel_ids[key] = len(self.kernels)
            kernel = {"shader": shader, "entry": entry, "include": list(include), "constants": dict(constants)}
            self.kernels.append({**kernel, "needs": list(needs)} if needs else kernel)
        return self._kernel_ids[key]

    def dispatch(self, program: str, kernel: int, bindings: list[View], workgroups: tuple[int, int, int]) -> None:
        for view in bindings:
            assert view.offset % ALIGN == 0, f"binding offset {view.offset} is not a multiple of {ALIGN}"
            assert self.buffers[view.buffer]["role"] != "host", (
                f"{self.buffers[view.buffer]['name']} is host memory: a kernel cannot bind it"
            )
        step = {
            "kernel": kernel,
            "bindings": [[v.buffer, v.offset, v.size] for v in bindings],
            "workgroups": list(workgroups),
        }
        self.programs.setdefault(program, []).append(step)

    def copy(self, program: str, source: View, target: View) -> None:
        assert source.size == target.size, (source, target)
        self.programs.setdefault(program, []).append(
            {"copy": [source.buffer, source.offset, target.buffer, target.offset, source.size]}
        )

    def gpu_bytes(self) -> int:
        """What the buffers take on the GPU (host buffers live in the bridge's CPU memory)."""
        return sum(b["bytes"] for b in self.buffers if b["role"] != "host")

    def bytes_by_role(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for b in self.buffers:
            totals[b["role"]] = totals.get(b["role"], 0) + b["bytes"]
        return totals

    def to_json(self) -> dict:
        return {
            "buffers": self.buffers,
            "fills": self.fills,
            "kernels": self.kernels,
            "programs": self.programs,
            "budget": self.budget,
        }
