"""The chat-first page in headless Chromium: two turns with prefix reuse, save -> reload -> restore
-> continue, the Python cell, and hostile model output shown as text."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from app_models import HOSTILE, write_chat_model, write_parrot_model
from rwkvweb.tokenizer import WorldTokenizer

pytestmark = pytest.mark.browser
LOAD_TIMEOUT = 120_000


def open_app(page, server):
    page.goto(server.url)
    page.wait_for_selector("#model-info[data-loaded], #status[data-state='failed']", timeout=LOAD_TIMEOUT)
    assert page.get_attribute("#status", "data-state") == "ready", page.text_content("#status")


def load(page, url):
    page.fill("#model-url", url)
    page.click("#load")
    expect(page.locator("#model-info")).to_contain_text(url.split("/")[-1] + ":", timeout=LOAD_TIMEOUT)
    expect(page.locator("#load")).to_be_enabled(timeout=LOAD_TIMEOUT)


def send(page, text):
    """Send a chat message; returns the new answer's (text, prompt tokens, stats line)."""
    before = page.locator(".message[data-role='assistant'][data-done]:not([data-done='restored'])").count()
    page.fill("#chat-input", text)
    page.click("#send")
    answers = page.locator(".message[data-role='assistant'][data-done]:not([data-done='restored'])")
    expect(answers).to_have_count(before + 1, timeout=LOAD_TIMEOUT)
    last = answers.last
    return (
        last.locator(".text").text_content(),
        int(last.get_attribute("data-prompt-tokens")),
        last.locator(".stats").text_content(),
    )


@pytest.fixture(scope="module")
def chat_model(model_dir):
    write_chat_model(str(model_dir / "chat-2x64.st"))
    return "test-models/chat-2x64.st"


def greedy(page, max_tokens=8):
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))


def test_the_shipped_model_opens_in_completion_mode(page, server):
    open_app(page, server)
    assert page.get_attribute("#model-info", "data-chat") == "false"
    assert page.is_visible("#completion-pane") and not page.is_visible("#chat-pane")
    assert page.get_attribute("#mode-completion", "aria-pressed") == "true"
    # the page is an installable app: its manifest is linked, and the service worker registers
    assert page.get_attribute("link[rel=manifest]", "href") == "manifest.webmanifest"
    expect(page.locator("body")).to_have_attribute("data-service-worker", "registered", timeout=30_000)


def test_two_turns_reuse_the_state_and_a_saved_conversation_continues_exactly(page, server, chat_model, tmp_path):
    open_app(page, server)
    load(page, chat_model)
    assert page.is_visible("#chat-pane")  # a model with a chat template opens in chat mode
    greedy(page)
    first, first_prompt, stats = send(page, "Hello")
    assert first_prompt == len("<user>Hello\n\n<assistant>")  # byte vocabulary: one token per byte
    assert "tokens/s" in stats and "prompt: 24 new tokens in" in stats
    second, second_prompt, _ = send(page, "And then?")
    # only the new text ran: the user's turn (+ the blank line closing the answer, unless the model wrote it)
    new_text = "<user>And then?\n\n<assistant>"
    assert second_prompt in (len(new_text), len(new_text) + 2), second_prompt

    with page.expect_download() as download:
        page.click("#save-chat")
    saved = tmp_path / "conversation.json"
    download.value.save_as(saved)
    document = json.loads(saved.read_text())
    assert document["model"]["name"] == "chat-2x64.st" and len(document["messages"]) == 4 and document["state"]
    uninterrupted, uninterrupted_prompt, _ = send(page, "Third")

    page.reload()  # a new session: the worker, Python and the GPU state are gone
    page.wait_for_selector("#model-info[data-loaded]", timeout=LOAD_TIMEOUT)
    load(page, chat_model)
    greedy(page)
    page.set_input_files("#restore-chat", str(saved))
    expect(page.locator(".message")).to_have_count(4, timeout=30_000)
    assert page.locator(".message .text").nth(0).text_content() == "Hello"
    continued, continued_prompt, _ = send(page, "Third")
    assert continued == uninterrupted and continued_prompt == uninterrupted_prompt
    assert len(uninterrupted) > 0

    # regenerate: the same greedy answer again, from the state before it
    page.click("#regenerate")
    expect(page.locator(".message[data-role='assistant']").last).to_have_attribute(
        "data-done", "length", timeout=LOAD_TIMEOUT
    )
    assert page.locator(".message[data-role='assistant'] .text").last.text_content() == continued
    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    assert not page.is_visible("#error")


def test_a_conversation_from_another_model_is_refused_as_text(page, server, chat_model, tmp_path):
    open_app(page, server)
    load(page, chat_model)
    forged = {
        "format": "rwkvweb-conversation",
        "version": 1,
        "model": {"name": HOSTILE, "bytes": 1, "config": {}},
        "template": "model",
        "messages": [],
        "fed_text": "",
        "state": "",
    }
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    page.set_input_files("#restore-chat", str(path))
    expect(page.locator("#error")).to_contain_text(HOSTILE + " (? layers", timeout=30_000)
    assert page.locator("#error img, #error script").count() == 0


def test_the_python_cell_runs_against_the_loaded_model(page, server):
    open_app(page, server)
    page.click("#mode-python")
    page.fill("#python-code", 'print(len(model.encode("hello")))')
    page.click("#python-run")
    page.wait_for_selector("#python-output[data-done]", timeout=60_000)
    assert page.text_content("#python-output") == "5\n"  # the shipped model's byte tokenizer
    # errors show as text too, even when they look like HTML
    page.fill("#python-code", f"raise ValueError({HOSTILE!r})")
    page.click("#python-run")
    page.wait_for_selector("#python-output[data-done='error']", timeout=60_000)
    assert HOSTILE in page.text_content("#python-output")
    assert page.locator("#python-output img, #python-output script").count() == 0


def test_hostile_model_output_is_shown_as_text(page, server, model_dir):
    tokenizer = WorldTokenizer.from_file()
    write_parrot_model(str(model_dir / "parrot.st"), HOSTILE, ["User: hi\n\nAssistant:", "Say it"], tokenizer)
    page.add_init_script("window.pwn = () => { window.__pwned = true; }; window.hit = window.pwn;")
    open_app(page, server)
    load(page, "test-models/parrot.st")
    greedy(page, 40)
    answer, _, _ = send(page, "hi")
    assert answer == HOSTILE
    page.click("#mode-completion")
    page.fill("#prompt", "Say it")
    page.click("#generate")
    page.wait_for_selector("#output[data-done]", timeout=60_000)
    assert page.text_content("#output") == HOSTILE
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__pwned") is None
