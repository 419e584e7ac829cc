"""The page's catalog of official models (web/catalog-view.js): listed with sizes and licences, a
verdict per model before any download (no request leaves for the hub), its URL put in the model box;
and "Will it fit?" for any URL from its header alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rwkvweb.catalog import MODELS
from rwkvweb.config import ModelConfig
from rwkvweb.testmodel import write_test_model
from test_app import LOAD_TIMEOUT, open_app

pytestmark = pytest.mark.browser


def verdict_of(page, model_id: str, budget: str):
    page.select_option("#budget", budget)
    item = page.locator(f"#catalog-list li[data-id='{model_id}']")
    item.get_by_role("button", name="Will it fit?").click()
    verdict = item.locator(".verdict")
    page.wait_for_function(
        "(id) => document.querySelector(`#catalog-list li[data-id='${id}'] .verdict`).dataset.fits !== undefined",
        arg=model_id,
        timeout=LOAD_TIMEOUT,
    )
    return verdict.get_attribute("data-fits"), verdict.text_content()


def test_the_catalog_says_what_fits_before_any_download(page, server):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    open_app(page, server)
    page.click("#catalog summary")
    expect(page.locator("#catalog-list li")).to_have_count(len(MODELS), timeout=LOAD_TIMEOUT)
    first = page.locator("#catalog-list li").first
    assert "RWKV-7 G1 0.1B" in first.text_content() and "Apache-2.0" in first.text_content()
    assert "0.38 GB download" in first.text_content()  # 191 M bf16 parameters

    fits, message = verdict_of(page, "rwkv7-g1-0.1b", "2000000000")
    assert fits == "true" and message.startswith("fits in ") and "of the 2000 MB budget" in message, message
    fits, message = verdict_of(page, "rwkv7-g1-2.9b", "700000000")
    assert fits == "false" and "raise the budget" in message, message

    page.locator("#catalog-list li[data-id='rwkv7-g1-0.1b']").get_by_role("button", name="Use").click()
    assert page.input_value("#model-url") == MODELS[0].url
    assert not [url for url in requests if "huggingface.co" in url], "the catalog fetched from the hub"


def test_will_it_fit_reads_a_urls_header(page, server, model_dir):
    write_test_model(str(model_dir / "fit-2x64.st"), ModelConfig.default_for(2, 64, 300))
    open_app(page, server)
    page.fill("#model-url", "test-models/fit-2x64.st")
    page.select_option("#budget", "700000000")
    page.click("#check-fit")
    expect(page.locator("#fit-verdict")).to_have_attribute("data-fits", "true", timeout=LOAD_TIMEOUT)
    assert page.text_content("#fit-verdict").startswith("fits in ")
    page.fill("#model-url", "test-models/no-such-model.st")
    page.click("#check-fit")
    expect(page.locator("#fit-verdict")).to_have_attribute("data-fits", "false", timeout=LOAD_TIMEOUT)
    assert "404" in page.text_content("#fit-verdict") or "not found" in page.text_content("#fit-verdict").lower()
