"""The RWKV-7 graph: from the config and the file's tensor table to a Plan of GPU steps.

Everything around the layers (weight table, embedding, norms, head, sampler, prefill, snapshot) is
shared by every version; a version contributes its block function (block_for: RWKV-7's `_block` here,
RWKV-5.2/6's in model56.py, RWKV-4's in model4.py) and may use `classic_channel_mix`, the channel mix of RWKV-4/5/6.

`compile_model` reads like reference.py's forward pass, one op call per line of maths;
each op (ops.py) checks its shapes. Matrices are stored at the precision budget.py chose (the
file's own by default: f32, or f16 unpacked in-shader; int8 / NF4 dequantized in-register), small
vectors widened to f32. Matrices larger than one storage binding (the head and the embedding of
large vocabularies) are split by rows; weights are filled in chunks of about CHUNK_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ops
from .config import GN_EPS, LN_EPS, ModelConfig, wkv_state_floats
from .plan import Plan, View
from .quant import SCHEMES
from .safetensors import TensorInfo

F32 = 4
DECODE = "decode"  # token -> logits, state advanced
SAMPLE = "sample"  # logits -> sampled token, which also becomes the next decode input
PREFILL = "prefill"  # a chunk of tokens -> state advanced (no head)
HEAD_LAST = "head_last"  # after a prefill: the logits of its last real token
POOL = "pool"  # after a prefill: ln_out of its rows, summed and last (embed())
# Tokens per prefill submission: matvec.wgsl tiles 16 tokens; `python -m build.bench --only prefill` compares 16 and 64.
DEFAULT_CHUNK = 64
BATCH = 16  # the most decode + sample steps one submission chains (engine.generate): ids come back once per batch
SNAPSHOT, RESTORE = (
    "snapshot",
    "restore",
)  # the generation state copied aside before a batch, and back (a stop inside it)


def keep(step: int) -> str:
    """The program that records a batch's step-th sampled id in `history`."""
    return f"keep{step}"


DEFAULT_MAX_BINDING = 128 << 20  # WebGPU's default maxStorageBufferBindingSize
ATT_MIX = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # slot order of the token-shift outputs
R, W, K, V, A, G = range(6)  # slots of `mixed` and of `vecs`


@dataclass
class CompiledModel:
    config: ModelConfig
    plan: Plan
    token: View  # io: the u32 token id to run
    logits: View  # io: [V] float32 after each decode step
    state: View  # per layer att_shift [C] | wkv (config.wkv_state_floats) | ffn_shift [C]: State.to_bytes() order
    sampled: View  # io: the u32 token the sampler chose
    sampler: View  # io: ops.SAMPLER_PARAMS bytes of settings (and the step counter)
    counts: View  # state: [V] u32, how often each token was generated (for the penalties)
    matvec: str  # the weight layout and matvec variant the plan uses (MATVEC_VARIANTS)
    weight_bytes: dict[str, int]  # per file tensor read: its GPU bytes (budget.py checks its sums); unread ones absent
    host_embedding: "HostEmbedding | None"  # the table off the GPU: the engine writes each token's row
    chunk: int  # the most tokens one prefill submission takes
    tokens: View  # io: [T_PAD] u32 ids of a prefill chunk
    count: View  # io: u32, how many of them are real
    chunk_input: View  # [T_PAD, C] a chunk's embedding rows (written by the engine for a host table); ln_out after pool
    pooled: View  # [C] Σ ln_out(x) over the rows pooled since the engine zeroed it
    pooled_last: View  # [C] ln_out(x) of the last pooled row
    history: View  # io: [BATCH] u32, the ids sampled by one batch of decode steps (keep(i) writes slot i)


@dataclass
class HostEmbedding:
    """An embedding table kept in host memory (precision HOST) in the file's dtype: before each
    decode step the engine reads the token's row from `table` and writes it, as float32, to `row`."""

    table: View  # a host buffer: [V, C] rows of `dtype`
    dtype: str  # F32 | F16 | BF16, as in the file
    row: View  # the decode program's input, [C] float32 (the embedding kernel's output otherwise)


# How [M, K] weight matrices are stored and multiplied (ops.matvec's variants); the plan records it.
MATVEC_VARIANTS = {
    "rows": {"row_major": True, "row_threads": 1},  # one invocation per row
    "rows-wg": {"row_major": True, "row_threads": 32},  # 32 invocations per row + workgroup reduction: real GPUs
    "cols": {"row_major": False},  # transposed at load, one invocation per 4 outputs: SwiftShader
}


# Options a variant's name may add to its layout ("rows-wg+subgroups+f16"), each with the WebGPU device
# feature it needs: the plan uses one only where the adapter offers it (choose_matvec).
MATVEC_OPTIONS = {
    "subgroups": "subgroups",  # rows-wg's row sums by subgroupAdd (lib/reduce_subgroup.wgsl)
    "f16": "shader-f16",  # f16 weights read as vec4<f16> (lib/weights_native_f16.wgsl), f32 sums
    # int8 rows-wg matrices with K % 128 == 0 times x quantized to int8 per token per block of 128
    # (quantize_x.wgsl, lib/matvec_dp4a.wgsl); others keep their path. A WGSL language feature, not a device one.
    "dp4a": ops.DP4A_FEATURE,
}
ROW_WG_OPTIONS = ("subgroups", "dp4a")  # options for rows-wg's branch only
DEFAULT_OFF = ("dp4a",)  # chosen only when named: see choose_matvec


