"""The code style the project holds itself to: ruff's lint (pycodestyle errors and warnings, pyflakes) and its
formatter, at 120 columns ([tool.ruff] in pyproject.toml). Run `ruff format . && ruff check .` to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_finds_nothing(command):
    pytest.importorskip("ruff", reason="ruff is in the dev extra: python -m pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "py", "build", "tests", "serve.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
