"""The seed guide, step by step: deploy, read endpoint + token, call with curl / requests /
the official eas-prediction SDK / the OpenAI SDK, over the Internet and the VPC endpoints."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import Server, demo_spec

SEED_BODY = {
    "model": "DeepSeek-R1-Distill-Qwen-7B",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hello!"},
    ],
}


@pytest.fixture(scope="module")
def demo(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    created: dict[str, Any] = server.deploy(demo_spec(), tmp_path_factory.mktemp("specs"))
    assert created["status"] == "Running"
    return created


def test_create_prints_endpoints_and_token(server: Server, demo: dict[str, Any]) -> None:
    assert demo["name"] == "demo_chat"
    assert demo["endpoints"]["internet"] == f"http://127.0.0.1:{server.gateway_port}/api/predict/demo_chat"
    assert demo["endpoints"]["vpc"] == f"http://127.0.0.1:{server.vpc_port}/api/predict/demo_chat"
    assert len(demo["token"]) >= 16
    # "View Endpoint Information" shows the same three things.
    panel = server.cli_json("endpoints", "demo_chat")
    assert panel["endpoints"]["internet"] == demo["endpoints"]["internet"]
    assert panel["endpoints"]["vpc"] == demo["endpoints"]["vpc"]
    assert panel["token"] == demo["token"]
    desc = server.cli_json("desc", "demo_chat")
    assert desc["status"] == "Running" and desc["token"] == demo["token"]
    names = [s["name"] for s in server.cli_json("list")]
    assert "demo_chat" in names


@pytest.mark.parametrize("which", ["internet", "vpc"])
def test_seed_curl_request(demo: dict[str, Any], which: str) -> None:
    """The seed's curl line, verbatim but for the endpoint and token."""
    curl = shutil.which("curl")
    assert curl, "curl is needed for this test (scripts/test.sh installs it)"
    endpoint = demo["endpoints"][which]
    out = subprocess.run(
        [
            curl,
            "-sS",
            f"{endpoint}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: {demo['token']}",
            "-X",
            "POST",
            "-d",
            json.dumps(SEED_BODY, indent=4),
            "-w",
            "\n%{http_code}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    body, _, code = out.rpartition("\n")
    assert code == "200", out
    answer = json.loads(body)
    assert answer["model"] == "DeepSeek-R1-Distill-Qwen-7B"
    assert answer["choices"][0]["message"]["content"] == "You said: hello!"


@pytest.mark.parametrize("which", ["internet", "vpc"])
def test_seed_python_requests(demo: dict[str, Any], which: str) -> None:
    url = demo["endpoints"][which] + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": demo["token"]}
    resp = requests.post(url, json=SEED_BODY, headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "You said: hello!"
    # Bearer works too (the OpenAI SDK's form).
    headers["Authorization"] = "Bearer " + demo["token"]
    assert requests.post(url, json=SEED_BODY, headers=headers, timeout=30).status_code == 200


def test_openai_sdk_plain_and_streaming(demo: dict[str, Any]) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=demo["endpoints"]["internet"] + "/v1", api_key=demo["token"])
    models = [m.id for m in client.models.list()]
    assert models == ["demo"]
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "You said: hi"

    words = "one two three four five six"
    stamps: list[float] = []
    pieces: list[str] = []
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": words}], stream=True
    )
    for chunk in stream:
        stamps.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "You said: " + words
    # The demo sleeps 50 ms between events: events arrive one by one, not all at the end.
    assert len(stamps) >= 8
    assert stamps[-1] - stamps[0] >= 0.3
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert sum(1 for g in gaps if g > 0.02) >= 5, gaps


SDK_SCRIPT = """
import sys
from eas_prediction import PredictClient, StringRequest
endpoint, name, token, payload = sys.argv[1:5]
client = PredictClient(endpoint, name)
client.set_token(token)
client.init()
resp = client.predict(StringRequest(payload))
sys.stdout.write(resp.response_data.decode() if isinstance(resp.response_data, bytes) else resp.response_data)
"""


@pytest.mark.parametrize("which", ["internet", "vpc"])
def test_official_eas_prediction_sdk(
    demo: dict[str, Any], eas_python: Path, which: str, tmp_path: Path
) -> None:
    """PredictClient + StringRequest + set_token: the SDK signs with `EAS <hmac>`."""
    base = demo["endpoints"][which].split("/api/predict/")[0]
    script = tmp_path / "sdk_call.py"
    script.write_text(SDK_SCRIPT)
    payload = '{"query": "hello from the SDK"}'
    result = subprocess.run(
        [str(eas_python), str(script), base, "demo_chat", demo["token"], payload],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload  # the demo echoes POST / bodies


def test_sdk_with_wrong_token_gets_401(demo: dict[str, Any], eas_python: Path, tmp_path: Path) -> None:
    base = demo["endpoints"]["internet"].split("/api/predict/")[0]
    script = tmp_path / "sdk_call.py"
    script.write_text(SDK_SCRIPT)
    result = subprocess.run(
        [str(eas_python), str(script), base, "demo_chat", "x" * 40, "{}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "401" in result.stderr
