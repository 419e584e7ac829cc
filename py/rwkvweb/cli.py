"""`python -m rwkvweb`: inspect models, run the reference, tokenize, generate test models."""

from __future__ import annotations

import argparse
import json
import math
import sys

from dataclasses import asdict

from .budget import PRECISIONS, parse_bytes, plan_budget
from .config import ModelConfig, ModelError, model_config
from .model import DEFAULT_CHUNK, DEFAULT_MAX_BINDING, MATVEC_OPTIONS, MATVEC_VARIANTS, matvec_variant
from .quant import fold_quantized
from .pth import open_model_file
from .safetensors import FormatError
from .protocol import BridgeClosed, BridgeError, ProtocolError
from .source import SourceError

BRIDGE_ERRORS = (BridgeClosed, BridgeError, ProtocolError)  # webgpu-remote: the page or the console failed


BACKENDS = ["numpy", "webgpu", "webgpu-remote", "wgpu"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (FormatError, ModelError, SourceError, ValueError, FileNotFoundError, *BRIDGE_ERRORS) as error:
        print(f"rwkvweb {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def _matvec_name(name: str) -> str:
    try:
        matvec_variant(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rwkvweb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="print a model's config and tensor table (reads only the header)")
    info.add_argument("model", help="safetensors or .pth file path, or http(s) URL")
    info.set_defaults(run=cmd_info)

    plan = commands.add_parser(
        "plan", help="print the memory plan as JSON: per matrix precision and bytes (reads only the header)"
    )
    plan.add_argument("model")
    _budget_options(plan)
    plan.add_argument(
        "--max-binding", type=int, default=DEFAULT_MAX_BINDING, help="the GPU's maxStorageBufferBindingSize"
    )
    plan.add_argument(
        "--matvec",
        type=_matvec_name,
        default="cols",
        help=f"the weight layout ({', '.join(MATVEC_VARIANTS)}; cols: SwiftShader) and its options "
        f"(+{', +'.join(MATVEC_OPTIONS)}), e.g. rows-wg+subgroups+f16",
    )
    plan.set_defaults(run=cmd_plan)

    logits = commands.add_parser("logits", help='print {"logits": [[...], ...]}, one row per input token')
    logits.add_argument("model")
    logits.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    logits.add_argument(
        "--backend",
        choices=BACKENDS,
        default="numpy",
        help="webgpu: the browser engine in headless Chromium (needs a source checkout); "
        "webgpu-remote: the engine in this process, only the WebGPU bridge in a headless page (WebSocket); "
        "numpy: the float32 reference, or the planned engine on numpy when --budget/--precision is given; "
        "wgpu: the planned engine natively on wgpu-py (Vulkan; needs a source checkout)",
    )
    _budget_options(logits, default=None)
    _chunk_option(logits)
    logits.set_defaults(run=cmd_logits)

    embed = commands.add_parser(
        "embed", help='print {"embedding": [...]}: the hidden state after ln_out (the head is not run)'
    )
    embed.add_argument("model")
    embed_input = embed.add_mutually_exclusive_group(required=True)
    embed_input.add_argument("--tokens", help="comma-separated token ids")
    embed_input.add_argument("--text", help="text (models with a tokenizer)")
    embed.add_argument(
        "--pooling", choices=["last", "mean"], default="last", help="the last token's vector, or the mean over all"
    )
    embed.add_argument("--normalize", action="store_true", help="scale to unit length")
    embed.add_argument("--backend", choices=BACKENDS, default="numpy")
    _budget_options(embed)
    _chunk_option(embed)
    embed.set_defaults(run=cmd_embed)

    generate = commands.add_parser(
        "generate", help="continue a prompt; prints the text (or ids for models without a tokenizer)"
    )
    generate.add_argument("model")
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (World-vocabulary models)")
    prompt.add_argument("--tokens", help="prompt as comma-separated token ids")
    prompt.add_argument("--prompt-tokens", type=int, help="a synthetic prompt of N token ids (benchmarks)")
    generate.add_argument("--max-tokens", type=int, default=100)
    generate.add_argument("--backend", choices=BACKENDS, default="numpy")
    generate.add_argument(
        "--stats",
        action="store_true",
        help='print one more JSON line: {"prompt_tokens", "prefill_seconds", "generated", "decode_seconds"}',
    )
    _budget_options(generate)
    _chunk_option(generate)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    generate.add_argument("--top-p", type=float, default=0.85)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(run=cmd_generate)

    encode = commands.add_parser("encode", help="World-tokenize standard input; print the ids as a JSON list")
    encode.add_argument("--vocab", help="vocabulary file (default: the one in the rwkv package)")
    encode.set_defaults(run=cmd_encode)

    decode = commands.add_parser("decode", help="ids (a JSON list on standard input, or arguments) -> text")
    decode.add_argument("ids", nargs="*", type=int)
    decode.add_argument("--vocab")
    decode.set_defaults(run=cmd_decode)

    testmodel = commands.add_parser("testmodel", help="write a random RWKV model with official names and shapes")
    testmodel.add_argument("out")
    testmodel.add_argument("--layers", type=int, default=2)
    testmodel.add_argument("--width", type=int, default=128, help="n_embd, a multiple of 64")
    testmodel.add_argument("--vocab", type=int, default=256)
    testmodel.add_argument("--seed", type=int, default=0)
    testmodel.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    testmodel.add_argument(
        "--version", choices=["x070", "x060", "x052", "x040"], default="x070", help="RWKV 7, 6, 5.2 or 4"
    )
    testmodel.add_argument("--head-size", type=int, default=64, help="N, dividing the width")
    testmodel.set_defaults(run=cmd_testmodel)
    return parser


def _budget_options(parser, default: str | None = "2GB") -> None:
    parser.add_argument("--budget", default=default, help="GPU memory budget, e.g. 700MB, 1GB, 2GiB (default 2GB)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None if default is None else "auto",
        help="large matrices: auto (widest that fits) or one precision for all",
    )


def _chunk_option(parser) -> None:
    parser.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"prompt tokens per prefill submission (1: token by token; default {DEFAULT_CHUNK})",
    )


def _load_options(args) -> dict:
    """Model.load's budget, precision and chunk from the command line."""
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    return {"budget": parse_bytes(args.budget or "2GB"), "precision": args.precision or "auto", "chunk": args.chunk}


def _remote_backend(model: str):
    """The webgpu-remote backend: a headless page over a WebSocket (rwkvweb.console swaps in its console)."""
    from .remote import remote_backend

    return remote_backend(model)


REMOTE_BACKEND = _remote_backend


def _load_numpy(args, **options):
    """The planned engine on the numpy backend (or natively on wgpu), loaded from the command line's options."""
    import asyncio

    from .api import Model

    source = args.model
    if args.backend == "wgpu":
        from .wgpu_exec import WgpuBackend

        backend = WgpuBackend()
        options.update(backend=backend, matvec=backend.matvec, max_binding=backend.max_binding)
    elif args.backend == "webgpu-remote":
        backend = REMOTE_BACKEND(args.model)
        options.update(backend=backend, matvec=backend.matvec, max_binding=backend.max_binding)
        if hasattr(backend, "source"):  # in a VM (rwkvweb.console): the header too is read by the page
            source = backend.source(args.model)

    return asyncio.run(Model.load(source, **_load_options(args), **options))


def cmd_plan(args) -> None:
    file = open_model_file(args.model)
    tensors = fold_quantized(file.tensors, file.metadata)
    config = model_config(tensors)
    planned = plan_budget(config, tensors, parse_bytes(args.budget), args.precision, args.max_binding, args.matvec)
    json.dump({"model": args.model, "config": asdict(config), **planned.to_json()}, sys.stdout, indent=1)
    print()


def cmd_info(args) -> None:
    file = open_model_file(args.model)
    tensors = fold_quantized(file.tensors, file.metadata)  # pre-quantized matrices (build/quantize.py) as one row each
    config = model_config(tensors)
    print(f"model    {args.model}  ({file.source.size:,} bytes)")
    print(f"config   {config}")
    print(f"metadata {json.dumps(file.metadata)}")
    for name, info in tensors.items():
        print(f"  {name:40s} {info.dtype:5s} {str(list(info.shape)):18s} {_file_bytes(info):>12,}")


def _file_bytes(info) -> int:
    """A tensor's bytes in the file; a pre-quantized matrix's codes plus its block parameters."""
    return info.nbytes + getattr(info, "params_end", 0) - getattr(info, "params_start", 0)


def cmd_logits(args) -> None:
    tokens = _parse_ids(args.tokens)
    if args.backend == "webgpu":
        from .headless import headless_engine

        with headless_engine(args.model) as engine:
            engine.load(args.model, **_load_options(args))
            rows = engine.call("logits", {"tokens": tokens})
    elif args.backend in ("wgpu", "webgpu-remote") or args.budget or args.precision or args.chunk != DEFAULT_CHUNK:
        import asyncio

        import numpy as np

        model = _load_numpy(args, tokenizer_for=lambda config, metadata: None)
        with np.errstate(all="ignore"):  # NaN/Inf from a damaged file are reported once, by api.check_finite
            rows = [np.frombuffer(row, np.float32).tolist() for row in asyncio.run(model.logits(tokens))]
    else:
        import numpy as np

        from .reference import load

        with np.errstate(all="ignore"):  # an overflow shows as non-finite logits, reported by _check_finite
            rows = load(args.model).logits(tokens)[0].tolist()
    _check_finite(rows)
    json.dump({"logits": rows}, sys.stdout, allow_nan=False)
    print()


def cmd_generate(args) -> None:
    if args.prompt_tokens is not None:
        if args.prompt_tokens < 1:
            raise ValueError(f"--prompt-tokens must be at least 1, got {args.prompt_tokens}")
        prompt = [
            (7919 * i) % 255 + 1 for i in range(args.prompt_tokens)
        ]  # fixed ids 1..255: valid in any vocabulary of 256+
    else:
        prompt = args.prompt if args.prompt is not None else _parse_ids(args.tokens)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed}
    if args.backend == "webgpu":
        from .headless import headless_engine

        with headless_engine(args.model) as engine:
            engine.load(args.model, **_load_options(args))
            result = engine.call("generate", {"prompt": prompt, "options": {"max_tokens": args.max_tokens, **sampling}})
        text, tokens, stats = result["text"], result["tokens"], result
    else:
        import asyncio

        model = _load_numpy(args)
        generation = asyncio.run(model.generate(prompt, args.max_tokens, **sampling))
        text, tokens, stats = generation.text, generation.tokens, asdict(generation.stats)
    print(text if text or args.prompt is not None else json.dumps(tokens))
    if args.stats:
        print(
            json.dumps({key: stats[key] for key in ("prompt_tokens", "prefill_seconds", "generated", "decode_seconds")})
        )


