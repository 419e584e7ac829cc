"""build/convert.py against hostile checkpoints (issue 14): every one refused with one clear line.

Each case runs `python -m build.convert` in a child process, so a crash of the interpreter
(a negative stride once made numpy read before its buffer: SIGSEGV) fails the test instead of
killing the test run; the child must exit 1 with a `convert: ...` line and no traceback, and
write no output file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pth_writer import TensorEntry, checkpoint_of, zip_stored
from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import random_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ModelConfig.default_for(1, 64, 16)
WEIGHTS = random_weights(CONFIG, seed=3)
EMB = WEIGHTS["emb.weight"]  # [16, 64]: 1024 elements in storage "0"


def convert(tmp_path, data: bytes):
    source, target = tmp_path / "in.pth", tmp_path / "out.st"
    source.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    done = subprocess.run(
        [sys.executable, "-m", "build.convert", str(source), str(target), "--dtype", "fp32"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, target


def with_emb_view(offset: int, shape: tuple, stride: tuple, storage: bytes = EMB.tobytes()) -> bytes:
    """The whole model, its embedding rebuilt as the given view of storage "0" (a real model
    otherwise, so a view that reads outside its storage once converted without complaint)."""
    checkpoint = checkpoint_of(WEIGHTS)
    checkpoint.entries[0] = TensorEntry("emb.weight", "FloatStorage", "0", offset, shape, stride, len(storage) // 4)
    checkpoint.storages["0"] = storage
    return checkpoint.to_bytes()


def assert_refused(tmp_path, data: bytes, message: str) -> None:
    done, target = convert(tmp_path, data)
    assert done.returncode == 1, f"exit {done.returncode}; stdout {done.stdout!r}; stderr {done.stderr[-800:]!r}"
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert: ") and message in lines[0], lines
    assert not target.exists()


@pytest.mark.parametrize(
    "offset, stride, message",
    [
        (-64, (64, 1), "offset -64"),  # once: bytes from before the storage, converted "fine"
        (0, (-64, 1), "strides must be >= 1"),  # once: bytes from before the storage
        (960, (-100000000, 1), "strides must be >= 1"),  # far outside: once SIGSEGV
        (0, (0, 1), "strides must be >= 1"),  # zero stride: a broadcast, no weight is one
        (64, (64, 1), "reaches past its storage"),  # past the storage's end
        (0, (64,), "but 1 strides"),
    ],
)
def test_hostile_views_are_refused(tmp_path, offset, stride, message):
    assert_refused(tmp_path, with_emb_view(offset, EMB.shape, stride), message)


def test_a_storage_of_a_partial_element_is_refused(tmp_path):
    assert_refused(tmp_path, with_emb_view(0, EMB.shape, (64, 1), EMB.tobytes() + b"\x01\x02"), "not a whole number")


def test_a_strided_view_inside_its_storage_still_converts(tmp_path):
    from rwkvweb.safetensors import SafetensorsFile

    transposed = np.ascontiguousarray(EMB.T)  # [64, 16]: emb is its column-major view
    done, target = convert(tmp_path, with_emb_view(0, EMB.shape, (1, 16), transposed.tobytes()))
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(SafetensorsFile(str(target)).read_array("emb.weight"), EMB)


@pytest.fixture(scope="module")
def small_checkpoint() -> bytes:
    rng = np.random.default_rng(0)
    return checkpoint_of(
        {
            "emb.weight": rng.standard_normal((16, 64), dtype=np.float32),
            "ln_out.weight": rng.standard_normal(64, dtype=np.float32),
        }
    ).to_bytes()


def test_a_truncated_or_corrupt_zip_is_explained(tmp_path, small_checkpoint):
    data = small_checkpoint
    assert_refused(tmp_path, data[: len(data) // 2], "no end-of-central-directory")
    assert_refused(tmp_path, data[:-10], "no end-of-central-directory")
    directory = data.rfind(b"PK\x01\x02")
    assert_refused(tmp_path, data[:directory] + b"XX" + data[directory + 2 :], "central directory entry")
    assert_refused(tmp_path, b"PK\x03\x04" + bytes(40), "no end-of-central-directory")


def test_a_truncated_pickle_is_explained(tmp_path):
    good = checkpoint_of(WEIGHTS)
    pickled = good.members()[0][1]
    for cut in (len(pickled) // 3, len(pickled) - 1):
        members = [("archive/data.pkl", pickled[:cut])] + good.members()[1:]
        assert_refused(tmp_path, zip_stored(members), "data.pkl is corrupt or truncated")


def test_a_small_zip_claiming_a_huge_member_is_refused_unread(tmp_path):
    data = bytearray(zip_stored([("archive/data.pkl", b"\x80\x02}."), ("archive/data/0", EMB.tobytes())], zip64=True))
    # the ZIP64 extra field of data/0's central entry: uncompressed and compressed sizes -> 1 TiB
    entry = data.rfind(b"PK\x01\x02")
    extra = entry + 46 + len("archive/data/0") + 4
    data[extra : extra + 16] = (1 << 40).to_bytes(8, "little") * 2
    assert_refused(tmp_path, bytes(data), "claims 1,099,511,627,776 bytes")
