"""The safetensors reader: round trips, every byte source, and malformed files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from conftest import CountingSource
from rwkvweb.safetensors import FormatError, SafetensorsFile, write_safetensors
from rwkvweb.source import BytesSource, FileSource, HttpSource, SourceError


def craft(header: dict, data: bytes = b"", header_length: int | None = None) -> BytesSource:
    """A file from a literal header, for writing malformed ones on purpose."""
    encoded = json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return BytesSource(struct.pack("<Q", length) + encoded + data)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def test_round_trip_keeps_values_dtypes_order_and_metadata(tmp_path):
    tensors = {
        "b.second": np.arange(6, dtype=np.float16).reshape(2, 3),
        "a.first": np.linspace(-1, 1, 5, dtype=np.float32),
        "ints": np.array([[1, -2]], dtype=np.int32),
    }
    path = tmp_path / "m.safetensors"
    write_safetensors(str(path), tensors, {"tokenizer": "bytes"})
    file = SafetensorsFile(str(path))
    assert list(file.tensors) == ["b.second", "a.first", "ints"]
    assert file.metadata == {"tokenizer": "bytes"}
    for name, array in tensors.items():
        info = file.info(name)
        assert info.shape == array.shape and info.nbytes == array.nbytes
        np.testing.assert_array_equal(file.read_array(name, array.dtype), array)
    assert (file.tensors["b.second"].start - 8) % 8 == 0  # header padded: data starts aligned


def test_bf16_is_widened_exactly():
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)  # exactly representable in bf16
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    file = SafetensorsFile(craft({"t": entry("BF16", (4,), (0, 8))}, bf16))
    np.testing.assert_array_equal(file.read_array("t"), values)


def test_reads_only_the_header_and_the_asked_tensor(tmp_path):
    path = tmp_path / "m.st"
    write_safetensors(str(path), {"a": np.zeros(1000, np.float32), "b": np.ones(10, np.float32)})
    source = CountingSource(path.read_bytes())
    file = SafetensorsFile(source)
    assert sum(end - start for start, end in source.reads) == 8 + file.tensors["a"].start - 8
    file.read_bytes("b")
    assert source.reads[-1] == (file.info("b").start, file.info("b").end)
    assert sum(end - start for start, end in source.reads) < source.size - 3000


def test_http_source_reads_by_range(tmp_path):
    import serve

    path = tmp_path / "m.st"
    write_safetensors(str(path), {"w": np.arange(64, dtype=np.float32)})
    httpd = serve.serve_in_thread(str(tmp_path))
    try:
        file = SafetensorsFile(HttpSource(httpd.url + "m.st"))
        np.testing.assert_array_equal(file.read_array("w"), np.arange(64, dtype=np.float32))
        ranges = [r.range for r in httpd.requests if r.method == "GET"]
        assert ranges and all(r and r.startswith("bytes=") for r in ranges)  # never a full GET
        assert all(r.status in (200, 206) for r in httpd.requests)
        with pytest.raises(SourceError, match="HTTP 404"):
            HttpSource(httpd.url + "missing.st")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_missing_file_and_truncated_file_say_so(tmp_path):
    with pytest.raises(SourceError, match="cannot open model file"):
        FileSource(tmp_path / "nope.st")
    path = tmp_path / "cut.st"
    write_safetensors(str(path), {"w": np.zeros(100, np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match="data section is 390 bytes but the tensors cover 400|outside"):
        SafetensorsFile(str(path))


@pytest.mark.parametrize(
    "source, message",
    [
        (BytesSource(b"\x01\x02"), "too short"),
        (craft({}, header_length=10**6), "header length field says 1000000 bytes"),
        (craft({}, header_length=2**63), "header length field"),
        (BytesSource(struct.pack("<Q", 4) + b"{no}"), "not valid UTF-8 JSON"),
        (BytesSource(struct.pack("<Q", 2) + b"[]"), "must be an object"),
        (craft({"t": entry("F42")}, bytes(8)), "tensor 't': unknown dtype 'F42'"),
        (
            craft({"t": entry(shape=(3,))}, bytes(8)),
            r"tensor 't': shape \[3\] x F32 is 12 bytes but data_offsets span 8",
        ),
        (
            craft({"t": entry(offsets=(0, 16))}, bytes(8)),
            r"tensor 't': data_offsets \[0, 16\] fall outside the 8-byte data section",
        ),
        (craft({"t": entry(offsets=(8, 0))}, bytes(8)), "tensor 't': data_offsets"),
        (craft({"t": entry(shape=(-2,))}, bytes(8)), "tensor 't': shape must be a list of non-negative integers"),
        (craft({"t": entry(shape=(True,), offsets=(0, 4))}, bytes(4)), "tensor 't': shape must be"),
        (craft({"t": {"dtype": "F32", "shape": [2]}}, bytes(8)), "tensor 't': data_offsets must be"),
        (craft({"t": 5}, bytes(8)), "tensor 't': entry must be an object"),
        (craft({"a": entry(), "b": entry(offsets=(4, 12))}, bytes(12)), "tensor 'b' overlaps tensor 'a'"),
        (craft({"a": entry(offsets=(4, 12))}, bytes(12)), "4 unused bytes before tensor 'a'"),
        (craft({"a": entry()}, bytes(12)), "data section is 12 bytes but the tensors cover 8"),
        (craft({"__metadata__": {"k": 1}, "a": entry()}, bytes(8)), "__metadata__ must map strings to strings"),
    ],
)
def test_malformed_files_raise_format_errors_naming_the_problem(source, message):
    with pytest.raises(FormatError, match=message):
        SafetensorsFile(source)


def test_unknown_tensor_name_is_a_clear_key_error(tmp_path):
    file = SafetensorsFile(craft({"a": entry()}, bytes(8)))
    with pytest.raises(KeyError, match="no tensor named 'b'"):
        file.read_bytes("b")
