"""The in-browser path must not need numpy (Pyodide's offline core has none): check under CPython."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_browser_modules_import_without_numpy():
    code = (
        "import sys; sys.modules['numpy'] = None; "
        "import rwkvweb.browser, rwkvweb.api, rwkvweb.model, rwkvweb.cli; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")},
    )
    assert result.stdout.strip() == "ok", result.stderr
