"""The matvec variant a plan uses: chosen from the adapter's features (model.choose_matvec), named as a
layout plus options (model.matvec_variant), and recorded in the plan's kernels (CPython only)."""

from __future__ import annotations

import pytest

from rwkvweb.config import ModelConfig
from rwkvweb.model import choose_matvec, compile_model, matvec_variant
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import write_test_model


@pytest.mark.parametrize(
    "adapter, expected",
    [
        ({"architecture": "swiftshader", "features": ["subgroups", "timestamp-query"]}, "cols"),  # Chromium here
        ({"architecture": "swiftshader", "features": ["subgroups", "shader-f16"]}, "cols+f16"),
        ({"architecture": "ampere", "features": []}, "rows-wg"),
        ({"architecture": "rdna-3", "features": ["subgroups"]}, "rows-wg+subgroups"),
        ({"architecture": "ampere", "features": ["shader-f16", "subgroups"]}, "rows-wg+subgroups+f16"),
        (None, "rows-wg"),
    ],
)
def test_the_variant_follows_the_adapter(adapter, expected):
    assert choose_matvec(adapter) == expected
    matvec_variant(expected)  # every choice is a valid name


@pytest.mark.parametrize(
    "name, message",
    [("rows-xx", "unknown matvec variant"), ("cols+subgroups", "use rows-wg"), ("rows-wg+f16+f16", "unknown")],
)
def test_bad_names_say_what_is_valid(name, message):
    with pytest.raises(ValueError, match=message):
        matvec_variant(name)


def test_the_plan_compiles_the_chosen_preludes(tmp_path):
    path = str(tmp_path / "m.st")
    config = ModelConfig.default_for(1, 128, 64, head_size=64)
    write_test_model(path, config, seed=1, dtype="fp16")
    tensors = SafetensorsFile(path).tensors
    compiled = compile_model(config, tensors, matvec="rows-wg+subgroups+f16")
    assert compiled.matvec == "rows-wg+subgroups+f16"
    matvecs = [k for k in compiled.plan.kernels if k["shader"] == "matvec.wgsl"]
    rows = [k for k in matvecs if k["constants"]["ROW_MAJOR"]]
    assert rows and all("lib/reduce_subgroup.wgsl" in k["include"] for k in rows)
    assert all(k["include"][0] == "lib/enable_f16.wgsl" for k in rows)  # directives first
    assert all("lib/weights_native_f16.wgsl" in k["include"] for k in matvecs)  # the LoRAs too
    plain = compile_model(config, tensors, matvec="rows-wg")
    assert not any("enable" in name for k in plain.plan.kernels for name in k["include"])
