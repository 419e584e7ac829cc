"""rwkvweb.pth: official `.pth` checkpoints read by range, as the same tensor table as safetensors.

Checkpoints are made by the tests (tests/pth_writer.py writes torch's zip + pickle layout by hand,
with torch's 64-byte alignment padding in the local headers and optionally ZIP64 records), and,
where torch is installed, by torch.save itself.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import CountingSource, run_async
from pth_writer import Checkpoint, TensorEntry, as_bf16, checkpoint_of, tensor_pickle, write_pth, zip_stored
from rwkvweb.api import Model, read_header
from rwkvweb.config import ModelConfig
from rwkvweb.pth import COALESCE_GAP, MAX_PICKLE, CheckpointError, PthFile, is_pth, open_model_file
from rwkvweb.reference import RWKV7
from rwkvweb.safetensors import FormatError, SafetensorsFile, write_safetensors
from rwkvweb.source import BytesSource, SourceError
from rwkvweb.testmodel import random_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ModelConfig.default_for(2, 128, 300)
TOKENS = [1, 2, 299, 7]


@pytest.fixture(scope="module")
def weights():
    return random_weights(CONFIG, seed=21)


@pytest.fixture(scope="module")
def twins(tmp_path_factory, weights):
    """(pth, safetensors) pairs holding the same values: fp32, and bf16 beside its exact fp32 widening."""
    folder = tmp_path_factory.mktemp("pth")
    write_pth(folder / "fp32.pth", weights)
    write_safetensors(str(folder / "fp32.st"), weights)
    write_pth(folder / "bf16.pth", weights, bf16=True, zip64=True)
    write_safetensors(str(folder / "bf16.st"), {n: as_bf16(a) for n, a in weights.items()})
    return {kind: (str(folder / f"{kind}.pth"), str(folder / f"{kind}.st")) for kind in ("fp32", "bf16")}


@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_the_tensor_table_holds_the_same_values_as_the_safetensors_twin(twins, kind):
    pth, st = map(open_model_file, twins[kind])
    assert isinstance(pth, PthFile) and not isinstance(st, PthFile)
    assert list(pth.tensors) == list(st.tensors)
    for name, info in pth.tensors.items():
        assert info.dtype == ("BF16" if kind == "bf16" else "F32") and info.shape == st.tensors[name].shape
        np.testing.assert_array_equal(pth.read_array(name), st.read_array(name))
    assert pth.metadata == {}


@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_reference_and_planned_engine_logits_equal_the_twin(twins, kind):
    pth, st = twins[kind]
    np.testing.assert_array_equal(RWKV7.load(pth).logits(TOKENS)[0], RWKV7.load(st).logits(TOKENS)[0])

    async def logits(path):
        model = await Model.load(path, tokenizer_for=lambda config, metadata: None, budget="1GB")
        return [np.frombuffer(row, np.float32) for row in await model.logits(TOKENS)], model.budget_plan.to_json()

    (got, got_plan), (want, want_plan) = run_async(logits(pth)), run_async(logits(st))
    np.testing.assert_array_equal(got, want)  # bf16 widens exactly, so the GPU holds the twin's very values
    assert got_plan["gpu_bytes"] == want_plan["gpu_bytes"]


def test_the_header_is_read_without_touching_a_weight(twins):
    data = open(twins["bf16"][0], "rb").read()
    source = CountingSource(data)
    tensors, metadata = run_async(read_header(source))
    assert len(tensors) == len(SafetensorsFile(twins["bf16"][1]).tensors)
    magic, tail, *rest = source.reads
    assert magic == (0, 8)  # the format is told by the first bytes
    assert (
        tail[1] == len(data) and tail[1] - tail[0] <= 22 + 65535 + 20
    )  # the EOCD, its longest comment, the ZIP64 locator
    # then the central directory, data.pkl, and the local headers (merged where close together):
    # never a tensor's bytes, beyond small vectors that lie between two headers read at once
    small = sum(info.nbytes for info in tensors.values() if info.nbytes <= COALESCE_GAP)
    assert sum(end - start for start, end in rest) < 70_000 + small
    for info in tensors.values():
        if info.nbytes > COALESCE_GAP:
            assert not any(start < info.end and info.start < end for start, end in rest), info.name


def test_a_torch_padded_zip64_and_a_plain_zipfile_layout_both_read(tmp_path, weights):
    import zipfile

    small = {n: weights[n] for n in ("emb.weight", "ln_out.weight", "head.weight")}
    plain = tmp_path / "plain.pth"
    with zipfile.ZipFile(plain, "w") as archive:  # Python's zipfile: no padding, no ZIP64
        for name, raw in checkpoint_of(small).members():
            archive.writestr(name, raw)
    for data in (plain.read_bytes(), checkpoint_of(small).to_bytes(align=64, zip64=True)):
        file = PthFile(BytesSource(data))
        for name, array in small.items():
            np.testing.assert_array_equal(file.read_array(name), array)


def test_magic_bytes_choose_the_format():
    assert is_pth(b"PK\x03\x04rest") and not is_pth(struct.pack("<Q", 1234))
    with pytest.raises(FormatError, match="too short to be safetensors"):
        open_model_file(BytesSource(b"PK"))


# --- hostile files: one CheckpointError each, nothing large read or allocated ----------------


def _one(entry: TensorEntry, storage: bytes = np.arange(24, dtype=np.float32).tobytes()) -> bytes:
    return Checkpoint([entry], {entry.key: storage}).to_bytes()


def _refused(data: bytes, message: str, max_read: int = 200_000) -> None:
    source = CountingSource(data)
    with pytest.raises(CheckpointError, match=message):
        PthFile(source)
    assert sum(end - start for start, end in source.reads) <= max_read


@pytest.mark.parametrize(
    "entry, message",
    [
        (TensorEntry("t", "FloatStorage", "0", 0, (4, 3), (1, 4)), "is a strided view .* build.convert"),
        (TensorEntry("t", "FloatStorage", "0", 20, (2, 3), (3, 1)), "reach past its 96-byte storage"),
        (TensorEntry("t", "FloatStorage", "0", -1, (2,), (1,)), "storage offset -1"),
        (TensorEntry("t", "FloatStorage", "0", 0, (2, 3), (-3, 1)), "strides must be >= 1"),
        (TensorEntry("t", "FloatStorage", "0", 0, (2, -3), (3, 1)), "negative size"),
        (TensorEntry("t", "FloatStorage", "0", 0, (2, 3), (3,)), "but 1 strides"),
        (TensorEntry("t", "FloatStorage", "0", 10**30, (2,), (1,)), "reach past"),
        (TensorEntry("t", "FloatStorage", "0", 0, (2**40, 2**40), (2**40, 1)), "reach past"),
        (TensorEntry("t", "FloatStorage", "9", 0, (2,), (1,)), "storage '9' is not in the archive"),
    ],
)
def test_lying_tensors_are_refused_by_name(entry, message):
    storage = np.arange(24, dtype=np.float32).tobytes()
    checkpoint = Checkpoint([entry], {"0": storage})
    _refused(checkpoint.to_bytes(), message)


def test_a_pickle_that_calls_anything_else_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    text = f"touch {marker}".encode()
    evil = (
        pickle.GLOBAL
        + b"os\nsystem\n"
        + pickle.BINUNICODE
        + struct.pack("<I", len(text))
        + text
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.POP
    )
    checkpoint = Checkpoint([TensorEntry("t", "FloatStorage", "0", 0, (2,), (1,))], {"0": bytes(8)}, extra_pickle=evil)
    _refused(checkpoint.to_bytes(), "refused: the checkpoint's pickle asks for os.system")
    assert not marker.exists()


def test_what_is_not_a_state_dict_is_refused():
    data = zip_stored([("archive/data.pkl", pickle.dumps([1, 2, 3], protocol=2))])
    _refused(data, "not a flat dict of named tensors")
    _refused(zip_stored([("x/readme", b"hi")]), "expected one \\*/data.pkl")
    _refused(Checkpoint([], {}, byteorder=b"big").to_bytes(), "byte order is b'big'")


def test_lying_zip_records_are_refused_before_reading_what_they_claim():
    good = bytearray(checkpoint_of({"t": np.ones(16, np.float32)}).to_bytes(zip64=True))
    eocd = good.rfind(b"PK\x05\x06")
    locator = good.rfind(b"PK\x06\x07")
    record = good.rfind(b"PK\x06\x06")
    central = good.find(b"PK\x01\x02")

    def patched(at: int, value: bytes) -> bytes:
        return bytes(good[:at] + value + good[at + len(value) :])

    _refused(patched(record + 40, (1 << 40).to_bytes(8, "little")), "central directory claims 1,099,511,627,776 bytes")
    _refused(patched(record + 48, (1 << 40).to_bytes(8, "little")), "central directory claims bytes")
    _refused(patched(record + 32, (1 << 50).to_bytes(8, "little")), "cannot hold them")
    _refused(patched(locator + 8, (1 << 60).to_bytes(8, "little")), "ZIP64 locator points at byte")
    _refused(patched(record, b"XXXX"), "no ZIP64 end-of-central-directory record")
    _refused(patched(central + 10, struct.pack("<H", 8)), "compressed \\(method 8\\)")
    _refused(patched(central + 8, struct.pack("<H", 1)), "encrypted")
    _refused(
        patched(central + 46 + len("archive/data.pkl") + 4, (MAX_PICKLE + 1).to_bytes(8, "little") * 2), "past the end"
    )
    local = good.find(b"PK\x03\x04", 1)  # the second member's local header
    _refused(patched(local + 30, b"X"), "its local header names")
    _refused(patched(local, b"XXXX"), "no local file header")
    _refused(bytes(good[:eocd]) + bytes(good[eocd : eocd + 20]), "no end-of-central-directory")  # the EOCD cut short
    duplicated = zip_stored([("archive/data.pkl", tensor_pickle([])), ("archive/data.pkl", b"")])
    _refused(duplicated, "two members named")


def test_corrupted_and_truncated_files_give_format_errors_only(weights):
    """Cut and flipped bytes at many places: each gives a loaded table or one clear error, never
    another exception (the reader is what the page runs, so a traceback there is a broken page)."""
    small = {n: weights[n] for n in ("emb.weight", "blocks.0.ln1.weight", "head.weight")}
    good = checkpoint_of(small, bf16={"head.weight"}).to_bytes(zip64=True)
    table = PthFile(BytesSource(good)).tensors.values()
    structure = [i for i in range(len(good)) if not any(t.start <= i < t.end for t in table)]  # zip records, pickle
    rng = random.Random(5)
    for cut in range(0, len(good), max(1, len(good) // 150)):
        with pytest.raises((FormatError, SourceError)):
            PthFile(BytesSource(good[:cut]))
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.choice(structure)] = rng.randrange(256)
        try:
            PthFile(BytesSource(bytes(data)))
            outcomes["loaded"] += 1  # e.g. a CRC, padding or an unused field changed
        except (FormatError, SourceError):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes


# --- the command line: .pth exactly like safetensors ----------------------------------------


def cli(*args):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    return subprocess.run(
        [sys.executable, "-m", "rwkvweb", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_cli_reads_a_pth_like_its_safetensors_twin(twins):
    pth, st = twins["bf16"]
    info = cli("info", pth)
    assert info.returncode == 0, info.stderr
    assert "n_layer=2, n_embd=128, vocab_size=300" in info.stdout and "BF16" in info.stdout
    plans = [json.loads(cli("plan", path, "--budget", "700MB").stdout) for path in (pth, st)]
    assert [t["precision"] for t in plans[0]["tensors"]] == [t["precision"] for t in plans[1]["tensors"]]
    assert plans[0]["gpu_bytes"] == plans[1]["gpu_bytes"]
    rows = [json.loads(cli("logits", path, "--tokens", "1,2,3").stdout)["logits"] for path in (pth, st)]
    assert rows[0] == rows[1]
    ids = [
        cli("generate", path, "--tokens", "1,2", "--max-tokens", "5", "--temperature", "0").stdout for path in (pth, st)
    ]
    assert ids[0] == ids[1] and len(json.loads(ids[0])) == 5


def test_the_cli_explains_a_bad_pth_in_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(_one(TensorEntry("emb.weight", "FloatStorage", "0", 0, (4, 3), (1, 4))))
    done = cli("info", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "rwkvweb info: tensor 'emb.weight' is a strided view (shape [4, 3], stride [1, 4]) that is not one byte range; "
        "convert the file with `python -m build.convert`, which copies such views"
    ]


def test_a_real_torch_save_file_reads_like_its_twin(tmp_path, weights):
    torch = pytest.importorskip(
        "torch", reason="torch is a dev-only extra (train); the hand-made checkpoints above cover the format"
    )
    state = {n: torch.from_numpy(a.copy()) for n, a in weights.items()}
    state["emb.weight"] = state["emb.weight"].to(torch.bfloat16)
    torch.save(state, tmp_path / "real.pth")
    file = open_model_file(str(tmp_path / "real.pth"))
    assert file.tensors["emb.weight"].dtype == "BF16"
    np.testing.assert_array_equal(file.read_array("emb.weight"), state["emb.weight"].float().numpy())
    np.testing.assert_array_equal(file.read_array("head.weight"), weights["head.weight"])


def test_a_pile_sized_vocabulary_says_which_tokenizer_it_lacks(tmp_path):
    """Issue 11 part 4: RWKV-4 Pile/Raven's 50277-token GPT-NeoX vocabulary needs that tokenizer to load with
    text; loaded for ids only, text gets a message naming what it lacks (a v7-shaped model stands in for v4)."""
    config = ModelConfig.default_for(1, 64, 50277)
    write_pth(tmp_path / "pile.pth", random_weights(config, seed=1), bf16=True)
    with pytest.raises(ValueError, match="needs GPT-NeoX 20B's tokenizer"):
        run_async(Model.load(str(tmp_path / "pile.pth"), budget="1GB"))

    async def run():
        model = await Model.load(str(tmp_path / "pile.pth"), budget="1GB", tokenizer_for=lambda config, metadata: None)
        ids = (await model.generate([1, 2], 2, temperature=0)).tokens
        with pytest.raises(ValueError, match="50277-token vocabulary is GPT-NeoX 20B's BPE: .* pass token ids"):
            await model.generate("Hello", 2)
        return ids

    assert len(run_async(run())) == 2


def test_the_reader_needs_no_numpy(twins):
    """It runs in Pyodide, whose offline core has no numpy: read a header with numpy made unimportable."""
    code = (
        "import sys; sys.modules['numpy'] = None; import asyncio, rwkvweb.catalog; "
        "from rwkvweb.api import read_header; "
        "from rwkvweb.source import FileSource; "
        f"print(len(asyncio.run(read_header(FileSource({twins['bf16'][0]!r})))[0]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")},
        timeout=60,
    )
    assert done.stdout.strip() == str(len(SafetensorsFile(twins["bf16"][1]).tensors)), done.stderr