def cmd_embed(args) -> None:
    inputs = args.text if args.text is not None else _parse_ids(args.tokens)
    if args.backend == "webgpu":
        from .headless import headless_engine

        with headless_engine(args.model) as engine:
            engine.load(args.model, **_load_options(args))
            vector = engine.call(
                "embed",
                {
                    "text" if args.text is not None else "ids": inputs,
                    "pooling": args.pooling,
                    "normalize": args.normalize,
                },
            )
            vector = [vector[str(i)] for i in range(len(vector))] if isinstance(vector, dict) else list(vector)
    else:
        import asyncio

        model = _load_numpy(args)
        vector = asyncio.run(model.embed(inputs, pooling=args.pooling, normalize=args.normalize)).tolist()
    json.dump({"embedding": vector}, sys.stdout)
    print()


def _check_finite(rows: list[list[float]]) -> None:
    """NaN or infinity has no JSON spelling, and no sampler can use it: an error, not output."""
    for position, row in enumerate(rows):
        if not all(math.isfinite(value) for value in row):
            raise ModelError(
                f"the logits after token {position} are not finite (NaN or infinity): the model's weights "
                f"hold NaN/Inf values or overflow float32; the file is damaged"
            )


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--tokens must be comma-separated integers, got {text!r}") from None


def cmd_encode(args) -> None:
    from .tokenizer import WorldTokenizer

    data = sys.stdin.buffer.read()
    print(json.dumps(WorldTokenizer.from_file(args.vocab).encode_bytes(data)))


