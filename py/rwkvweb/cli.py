"""`python -m rwkvweb`: inspect models, run the reference, tokenize, generate test models."""

from __future__ import annotations

import argparse
import json
import math
import sys

from dataclasses import asdict

from .budget import PRECISIONS, parse_bytes, plan_budget
from .config import ModelConfig, ModelError, model_config
from .model import DEFAULT_MAX_BINDING, MATVEC_VARIANTS
from .quant import fold_quantized
from .safetensors import FormatError, SafetensorsFile
from .source import SourceError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (FormatError, ModelError, SourceError, ValueError, FileNotFoundError) as error:
        print(f"rwkvweb {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rwkvweb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="print a model's config and tensor table (reads only the header)")
    info.add_argument("model", help="safetensors file path or http(s) URL")
    info.set_defaults(run=cmd_info)

    plan = commands.add_parser("plan", help="print the memory plan as JSON: per matrix precision and bytes (reads only the header)")
    plan.add_argument("model")
    _budget_options(plan)
    plan.add_argument("--max-binding", type=int, default=DEFAULT_MAX_BINDING, help="the GPU's maxStorageBufferBindingSize")
    plan.add_argument("--matvec", choices=sorted(MATVEC_VARIANTS), default="cols", help="the weight layout (cols: SwiftShader)")
    plan.set_defaults(run=cmd_plan)

    logits = commands.add_parser("logits", help='print {"logits": [[...], ...]}, one row per input token')
    logits.add_argument("model")
    logits.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    logits.add_argument("--backend", choices=["numpy", "webgpu"], default="numpy",
                        help="webgpu: the browser engine in headless Chromium (needs a source checkout); "
                             "numpy: the float32 reference, or the planned engine on numpy when --budget/--precision is given")
    _budget_options(logits, default=None)
    logits.set_defaults(run=cmd_logits)

    generate = commands.add_parser("generate", help="continue a prompt; prints the text (or ids for models without a tokenizer)")
    generate.add_argument("model")
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (World-vocabulary models)")
    prompt.add_argument("--tokens", help="prompt as comma-separated token ids")
    generate.add_argument("--max-tokens", type=int, default=100)
    generate.add_argument("--backend", choices=["numpy", "webgpu"], default="numpy")
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

    testmodel = commands.add_parser("testmodel", help="write a random RWKV-7 model with official names and shapes")
    testmodel.add_argument("out")
    testmodel.add_argument("--layers", type=int, default=2)
    testmodel.add_argument("--width", type=int, default=128, help="n_embd, a multiple of 64")
    testmodel.add_argument("--vocab", type=int, default=256)
    testmodel.add_argument("--seed", type=int, default=0)
    testmodel.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    testmodel.set_defaults(run=cmd_testmodel)
    return parser


def _budget_options(parser, default: str | None = "2GB") -> None:
    parser.add_argument("--budget", default=default, help="GPU memory budget, e.g. 700MB, 1GB, 2GiB (default 2GB)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None if default is None else "auto",
                        help="large matrices: auto (widest that fits) or one precision for all")


def cmd_plan(args) -> None:
    file = SafetensorsFile(args.model)
    tensors = fold_quantized(file.tensors, file.metadata)
    config = model_config(tensors)
    planned = plan_budget(config, tensors, parse_bytes(args.budget), args.precision, args.max_binding, args.matvec)
    json.dump({"model": args.model, "config": asdict(config), **planned.to_json()}, sys.stdout, indent=1)
    print()


def cmd_info(args) -> None:
    file = SafetensorsFile(args.model)
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
    options = {"budget": parse_bytes(args.budget or "2GB"), "precision": args.precision or "auto"}
    if args.backend == "webgpu":
        from .headless import headless_engine

        with headless_engine(args.model) as engine:
            engine.load(args.model, **options)
            rows = engine.call("logits", {"tokens": tokens})
    elif args.budget or args.precision:
        import asyncio

        import numpy as np

        from .api import Model

        async def run():
            model = await Model.load(args.model, tokenizer_for=lambda config, metadata: None, **options)
            return [np.frombuffer(row, np.float32).tolist() for row in await model.logits(tokens)]

        with np.errstate(all="ignore"):  # NaN/Inf from a damaged file are reported once, by api.check_finite
            rows = asyncio.run(run())
    else:
        import numpy as np

        from .reference import RWKV7

        with np.errstate(all="ignore"):  # an overflow shows as non-finite logits, reported by _check_finite
            rows = RWKV7.load(args.model).logits(tokens)[0].tolist()
    _check_finite(rows)
    json.dump({"logits": rows}, sys.stdout, allow_nan=False)
    print()


def cmd_generate(args) -> None:
    prompt = args.prompt if args.prompt is not None else _parse_ids(args.tokens)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed}
    if args.backend == "webgpu":
        from .headless import headless_engine

        with headless_engine(args.model) as engine:
            engine.load(args.model)
            result = engine.call("generate", {"prompt": prompt, "options": {"max_tokens": args.max_tokens, **sampling}})
        text, tokens = result["text"], result["tokens"]
    else:
        import asyncio

        from .api import Model

        async def run():
            model = await Model.load(args.model)
            return await model.generate(prompt, args.max_tokens, **sampling)

        generation = asyncio.run(run())
        text, tokens = generation.text, generation.tokens
    print(text if text or args.prompt is not None else json.dumps(tokens))


def _check_finite(rows: list[list[float]]) -> None:
    """NaN or infinity has no JSON spelling, and no sampler can use it: an error, not output."""
    for position, row in enumerate(rows):
        if not all(math.isfinite(value) for value in row):
            raise ModelError(f"the logits after token {position} are not finite (NaN or infinity): the model's weights "
                             f"hold NaN/Inf values or overflow float32; the file is damaged")


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
        raise ValueError(f"decode wants a JSON list of non-negative integer token ids, e.g. [33, 44], got {text.strip()[:60]!r}")
    return ids


def cmd_testmodel(args) -> None:
    from .testmodel import write_test_model

    if args.width <= 0 or args.width % 64:
        raise ValueError(f"--width must be a positive multiple of 64 (the head size), got {args.width}")
    if args.layers <= 0 or args.vocab <= 0:
        raise ValueError("--layers and --vocab must be positive")
    config = ModelConfig.default_for(args.layers, args.width, args.vocab)
    write_test_model(args.out, config, seed=args.seed, dtype=args.dtype)
    print(f"wrote {args.out}: {config}")
