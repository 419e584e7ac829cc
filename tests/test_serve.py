"""serve.py: ranges, conditional requests, headers, MIME types, and no way out of the root."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading

import pytest

import serve

BODY = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    site = base / "site"
    (site / "sub").mkdir(parents=True)
    (site / "empty-dir").mkdir()
    (site / "model.st").write_bytes(BODY)
    (site / "index.html").write_text("<!doctype html><title>home</title>")
    (site / "embed.html").write_text("<!doctype html><title>embed</title>")
    (site / "sub" / "index.html").write_text("sub")
    for name in (
        "a.wasm",
        "a.mjs",
        "a.js",
        "k.wgsl",
        "a.json",
        "m.webmanifest",
        "p.whl",
        "p.zip",
        "w.safetensors",
        "w.bin",
        "x.unknownext",
    ):
        (site / name).write_bytes(b"x")
    (base / "secret.txt").write_text("outside the root")
    os.symlink(base / "secret.txt", site / "link-out.txt")
    os.symlink(site / "model.st", site / "link-in.st")
    return site


@pytest.fixture(scope="module")
def httpd(root, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    models = root.parent / "models"
    models.mkdir()
    (models / "m.st").write_bytes(b"mounted")
    os.symlink(root.parent / "secret.txt", models / "out.txt")
    server = serve.serve_in_thread(
        str(root), embed_origins=["https://host.example"], log_file=str(log), mounts={"models": str(models)}
    )
    server.log_path = log
    yield server
    server.shutdown()
    server.server_close()


def request(httpd, path, method="GET", headers=None):
    host, port = httpd.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest(method, path, skip_accept_encoding=True)  # the path goes out exactly as written
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_full_get_with_validators_and_isolation_headers(httpd):
    response, body = request(httpd, "/model.st")
    assert response.status == 200 and body == BODY
    h = response.headers
    assert h["Content-Length"] == str(len(BODY)) and h["Accept-Ranges"] == "bytes"
    assert h["Content-Type"] == "application/octet-stream"
    assert h["ETag"].startswith('"') and h["Last-Modified"].endswith("GMT")
    assert h["Cross-Origin-Opener-Policy"] == "same-origin"
    assert h["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert h["Cross-Origin-Resource-Policy"] == "same-origin"
    csp = h["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "'unsafe-eval'" not in csp.replace(
        "'wasm-unsafe-eval'", ""
    )
    assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp


@pytest.mark.parametrize(
    "spec, start, end",
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, 10240),
        ("bytes=-10", 10230, 10240),
        ("bytes=10000-99999", 10000, 10240),
        ("bytes=-99999", 0, 10240),
        ("bytes=5-5", 5, 6),
        ("bytes= 7 - 9", 7, 10),
    ],
)
def test_single_ranges_answer_206(httpd, spec, start, end):
    response, body = request(httpd, "/model.st", headers={"Range": spec})
    assert response.status == 206
    assert body == BODY[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(BODY)}"
    assert response.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("spec", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_ranges_answer_416_with_the_size(httpd, spec):
    response, body = request(httpd, "/model.st", headers={"Range": spec})
    assert response.status == 416 and body == b""
    assert response.headers["Content-Range"] == f"bytes */{len(BODY)}"


@pytest.mark.parametrize(
    "spec", ["bytes=abc", "bytes=5-2", "items=0-5", "bytes=0-1,5-6", "bytes=-", "bytes", "bytes=1-2-3", "bytes=0x10-"]
)
def test_malformed_or_multi_ranges_get_the_whole_file(httpd, spec):
    response, body = request(httpd, "/model.st", headers={"Range": spec})
    assert response.status == 200 and body == BODY


def test_head_sends_headers_only(httpd):
    response, body = request(httpd, "/model.st", "HEAD")
    assert response.status == 200 and body == b"" and response.headers["Content-Length"] == str(len(BODY))
    response, body = request(httpd, "/model.st", "HEAD", {"Range": "bytes=0-9"})
    assert response.status == 206 and body == b"" and response.headers["Content-Length"] == "10"


def test_conditional_requests(httpd):
    first, _ = request(httpd, "/model.st")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        response, body = request(httpd, "/model.st", headers=headers)
        assert response.status == 304 and body == b"", headers
        assert response.headers["ETag"] == etag
    for headers in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"If-Modified-Since": "not a date"},
        {"If-None-Match": '"other"', "If-Modified-Since": modified},
    ):
        response, body = request(httpd, "/model.st", headers=headers)
        assert response.status == 200 and body == BODY, headers


def test_if_range_honours_the_range_only_while_the_file_is_unchanged(httpd):
    first, _ = request(httpd, "/model.st")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for validator, status in ((etag, 206), (modified, 206), ('"stale"', 200), ("Thu, 01 Jan 1970 00:00:00 GMT", 200)):
        response, body = request(httpd, "/model.st", headers={"Range": "bytes=0-3", "If-Range": validator})
        assert response.status == status
        assert body == (BODY[:4] if status == 206 else BODY)


@pytest.mark.parametrize(
    "path, status",
    [
        ("/../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/sub/%2E%2E/%2e%2e/secret.txt", 403),
        ("/sub/..%2f..%2fsecret.txt", 403),
        ("/link-out.txt", 403),
        ("/..%5csecret.txt", 403),
        ("/model.st%00.html", 403),
        ("//etc/passwd", 404),
        ("/etc/passwd", 404),
        ("/%ff", 400),
        ("/nope.st", 404),
        ("/empty-dir/", 404),
    ],
)
def test_nothing_outside_the_root_is_served(httpd, path, status):
    response, body = request(httpd, path)
    assert response.status == status
    assert b"outside the root" not in body


def test_mounted_folder_is_served_under_its_prefix_and_rules(httpd):
    response, body = request(httpd, "/models/m.st", headers={"Range": "bytes=0-2"})
    assert response.status == 206 and body == b"mou"
    for path in ("/models/out.txt", "/models/../secret.txt", "/models/%2e%2e/secret.txt"):
        response, body = request(httpd, path)
        assert response.status == 403 and b"outside" not in body, path
    assert request(httpd, "/models/nope.st")[0].status == 404


def test_symlinks_inside_the_root_and_directories(httpd):
    response, body = request(httpd, "/link-in.st")
    assert response.status == 200 and body == BODY
    response, _ = request(httpd, "/sub")
    assert response.status == 301 and response.headers["Location"] == "/sub/"
    response, body = request(httpd, "/sub/")
    assert response.status == 200 and body == b"sub" and response.headers["Content-Type"].startswith("text/html")
    response, body = request(httpd, "/?query=1")
    assert response.status == 200 and b"home" in body


@pytest.mark.parametrize(
    "name, mime",
    [
        ("a.wasm", "application/wasm"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("k.wgsl", "text/wgsl; charset=utf-8"),
        ("a.json", "application/json"),
        ("m.webmanifest", "application/manifest+json"),
        ("p.whl", "application/zip"),
        ("p.zip", "application/zip"),
        ("w.safetensors", "application/octet-stream"),
        ("w.bin", "application/octet-stream"),
        ("x.unknownext", "application/octet-stream"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
def test_mime_types(httpd, name, mime):
    response, _ = request(httpd, "/" + name)
    assert response.headers["Content-Type"] == mime
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_embed_switch_opens_only_the_embed_page(httpd):
    embed, _ = request(httpd, "/embed.html")
    assert "frame-ancestors 'self' https://host.example" in embed.headers["Content-Security-Policy"]
    assert embed.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    index, _ = request(httpd, "/index.html")
    assert "frame-ancestors 'self'" in index.headers["Content-Security-Policy"]
    assert "host.example" not in index.headers["Content-Security-Policy"]


def test_bad_request_lines_are_rejected_not_crashed(httpd):
    response, _ = request(httpd, "/model.st", "DELETE")
    assert response.status == 501
    response, _ = request(httpd, "/model.st", headers={"Range": "bytes=" + "9" * 5000})
    assert response.status in (200, 416)
    response, body = request(httpd, "/model.st")  # still serving
    assert response.status == 200 and body == BODY


def test_many_concurrent_range_requests(httpd):
    rng = random.Random(5)
    specs = [(a, rng.randrange(a, len(BODY))) for a in (rng.randrange(len(BODY)) for _ in range(64))]
    failures = []

    def fetch(a, b):
        response, body = request(httpd, "/model.st", headers={"Range": f"bytes={a}-{b}"})
        if response.status != 206 or body != BODY[a : b + 1]:
            failures.append((a, b, response.status))

    threads = [threading.Thread(target=fetch, args=spec) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []


def test_request_log_records_path_range_and_status(httpd):
    request(httpd, "/model.st", headers={"Range": "bytes=1-2"})
    last = httpd.requests[-1]
    assert (last.method, last.path, last.range, last.status, last.bytes_sent) == (
        "GET",
        "/model.st",
        "bytes=1-2",
        206,
        2,
    )
    lines = [json.loads(line) for line in httpd.log_path.read_text().splitlines()]
    assert lines[-1]["path"] == "/model.st" and lines[-1]["status"] == 206 and lines[-1]["range"] == "bytes=1-2"


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=9-", 10, (9, 10)),
        ("bytes=0-", 0, "416"),
        ("bytes=-1", 0, "416"),
        ("bytes=3-1", 10, None),
    ],
)
def test_parse_range(header, size, expected):
    if expected == "416":
        with pytest.raises(serve.RangeNotSatisfiable):
            serve.parse_range(header, size)
    else:
        assert serve.parse_range(header, size) == expected
