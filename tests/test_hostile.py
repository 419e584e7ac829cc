"""The hostile-model corpus (tests/hostile.py) through the CLI and through the page's worker.

Each prints a summary line ("N inputs tried: 0 tracebacks, ...": see it with `pytest -s` or
`-rA`) and asserts every count is zero.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import hostile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BROWSER_CASE_SECONDS = (
    30  # a header refusal takes well under a second in Pyodide; a full load of the 0.5 MB model a few
)


def test_corpus_through_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")}
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "hostile.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    results = [json.loads(line) for line in lines[:-1]]
    bad = [r for r in results if r["verdict"] != "ok"]
    print("\nCLI corpus:", lines[-1])
    for result in bad[:20]:
        print("  ", json.dumps(result)[:600])
    assert len(results) >= 4 * 200  # every case through info, plan, logits and budgeted logits
    assert lines[-1].startswith(
        f"{len(results)} inputs tried: 0 tracebacks, 0 hangs, 0 silent wrong answers, 0 unclear errors, 0 over"
    )
    assert bad == []
    slowest = max(results, key=lambda r: r["seconds"])
    assert slowest["seconds"] < hostile.CASE_SECONDS, slowest


# The worker sends a Python exception's last line ("ValueError: …"; web/worker.js's publicError).
# FormatError, ModelError, BudgetError and ValueError are the refusals (the CLI prints the same ones);
# any other type (KeyError, TypeError, AssertionError, RecursionError...) is a bug.
PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(FormatError|ModelError|BudgetError|ValueError): (.+)$")
TRUNCATION_SAMPLE = 5  # the page tries every 5th truncation (the CLI tries them all; the header code is the same)
LOAD_JS = """
async ([url, tokens, seconds]) => {
  if (!window.__engine) {
    const { EngineClient } = await import("/client.js");
    window.__engine = await new Promise((resolve, reject) => {
      const engine = new EngineClient("/worker.js", {
        onReady: () => resolve(engine), onFailed: (e) => reject(new Error(e)),
      });
    });
  }
  const hang = new Promise((resolve) => setTimeout(() => resolve("hang"), seconds * 1000));
  const work = (async () => {
    await window.__engine.call("load", { url, cache: false });
    const rows = await window.__engine.call("logits", { tokens });
    return { ok: true, rows: rows.length };
  })().catch((error) => ({ ok: false, error: String(error.message || error) }));
  const answer = await Promise.race([work, hang]);
  if (answer === "hang") { // a stuck worker: replace it, so the next case starts clean
    window.__engine.worker.terminate();
    window.__engine = null;
    return { ok: false, hang: true, error: "" };
  }
  return answer;
}
"""


# Refused by the page's JavaScript before Python sees the file (web/net/range.js names an empty file).
JS_REFUSALS = {"truncated-at-0": "the model file is empty"}


def browser_verdict(case: hostile.Case, answer: dict) -> tuple[str, str]:
    if answer.get("hang"):
        return "hang", ""
    if case.name in JS_REFUSALS and not answer["ok"]:
        one_line = len(answer["error"].strip().splitlines()) == 1
        return ("ok" if one_line and JS_REFUSALS[case.name] in answer["error"] else "unclear"), answer["error"][:300]
    if answer["ok"]:
        return ("ok" if "browser" not in case.refused_by else "silent"), ""
    last = [line for line in answer["error"].splitlines() if line.strip()][-1]
    match = PYTHON_ERROR.match(last)
    if not match:
        crashed = re.match(r"^[A-Z]\w*(Error|Exception): ", last)  # a Python exception that is not a refusal
        return ("traceback" if crashed or "Traceback" in answer["error"] else "unclear"), last
    return hostile.judge(case, "browser", 2, match.group(2), ""), last


@pytest.mark.browser
def test_corpus_through_the_page(browser, server, model_dir):
    """Every case loaded through the worker, as a page would; then the page still loads a good model."""
    from rwkvweb.headless import open_blank

    page = open_blank(browser.new_page(), server.url)
    verdicts, bad = [], []
    try:
        truncations = [c.name for c in hostile.truncations()]
        cases = [
            c
            for c in hostile.corpus()
            if c.name not in truncations or truncations.index(c.name) % TRUNCATION_SAMPLE == 0
        ]
        for case in cases:
            (model_dir / "hostile.st").write_bytes(
                case.data
            )  # one name: the worker sees a new file each time (cache off)
            answer = page.evaluate(LOAD_JS, ["/test-models/hostile.st", [1, 2], BROWSER_CASE_SECONDS])
            verdict, line = browser_verdict(case, answer)
            verdicts.append(verdict)
            if verdict != "ok":
                bad.append((case.name, verdict, line[:300]))
                print("  ", bad[-1], flush=True)
        (model_dir / "hostile-good.st").write_bytes(hostile.good_model())
        after = page.evaluate(LOAD_JS, ["/test-models/hostile-good.st", [1, 2], BROWSER_CASE_SECONDS])
    finally:
        page.close()
    summary = hostile.summary(verdicts)
    print("\nbrowser corpus:", summary)
    assert bad == [] and summary.startswith(
        f"{len(verdicts)} inputs tried: 0 tracebacks, 0 hangs, 0 silent wrong answers, 0 unclear"
    )
    assert after == {"ok": True, "rows": 2}
