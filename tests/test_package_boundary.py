"""The package that ships to the browser stands on its own: no imports from the build tooling or the
server (those live beside it in a source checkout), and nothing in the browser's wheel that drives a browser."""

from __future__ import annotations

import ast
import os
import zipfile

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "py", "rwkvweb")


def imported_modules(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_package_imports_nothing_from_build_or_serve():
    offenders = {}
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            bad = {m for m in imported_modules(os.path.join(PACKAGE, name)) if m.split(".")[0] in ("build", "serve")}
            if bad:
                offenders[name] = bad
    assert not offenders, f"modules of py/rwkvweb import build tooling or the server: {offenders}"


def test_the_browser_wheel_leaves_out_the_headless_driver(site_dir):
    wheel = next(
        os.path.join(site_dir, "wheels", n)
        for n in os.listdir(os.path.join(site_dir, "wheels"))
        if n.startswith("rwkvweb-")
    )
    names = zipfile.ZipFile(wheel).namelist()
    assert "rwkvweb/api.py" in names and "rwkvweb/headless.py" not in names
    assert "rwkvweb/remote.py" not in names and "rwkvweb/websocket.py" not in names  # webgpu-remote's driver side
