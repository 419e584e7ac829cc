"""Build the deployable static site into _site/:  python -m build.site

    _site/index.html, *.js, *.css   the page and its worker (from web/)
    _site/shaders/*.wgsl            the kernels (from shaders/)
    _site/pyodide/                  Pyodide's core from the pinned npm package (no CDN)
    _site/wheels/*.whl              micropip, jinja2, pure-Python markupsafe, and rwkvweb itself
    _site/vocab/                    the World tokenizer vocabulary, taken from the `rwkv` package
    _site/models/                   the models shipped with the site (from models/), and index.json listing them
    _site/asset-manifest.json       every file with its sha256 and size, and the build's version (their hash)
    _site/manifest.webmanifest      the installable app (name, icons, start_url, standalone) and icons/*.png
    _site/sw.js                     the service worker, with the build's version written in (web/sw.js)

Incremental: files are copied or written only when their bytes changed, files
no longer produced are removed, and downloads are cached in .cache/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from build import icons, wheels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(ROOT, "_site")
CACHE = os.path.join(ROOT, ".cache")
NODE_MODULES = os.path.join(ROOT, "node_modules")
PYODIDE_VERSION = "314.0.7"  # also pinned in package.json / package-lock.json
# The core Pyodide needs to start: the loader, the runtime, the standard library, the lockfile.
PYODIDE_FILES = ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]
SOURCES = ["web", "shaders", "py/rwkvweb", "build", "models", "package.json", "package-lock.json"]
MODEL_SUFFIXES = (".st", ".safetensors")
STAMP = ".build-stamp"
MANIFEST = "asset-manifest.json"
BROWSERLESS = (
    "headless.py",
    "remote.py",
    "websocket.py",
)  # package modules that drive a browser from CPython: never shipped into one
SERVICE_WORKER = "sw.js"  # written last: it carries the version of everything else
THEME_COLOUR = "#1d4e5f"


def build(site: str = SITE, extra_files: dict[str, bytes] | None = None) -> dict:
    """Make (or refresh) the site; returns a small report for the log.
    extra_files: more files to put in the site (path -> bytes), e.g. a deployment's own, or a test's."""
    started = time.perf_counter()
    produced: set[str] = set()
    changed = 0
    for source, target in _copies():
        changed += _sync(source, os.path.join(site, target))
        produced.add(target)
    for target, data in {**_generated(), **(extra_files or {})}.items():
        changed += wheels.write_if_changed(os.path.join(site, target), data)
        produced.add(target)
    removed = _remove_others(site, produced | {MANIFEST, STAMP, SERVICE_WORKER})
    version = build_version(site, sorted(produced))
    changed += wheels.write_if_changed(
        os.path.join(site, SERVICE_WORKER), _service_worker(version, sorted(produced | {MANIFEST}))
    )
    manifest = _manifest(site, sorted(produced | {SERVICE_WORKER}), version)
    changed += wheels.write_if_changed(os.path.join(site, MANIFEST), manifest)
    with open(os.path.join(site, STAMP), "w") as stamp:
        stamp.write(f"{time.time()}\n")
    files = len(produced) + 1  # and the service worker
    return {"files": files, "changed": changed, "removed": removed, "seconds": round(time.perf_counter() - started, 2)}


def _copies() -> list[tuple[str, str]]:
    """(source file, path inside the site) for everything copied as is."""
    pairs = []
    for folder, prefix in (("web", ""), ("shaders", "shaders/"), ("models", "models/")):
        for source in _files_under(os.path.join(ROOT, folder)):
            if folder == "web" and os.path.basename(source) == SERVICE_WORKER:
                continue  # written with the build's version (_service_worker)
            pairs.append((source, prefix + os.path.relpath(source, os.path.join(ROOT, folder)).replace(os.sep, "/")))
    pyodide = _pyodide_dir()
    pairs += [(os.path.join(pyodide, name), f"pyodide/{name}") for name in PYODIDE_FILES]
    pairs.append((world_vocab_source(), "vocab/rwkv_vocab_v20230424.txt"))
    pairs += [
        (wheels.fetch_pinned(name, os.path.join(CACHE, "wheels")), f"wheels/{wheels.PINNED[name][1]}")
        for name in ("micropip", "jinja2")
    ]
    return pairs


def _model_index() -> bytes:
    """models/index.json: the shipped models for the page's list (the first is the default),
    with the example prompt from each model card (<name>.json beside the weights) if it has one."""
    folder = os.path.join(ROOT, "models")
    names = sorted(n for n in os.listdir(folder) if n.endswith(MODEL_SUFFIXES)) if os.path.isdir(folder) else []
    entries = []
    for name in names:
        stem = name.rsplit(".", 1)[0]
        card_path = os.path.join(folder, stem + ".json")
        card = json.load(open(card_path)) if os.path.exists(card_path) else {}
        entries.append(
            {
                "file": f"models/{name}",
                "name": stem,
                "bytes": os.path.getsize(os.path.join(folder, name)),
                "prompt": card.get("example_prompt", ""),
                "card": f"models/{stem}.json" if card else None,
            }
        )
    return (json.dumps({"models": entries}, indent=1) + "\n").encode()


def _generated() -> dict[str, bytes]:
    """Files the build makes: the model index, and the wheels PyPI has no pure-Python form of."""
    version = rwkvweb_version()
    ours = wheels.pure_wheel_bytes(
        "rwkvweb",
        version,
        wheels.package_files(os.path.join(ROOT, "py", "rwkvweb"), "rwkvweb/", exclude=BROWSERLESS),
        "RWKV in the browser",
    )
    sdist = wheels.fetch_pinned("markupsafe", os.path.join(CACHE, "wheels"))
    markupsafe_version = wheels.PINNED["markupsafe"][0]
    markupsafe = wheels.pure_wheel_bytes(
        "markupsafe", markupsafe_version, wheels.markupsafe_pure_files(sdist), "MarkupSafe, pure-Python form"
    )
    return {
        "models/index.json": _model_index(),
        "manifest.webmanifest": _web_manifest(),
        **_icons(),
        f"wheels/rwkvweb-{version}-py3-none-any.whl": ours,
        f"wheels/markupsafe-{markupsafe_version}-py3-none-any.whl": markupsafe,
    }


def rwkvweb_version() -> str:
    with open(os.path.join(ROOT, "py", "rwkvweb", "__init__.py")) as file:
        return re.search(r'__version__ = "([^"]+)"', file.read()).group(1)


def _pyodide_dir() -> str:
    """node_modules/pyodide at the pinned version, installed from the lockfile if it is not."""
    folder = os.path.join(NODE_MODULES, "pyodide")
    if _installed_version(folder) != PYODIDE_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm is needed once to fetch Pyodide (the `pyodide` npm package); install Node.js and npm"
            )
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
    if _installed_version(folder) != PYODIDE_VERSION:
        raise RuntimeError(f"node_modules/pyodide is not version {PYODIDE_VERSION} after `npm ci`: check package.json")
    return folder


def _installed_version(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "package.json")) as file:
            return json.load(file)["version"]
    except (OSError, ValueError, KeyError):
        return None


def world_vocab_source() -> str:
    sys.path.insert(0, os.path.join(ROOT, "py"))
    try:
        from rwkvweb.tokenizer import default_vocab_path
    finally:
        sys.path.pop(0)
    return default_vocab_path()


def _files_under(folder: str) -> list[str]:
    found = []
    for here, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != "__pycache__")
        found += [os.path.join(here, n) for n in sorted(names) if not n.startswith(".")]
    return found


def _sync(source: str, target: str) -> bool:
    """Copy when the target is missing or differs in size or mtime (copy2 keeps the mtime)."""
    if os.path.exists(target):
        a, b = os.stat(source), os.stat(target)
        if a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns:
            return False
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(source, target)
    return True


def _remove_others(site: str, keep: set[str]) -> int:
    removed = 0
    for path in _files_under(site) if os.path.isdir(site) else []:
        if os.path.relpath(path, site).replace(os.sep, "/") not in keep:
            os.remove(path)
            removed += 1
    return removed


_ICONS: dict[str, bytes] = {}


def _icons() -> dict[str, bytes]:
    """icons/icon-{192,512}.png and their maskable forms (drawn once per process: ~0.3 s)."""
    if not _ICONS:
        for size in (192, 512):
            _ICONS[f"icons/icon-{size}.png"] = icons.icon_png(size)
            _ICONS[f"icons/maskable-{size}.png"] = icons.icon_png(size, maskable=True)
    return _ICONS


def _web_manifest() -> bytes:
    """What makes the app installable (Chromium's criteria: name, icons 192 and 512, start_url, display)."""
    manifest = {
        "name": "rwkvweb: RWKV in your browser",
        "short_name": "rwkvweb",
        "id": "./",
        "start_url": "./",
        "scope": "./",
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": THEME_COLOUR,
        "description": "RWKV language models running entirely in the page: chat, completion and Python, offline.",
        "icons": [
            {"src": f"icons/{kind}-{size}.png", "sizes": f"{size}x{size}", "type": "image/png", "purpose": purpose}
            for size in (192, 512)
            for kind, purpose in (("icon", "any"), ("maskable", "maskable"))
        ],
    }
    return (json.dumps(manifest, indent=1) + "\n").encode()


def _service_worker(version: str, paths: list[str]) -> bytes:
    """web/sw.js with the build's version and file list written in (its two placeholders)."""
    with open(os.path.join(ROOT, "web", SERVICE_WORKER), encoding="utf-8") as file:
        source = file.read()
    for placeholder in ('"__BUILD__"', '["__FILES__"]'):
        if placeholder not in source:
            raise RuntimeError(f"web/{SERVICE_WORKER} lost its placeholder {placeholder}")
    return source.replace('"__BUILD__"', json.dumps(version), 1).replace('["__FILES__"]', json.dumps(paths), 1).encode()


def _entries(site: str, paths: list[str]) -> dict[str, dict]:
    return {
        p: {"sha256": wheels.sha256_file(os.path.join(site, p)), "size": os.path.getsize(os.path.join(site, p))}
        for p in paths
    }


def build_version(site: str, paths: list[str]) -> str:
    """The build's version: the hash of every file's path and hash (the service worker's aside)."""
    return hashlib.sha256(json.dumps(_entries(site, paths), sort_keys=True).encode()).hexdigest()[:16]


def _manifest(site: str, paths: list[str], version: str) -> bytes:
    files = _entries(site, paths)
    return (json.dumps({"version": version, "files": files}, indent=1, sort_keys=True) + "\n").encode()


def is_stale(site: str = SITE) -> bool:
    """True when _site/ is missing or any source is newer than the last build."""
    try:
        built = os.path.getmtime(os.path.join(site, STAMP))
    except OSError:
        return True
    for source in SOURCES:
        path = os.path.join(ROOT, source)
        paths = _files_under(path) if os.path.isdir(path) else [path]
        if any(os.path.getmtime(p) > built for p in paths if os.path.exists(p)):
            return True
    return False


if __name__ == "__main__":
    print(json.dumps(build()))
