"""Pure-Python wheels for the browser: fetch pinned ones from PyPI, build our own.

Pyodide installs `py3-none-any` wheels offline from our own origin. Three come
from PyPI, pinned and hash-checked; MarkupSafe ships only compiled wheels, so
its pure-Python form (it falls back to `_native.py` when `_speedups` is
absent) is repacked from the sdist. Wheels we build are byte-for-byte
deterministic, so an unchanged source never rewrites its wheel.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile

# name -> (version, file on PyPI, sha256). micropip matches Pyodide 314.0.7's own lockfile.
PINNED = {
    "micropip": (
        "0.11.1",
        "micropip-0.11.1-py3-none-any.whl",
        "768de165adb8e66906039d8fec4127a57f522dfdf8e6fbff877a4616941ecfd3",
    ),
    "jinja2": (
        "3.1.6",
        "jinja2-3.1.6-py3-none-any.whl",
        "85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67",
    ),
    "markupsafe": (
        "3.0.3",
        "markupsafe-3.0.3.tar.gz",
        "722695808f4b6457b320fdc131280796bdceb04ab50fe1795cd540799ebe1698",
    ),
}


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_pinned(name: str, cache_dir: str) -> str:
    """The pinned file for `name` in cache_dir, downloaded with pip once and hash-checked every time."""
    version, filename, sha256 = PINNED[name]
    path = os.path.join(cache_dir, filename)
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        if filename.endswith(".tar.gz"):
            kind = ["--no-binary", ":all:"]  # an sdist: it carries no tags to match
        else:  # a wheel for Pyodide's Python, not for the one running the build
            kind = ["--only-binary", ":all:", "--python-version", "3.14"]
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            *kind,
            "-d",
            cache_dir,
            f"{name}=={version}",
        ]
        subprocess.run(command, check=True)
    if sha256_file(path) != sha256:
        os.remove(path)
        raise RuntimeError(f"{filename}: sha256 mismatch with the pinned hash; deleted it, run the build again")
    return path


def pure_wheel_bytes(name: str, version: str, files: dict[str, bytes], summary: str = "") -> bytes:
    """A py3-none-any wheel holding `files` (archive path -> bytes), with fixed timestamps."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n".encode()
    wheel = b"Wheel-Version: 1.0\nGenerator: rwkvweb-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = {**dict(sorted(files.items())), f"{dist_info}/METADATA": metadata, f"{dist_info}/WHEEL": wheel}
    record = "".join(f"{path},sha256={_urlsafe_digest(data)},{len(data)}\n" for path, data in entries.items())
    entries[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries.items():
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def package_files(package_dir: str, prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every .py / .pyi / py.typed file under package_dir (but the `exclude`d names), keyed by its path
    inside the wheel."""
    files = {}
    for folder, subfolders, names in os.walk(package_dir):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for filename in names:
            if (filename.endswith((".py", ".pyi")) or filename == "py.typed") and filename not in exclude:
                path = os.path.join(folder, filename)
                with open(path, "rb") as file:
                    files[prefix + os.path.relpath(path, package_dir).replace(os.sep, "/")] = file.read()
    return files


def markupsafe_pure_files(sdist: str) -> dict[str, bytes]:
    """MarkupSafe's Python sources from its sdist, without the C speedups."""
    files = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if member.isfile() and parts[1:3] == ["src", "markupsafe"] and not parts[-1].endswith(".c"):
                files["markupsafe/" + "/".join(parts[3:])] = archive.extractfile(member).read()
    if "markupsafe/_native.py" not in files:
        raise RuntimeError(f"{sdist}: no markupsafe/_native.py, the pure-Python fallback this build relies on")
    return files


def write_if_changed(path: str, data: bytes) -> bool:
    """Write only when the bytes differ, so mtimes (and the browser's caches) stay put."""
    if os.path.exists(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as file:
            if file.read() == data:
                return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)
    return True
