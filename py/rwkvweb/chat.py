"""Chat: prompts from chat templates (jinja2), and conversations that keep their recurrent state.

Templates render a list of messages ({"role": "system" | "user" | "assistant", "content": str})
into the text the model continues:

- `world`: RWKV World's format, `User: …\\n\\nAssistant: …\\n\\n`; a blank line ends a turn, so
  blank lines inside a message are folded to single newlines (the model would read them as a turn's end).
- `g1`: the RWKV G1 reasoning variant: the assistant's turn opens with `<think` and the model writes
  its reasoning, `>…</think>`, before the answer; earlier answers are kept without their reasoning.
- a model's own template, from its safetensors metadata key `rwkvweb.chat_template` (jinja2 source
  with `messages` and `add_generation_prompt`, as Hugging Face chat templates have).

Templates run in jinja2's sandbox: a template that comes with a downloaded model is data, not code.

A Conversation keeps the text its state holds (`fed_text`). The next turn renders the whole
transcript, and when the text the state holds is a prefix of it, feeds only the rest (prefix reuse).
The built-in templates render message by message, so with them the state is always reused: the new
messages are rendered after the text the state holds (the model's answer as it wrote it, closed by a
blank line unless it wrote one). Otherwise (a model's template that does not render the answer back
as generated) the turn starts from a fresh state.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

METADATA_KEY = "rwkvweb.chat_template"
TURN_END = "\n\n"  # every built-in template ends a turn with a blank line: generation stops there

WORLD = (
    "{%- for m in messages -%}"
    "{%- set text = m.content | fold_blank_lines -%}"
    "{%- if m.role == 'system' -%}System: {{ text ~ '\\n\\n' }}"
    "{%- elif m.role == 'user' -%}User: {{ text ~ '\\n\\n' }}"
    "{%- else -%}Assistant: {{ text ~ '\\n\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant:{%- endif -%}"
)

G1 = (
    "{%- for m in messages -%}"
    "{%- set text = m.content | drop_reasoning | fold_blank_lines -%}"
    "{%- if m.role == 'system' -%}System: {{ text ~ '\\n\\n' }}"
    "{%- elif m.role == 'user' -%}User: {{ text ~ '\\n\\n' }}"
    "{%- else -%}Assistant: {{ text ~ '\\n\\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}Assistant: <think{%- endif -%}"
)

BUILT_IN = {"world": WORLD, "g1": G1}
FILE_FORMAT = "rwkvweb-conversation"


class ChatError(ValueError):
    pass


def _fold_blank_lines(text: str) -> str:
    text = str(text).strip()
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    return text


def _drop_reasoning(text: str) -> str:
    text = str(text)
    return text.split("</think>", 1)[1] if "</think>" in text else text


def _environment():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
    env.filters["fold_blank_lines"] = _fold_blank_lines
    env.filters["drop_reasoning"] = _drop_reasoning
    return env


def template_source(name: str, metadata: dict[str, str] | None = None) -> str:
    """The jinja2 source of a template: `world`, `g1`, or `model` (the model's own, from its metadata)."""
    if name == "model":
        source = (metadata or {}).get(METADATA_KEY)
        if not source:
            raise ChatError(
                f"this model has no chat template of its own (metadata key {METADATA_KEY}); pick world or g1"
            )
        return source
    if name not in BUILT_IN:
        raise ChatError(f"unknown chat template {name!r}; known: world, g1, model (the model's own)")
    return BUILT_IN[name]


def default_template(metadata: dict[str, str] | None) -> str:
    return "model" if (metadata or {}).get(METADATA_KEY) else "world"


def render(
    name: str, messages: list[dict], metadata: dict[str, str] | None = None, add_generation_prompt: bool = True
) -> str:
    """The prompt text for `messages` under the template `name`."""
    from jinja2 import TemplateError

    for m in messages:
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ChatError(f"a message needs role system|user|assistant and text content, got {m!r}")
    try:
        template = _environment().from_string(template_source(name, metadata))
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt)
    except TemplateError as error:
        raise ChatError(f"chat template {name!r} failed: {error}") from error


def reply_text(raw: str) -> str:
    """An answer as the transcript keeps it: the generated text up to the blank line that ends the
    turn, spaces kept, so that the template renders back the very text the state holds (the built-in
    templates strip it, as the space after `Assistant:` is theirs)."""
    return raw.split(TURN_END, 1)[0]


