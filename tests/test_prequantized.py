"""Models quantized ahead of time (build/quantize.py): smaller files that load as plain copies
into the same GPU buffers the loader would have quantized itself, so their logits are identical
to quantizing at load, on numpy and on the GPU; malformed quantization metadata is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from build.quantize import quantize_file
from conftest import run_async
from gpu_harness import blank_page
from rwkvweb.api import Model
from rwkvweb.config import ModelConfig
from rwkvweb.headless import CALL_JS
from rwkvweb.quant import QUANTIZED_KEY
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import FormatError, SafetensorsFile, to_array, write_safetensors
from rwkvweb.testmodel import write_test_model

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def original(model_dir):
    path = model_dir / "preq-2x128.st"
    write_test_model(str(path), ModelConfig.default_for(2, 128, 301), seed=8, dtype="fp16")
    return path


def numpy_logits(path, **options):
    async def run():
        model = await Model.load(str(path), tokenizer_for=lambda c, m: None, **options)
        return np.stack([np.frombuffer(r, np.float32) for r in await model.logits(TOKENS)]), model.info()

    return run_async(run())


@pytest.mark.parametrize("scheme, size_ratio", [("int8", 0.6), ("nf4", 0.4)])
def test_a_prequantized_file_equals_quantizing_at_load(original, tmp_path, scheme, size_ratio):
    target = tmp_path / f"m-{scheme}.st"
    quantize_file(str(original), str(target), precision=scheme)
    assert target.stat().st_size < size_ratio * original.stat().st_size  # 1.06 or 0.56 bytes per weight, vs 2
    # row-major blocks both ways: under a k-major plan ("cols") a scheme in model.K_MAJOR_SCHEMES quantizes at
    # load into k-major blocks, other codes than the file's row blocks
    at_load, _ = numpy_logits(original, precision=scheme, matvec="rows")
    ahead, info = numpy_logits(target, matvec="rows")
    assert info["matrices_by_precision"] == {scheme: 14}
    np.testing.assert_array_equal(ahead, at_load)  # the same codes, the same arithmetic
    np.testing.assert_array_equal(numpy_logits(target)[0], ahead)  # a file's blocks stay row-major under "cols"
    reference = RWKV7.load(str(target)).logits(TOKENS)[0]  # the reference reads the dequantized values
    assert np.abs(reference - ahead).max() <= 1e-4 * (reference.max() - reference.min())  # float32 order only


def test_a_prequantized_head_splits_into_parts_like_one_quantized_at_load(original, tmp_path):
    target = tmp_path / "m-nf4.st"
    quantize_file(str(original), str(target), precision="nf4")
    split = {"max_binding": 16 * 1024, "matvec": "rows-wg"}  # the head and the embedding in 3 parts each
    at_load, _ = numpy_logits(original, precision="nf4", **split)
    ahead, _ = numpy_logits(target, **split)
    np.testing.assert_array_equal(ahead, at_load)
    np.testing.assert_array_equal(ahead, numpy_logits(target)[0])  # and the split changes nothing


def test_a_file_quantized_for_a_budget_loads_under_it(original, tmp_path):
    target = tmp_path / "m-budget.st"
    schemes = quantize_file(str(original), str(target), budget="700kB")
    assert set(schemes.values()) == {"int8", "nf4"}
    at_load, _ = numpy_logits(original, budget="700kB", matvec="rows")  # row blocks both ways (see above)
    ahead, info = numpy_logits(target, budget="700kB", matvec="rows")
    assert info["gpu_bytes_planned"] <= 700_000
    np.testing.assert_array_equal(ahead, at_load)


def test_a_prequantized_file_cannot_be_widened(original, tmp_path):
    target = tmp_path / "m-int8.st"
    quantize_file(str(original), str(target), precision="int8")
    with pytest.raises(ValueError, match="is int8 in the file and cannot be stored as fp16"):
        numpy_logits(target, precision="fp16")


def rewrite(source, target, drop=(), metadata=None, params_of=None):
    """A copy of a pre-quantized file with tensors dropped, metadata replaced or a .qparams cut short."""
    file = SafetensorsFile(str(source))
    arrays = {n: to_array(file.read_bytes(n), info) for n, info in file.tensors.items() if n not in drop}
    if params_of:
        arrays[params_of + ".qparams"] = arrays[params_of + ".qparams"][:-1]
    write_safetensors(str(target), arrays, metadata or file.metadata)


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"drop": ["head.weight.qparams"]}, "'head.weight' is declared nf4 but the file lacks 'head.weight.qparams'"),
        (
            {"params_of": "head.weight"},
            "'head.weight.qparams': nf4 needs 602 F32 block parameters for [301, 128], got F32 [601]",
        ),
        ({"metadata": {QUANTIZED_KEY: json.dumps({"head.weight": "int3"})}}, "unknown quantization scheme 'int3'"),
        ({"metadata": {QUANTIZED_KEY: "not json"}}, "must be a JSON object"),
    ],
)
def test_malformed_quantization_metadata_is_refused(original, tmp_path, damage, message):
    good, bad = tmp_path / "good.st", tmp_path / "bad.st"
    quantize_file(str(original), str(good), precision="nf4")
    rewrite(good, bad, **damage)
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace("[", r"\[")):
        numpy_logits(bad)


@pytest.mark.browser
def test_on_the_gpu_a_prequantized_file_equals_quantizing_at_load(browser, server, model_dir, original):
    quantize_file(str(original), str(model_dir / "preq-nf4.st"), precision="nf4")
    page = blank_page(browser.new_page(), server)
    try:
        page.evaluate(CALL_JS, ["load", {"url": "/test-models/" + original.name, "precision": "nf4"}])
        at_load = page.evaluate(CALL_JS, ["logits", {"tokens": TOKENS}])
        loaded = page.evaluate(CALL_JS, ["load", {"url": "/test-models/preq-nf4.st"}])
        ahead = page.evaluate(CALL_JS, ["logits", {"tokens": TOKENS}])
    finally:
        page.close()
    assert loaded["matrices_by_precision"] == {"nf4": 14}
    assert loaded["fetchedBytes"] < 0.4 * original.stat().st_size
    assert ahead == at_load  # bit for bit: the loader's JavaScript quantizer wrote these same codes


def test_an_official_pth_quantizes_without_conversion(tmp_path):
    from pth_writer import write_pth
    from rwkvweb.testmodel import random_weights

    weights = random_weights(ModelConfig.default_for(1, 64, 256), seed=3)
    write_pth(tmp_path / "m.pth", weights, bf16=True)
    schemes = quantize_file(str(tmp_path / "m.pth"), str(tmp_path / "m-int8.st"), precision="int8")
    assert set(schemes.values()) == {"int8"}
    assert SafetensorsFile(str(tmp_path / "m-int8.st")).metadata["rwkvweb.quantized"]
