"""The model cache's refusals (web/net/cache.js), in the browser: full storage is explained and
never loses the load. The cache's hits, resumes and stale-file checks run through the engine in
test_engine_browser.py; these cover what a real quota cannot be made to do on demand."""

from __future__ import annotations

import pytest

from gpu_harness import blank_page

pytestmark = pytest.mark.browser


def test_a_model_larger_than_the_free_quota_is_loaded_uncached(browser, server):
    page = blank_page(browser.new_page(), server)
    try:
        note = page.evaluate("""async () => {
          StorageManager.prototype.estimate = async () => ({ quota: 50e6, usage: 45e6 });
          const { openCache } = await import("/net/cache.js");
          const { entry, note } = await (await openCache()).entry({ url: "http://x/m.st", version: "v1", size: 80e6 });
          return entry === null ? note : "an entry was opened";
        }""")
    finally:
        page.close()
    assert note == (
        "not cached: the browser's storage quota has 5.0 MB free and this model needs 80.0 MB more; "
        "delete cached models to make room"
    )


def test_storage_filling_up_mid_load_stops_caching_not_loading(browser, server):
    page = blank_page(browser.new_page(), server)
    try:
        result = page.evaluate("""async () => {
          const { cachedReader } = await import("/net/cache.js");
          const source = { note: "", read: async (start, end) => new Uint8Array(end - start).fill(start % 251) };
          let writes = 0;
          const full = { has: () => false,
                         write: () => { writes++; throw new DOMException("full", "QuotaExceededError"); } };
          const reader = cachedReader(source, full);
          const first = await reader.read(0, 100);
          const second = await reader.read(100, 300);
          return { sizes: [first.byteLength, second.byteLength], value: second[0], writes, note: reader.note };
        }""")
    finally:
        page.close()
    assert result["sizes"] == [100, 200] and result["value"] == 100  # every byte still arrives
    assert result["writes"] == 1  # no more attempts once storage is full
    assert result["note"] == "caching stopped: the browser's storage quota is full; delete cached models to make room"
