"""The RWKV-7 graph: from the config and the file's tensor table to a Plan of GPU steps.

`compile_model` reads like reference.py's forward pass, one op call per line of maths;
each op (ops.py) checks its shapes. Matrices are stored at the precision budget.py chose (the
file's own by default: f32, or f16 unpacked in-shader; int8 / NF4 dequantized in-register), small
vectors widened to f32. Matrices larger than one storage binding (the head and the embedding of
large vocabularies) are split by rows; weights are filled in chunks of about CHUNK_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ops
from .config import GN_EPS, LN_EPS, ModelConfig
from .plan import Plan, View
from .quant import SCHEMES
from .safetensors import TensorInfo

F32 = 4
DECODE = "decode"  # token -> logits, state advanced
SAMPLE = "sample"  # logits -> sampled token, which also becomes the next decode input
GENERATE = "generate"  # decode then sample: one submission per generated token
DEFAULT_MAX_BINDING = 128 << 20  # WebGPU's default maxStorageBufferBindingSize
ATT_MIX = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")  # slot order of the token-shift outputs
R, W, K, V, A, G = range(6)  # slots of `mixed` and of `vecs`


@dataclass
class CompiledModel:
    config: ModelConfig
    plan: Plan
    token: View  # io: the u32 token id to run
    logits: View  # io: [V] float32 after each decode step
    state: View  # per layer att_shift [C] | wkv [H,N,N] | ffn_shift [C]: State.to_bytes() order
    sampled: View  # io: the u32 token the sampler chose
    sampler: View  # io: ops.SAMPLER_PARAMS bytes of settings (and the step counter)
    counts: View  # state: [V] u32, how often each token was generated (for the penalties)
    matvec: str  # the weight layout and matvec variant the plan uses (MATVEC_VARIANTS)
    weight_bytes: dict[str, int]  # per file tensor read: its GPU bytes (budget.py checks its sums); unread ones absent
    host_embedding: "HostEmbedding | None" = None  # the table off the GPU: the engine writes each token's row


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


def choose_matvec(adapter: dict | None) -> str:
    """SwiftShader (a CPU) wants neighbouring invocations on neighbouring columns; GPUs want
    each row read by many invocations together (measured: DESIGN.md, build/bench.py)."""
    return "cols" if (adapter or {}).get("architecture") == "swiftshader" else "rows-wg"


HOST = "host"  # an embedding table kept off the GPU, its rows written per token (the budget's last resort)


def file_precision(info: TensorInfo) -> str:
    """How a matrix is stored when nothing else is asked: the file's own (bf16 widened to f32)."""
    return info.dtype if info.dtype in SCHEMES else "f16" if info.dtype == "F16" else "f32"


def allowed_precisions(info: TensorInfo) -> tuple[str, ...]:
    """What the loader can make of a matrix with this file dtype (no f32 -> f16 narrowing; a
    pre-quantized matrix stays as it is)."""
    if info.dtype in SCHEMES:
        return (info.dtype,)
    on_gpu = tuple(d for d in ops.WEIGHT_DTYPES if d != "f16" or info.dtype == "F16")
    return on_gpu + (HOST,) if info.name == "emb.weight" else on_gpu


CHUNK_BYTES = 4 << 20  # file bytes per fill: what the loader holds of one weight at a time


