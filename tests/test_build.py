"""build/site.py: the site's contents, the wheels, the manifest, and incremental rebuilds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

from build import site, wheels


def test_site_has_pyodide_wheels_vocab_and_the_page(site_dir):
    lock = json.load(open(os.path.join(site_dir, "pyodide", "pyodide-lock.json")))
    assert lock["info"]["python"].startswith("3.14")
    for name in site.PYODIDE_FILES + ["index.html", "worker.js", "app.js", "vocab/rwkv_vocab_v20230424.txt"]:
        assert os.path.getsize(os.path.join(site_dir, "pyodide" if name in site.PYODIDE_FILES else "", name)) > 0, name
    names = sorted(os.listdir(os.path.join(site_dir, "wheels")))
    assert names == [
        "jinja2-3.1.6-py3-none-any.whl",
        "markupsafe-3.0.3-py3-none-any.whl",
        "micropip-0.11.1-py3-none-any.whl",
        "rwkvweb-0.1.0-py3-none-any.whl",
    ]


def test_manifest_lists_every_file_with_its_hash(site_dir):
    manifest = json.load(open(os.path.join(site_dir, site.MANIFEST)))
    on_disk = {
        os.path.relpath(os.path.join(d, f), site_dir)
        for d, _, fs in os.walk(site_dir)
        for f in fs
        if not f.startswith(".")
    }
    assert set(manifest["files"]) == on_disk - {site.MANIFEST}
    for path, entry in manifest["files"].items():
        data = open(os.path.join(site_dir, path), "rb").read()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, path


def test_wheels_are_pure_and_their_records_are_right(site_dir):
    for name in os.listdir(os.path.join(site_dir, "wheels")):
        with zipfile.ZipFile(os.path.join(site_dir, "wheels", name)) as archive:
            names = archive.namelist()
            assert not any(n.endswith((".so", ".c", ".pyd")) for n in names), name
            record = next(n for n in names if n.endswith(".dist-info/RECORD"))
            for line in archive.read(record).decode().splitlines():
                path, digest, size = line.rsplit(",", 2)
                if digest:
                    data = archive.read(path)
                    assert int(size) == len(data) and digest == "sha256=" + wheels._urlsafe_digest(data), (name, path)
    ours = zipfile.ZipFile(os.path.join(site_dir, "wheels", "rwkvweb-0.1.0-py3-none-any.whl")).namelist()
    sources = {
        f"rwkvweb/{f}"
        for f in os.listdir(os.path.join(site.ROOT, "py", "rwkvweb"))
        if f.endswith(".py") and f not in site.BROWSERLESS
    }
    assert sources <= set(ours)


def test_pure_markupsafe_escapes_without_its_c_speedups(site_dir, tmp_path):
    with zipfile.ZipFile(os.path.join(site_dir, "wheels", "markupsafe-3.0.3-py3-none-any.whl")) as archive:
        archive.extractall(tmp_path)
    code = (
        "import markupsafe, sys; assert 'markupsafe._speedups' not in sys.modules; "
        "print(markupsafe.escape('<a href=\"x\">&'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "&lt;a href=&#34;x&#34;&gt;&amp;"


def test_wheels_are_deterministic():
    files = {"pkg/__init__.py": b"x = 1\n"}
    assert wheels.pure_wheel_bytes("pkg", "1.0", files) == wheels.pure_wheel_bytes("pkg", "1.0", files)


def test_rebuild_is_incremental_and_removes_leftovers(site_dir, tmp_path):
    target = str(tmp_path / "site")
    first = site.build(target)
    assert first["changed"] == first["files"] + 1  # every file plus the manifest
    with open(os.path.join(target, "leftover.js"), "w") as file:
        file.write("old")
    second = site.build(target)
    assert second["changed"] == 0 and second["removed"] == 1
    assert not os.path.exists(os.path.join(target, "leftover.js"))
    assert not site.is_stale(target)
    stamp = os.path.join(target, site.STAMP)
    os.utime(stamp, (0, 0))  # as if built before every source was last changed
    assert site.is_stale(target)
    assert site.is_stale(str(tmp_path / "never-built"))


def test_pinned_download_with_a_wrong_hash_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    version, filename, _ = wheels.PINNED["jinja2"]
    (cache / filename).write_bytes(b"not the real wheel")
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        wheels.fetch_pinned("jinja2", str(cache))
    assert not (cache / filename).exists()