def matvec_variant(name: str) -> dict:
    """A variant's name as ops.matvec's options: its layout (MATVEC_VARIANTS) plus its +options."""
    layout, *options = name.split("+")
    unknown = [o for o in options if o not in MATVEC_OPTIONS]
    if layout not in MATVEC_VARIANTS or unknown or len(set(options)) < len(options):
        raise ValueError(
            f"unknown matvec variant {name!r}: a layout ({', '.join(MATVEC_VARIANTS)}) and any of "
            f"+{', +'.join(MATVEC_OPTIONS)}, e.g. rows-wg+subgroups+f16"
        )
    for option in ROW_WG_OPTIONS:
        if option in options and layout != "rows-wg":
            raise ValueError(f"matvec variant {name!r}: +{option} is for rows-wg's rows; use rows-wg+{option}")
    return {
        **MATVEC_VARIANTS[layout],
        "subgroups": "subgroups" in options,
        "native_f16": "f16" in options,
        "dp4a": "dp4a" in options,
    }


def choose_matvec(adapter: dict | None) -> str:
    """SwiftShader (a CPU) wants neighbouring invocations on neighbouring columns; GPUs want
    each row read by many invocations together (one step per variant: `python -m build.bench --only speed`).
    Then every option whose device feature the adapter's device has (`features`, as device.js's describe()), or
    WGSL language feature its browser has (`wgslLanguageFeatures`), except those DEFAULT_OFF: +dp4a quantizes
    activations, which costs accuracy, and is named explicitly (`plan --matvec`, Model.load(matvec=...))."""
    adapter = adapter or {}
    layout = "cols" if adapter.get("architecture") == "swiftshader" else "rows-wg"
    features = set(adapter.get("features") or ()) | set(adapter.get("wgslLanguageFeatures") or ())
    options = [o for o, feature in MATVEC_OPTIONS.items() if feature in features and o not in DEFAULT_OFF]
    return "+".join([layout] + [o for o in options if o not in ROW_WG_OPTIONS or layout == "rows-wg"])


HOST = "host"  # an embedding table kept off the GPU, its rows written per token (the budget's last resort)


def file_precision(info: TensorInfo) -> str:
    """How a matrix is stored when nothing else is asked: the file's own (bf16 widened to f32)."""
    return info.dtype if info.dtype in SCHEMES else "f16" if info.dtype == "F16" else "f32"


def allowed_precisions(info: TensorInfo) -> tuple[str, ...]:
    """What the loader can make of a matrix with this file dtype (no f32 -> f16 narrowing; bf16 -> f16 keeps
    more mantissa bits than bf16 has and refuses values beyond f16's range; a pre-quantized matrix stays as it is)."""
    if info.dtype in SCHEMES:
        return (info.dtype,)
    on_gpu = tuple(d for d in ops.WEIGHT_DTYPES if d != "f16" or info.dtype in ("F16", "BF16"))
    return on_gpu + (HOST,) if info.name == "emb.weight" else on_gpu


# Schemes quantized at load into k-major blocks when the plan is k-major ("cols", SwiftShader). int8 multiplies
# 2-3x faster that way there (`python -m build.bench --only matvec`); NF4 does not: its table decode is the cost.
# The page's k-major fill widens, transposes and pads in one pass (bridge.js paddedColumns), so it holds no more
# memory than a row-major fill (tests/test_load_memory.py).
K_MAJOR_SCHEMES: tuple[str, ...] = ("int8",)
CHUNK_BYTES = 4 << 20  # file bytes per fill: what the loader holds of one weight at a time


