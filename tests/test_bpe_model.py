"""A model that ships its byte-level BPE tokenizer.json in its metadata: the API picks it up,
encodes like `tokenizers`, and streams whole characters."""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")

from conftest import run_async as run  # noqa: E402

from rwkvweb.api import Model  # noqa: E402
from rwkvweb.bpe import BPETokenizer  # noqa: E402
from rwkvweb.config import ModelConfig  # noqa: E402
from rwkvweb.safetensors import write_safetensors  # noqa: E402
from rwkvweb.testmodel import random_weights  # noqa: E402

from test_bpe import local_corpus, train  # noqa: E402


@pytest.fixture(scope="module")
def reference():
    return train(local_corpus(), vocab_size=600)


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory, reference):
    path = str(tmp_path_factory.mktemp("bpe") / "bpe.st")
    weights = random_weights(ModelConfig.default_for(1, 64, 640), seed=5)  # 600 ids, rows padded to 640
    write_safetensors(path, weights, {"rwkvweb.tokenizer": "bpe", "rwkvweb.tokenizer_json": reference.to_str()})
    return path


def test_the_model_s_own_tokenizer_encodes_and_streams(bpe_model, reference):
    model = run(Model.load(bpe_model))
    assert isinstance(model.tokenizer, BPETokenizer)
    prompt = "Hello 世界 🚀 don't"
    assert model.encode(prompt) == reference.encode(prompt, add_special_tokens=False).ids
    pieces = []
    result = run(model.generate(prompt, 40, temperature=1.0, seed=4, on_text=pieces.append))
    assert "".join(pieces) == result.text == model.decode(result.tokens)
    for piece in pieces:
        piece.encode("utf-8")  # no lone surrogates: whole characters only


def test_a_pile_sized_model_without_its_tokenizer_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("RWKVWEB_GPT_NEOX_TOKENIZER", raising=False)
    path = str(tmp_path / "pile.st")
    write_safetensors(path, random_weights(ModelConfig.default_for(1, 64, 50304), seed=1), {})
    with pytest.raises(ValueError, match="needs GPT-NeoX 20B's tokenizer"):
        run(Model.load(path))
    ids_only = run(Model.load(path, tokenizer_for=lambda config, metadata: None))
    assert ids_only.tokenizer is None