def cmd_decode(args) -> None:
    from .tokenizer import WorldTokenizer

    ids = args.ids or _json_ids(sys.stdin.read())
    sys.stdout.buffer.write(WorldTokenizer.from_file(args.vocab).decode_bytes(ids))
    sys.stdout.flush()


def _json_ids(text: str) -> list[int]:
    """A JSON list of token ids from standard input: integers only (not 1.0, true or nested lists)."""
    from .safetensors import parse_json

    ids = parse_json(text, "standard input")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(
            f"decode wants a JSON list of non-negative integer token ids, e.g. [33, 44], got {text.strip()[:60]!r}"
        )
    return ids


def cmd_testmodel(args) -> None:
    from .testmodel import write_test_model

    if args.width <= 0 or args.width % 64:
        raise ValueError(f"--width must be a positive multiple of 64 (the head size), got {args.width}")
    if args.layers <= 0 or args.vocab <= 0:
        raise ValueError("--layers and --vocab must be positive")
    if args.head_size <= 0 or args.width % args.head_size:
        raise ValueError(f"--head-size must divide the width {args.width}, got {args.head_size}")
    config = ModelConfig.default_for(args.layers, args.width, args.vocab, args.head_size, args.version)
    write_test_model(args.out, config, seed=args.seed, dtype=args.dtype)
    print(f"wrote {args.out}: {config}")
