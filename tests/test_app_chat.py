"""rwkvweb.chat under CPython (numpy backend): templates, prefix reuse, regenerate, save/restore."""

from __future__ import annotations

import json

import pytest

from conftest import run_async
from rwkvweb import browser
from rwkvweb.api import Model
from rwkvweb.chat import ChatError, Conversation, render
from rwkvweb.config import ModelConfig
from rwkvweb.safetensors import write_safetensors
from rwkvweb.testmodel import random_weights

OWN_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
GREEDY = {"temperature": 0.0}


def write_chat_model(path: str, template: str | None = None, seed: int = 5) -> str:
    """A byte-vocabulary model (greedy text is deterministic) that may carry its own chat template."""
    config = ModelConfig.default_for(2, 64, 256)
    weights = {name: w.astype("float16") for name, w in random_weights(config, seed).items()}
    metadata = {"rwkvweb.tokenizer": "bytes", **({"rwkvweb.chat_template": template} if template else {})}
    write_safetensors(path, weights, metadata)
    return path


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """Its template puts answers back as they were generated: a random model's text (no leading
    space, stray bytes) still renders to the very text its state holds, so every turn reuses it."""
    return write_chat_model(str(tmp_path_factory.mktemp("chat") / "chat.st"), OWN_TEMPLATE)


def test_world_template_folds_blank_lines_and_opens_the_answer():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\n\nthere "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    assert (
        render("world", messages)
        == "System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.\n\nUser: Again\n\nAssistant:"
    )
    assert render("world", messages[:2], add_generation_prompt=False) == "System: Be brief.\n\nUser: Hi\nthere\n\n"


def test_g1_template_opens_reasoning_and_drops_old_reasoning():
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>add</think> 4"},
        {"role": "user", "content": "3+3?"},
    ]
    assert render("g1", messages) == "User: 2+2?\n\nAssistant: 4\n\nUser: 3+3?\n\nAssistant: <think"


def test_a_models_own_template_comes_from_metadata_and_is_sandboxed():
    metadata = {"rwkvweb.chat_template": OWN_TEMPLATE}
    assert render("model", [{"role": "user", "content": "x"}], metadata) == "<user>x\n\n<assistant>"
    with pytest.raises(ChatError, match="no chat template of its own"):
        render("model", [], {})
    escape = {"rwkvweb.chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
    with pytest.raises(ChatError, match="unsafe|access"):
        render("model", [], escape)
    with pytest.raises(ChatError, match="unknown chat template 'chatml'"):
        render("chatml", [])
    with pytest.raises(ChatError, match="role"):
        render("world", [{"role": "tool", "content": "x"}])


async def _two_turns(path):
    model = await Model.load(path)
    chat = Conversation(template="model")
    chat.messages.append({"role": "user", "content": "Hello"})
    first, r1 = await chat.answer(model, 8, metadata=model.metadata, **GREEDY)
    chat.messages.append({"role": "user", "content": "And then?"})
    full_prompt = render("model", chat.messages, model.metadata)
    fed_before = chat.fed_text
    second, r2 = await chat.answer(model, 8, metadata=model.metadata, **GREEDY)
    # the same tokens from a fresh state, all at once: the first prompt, the first answer's tokens, the new text
    ids = model.encode("<user>Hello\n\n<assistant>") + r1.tokens + model.encode(full_prompt[len(fed_before) :])
    fresh = await model.generate(ids, 8, **GREEDY)
    return model, chat, first, r1, second, r2, full_prompt, fed_before, fresh


def test_second_turn_feeds_only_the_new_text_and_equals_a_fresh_run(chat_model):
    model, chat, first, r1, second, r2, full_prompt, fed_before, fresh = run_async(_two_turns(chat_model))
    assert r1.stats.prompt_tokens == len(model.encode("<user>Hello\n\n<assistant>"))
    assert full_prompt.startswith(fed_before)
    assert r2.stats.prompt_tokens == len(model.encode(full_prompt[len(fed_before) :])) < len(model.encode(full_prompt))
    # the kept state + the new text is the whole conversation's state: greedy tokens agree exactly
    assert r2.tokens == fresh.tokens[: len(r2.tokens)] and r2.tokens
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]


async def _save_restore(path):
    model = await Model.load(path)
    browser._model = model
    browser._set_identity("chat.st", 1234)
    browser.chat_new("model")
    await browser.chat_send("Hello", {"max_tokens": 6, **GREEDY}, None)
    saved = await browser.chat_save()
    uninterrupted = await browser.chat_send("More", {"max_tokens": 6, **GREEDY}, None)
    # a different session: the state is wiped, the file brings it back
    await model.state(bytes(len(await model.state())))
    browser.chat_new("model")
    restored = await browser.chat_restore(saved)
    continued = await browser.chat_send("More", {"max_tokens": 6, **GREEDY}, None)
    regenerated = await browser.chat_regenerate({"max_tokens": 6, **GREEDY}, None)
    browser._set_identity("other.st", 99)
    with pytest.raises(ChatError, match="saved with chat.st .* but other.st .* is loaded"):
        await browser.chat_restore(saved)
    with pytest.raises(ChatError, match="not a saved conversation"):
        await browser.chat_restore(b"{}")
    return saved, uninterrupted, restored, continued, regenerated