@dataclass
class Conversation:
    """A transcript and the text whose recurrent state the engine holds (`fed_text`)."""

    template: str = "world"
    messages: list[dict] = field(default_factory=list)
    fed_text: str = ""  # "" : the engine's state is not this conversation's
    fed_messages: int = 0  # how many messages fed_text covers
    checkpoint: tuple[str, int, bytes] | None = (
        None  # (fed_text, fed_messages, state) before the last answer: regenerate
    )

    def prompt_suffix(self, prompt: str) -> tuple[str, bool]:
        """(text to feed, keep_state): only the new text when the state holds a prefix of `prompt`."""
        if self.fed_text and prompt.startswith(self.fed_text) and len(prompt) > len(self.fed_text):
            return prompt[len(self.fed_text) :], True
        return prompt, False

    def next_prompt(self, metadata=None) -> tuple[str, str, bool]:
        """(the whole prompt as the state will hold it, the text to feed now, keep_state)."""
        full = render(self.template, self.messages, metadata)
        suffix, keep = self.prompt_suffix(full)
        if keep or not self.fed_text or self.template not in BUILT_IN or not 0 < self.fed_messages < len(self.messages):
            return full, suffix, keep
        closing = "" if self.fed_text.endswith(TURN_END) else TURN_END
        new = closing + render(self.template, self.messages[self.fed_messages :], metadata)
        return self.fed_text + new, new, True

    async def answer(self, model, max_tokens: int, on_text=None, should_stop=lambda: False, metadata=None, **sampling):
        """Generate the assistant's turn after the transcript (whose last message is the user's).
        Returns (reply, generation): generation.stats.prompt_tokens counts only the text fed now.
        The state then holds the prompt and every generated token (api.Model.generate keeps the
        last one pending), so `fed_text` is the prompt plus the generated text. An abort while the prompt
        runs leaves the state as before it: `fed_text` stays (or is "" after a fresh start), and the
        empty answer is recorded, so the next turn feeds this turn's message with its own."""
        prompt, suffix, keep = self.next_prompt(metadata)
        self.checkpoint = (self.fed_text, self.fed_messages, await model.state()) if keep else ("", 0, b"")
        raw, shown = [""], [0]  # the text generated so far; how much of it on_text has seen

        def ended() -> bool:
            return TURN_END in raw[0]

        def on_piece(piece: str):
            raw[0] += piece
            visible = raw[0].split(TURN_END, 1)[0]  # nothing from the blank line that ends the turn on
            new, shown[0] = visible[shown[0] :], len(visible)
            return on_text(new) if new and on_text is not None else None

        result = await model.generate(
            suffix,
            max_tokens,
            on_text=on_piece,
            should_stop=lambda: ended() or should_stop(),
            keep_state=keep,
            **sampling,
        )
        reply = reply_text(result.text)
        self.messages.append({"role": "assistant", "content": reply})
        if result.stats.stopped_by == "abort" and not result.tokens:
            # aborted while the prompt ran: the engine undid it (engine.py), so the state holds what it held
            # before; without keep_state that is a fresh state, which no text of this conversation describes
            if not keep:
                self.fed_text, self.fed_messages = "", 0
            return reply, result
        self.fed_text = prompt + result.text
        self.fed_messages = len(self.messages)
        return reply, result

    async def rewind(self, model) -> None:
        """Drop the last answer and put back the state from before it (regenerate)."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise ChatError("there is no answer to regenerate")
        self.messages.pop()
        fed_text, fed_messages, state = self.checkpoint or ("", 0, b"")
        if fed_text:
            await model.state(state)
        self.fed_text, self.fed_messages, self.checkpoint = fed_text, fed_messages, None

    async def save(self, model, identity: dict) -> bytes:
        """One file: the transcript, the state the engine holds, and which model it belongs to."""
        state = await model.state() if self.fed_text else b""
        document = {
            "format": FILE_FORMAT,
            "version": 1,
            "model": identity,
            "template": self.template,
            "messages": self.messages,
            "fed_text": self.fed_text,
            "fed_messages": self.fed_messages,
            "state": base64.b64encode(state).decode(),
        }
        return json.dumps(document, ensure_ascii=False).encode()

    @classmethod
    async def restore(cls, model, data: bytes, identity: dict) -> "Conversation":
        """The saved conversation, its state back on the engine; refused for another model."""
        try:
            document = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, ValueError) as error:
            raise ChatError(f"not a saved conversation (not JSON: {error})") from error
        if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
            raise ChatError(f"not a saved conversation: expected a {FILE_FORMAT} file")
        saved = document.get("model") or {}
        if saved != identity:
            raise ChatError(
                f"this conversation was saved with {_describe(saved)}, but {_describe(identity)} is loaded: "
                f"load that model first"
            )
        conversation = cls(
            template=document["template"],
            messages=list(document["messages"]),
            fed_text=document["fed_text"],
            fed_messages=int(document.get("fed_messages", 0)),
        )
        state = base64.b64decode(document["state"])
        if conversation.fed_text:
            await model.state(state)
        return conversation


def _describe(identity: dict) -> str:
    config = identity.get("config") or {}
    shape = f"{config.get('n_layer', '?')} layers × {config.get('n_embd', '?')}"
    return f"{identity.get('name', '?')} ({shape}, {identity.get('bytes', '?')} bytes)"
