"""The catalog of official models (rwkvweb.catalog): its data, and fit verdicts that equal the plan CLI's.

The headers are recorded here from the official shapes (bf16, every tensor of an official
checkpoint) and written as sparse files, so `python -m rwkvweb plan` reads a 5.9 GB model's header
without 5.9 GB on disk; no download happens.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys

import pytest

from conftest import run_async
from pth_writer import write_pth
from rwkvweb.catalog import MODELS, fit_verdict, official_header, verdict_for_source
from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import random_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = ("700MB", "2GB", "4GB")


def write_sparse_header(path, tensors) -> None:
    """A safetensors file with this header and a data section of zeros that takes no disk space."""
    header = {
        name: {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [info.start, info.end]}
        for name, info in tensors.items()
    }
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        file.truncate(8 + len(encoded) + max(info.end for info in tensors.values()))


def plan_cli(path, budget: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    done = subprocess.run(
        [sys.executable, "-m", "rwkvweb", "plan", str(path), "--budget", budget],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode:
        return {"fits": False, "message": done.stderr.strip().removeprefix("rwkvweb plan: ")}
    plan = json.loads(done.stdout)
    return {
        "fits": plan["fits"],
        "gpu_bytes": plan["gpu_bytes"],
        "matrices_by_precision": plan["matrices_by_precision"],
    }


SHAPES = sorted({(m.version, m.n_layer, m.n_embd): m for m in MODELS}.values(), key=lambda m: (m.version, m.n_embd))


@pytest.mark.parametrize("model", SHAPES, ids=[m.id for m in SHAPES])
def test_verdicts_equal_the_plan_cli_for_recorded_headers(tmp_path, model):
    header = official_header(model)
    path = tmp_path / f"{model.id}.st"
    write_sparse_header(path, header)
    from rwkvweb.budget import parse_bytes

    for budget in BUDGETS:
        verdict, cli = fit_verdict(header, parse_bytes(budget)), plan_cli(path, budget)
        assert verdict["fits"] == cli["fits"], (budget, verdict, cli)
        if cli["fits"]:
            assert (verdict["gpu_bytes"], verdict["matrices_by_precision"]) == (
                cli["gpu_bytes"],
                cli["matrices_by_precision"],
            )
            assert verdict["gpu_bytes"] <= parse_bytes(budget)
        else:
            assert verdict["message"] == cli["message"] and "raise the budget" in cli["message"]


def test_the_small_models_fit_the_default_budget_and_the_large_ones_are_refused_at_the_floor():
    by_id = {m.id: m for m in MODELS}
    assert fit_verdict(official_header(by_id["rwkv7-world-0.1b"]), 700_000_000)["fits"]
    assert not fit_verdict(official_header(by_id["rwkv7-world-2.9b"]), 700_000_000)["fits"]
    assert fit_verdict(official_header(by_id["rwkv7-g1-1.5b"]))["fits"]  # 2 GB: int8/NF4 where needed


def test_a_verdict_from_a_source_reads_the_header_only(tmp_path):
    config = ModelConfig.default_for(2, 128, 300)
    write_pth(tmp_path / "m.pth", random_weights(config, seed=2), bf16=True)
    verdict = run_async(verdict_for_source(str(tmp_path / "m.pth"), 700_000_000))
    assert verdict["supported"] and verdict["fits"] and verdict["matrices_by_precision"] == {"f32": 2 * 6 + 2}


def test_the_rwkv6_entry_is_supported():
    """Finch World 1.6B: 24 x 2048, FFN 7168, ddlerp LoRA 32, decay LoRA 64 (RWKV-LM v6's sizes for that width)."""
    v6 = next(m for m in MODELS if m.version == 6)
    header = official_header(v6)
    assert header["blocks.0.att.time_maa_w1"].shape == (2048, 160) and header["blocks.0.ffn.key.weight"].shape == (
        7168,
        2048,
    )
    assert v6.download_bytes == sum(info.nbytes for info in header.values())
    verdict = fit_verdict(header)
    assert verdict["supported"] and verdict["fits"], verdict


def test_an_unsupported_version_is_said_so(tmp_path):
    """RWKV-5.0/5.1 (ln_x without time_faaaa; 5.0 also has RWKV-4's time_first): refused by name, the same
    words from the catalog and the plan CLI."""
    from rwkvweb.safetensors import TensorInfo

    names = [("emb.weight", (50277, 1024)), ("blocks.0.att.time_first", (16,)), ("blocks.0.att.ln_x.weight", (1024,))]
    header, at = {}, 0
    for name, shape in names:
        size = 2 * math.prod(shape)
        header[name] = TensorInfo(name, "BF16", shape, at, at + size)
        at += size
    verdict = fit_verdict(header)
    assert not verdict["supported"] and not verdict["fits"] and "RWKV-5.0/5.1" in verdict["message"]
    path = tmp_path / "v5.0.st"
    write_sparse_header(path, header)
    assert verdict["message"] == plan_cli(path, "2GB")["message"]


def test_an_rwkv4_header_gets_a_verdict(tmp_path):
    """RWKV-4 Pile 169M's shapes (12 x 768, 50277 rows, bf16): supported, and it fits 2 GB at its own width."""
    from rwkvweb.config import tensor_shapes
    from rwkvweb.safetensors import TensorInfo

    header, at = {}, 0
    for name, shape in tensor_shapes(ModelConfig.default_for(12, 768, 50277, version="x040")).items():
        size = 2 * math.prod(shape)
        header[name] = TensorInfo(name, "BF16", shape, at, at + size)
        at += size
    verdict = fit_verdict(header)
    assert verdict["supported"] and verdict["fits"], verdict
    assert verdict["matrices_by_precision"] == {"f32": 2 + 12 * 7}  # bf16 widens to f32 when it fits
    path = tmp_path / "v4.st"
    write_sparse_header(path, header)
    assert plan_cli(path, "2GB")["fits"]


def test_the_catalog_lists_official_files_with_sizes_and_licences():
    assert len({m.id for m in MODELS}) == len(MODELS) >= 9
    for model in MODELS:
        assert (
            model.url.startswith("https://huggingface.co/BlinkDL/")
            and "/resolve/main/" in model.url
            and model.url.endswith(".pth")
        )
        assert model.licence == "Apache-2.0" and model.tokenizer == "world" and model.vocab_size == 65536
        assert json.loads(json.dumps(model.to_json()))["url"] == model.url
    world_01 = next(m for m in MODELS if m.id == "rwkv7-world-0.1b")
    # the published file is 382,195,690 bytes: the tensors plus ~27 KB of zip and pickle
    assert 0 < 382_195_690 - world_01.download_bytes < 100_000