def test_save_restore_continues_exactly_and_regenerate_repeats(chat_model):
    saved, uninterrupted, restored, continued, regenerated = run_async(_save_restore(chat_model))
    document = json.loads(saved)
    assert document["format"] == "rwkvweb-conversation" and document["model"]["name"] == "chat.st"
    assert [m["role"] for m in restored["messages"]] == ["user", "assistant"]
    assert continued["text"] == uninterrupted["text"] and continued["prompt_tokens"] == uninterrupted["prompt_tokens"]
    assert regenerated["text"] == continued["text"]  # greedy, from the same state: the same answer again


def test_python_cell_prints_and_shows_the_last_value(chat_model):
    async def run():
        browser._model = await Model.load(chat_model)
        return await browser.run_cell("print(len(model.encode('hello')))\nx = await model.state()\nlen(x) > 0")

    assert run_async(run()) == {"output": "5\n", "value": "True"}


def test_built_in_templates_reuse_the_state_even_when_the_answer_renders_differently(chat_model):
    """A random model's answer has no leading space and stray bytes, so "Assistant: <answer>" never
    renders back what it generated; the new turn still goes after the text the state holds."""

    async def run():
        model = await Model.load(chat_model)
        chat = Conversation(template="world")
        chat.messages.append({"role": "user", "content": "Hello"})
        _, r1 = await chat.answer(model, 8, **GREEDY)
        fed = chat.fed_text
        chat.messages.append({"role": "user", "content": "And then?"})
        _, r2 = await chat.answer(model, 8, **GREEDY)
        ids = (
            model.encode("User: Hello\n\nAssistant:")
            + r1.tokens
            + model.encode(chat.fed_text[len(fed) : len(chat.fed_text) - len(r2.text)])
        )
        fresh = await model.generate(ids, 8, **GREEDY)
        return fed, chat, r1, r2, fresh

    fed, chat, r1, r2, fresh = run_async(run())
    closing = "" if fed.endswith("\n\n") else "\n\n"
    assert r2.stats.prompt_tokens == len(closing + "User: And then?\n\nAssistant:")
    assert r2.tokens == fresh.tokens[: len(r2.tokens)] and r2.tokens


@pytest.mark.parametrize("turn", [1, 2])
def test_an_abort_while_the_prompt_runs_leaves_state_and_transcript_in_step(chat_model, turn):
    """Turn `turn` is aborted after one of its prompt's 8-token chunks: the engine undoes the prompt and the
    transcript records the empty answer. The next turn feeds the aborted message once, with its own, and
    answers as a fresh conversation over the same transcript does."""
    long = "Tell me a story about " + "a very long road, " * 4

    async def run():
        model = await Model.load(chat_model, chunk=8)
        chat = Conversation(template="model")
        if turn == 2:
            chat.messages.append({"role": "user", "content": "Hello"})
            await chat.answer(model, 6, metadata=model.metadata, **GREEDY)
        before = (chat.fed_text, await model.state())
        chat.messages.append({"role": "user", "content": long})
        polls = []
        stop = lambda: polls.append(1) or len(polls) > 1  # noqa: E731  (one chunk runs, then the abort)
        _, aborted = await chat.answer(model, 6, should_stop=stop, metadata=model.metadata, **GREEDY)
        after = (chat.fed_text, await model.state())
        chat.messages.append({"role": "user", "content": "Go on"})
        transcript = [dict(m) for m in chat.messages]
        _, suffix, keep = chat.next_prompt(model.metadata)
        fed_now = len(model.encode(suffix)) + (model.engine.pending is not None)  # (state() above fed it)
        _, next_turn = await chat.answer(model, 8, metadata=model.metadata, **GREEDY)
        fresh = await Model.load(chat_model)
        _, control = await Conversation("model", list(transcript)).answer(fresh, 8, metadata=fresh.metadata, **GREEDY)
        return before, aborted, after, transcript, (suffix, keep, fed_now), next_turn, control

    before, aborted, after, transcript, (suffix, keep, fed_now), next_turn, control = run_async(run())
    assert aborted.stats.stopped_by == "abort" and aborted.stats.prefill_chunks == 1 and aborted.tokens == []
    assert after == before  # the state and the text it holds: nothing of the aborted prompt
    assert transcript[-3:] == [
        {"role": "user", "content": long},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Go on"},
    ]
    # the next turn feeds the aborted message with its own, once: after the text the state held (turn 2), or
    # the whole transcript from a fresh state (turn 1: the aborted prompt was the conversation's first text)
    assert keep == (turn == 2) and suffix.count(long) == 1 and next_turn.stats.prompt_tokens == fed_now
    assert turn == 2 or fed_now == control.stats.prompt_tokens
    assert next_turn.tokens == control.tokens and next_turn.tokens
