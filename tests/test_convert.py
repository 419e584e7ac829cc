"""build/convert.py: official .pth checkpoints to safetensors without torch, and nothing else runs.

The checkpoints are written by the test itself in torch.save's zip layout (a pickle whose
tensors are `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, ...)` calls over
persistent storage ids), so the test needs no torch; where torch is installed, a real
torch.save file is converted too.
"""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from build.convert import CheckpointError, convert, read_pth
from rwkvweb.config import ModelConfig
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import SafetensorsFile
from rwkvweb.testmodel import random_weights

from pth_writer import _text, write_pth


@pytest.fixture(scope="module")
def weights():
    cfg = ModelConfig.default_for(2, 128, 300)
    return cfg, random_weights(cfg, seed=12)


def test_a_checkpoint_converts_to_the_same_tensors(tmp_path, weights):
    cfg, w = weights
    write_pth(tmp_path / "m.pth", w)
    read = read_pth(str(tmp_path / "m.pth"))
    assert list(read) == list(w)
    for name in w:
        np.testing.assert_array_equal(read[name], w[name])
    summary = convert(str(tmp_path / "m.pth"), str(tmp_path / "m.st"), "fp32")
    assert summary["config"] == cfg
    logits, _ = RWKV7.load(str(tmp_path / "m.st")).logits([1, 2, 3])
    expected, _ = RWKV7(cfg, w).logits([1, 2, 3])
    np.testing.assert_array_equal(logits, expected)


def test_bf16_widens_exactly_to_fp32_and_rounds_to_fp16(tmp_path, weights):
    cfg, w = weights
    write_pth(tmp_path / "bf.pth", w, bf16=set(w))
    as_bf16 = {n: (a.view(np.uint32) & 0xFFFF0000).view(np.float32) for n, a in w.items()}  # what bf16 holds
    convert(str(tmp_path / "bf.pth"), str(tmp_path / "fp32.st"), "fp32")
    convert(str(tmp_path / "bf.pth"), str(tmp_path / "fp16.st"), "fp16")
    wide, half = SafetensorsFile(str(tmp_path / "fp32.st")), SafetensorsFile(str(tmp_path / "fp16.st"))
    for name in ("emb.weight", "blocks.1.att.w0", "head.weight"):
        np.testing.assert_array_equal(wide.read_array(name), as_bf16[name])
        assert half.info(name).dtype == "F16"
        np.testing.assert_array_equal(half.read_array(name, "float16"), as_bf16[name].astype(np.float16))


def test_strided_and_offset_views_are_rebuilt(tmp_path):
    from build.convert import rebuild_tensor
    from rwkvweb.pth import StorageRef, TensorRef

    base = np.arange(24, dtype=np.float32)
    storage = StorageRef("0", "F32")
    np.testing.assert_array_equal(
        rebuild_tensor(base, TensorRef(storage, 4, (2, 3), (1, 2)), "t"), base[4:][[[0, 2, 4], [1, 3, 5]]]
    )
    with pytest.raises(CheckpointError, match="reaches past its storage"):
        rebuild_tensor(base, TensorRef(storage, 20, (2, 3), (3, 1)), "t")


def test_a_pickle_that_calls_anything_else_is_refused_and_runs_nothing(tmp_path, weights):
    marker = tmp_path / "ran"
    evil = pickle.GLOBAL + b"os\nsystem\n" + _text(f"touch {marker}") + pickle.TUPLE1 + pickle.REDUCE + pickle.POP
    write_pth(tmp_path / "evil.pth", {"emb.weight": weights[1]["emb.weight"]}, extra_pickle=evil)
    with pytest.raises(CheckpointError, match="refused: the checkpoint's pickle asks for os.system"):
        read_pth(str(tmp_path / "evil.pth"))
    assert not marker.exists()
    builtins = pickle.GLOBAL + b"builtins\neval\n" + _text("1") + pickle.TUPLE1 + pickle.REDUCE + pickle.POP
    write_pth(tmp_path / "eval.pth", {"emb.weight": weights[1]["emb.weight"]}, extra_pickle=builtins)
    with pytest.raises(CheckpointError, match="builtins.eval"):
        read_pth(str(tmp_path / "eval.pth"))


def test_not_a_checkpoint_is_explained(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a zip archive"):
        read_pth(str(tmp_path / "junk.pth"))
    with zipfile.ZipFile(tmp_path / "empty.pth", "w") as archive:
        archive.writestr("x/readme", "hi")
    with pytest.raises(CheckpointError, match="expected one \\*/data.pkl"):
        read_pth(str(tmp_path / "empty.pth"))


def test_a_real_torch_save_file_converts(tmp_path, weights):
    torch = pytest.importorskip(
        "torch", reason="torch is a dev-only extra (train); the hand-made checkpoints above cover the format"
    )
    cfg, w = weights
    state = {n: torch.from_numpy(a.copy()) for n, a in w.items()}
    state["emb.weight"] = state["emb.weight"].to(torch.bfloat16)
    state["blocks.0.att.receptance.weight"] = state["blocks.0.att.receptance.weight"].t().contiguous().t()  # strided
    torch.save(state, tmp_path / "real.pth")
    read = read_pth(str(tmp_path / "real.pth"))
    np.testing.assert_array_equal(read["blocks.0.att.receptance.weight"], w["blocks.0.att.receptance.weight"])
    np.testing.assert_array_equal(read["emb.weight"], state["emb.weight"].float().numpy())
