"""The `llm` processor's transformers backend on a tiny random-weight Llama made in the test
(word-level tokenizer, so every token is a whole word): same greedy text as `generate()`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processors.harness import Running, processor

WORDS = [
    "the",
    "capital",
    "of",
    "france",
    "is",
    "paris",
    "hello",
    "world",
    "a",
    "an",
    "city",
    "river",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "yes",
    "no",
]
TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
MESSAGES = [{"role": "user", "content": "the capital of france"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("tiny-llama")
    specials = ["[UNK]", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, "system", "user", "assistant", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hf_llm(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = '{"served_model_name": "tiny"}'
    with processor("llm", tiny, tmp_path_factory.mktemp("hf"), "--model-config", config) as p:
        yield p


def reference_greedy(tiny: Path, max_new_tokens: int) -> tuple[str, int, int]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny))
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(prompt, add_special_tokens=True)["input_ids"]])
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=2)
    new = out[0, ids.shape[1] :].tolist()
    completion = len(new) - (1 if new and new[-1] == 2 else 0)
    return tok.decode(new, skip_special_tokens=True), ids.shape[1], completion


def test_greedy_chat_matches_generate(hf_llm: Running, tiny: Path) -> None:
    r = requests.post(
        hf_llm.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": MESSAGES, "max_tokens": 12, "temperature": 0},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    text, prompt_tokens, completion_tokens = reference_greedy(tiny, 12)
    assert body["choices"][0]["message"]["content"].strip() == text.strip()
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == completion_tokens
    info = requests.get(hf_llm.url + "/", timeout=10).json()
    assert info["backend"] == "transformers"


def test_stream_and_sampling_options(hf_llm: Running) -> None:
    body: dict[str, Any] = {
        "messages": MESSAGES, "max_tokens": 8, "temperature": 0.9, "top_p": 0.8, "top_k": 5,
        "repetition_penalty": 1.3, "presence_penalty": 0.5, "seed": 3, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    lines = []
    with requests.post(hf_llm.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200
        lines = [x for x in r.iter_lines(decode_unicode=True) if x]
    assert lines[-1] == "data: [DONE]"
    assert '"usage":{"prompt_tokens"' in lines[-2]
    again = []
    with requests.post(hf_llm.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        again = [x for x in r.iter_lines(decode_unicode=True) if x]
    # same seed, same pieces (ids and timestamps differ)
    assert [x.split('"choices"')[-1] for x in again] == [x.split('"choices"')[-1] for x in lines]