class _Builder:
    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, TensorInfo],
        max_binding: int,
        matvec: str,
        precisions: dict[str, str],
    ):
        self.cfg, self.max_binding = config, max_binding
        self.tensors = dict(tensors)  # a version may view a tensor in another shape (model56: time_maa_w2 as 2-D)
        self.variant = matvec_variant(matvec)
        self.precisions = precisions
        self.plan = Plan()
        self.weight_bytes: dict[str, int] = {}  # per file tensor: the GPU bytes its buffers take
        self.stored: dict[tuple, object] = {}  # the weight table: each weight stored once, whichever programs use it

    def precision(self, name: str) -> str:
        info = self.tensors[name]
        precision = self.precisions.get(name, file_precision(info))
        if precision not in allowed_precisions(info):
            raise ValueError(
                f"{name} is {info.dtype} in the file and cannot be stored as {precision}; "
                f"choose one of {allowed_precisions(info)}"
            )
        return precision

    def layout(self, name: str) -> dict:
        """The matvec variant for this matrix: the plan's, except that under a k-major plan quantized matrices
        stay row-major (blocks along the file's rows) unless they are quantized at load in a K_MAJOR_SCHEMES
        scheme (blocks along the k-major rows)."""
        precision, quantized_in_file = self.precision(name), self.tensors[name].dtype in SCHEMES
        if precision in SCHEMES and not self.variant["row_major"]:
            if quantized_in_file or precision not in K_MAJOR_SCHEMES:
                return {**self.variant, **MATVEC_VARIANTS["rows"]}
        return self.variant

    def stored_rows(self, dtype: str, rows: int, transpose: bool) -> int:
        """Rows of a k-major matrix as stored: whole vec4s, and whole quantization blocks when quantized
        (so that no block straddles two k); a row-major matrix's own."""
        if not transpose:
            return rows
        unit = SCHEMES[dtype].block if dtype in SCHEMES else 4
        return -(-rows // unit) * unit

    def matvec_options(self, name: str, rows: int, tokens: int = 1) -> dict:
        """ops.matvec's options for `rows` rows of a weight matrix: the variant, and the k-major row padding."""
        variant = self.ops_options(self.layout(name), name, tokens)
        if variant["row_major"]:
            return variant
        return {**variant, "m_pad": self.stored_rows(self.precision(name), rows, transpose=True)}

    def ops_options(self, variant: dict, name: str, tokens: int) -> dict:
        """A variant as ops.matvec's options: +dp4a becomes the quantized-x scratch `xq` where it applies (an int8
        matrix in the rows-wg layout with K a multiple of 128, the blocks of x then meeting whole blocks of each
        row); every other matrix keeps its plain path (f16/f32/nf4, or int8 with another K)."""
        options = {key: value for key, value in variant.items() if key != "dp4a"}
        K = self.tensors[name].shape[1]
        rows_wg = variant["row_major"] and variant.get("row_threads", 1) > 1
        if variant.get("dp4a") and self.precision(name) == "int8" and rows_wg and K % ops.XQ_BLOCK == 0:
            options["xq"] = self._once(("xq", tokens), lambda: self._xq_scratch(tokens))
        return options

    def _xq_scratch(self, tokens: int) -> View:
        """One scratch for every quantize_x of a program (each matvec reads it straight after): room for the
        widest input of any matrix, MAX_PARTS times (a group's distinct inputs)."""
        widest = max(info.shape[1] for info in self.tensors.values() if len(info.shape) == 2)
        widest = -(-widest // ops.XQ_BLOCK) * ops.XQ_BLOCK
        return self.plan.buffer(f"dp4a x[{tokens}]", ops.quantized_x_bytes(widest, tokens, ops.MAX_PARTS), "scratch")

    def lora_options(self) -> dict:
        """ops.matvec's options for a LoRA matrix (k-major as stored): the variant's f16 reading."""
        return {"native_f16": self.variant["native_f16"]}

    def _once(self, key: tuple, make):
        """The weight table: the first request for a weight stores it, later ones (other programs) reuse it."""
        if key not in self.stored:
            self.stored[key] = make()
        return self.stored[key]

    def _store(self, name: str, first: int, rows: int, transpose: bool) -> tuple[View, str]:
        return self._once(
            ("matrix", name, first, rows, transpose), lambda: self._store_new(name, first, rows, transpose)
        )

    def _store_new(self, name: str, first: int, rows: int, transpose: bool) -> tuple[View, str]:
        """Rows [first, first + rows) of a [R, K] weight in one buffer (k-major if `transpose`)."""
        info, dtype = self.tensors[name], self.precision(name)
        stored_rows = self.stored_rows(dtype, rows, transpose)
        view = self.plan.buffer(
            f"{name}[{first}:{first + rows}]" if rows < info.shape[0] else name,
            ops.weight_bytes(dtype, stored_rows * info.shape[1]),
            "weight",
        )
        self.weight_bytes[name] = self.weight_bytes.get(name, 0) + view.size
        self._fill_matrix(view, name, first, rows, transpose, 0, stored_rows * info.shape[1])
        return view, dtype

    def _fill_matrix(
        self, view: View, name: str, first: int, rows: int, transpose: bool, base: int, elements: int
    ) -> None:
        """Rows [first, first + rows) of weight `name` into a buffer of `elements` weights from element `base`
        on (a grouped buffer holds several matrices: store_group), filled in chunks of about CHUNK_BYTES so
        the loader never holds a whole matrix. Quantized: codes in element order, then every block's parameters."""
        info, dtype = self.tensors[name], self.precision(name)
        K = info.shape[1]
        stored_rows = self.stored_rows(dtype, rows, transpose)
        per_row = info.nbytes // info.shape[0]
        chunk = max(128, CHUNK_BYTES // per_row // 128 * 128)  # whole quantization blocks per chunk
        convert = {
            "BF16": "bf16-f16" if dtype == "f16" else "bf16-f32",
            "F16": "f16-f32" if dtype != "f16" else None,
        }.get(info.dtype)
        for r0 in range(0, rows, chunk):
            n = min(chunk, rows - r0)
            start = info.start + (first + r0) * per_row
            options = {}
            if dtype in SCHEMES:
                scheme = SCHEMES[dtype]
                at = view.offset + scheme.code_bytes(base + r0 * K)
                params_at = (
                    view.offset + scheme.param_offset(elements) + (base + r0 * K) // scheme.block * scheme.param_bytes
                )
                if transpose:  # k-major blocks: column k of these rows starts element k·stored_rows + r0
                    assert info.dtype not in SCHEMES and r0 % scheme.block == 0, (name, r0)
                    at = view.offset + scheme.code_bytes(r0)
                    params_at = view.offset + scheme.param_offset(stored_rows * K)
                    params_at += r0 // scheme.block * scheme.param_bytes
                    options = {"quantize": dtype, "params_offset": params_at, "transpose": (n, K, stored_rows)}
                elif info.dtype in SCHEMES:  # quantized ahead of time: the parameters are copied as they are too
                    params = info.params_start + (first + r0) * K // scheme.block * scheme.param_bytes
                    self._fill(view, params_at, params, params + -(-n * K // scheme.block) * scheme.param_bytes)
                else:
                    options = {"quantize": dtype, "params_offset": params_at}
            elif transpose:  # column k of these rows lands at base + k·stored_rows + r0
                at = view.offset + ops.weight_bytes(dtype, base + r0)
                options = {"transpose": (n, K, stored_rows)}
            else:
                at = view.offset + ops.weight_bytes(dtype, base + r0 * K)
            self._fill(view, at, start, start + n * per_row, convert, **options)

    def matvec_shape(self, name: str, lora: bool) -> tuple[int, int]:
        """(M, K) of the product: an nn.Linear weight is [M, K]; a LoRA matrix is stored [K, M] (x @ w1)."""
        rows, cols = self.tensors[name].shape
        return (cols, rows) if lora else (rows, cols)

    def groupable(self, names: list[str], lora: bool) -> bool:
        """Whether these whole matrices can share one buffer and one grouped matvec (ops.matvec_group):
        one precision, layout and K, k-major parts of whole vec4 columns, quantized parts of whole blocks,
        and one binding for all."""
        dtypes = {self.precision(n) for n in names}
        layouts = {self.layout(n)["row_major"] and not lora for n in names}
        shapes = [self.matvec_shape(n, lora) for n in names]
        if len(dtypes) != 1 or len(layouts) != 1 or len({K for _, K in shapes}) != 1 or len(names) > ops.MAX_PARTS:
            return False
        dtype, row_major = dtypes.pop(), layouts.pop()
        if dtype in SCHEMES and not row_major:  # k-major blocks pad each matrix's rows (stored_rows): alone only
            return False
        whole_parts = all(M % 4 == 0 for M, _ in shapes) or row_major
        if dtype in SCHEMES:
            whole_parts = whole_parts and all(M * K % SCHEMES[dtype].block == 0 for M, K in shapes)
        return whole_parts and ops.weight_bytes(dtype, sum(M * K for M, K in shapes)) <= self.max_binding

    def store_group(self, names: list[str], lora: bool) -> tuple[View, str]:
        """Whole matrices one after another in one buffer, each laid out as it would be alone (groupable)."""
        return self._once(("group", tuple(names), lora), lambda: self._store_group_new(names, lora))

    def _store_group_new(self, names: list[str], lora: bool) -> tuple[View, str]:
        assert self.groupable(names, lora), names
        dtype = self.precision(names[0])
        transpose = not lora and not self.layout(names[0])["row_major"]
        sizes = [self.tensors[n].numel for n in names]
        view = self.plan.buffer(" + ".join(names), ops.weight_bytes(dtype, sum(sizes)), "weight")
        for i, name in enumerate(names):
            self.weight_bytes[name] = self.weight_bytes.get(name, 0) + ops.weight_bytes(dtype, sizes[i])
            self._fill_matrix(view, name, 0, self.tensors[name].shape[0], transpose, sum(sizes[:i]), sum(sizes))
        return view, dtype

    def matvec_group(
        self,
        program: str,
        parts: list[tuple[str, ops.Part]],
        x: View,
        out: View,
        strides: tuple[int, int],
        chunk: dict,
        lora: bool = False,
        bias: View | None = None,
    ) -> None:
        """Each named matrix times its part of x into its part of out (ops.Part; x and out rows `strides` floats
        apart): one grouped dispatch when groupable, else one matvec each."""
        names = [name for name, _ in parts]
        x_stride, out_stride = strides
        tokens = chunk.get("tokens", 1)
        variant = {"row_major": False, **self.lora_options()} if lora else self.layout(names[0])
        if self.groupable(names, lora):
            variant = variant if lora else self.ops_options(variant, names[0], tokens)
            K = self.matvec_shape(names[0], lora)[1]
            view, dtype = self.store_group(names, lora)
            ops.matvec_group(
                self.plan,
                program,
                view,
                dtype,
                x,
                out,
                [part for _, part in parts],
                K,
                x_stride=x_stride,
                out_stride=out_stride,
                bias=bias,
                **variant,
                **chunk,
            )
            return
        for n, (name, part) in enumerate(parts):
            first = sum(p.M for _, p in parts[:n])  # this part's biases in `bias`
            M, K = self.matvec_shape(name, lora)
            variant = {"row_major": False, **self.lora_options()} if lora else self.matvec_options(name, M, tokens)
            view, dtype = self.lora(name) if lora else self._store(name, 0, M, transpose=not variant["row_major"])
            ops.matvec(
                self.plan,
                program,
                view,
                dtype,
                x,
                out,
                M,
                K,
                act=part.act,
                bias=None if bias is None else View(bias.buffer, bias.offset + first * F32, M * F32),
                x_offset=part.x_offset,
                x_stride=x_stride,
                row_offset=part.out_offset,
                out_stride=out_stride,
                **variant,
                **chunk,
            )

    def _fill(self, view: View, at: int, start: int, end: int, convert: str | None = None, **options) -> None:
        """File bytes [start, end) into the view's buffer from offset `at` on (plan.Plan.fill)."""
        self.plan.fill(View(view.buffer, at, view.offset + view.size - at), start, end, convert, **options)

    def lora(self, name: str) -> tuple[View, str]:
        """A LoRA matrix: stored [K, M] already, the k-major layout."""
        return self._store(name, 0, self.tensors[name].shape[0], transpose=False)

    def linear(self, program: str, name: str, x: View, out: View, **options) -> None:
        """out (+)= act(W·x) for an nn.Linear weight W [M, K], in this plan's matvec variant."""
        M, K = self.tensors[name].shape
        variant = self.matvec_options(name, M, options.get("tokens", 1))
        view, dtype = self._store(name, 0, M, transpose=not variant["row_major"])
        ops.matvec(self.plan, program, view, dtype, x, out, M, K, **variant, **options)

    def row_parts(self, name: str, transpose: bool) -> list[tuple[View, str, int, int]]:
        """A [rows, C] matrix in parts no larger than one binding: (view, dtype, first row, rows)."""
        rows, C = self.tensors[name].shape
        dtype = self.precision(name)
        unit = 128 if dtype in SCHEMES else 4  # quantized parts hold whole blocks
        per_part = max(unit, self.max_binding // ops.weight_bytes(dtype, unit * C) * unit)
        return [
            (*self._store(name, first, min(per_part, rows - first), transpose), first, min(per_part, rows - first))
            for first in range(0, rows, per_part)
        ]

    def host_table(self, name: str, row: View) -> HostEmbedding:
        """The table in host memory as the file has it, filled in chunks like any weight; `row` is
        the decode step's input (a prefill's rows are CompiledModel.chunk_input)."""
        return self._once(("host", name), lambda: self._host_table_new(name, row))

    def _host_table_new(self, name: str, row: View) -> HostEmbedding:
        info = self.tensors[name]
        table = self.plan.buffer(name, info.nbytes, "host")
        per_row = info.nbytes // info.shape[0]
        chunk = max(1, CHUNK_BYTES // per_row) * per_row
        for at in range(0, info.nbytes, chunk):
            self._fill(table, table.offset + at, info.start + at, info.start + min(info.nbytes, at + chunk))
        return HostEmbedding(table, info.dtype, row)

    def vectors(self, label: str, names: list[str]) -> View:
        return self._once(("vectors", label), lambda: self._vectors_new(label, names))

    def _vectors_new(self, label: str, names: list[str]) -> View:
        """Small vectors side by side in one float32 buffer (widened from f16/bf16 as they load)."""
        sizes = [self.tensors[n].numel for n in names]
        view = self.plan.buffer(label, sum(sizes) * F32, "weight")
        offset = 0
        for name, size in zip(names, sizes):
            info = self.tensors[name]
            self.weight_bytes[name] = size * F32
            convert = {"F32": None, "F16": "f16-f32", "BF16": "bf16-f32"}[info.dtype]
            self.plan.fill(View(view.buffer, offset, size * F32), info.start, info.end, convert)
            offset += size * F32
        return view

    def scratch(self, name: str, floats: int) -> View:
        return self.plan.buffer(name, floats * F32, "scratch")


@dataclass
class Activations:
    """The scratch buffers one program's layers work in, for chunks of `tokens` rows (1: a decode
    step). Every per-token quantity is [tokens, C] (or [tokens, width]); `mixed` and `vecs` hold
    six of them side by side (slots r w k v a g)."""

    tokens: int
    count: View | None  # io: u32, how many of the rows are real tokens (None: all, a decode step)
    x: View  # the residual stream
    xx: View  # a normalised copy
    mixed: View  # token-shift outputs, 6 slots
    vecs: View  # r w k v a g, 6 slots
    hidden: View  # LoRAs' inner activations, [tokens, Σ ranks]
    v_first: View  # block 0's v
    wkv_out: View  # y | bonus
    y_gated: View  # (GroupNorm(y) + bonus) ⊙ g
    ffn_hidden: View

    @staticmethod
    def floats_per_token(cfg: ModelConfig) -> dict[str, int]:
        C = cfg.n_embd
        # RWKV-7's four LoRA down-projections side by side (one grouped matvec); RWKV-6's five ddlerp ones
        lora = max(cfg.d_decay_lora + cfg.d_aaa_lora + cfg.d_mv_lora + cfg.d_gate_lora, 5 * cfg.d_mix_lora)
        return {
            "x": C,
            "xx": C,
            "mixed": 6 * C,
            "vecs": 6 * C,
            "hidden": lora,
            "v_first": C,
            "wkv_out": 2 * C,
            "y_gated": C,
            "ffn_hidden": cfg.dim_ffn,
        }

    @classmethod
    def make(cls, b: "_Builder", tokens: int, count: View | None, suffix: str = "") -> "Activations":
        sizes = cls.floats_per_token(b.cfg)
        return cls(tokens, count, **{name: b.scratch(name + suffix, tokens * n) for name, n in sizes.items()})

    @staticmethod
    def slot(view: View, index: int) -> View:
        """Slot `index` of a six-slot buffer (mixed, vecs): [tokens, C]."""
        return view.slot(index, view.size // 6)


def fit_chunk(config: ModelConfig, budget: int, wanted: int = DEFAULT_CHUNK) -> int:
    """The prefill chunk for a budget: as asked, halved while its activations would take more than
    1/16 of the budget (a tight budget is better spent on wider weights than on prompt speed)."""
    per_token = sum(Activations.floats_per_token(config).values()) * F32
    while wanted > 1 and per_token * wanted > budget // 16:
        wanted //= 2
    return wanted


def compile_model(
    config: ModelConfig,
    tensors: dict[str, TensorInfo],
    max_binding: int = DEFAULT_MAX_BINDING,
    matvec: str = "cols",
    precisions: dict[str, str] | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> CompiledModel:
    """The plan for this model; `precisions` maps matrix names to f32 | f16 | int8 | nf4
    (budget.py chooses them; unnamed matrices keep file_precision). Programs (one weight table for all):
      decode     the token in `token` -> logits; the state advances one token
      sample     logits -> `sampled`, which also becomes the next decode input
      prefill    up to `chunk` tokens (ids in `tokens`, how many in `count`) through every layer: the
                 state advances; no head
      head_last  after a prefill: the last real token's logits (or any row's: `count` = row + 1)
      pool       after a prefill: ln_out of every real row, summed into `pooled` [C] and the last one
                 copied into `pooled_last` [C] (embed())
      keep{i}    `sampled` -> history[i]: a batch of decode + sample + keep{i} steps reads its ids back once
      snapshot / restore   state, counts, sampler settings and `token` copied aside and back"""
    cfg, b = config, _Builder(config, tensors, max_binding, matvec, precisions or {})
    plan = b.plan
    C = cfg.n_embd
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 token, not {chunk}")
    t_pad = -(-chunk // ops.token_tile(chunk)) * ops.token_tile(chunk)

    token = plan.buffer("token", 4, "io")
    logits = plan.buffer("logits", cfg.vocab_size * F32, "io")
    wkv_floats = wkv_state_floats(cfg)
    layer_state = (2 * C + wkv_floats) * F32
    state = plan.buffer("state", cfg.n_layer * layer_state, "state")
    tokens, count = plan.buffer("tokens", t_pad * 4, "io"), plan.buffer("count", 4, "io")
    step = Activations.make(b, 1, None)
    chunked = Activations.make(b, t_pad, count, suffix=f"[{t_pad}]")

    host_embedding = _embedding(b, DECODE, step, token)
    _embedding(b, PREFILL, chunked, tokens)
    for acts, program in ((step, DECODE), (chunked, PREFILL)):
        ln0 = b.vectors("blocks.0.ln0", ["blocks.0.ln0.weight", "blocks.0.ln0.bias"])
        ops.norm(
            plan, program, acts.xx, ln0.slot(0, C * F32), ln0.slot(1, C * F32), acts.x, C, 1, LN_EPS, tokens=acts.tokens
        )
        for i in range(cfg.n_layer):
            base = i * layer_state
            layer = (
                View(state.buffer, base, C * F32),
                View(state.buffer, base + C * F32, wkv_floats * F32),
                View(state.buffer, base + (C + wkv_floats) * F32, C * F32),
            )  # att_shift, wkv, ffn_shift
            block_for(cfg.version)(b, program, acts, i, *layer)

    last = b.scratch("last_x", C)
    ops.rows(plan, HEAD_LAST, "last", chunked.x, count, last, C, t_pad)
    _head(b, DECODE, step.x, step.xx, logits)
    _head(b, HEAD_LAST, last, step.xx, logits)

    pooled, pooled_last = b.scratch("pooled", C), b.scratch("pooled_last", C)
    ln_out = b.vectors("ln_out", ["ln_out.weight", "ln_out.bias"])
    ops.norm(
        plan, POOL, chunked.x, ln_out.slot(0, C * F32), ln_out.slot(1, C * F32), chunked.xx, C, 1, LN_EPS, tokens=t_pad
    )
    ops.rows(plan, POOL, "sum", chunked.xx, count, pooled, C, t_pad)
    ops.rows(plan, POOL, "last", chunked.xx, count, pooled_last, C, t_pad)

    sampled, sampler = plan.buffer("sampled", 4, "io"), plan.buffer("sampler", ops.SAMPLER_PARAMS, "io")
    counts = plan.buffer("counts", cfg.vocab_size * 4, "state")
    ops.sample(plan, SAMPLE, logits, counts, sampler, b.scratch("probs", cfg.vocab_size), sampled, cfg.vocab_size)
    plan.copy(SAMPLE, sampled, token)
    history = plan.buffer("history", BATCH * 4, "io")
    for i in range(BATCH):
        plan.copy(keep(i), sampled, history.slot(i, 4))
    for view in (state, counts, sampler, token):  # everything a decode + sample step changes
        copy = plan.buffer(f"snapshot of {plan.buffers[view.buffer]['name']}", view.size, "state")
        plan.copy(SNAPSHOT, view, copy)
        plan.copy(RESTORE, copy, view)
    return CompiledModel(
        cfg,
        plan,
        token,
        logits,
        state,
        sampled,
        sampler,
        counts,
        matvec,
        b.weight_bytes,
        host_embedding,
        chunk,
        tokens,
        count,
        chunked.xx,
        pooled,
        pooled_last,
        history,
    )


def _embedding(b: _Builder, program: str, acts: Activations, ids: View) -> "HostEmbedding | None":
    """acts.xx = the embedding rows of `ids`: gathered on the GPU, or (the table in host memory)
    written by the engine before the program runs."""
    C = b.cfg.n_embd
    if b.precision("emb.weight") == HOST:
        return b.host_table("emb.weight", acts.xx)
    for table, dtype, first, rows in b.row_parts("emb.weight", transpose=False):  # gathered by row
        ops.embed(b.plan, program, table, dtype, ids, acts.xx, rows, C, row_start=first, tokens=acts.tokens)
    return None


def block_for(version: str):
    """The block function of a version: (builder, program, activations, layer, att_shift, wkv, ffn_shift)."""
    if version == "x070":
        return _block
    if version == "x040":
        from .model4 import rwkv4_block  # it builds on this module

        return rwkv4_block
    from .model56 import BLOCKS  # it builds on this module

    return BLOCKS[version]


def classic_channel_mix(
    b: _Builder, p: str, a: Activations, i: int, ffn_shift: View, mix: tuple[str, str], current: bool
) -> None:
    """reference.classic_channel_mix on the GPU, added to the residual a.x: with xk, xr the token-shift
    mixes of LayerNorm(x; ln2) by the weights named `mix` (k's, r's; `current` as reference.shift_mix),
    x += sigmoid(Wr·xr) ⊙ (Wv·relu(Wk·xk)²). Uses a.xx, mixed slots 0-1, vecs slot R and ffn_hidden."""
    C, T, plan = b.cfg.n_embd, a.tokens, b.plan
    ffn, ln = f"blocks.{i}.ffn.", f"blocks.{i}."
    chunk = {"tokens": T, "count": a.count}
    ln2 = b.vectors(ln + "ln2", [ln + "ln2.weight", ln + "ln2.bias"])
    ops.norm(plan, p, a.x, ln2.slot(0, C * F32), ln2.slot(1, C * F32), a.xx, C, 1, LN_EPS, tokens=T)
    mixes = b.vectors(ffn + "mix", [ffn + name for name in mix])
    ops.token_shift(plan, p, a.xx, ffn_shift, mixes, a.mixed, C, 2, current=current, **chunk)
    b.linear(p, ffn + "key.weight", a.slot(a.mixed, 0), a.ffn_hidden, act="relu2", **chunk)
    b.linear(p, ffn + "receptance.weight", a.slot(a.mixed, 1), a.slot(a.vecs, R), act="sigmoid", **chunk)
    b.linear(p, ffn + "value.weight", a.ffn_hidden, a.x, accumulate=True, gate=a.slot(a.vecs, R), **chunk)


def _block(b: _Builder, p: str, a: Activations, i: int, att_shift: View, wkv_state: View, ffn_shift: View) -> None:
    """One layer over the rows of `a` (reference.py's block: time mixing, then channel mixing)."""
    cfg, plan = b.cfg, b.plan
    C, N, T = cfg.n_embd, cfg.head_size, a.tokens
    att, ffn, ln = f"blocks.{i}.att.", f"blocks.{i}.ffn.", f"blocks.{i}."
    mixed, vecs = (lambda s: a.slot(a.mixed, s)), (lambda s: a.slot(a.vecs, s))  # noqa: E731
    chunk = {"tokens": T, "count": a.count}

    # time mixing
    ln1 = b.vectors(ln + "ln1", [ln + "ln1.weight", ln + "ln1.bias"])
    mixes = b.vectors(att + "mix", [att + m for m in ATT_MIX])
    ops.norm_shift(plan, p, a.x, ln1, att_shift, mixes, a.mixed, C, 6, LN_EPS, **chunk)  # LayerNorm, then the shift
    slot = T * C  # floats from one slot of `mixed` / `vecs` to the next
    b.matvec_group(
        p,
        [
            (att + proj + ".weight", ops.Part(C, s * slot, s * slot))
            for s, proj in ((R, "receptance"), (K, "key"), (V, "value"))
        ],
        a.mixed,
        a.vecs,
        (C, C),
        chunk,
    )
    loras = [("w", W, cfg.d_decay_lora, "tanh"), ("a", A, cfg.d_aaa_lora, "none"), ("g", G, cfg.d_gate_lora, "sigmoid")]
    loras += [("v", V, cfg.d_mv_lora, "none")] if i else []  # layer 0 keeps v itself as v_first
    ranks = sum(rank for _, _, rank, _ in loras)
    inner = {name: sum(r for _, _, r, _ in loras[:n]) for n, (name, *_) in enumerate(loras)}  # starts in `hidden`
    b.matvec_group(
        p,
        [(att + name + "1", ops.Part(rank, s * slot, inner[name], act)) for name, s, rank, act in loras],
        a.mixed,
        a.hidden,
        (C, ranks),
        chunk,
        lora=True,
    )
    biases = b.vectors(att + "lora_bias", [att + "w0", att + "a0"] + ([att + "v0"] if i else []))
    # w's and a's up-projections together (their biases w0 | a0 lie side by side), then g's
    b.matvec_group(
        p,
        [
            (att + "w2", ops.Part(C, inner["w"], W * slot, "decay")),
            (att + "a2", ops.Part(C, inner["a"], A * slot, "sigmoid")),
        ],
        a.hidden,
        a.vecs,
        (ranks, C),
        chunk,
        lora=True,
        bias=biases.slot(0, 2 * C * F32),
    )
    _lora_up(b, p, att + "g2", a.hidden, (inner["g"], ranks), vecs(G), cfg.d_gate_lora, "none", None, chunk)
    if i == 0:
        plan.copy(p, vecs(V), a.v_first)
    else:  # v += (v_first − v)·sigmoid(v0 + (xv·v1)·v2), in the LoRA's epilogue
        toward = {**chunk, "toward": a.v_first}
        _lora_up(
            b,
            p,
            att + "v2",
            a.hidden,
            (inner["v"], ranks),
            vecs(V),
            cfg.d_mv_lora,
            "sigmoid",
            biases.slot(2, C * F32),
            toward,
        )
    params = b.vectors(att + "wkv_params", [att + "k_k", att + "k_a", att + "r_k"])
    ops.wkv7(plan, p, a.vecs, params, wkv_state, a.wkv_out, C, N, **chunk)
    ln_x = b.vectors(att + "ln_x", [att + "ln_x.weight", att + "ln_x.bias"])
    y, bonus = a.wkv_out.slot(0, T * C * F32), a.wkv_out.slot(1, T * C * F32)
    ops.norm(
        plan,
        p,
        y,
        ln_x.slot(0, C * F32),
        ln_x.slot(1, C * F32),
        a.y_gated,
        N,
        cfg.n_head,
        GN_EPS,
        tokens=T,
        add=bonus,
        gate=vecs(G),
    )  # (GroupNorm(y) + bonus) ⊙ g
    b.linear(p, att + "output.weight", a.y_gated, a.x, accumulate=True, **chunk)

    # channel mixing
    ln2 = b.vectors(ln + "ln2", [ln + "ln2.weight", ln + "ln2.bias"])
    ops.norm_shift(plan, p, a.x, ln2, ffn_shift, b.vectors(ffn + "x_k", [ffn + "x_k"]), mixed(0), C, 1, LN_EPS, **chunk)
    b.linear(p, ffn + "key.weight", mixed(0), a.ffn_hidden, act="relu2", **chunk)
    b.linear(p, ffn + "value.weight", a.ffn_hidden, a.x, accumulate=True, **chunk)


def _head(b: _Builder, program: str, x: View, xx: View, logits: View) -> None:
    """logits = W_head · LayerNorm(x; ln_out) for one token, the head split by rows where it must be."""
    C = b.cfg.n_embd
    ln_out = b.vectors("ln_out", ["ln_out.weight", "ln_out.bias"])
    ops.norm(b.plan, program, x, ln_out.slot(0, C * F32), ln_out.slot(1, C * F32), xx, C, 1, LN_EPS)
    transpose = not b.layout("head.weight")["row_major"]
    for head, dtype, first, rows in b.row_parts("head.weight", transpose=transpose):
        ops.matvec(
            b.plan, program, head, dtype, xx, logits, rows, C, row_offset=first, **b.matvec_options("head.weight", rows)
        )


def _lora_up(
    b: _Builder,
    program: str,
    name: str,
    hidden: View,
    at: tuple[int, int],
    out: View,
    rank: int,
    outer: str,
    bias: View | None,
    chunk: dict,
) -> None:
    """out = outer(bias + h @ w2), h the LoRA's inner activations: `rank` floats from at[0] in rows of `hidden`
    at[1] floats apart (the grouped down-projections' output in `_block`)."""
    view, dtype = b.lora(name)
    x_offset, x_stride = at
    ops.matvec(
        b.plan,
        program,
        view,
        dtype,
        hidden,
        out,
        b.cfg.n_embd,
        rank,
        row_major=False,
        act=outer,
        bias=bias,
        x_offset=x_offset,
        x_stride=x_stride,
        **chunk,
        **b.lora_options(),
    )


def _lora(
    b: _Builder,
    program: str,
    prefix: str,
    x: View,
    hidden: View,
    out: View,
    rank: int,
    inner: str,
    bias: View | None,
    outer: str,
    chunk: dict,
) -> None:
    """out = outer(bias + inner(x @ w1) @ w2): the low-rank paths of w, a, v and g."""
    C = b.cfg.n_embd
    down = {k: v for k, v in chunk.items() if k != "toward"}
    down, up = {**down, **b.lora_options()}, {**chunk, **b.lora_options()}
    ops.matvec(b.plan, program, *b.lora(prefix + "1"), x, hidden, rank, C, row_major=False, act=inner, **down)
    ops.matvec(
        b.plan, program, *b.lora(prefix + "2"), hidden, out, C, rank, row_major=False, act=outer, bias=bias, **up
    )