class _Builder:
    def __init__(self, config: ModelConfig, tensors: dict[str, TensorInfo], max_binding: int, matvec: str, precisions: dict[str, str]):
        self.cfg, self.tensors, self.max_binding = config, tensors, max_binding
        self.variant = MATVEC_VARIANTS[matvec]
        self.precisions = precisions
        self.plan = Plan()
        self.weight_bytes: dict[str, int] = {}  # per file tensor: the GPU bytes its buffers take

    def precision(self, name: str) -> str:
        info = self.tensors[name]
        precision = self.precisions.get(name, file_precision(info))
        if precision not in allowed_precisions(info):
            raise ValueError(f"{name} is {info.dtype} in the file and cannot be stored as {precision}; choose one of {allowed_precisions(info)}")
        return precision

    def layout(self, name: str) -> dict:
        """The matvec variant for this matrix: quantized ones are row-major (blocks run along rows)."""
        if self.precision(name) in SCHEMES and not self.variant["row_major"]:
            return MATVEC_VARIANTS["rows"]
        return self.variant

    def _store(self, name: str, first: int, rows: int, transpose: bool) -> tuple[View, str]:
        """Rows [first, first + rows) of a [R, K] weight in one buffer (k-major if `transpose`),
        filled in chunks of about CHUNK_BYTES so the loader never holds a whole matrix."""
        info, dtype = self.tensors[name], self.precision(name)
        K = info.shape[1]
        stored_rows = -(-rows // 4) * 4 if transpose else rows
        view = self.plan.buffer(f"{name}[{first}:{first + rows}]" if rows < info.shape[0] else name,
                                ops.weight_bytes(dtype, stored_rows * K), "weight")
        self.weight_bytes[name] = self.weight_bytes.get(name, 0) + view.size
        per_row = info.nbytes // info.shape[0]
        chunk = max(128, CHUNK_BYTES // per_row // 128 * 128)  # whole quantization blocks per chunk
        convert = {"BF16": "bf16-f32", "F16": "f16-f32" if dtype != "f16" else None}.get(info.dtype)
        for r0 in range(0, rows, chunk):
            n = min(chunk, rows - r0)
            start = info.start + (first + r0) * per_row
            options = {}
            if dtype in SCHEMES:  # codes in element order, then every block's parameters
                scheme = SCHEMES[dtype]
                at = view.offset + scheme.code_bytes(r0 * K)
                params_at = view.offset + scheme.param_offset(stored_rows * K) + r0 * K // scheme.block * scheme.param_bytes
                if info.dtype in SCHEMES:  # quantized ahead of time: the parameters are copied as they are too
                    params = info.params_start + (first + r0) * K // scheme.block * scheme.param_bytes
                    self._fill(view, params_at, params, params + -(-n * K // scheme.block) * scheme.param_bytes)
                else:
                    options = {"quantize": dtype, "params_offset": params_at}
            elif transpose:  # column k of these rows lands at k·stored_rows + r0
                at = view.offset + ops.weight_bytes(dtype, r0)
                options = {"transpose": (n, K, stored_rows)}
            else:
                at = view.offset + ops.weight_bytes(dtype, r0 * K)
            self._fill(view, at, start, start + n * per_row, convert, **options)
        return view, dtype

    def _fill(self, view: View, at: int, start: int, end: int, convert: str | None = None, **options) -> None:
        """File bytes [start, end) into the view's buffer from offset `at` on (plan.Plan.fill)."""
        self.plan.fill(View(view.buffer, at, view.offset + view.size - at), start, end, convert, **options)

    def lora(self, name: str) -> tuple[View, str]:
        """A LoRA matrix: stored [K, M] already, the k-major layout."""
        return self._store(name, 0, self.tensors[name].shape[0], transpose=False)

    def linear(self, program: str, name: str, x: View, out: View, **options) -> None:
        """out (+)= act(W·x) for an nn.Linear weight W [M, K], in this plan's matvec variant."""
        M, K = self.tensors[name].shape
        variant = self.layout(name)
        view, dtype = self._store(name, 0, M, transpose=not variant["row_major"])
        ops.matvec(self.plan, program, view, dtype, x, out, M, K, **variant, **options)

    def row_parts(self, name: str, transpose: bool) -> list[tuple[View, str, int, int]]:
        """A [rows, C] matrix in parts no larger than one binding: (view, dtype, first row, rows)."""
        rows, C = self.tensors[name].shape
        dtype = self.precision(name)
        unit = 128 if dtype in SCHEMES else 4  # quantized parts hold whole blocks
        per_part = max(unit, self.max_binding // ops.weight_bytes(dtype, unit * C) * unit)
        return [(*self._store(name, first, min(per_part, rows - first), transpose), first, min(per_part, rows - first))
                for first in range(0, rows, per_part)]

    def host_table(self, name: str, row: View) -> HostEmbedding:
        """The table in host memory as the file has it, filled in chunks like any weight."""
        info = self.tensors[name]
        table = self.plan.buffer(name, info.nbytes, "host")
        per_row = info.nbytes // info.shape[0]
        chunk = max(1, CHUNK_BYTES // per_row) * per_row
        for at in range(0, info.nbytes, chunk):
            self._fill(table, table.offset + at, info.start + at, info.start + min(info.nbytes, at + chunk))
        return HostEmbedding(table, info.dtype, row)

    def vectors(self, label: str, names: list[str]) -> View:
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


def compile_model(config: ModelConfig, tensors: dict[str, TensorInfo], max_binding: int = DEFAULT_MAX_BINDING,
                  matvec: str = "cols", precisions: dict[str, str] | None = None) -> CompiledModel:
    """The plan for this model; `precisions` maps matrix names to f32 | f16 | int8 | nf4
    (budget.py chooses them; unnamed matrices keep file_precision)."""
    cfg, b = config, _Builder(config, tensors, max_binding, matvec, precisions or {})
    plan, p = b.plan, DECODE
    C, H, N, F = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.dim_ffn
    lora = max(cfg.d_decay_lora, cfg.d_aaa_lora, cfg.d_mv_lora, cfg.d_gate_lora)

    token = plan.buffer("token", 4, "io")
    logits = plan.buffer("logits", cfg.vocab_size * F32, "io")
    layer_state = (2 * C + H * N * N) * F32
    state = plan.buffer("state", cfg.n_layer * layer_state, "state")
    x, xx = b.scratch("x", C), b.scratch("xx", C)  # the residual stream; a normalised copy
    mixed, vecs = b.scratch("mixed", 6 * C), b.scratch("vecs", 6 * C)  # token-shift outputs; r w k v a g
    hidden, gate, v_first = b.scratch("lora_hidden", lora), b.scratch("v_gate", C), b.scratch("v_first", C)
    wkv_out, y_norm, y_gated = b.scratch("wkv_out", 2 * C), b.scratch("y_norm", C), b.scratch("y_gated", C)
    ffn_hidden = b.scratch("ffn_hidden", F)
    slot = lambda view, i: view.slot(i, C * F32)  # noqa: E731

    if b.precision("emb.weight") == HOST:
        host_embedding = b.host_table("emb.weight", xx)
    else:
        host_embedding = None
        for table, dtype, first, rows in b.row_parts("emb.weight", transpose=False):  # gathered by row
            ops.embed(plan, p, table, dtype, token, xx, rows, C, row_start=first)
    ln0 = b.vectors("blocks.0.ln0", ["blocks.0.ln0.weight", "blocks.0.ln0.bias"])
    ops.norm(plan, p, xx, slot(ln0, 0), slot(ln0, 1), x, C, 1, LN_EPS)

    for i in range(cfg.n_layer):
        att, ffn = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        base = i * layer_state
        att_shift, wkv_state, ffn_shift = View(state.buffer, base, C * F32), View(state.buffer, base + C * F32, H * N * N * F32), View(state.buffer, base + (C + H * N * N) * F32, C * F32)

        # time mixing
        ln1 = b.vectors(f"blocks.{i}.ln1", [f"blocks.{i}.ln1.weight", f"blocks.{i}.ln1.bias"])
        ops.norm(plan, p, x, slot(ln1, 0), slot(ln1, 1), xx, C, 1, LN_EPS)
        ops.token_shift(plan, p, xx, att_shift, b.vectors(att + "mix", [att + m for m in ATT_MIX]), mixed, C, 6)
        for s, proj in ((R, "receptance"), (K, "key"), (V, "value")):
            b.linear(p, att + proj + ".weight", slot(mixed, s), slot(vecs, s))
        biases = b.vectors(att + "lora_bias", [att + "w0", att + "a0"] + ([att + "v0"] if i else []))
        _lora(b, p, att + "w", slot(mixed, W), hidden, slot(vecs, W), cfg.d_decay_lora, "tanh", slot(biases, 0), "decay")
        _lora(b, p, att + "a", slot(mixed, A), hidden, slot(vecs, A), cfg.d_aaa_lora, "none", slot(biases, 1), "sigmoid")
        _lora(b, p, att + "g", slot(mixed, G), hidden, slot(vecs, G), cfg.d_gate_lora, "sigmoid", None, "none")
        if i == 0:
            plan.copy(p, slot(vecs, V), v_first)
        else:
            _lora(b, p, att + "v", slot(mixed, V), hidden, gate, cfg.d_mv_lora, "none", slot(biases, 2), "sigmoid")
            ops.lerp(plan, p, slot(vecs, V), v_first, gate, C)
        params = b.vectors(att + "wkv_params", [att + "k_k", att + "k_a", att + "r_k"])
        ops.wkv7(plan, p, vecs, params, wkv_state, wkv_out, C, N)
        ln_x = b.vectors(att + "ln_x", [att + "ln_x.weight", att + "ln_x.bias"])
        ops.norm(plan, p, slot(wkv_out, 0), slot(ln_x, 0), slot(ln_x, 1), y_norm, N, H, GN_EPS)
        ops.add_mul(plan, p, y_norm, slot(wkv_out, 1), slot(vecs, G), y_gated, C)
        b.linear(p, att + "output.weight", y_gated, x, accumulate=True)

        # channel mixing
        ln2 = b.vectors(f"blocks.{i}.ln2", [f"blocks.{i}.ln2.weight", f"blocks.{i}.ln2.bias"])
        ops.norm(plan, p, x, slot(ln2, 0), slot(ln2, 1), xx, C, 1, LN_EPS)
        ops.token_shift(plan, p, xx, ffn_shift, b.vectors(ffn + "x_k", [ffn + "x_k"]), slot(mixed, 0), C, 1)
        b.linear(p, ffn + "key.weight", slot(mixed, 0), ffn_hidden, act="relu2")
        b.linear(p, ffn + "value.weight", ffn_hidden, x, accumulate=True)

    ln_out = b.vectors("ln_out", ["ln_out.weight", "ln_out.bias"])
    ops.norm(plan, p, x, slot(ln_out, 0), slot(ln_out, 1), xx, C, 1, LN_EPS)
    head_variant = b.layout("head.weight")
    for head, dtype, first, rows in b.row_parts("head.weight", transpose=not head_variant["row_major"]):
        ops.matvec(plan, p, head, dtype, xx, logits, rows, C, row_offset=first, **head_variant)

    sampled, sampler = plan.buffer("sampled", 4, "io"), plan.buffer("sampler", ops.SAMPLER_PARAMS, "io")
    counts = plan.buffer("counts", cfg.vocab_size * 4, "state")
    ops.sample(plan, SAMPLE, logits, counts, sampler, b.scratch("probs", cfg.vocab_size), sampled, cfg.vocab_size)
    plan.copy(SAMPLE, sampled, token)
    plan.programs[GENERATE] = plan.programs[DECODE] + plan.programs[SAMPLE]
    return CompiledModel(cfg, plan, token, logits, state, sampled, sampler, counts, matvec, b.weight_bytes, host_embedding)


def _lora(b: _Builder, program: str, prefix: str, x: View, hidden: View, out: View, rank: int, inner: str, bias: View | None, outer: str) -> None:
    """out = outer(bias + inner(x @ w1) @ w2): the low-rank paths of w, a, v and g."""
    C = b.cfg.n_embd
    ops.matvec(b.plan, program, *b.lora(prefix + "1"), x, hidden, rank, C, row_major=False, act=inner)
    ops.matvec(b.plan, program, *b.lora(prefix + "2"), hidden, out, C, rank, row_major=False, act=outer, bias=bias)
