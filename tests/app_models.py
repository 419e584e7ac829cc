"""Models for the app's browser tests (test_app.py, test_embed.py, test_pwa.py)."""

from __future__ import annotations

import numpy as np

from rwkvweb.config import ModelConfig
from rwkvweb.safetensors import write_safetensors
from rwkvweb.testmodel import random_weights

# A chat template that gives answers back exactly as generated (test_app_chat.py explains why).
OWN_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
HOSTILE = '<img src=x onerror="pwn()"><script>hit()</script >'  # pwn/hit: the tests' tripwires


def write_chat_model(path: str, template: str | None = OWN_TEMPLATE, seed: int = 5) -> str:
    """A byte-vocabulary model (2 x 64) carrying its own chat template: greedy text is deterministic."""
    config = ModelConfig.default_for(2, 64, 256)
    weights = {name: w.astype(np.float16) for name, w in random_weights(config, seed).items()}
    write_safetensors(
        path, weights, {"rwkvweb.tokenizer": "bytes", **({"rwkvweb.chat_template": template} if template else {})}
    )
    return path


def write_parrot_model(path: str, text: str, after: list[str], tokenizer) -> str:
    """A World-vocabulary model (1 x 64) that, greedy, answers `text` after any prompt ending with one
    of the texts in `after`, then ends (token 0).

    Every block's output is zeroed, so the final hidden state is LayerNorm(emb[token]) and the next
    token depends on the current one only (a bigram table): the head row of each wanted successor is
    the current token's normalised embedding. That needs `text` spelt in distinct tokens."""
    config = ModelConfig.default_for(1, 64, 65536)
    weights = random_weights(config, seed=3)
    for name in weights:
        if name.endswith(("att.output.weight", "ffn.value.weight")):
            weights[name][:] = 0
        if name.startswith(("blocks.0.ln0", "ln_out")):
            weights[name][:] = 1 if name.endswith("weight") else 0
    ids = distinct_tokens(text, tokenizer)
    starts = {tokenizer.encode(prompt)[-1] for prompt in after}
    emb = weights["emb.weight"]
    normalised = (emb - emb.mean(1, keepdims=True)) / emb.std(1, keepdims=True)
    head = np.zeros_like(weights["head.weight"])
    chain = [(s, ids[0]) for s in starts] + list(zip(ids, ids[1:])) + [(ids[-1], 0)]
    for current, following in chain:
        head[following] += 0.5 * normalised[current]  # logit 0.5 * 64 = 32 for the successor; others ~ +-4
    weights["head.weight"] = head
    write_safetensors(path, {k: v.astype(np.float16) for k, v in weights.items()}, {"rwkvweb.tokenizer": "world"})
    return path


def distinct_tokens(text: str, tokenizer) -> list[int]:
    """`text` as vocabulary tokens that are all different (a bigram table can only follow a chain
    without repeats), the longest first; not the tokenizer's own spelling, but it decodes the same."""
    ids = {token: i for i, token in sorted(tokenizer.id_to_bytes.items(), reverse=True) if token and i}
    data = text.encode()

    def spell(at: int, used: frozenset) -> list[int] | None:
        if at == len(data):
            return []
        for length in range(min(16, len(data) - at), 0, -1):
            token = ids.get(data[at : at + length])
            if token is not None and token not in used:
                rest = spell(at + length, used | {token})
                if rest is not None:
                    return [token, *rest]
        return None

    spelt = spell(0, frozenset())
    if spelt is None:
        raise ValueError(f"{text!r} cannot be spelt in distinct tokens: choose another text")
    return spelt
