"""LLM-aware routing (issue 16 item 3): prompt-prefix affinity bounded by load (`prefix_affinity`).

An in-process gateway with two real instances: requests that share a prompt prefix go to one
instance while its load allows, spread when it does not (never more than 1.5 x the least loaded
+ 1 at the time of the pick); different prefixes spread; the buffered body reaches the instance
intact (over BODY_MAX too); the strategy is selected by `metadata.llm_routing: "prefix"`.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from openeas.gateway.pickers import BODY_MAX, PREFIX_STRATEGY, prefix_key, strategy_for
from openeas.gateway.snapshot import RoutingSnapshot
from openeas.spec import parse_service_spec
from tests.gateway.harness import Upstream
from tests.gateway.inprocess import route, running_gateway

TOKEN = "tok-Prefix-0123456789abcdefghij"
AUTH = {"Authorization": TOKEN}
SYSTEM = "You are a helpful assistant. " * 20


def chat(system: str, user: str) -> bytes:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return json.dumps({"model": "m", "messages": messages, "temperature": 0}).encode()


def snapshot(ports: list[int]) -> RoutingSnapshot:
    return RoutingSnapshot(
        version=1,
        services={
            "llm": route("llm", TOKEN, ports, picker=PREFIX_STRATEGY),
            "plain": route("plain", TOKEN, ports),
        },
    )


def test_prefix_key_reads_the_conversation_before_the_last_message() -> None:
    assert prefix_key(chat(SYSTEM, "one")) == prefix_key(chat(SYSTEM, "two"))
    assert prefix_key(chat(SYSTEM, "one")) != prefix_key(chat("other system", "one"))
    assert prefix_key(json.dumps({"prompt": "abc"}).encode()) == prefix_key(
        json.dumps({"prompt": "abc"}).encode()
    )
    assert prefix_key(b"") is None and prefix_key(b"[1]") is None and prefix_key(b'{"x": 1}') is None
    assert prefix_key(b"not json") is None


def test_the_spec_field_selects_the_strategy() -> None:
    spec = {"metadata": {"name": "llm", "llm_routing": "prefix"}, "processor": "llm", "model_path": "/m.gguf"}
    assert strategy_for(parse_service_spec(spec).model_dump()) == PREFIX_STRATEGY
    assert strategy_for({"metadata": {"name": "x"}}) == "least_outstanding"


def test_same_prefix_sticks_to_one_instance_and_different_prefixes_spread(
    upstreams: tuple[Upstream, Upstream],
) -> None:
    a, b = upstreams
    with running_gateway(snapshot([a.port, b.port])) as gw, requests.Session() as s:
        names = set()
        for i in range(10):
            body = chat(SYSTEM, f"question {i}")
            r = s.post(gw.url("llm", "/echo"), data=body, headers=AUTH, timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()  # forwarded intact
            names.add(r.json()["name"])
        assert len(names) == 1, names
        spread = set()
        for i in range(8):
            r = s.post(
                gw.url("llm", "/echo"), data=chat(f"system prompt {i}", "hi"), headers=AUTH, timeout=10
            )
            spread.add(r.json()["name"])
        assert spread == {"a", "b"}
        big = b'{"prompt": "' + b"x" * (BODY_MAX + 1000) + b'"}'  # picked at BODY_MAX, sent whole
        r = s.post(gw.url("llm", "/echo"), data=big, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["body_len"] == len(big)


def test_same_prefix_spreads_when_load_does_not_allow(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    with running_gateway(snapshot([a.port, b.port])) as gw:

        def call(i: int) -> int:
            r = requests.post(
                gw.url("llm", "/sleep?ms=1500"), data=chat(SYSTEM, f"q{i}"), headers=AUTH, timeout=10
            )
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(call, i) for i in range(8)]
            deadline = time.monotonic() + 5
            loads: list[int] = []
            while time.monotonic() < deadline:
                loads = gw.call(lambda g: sorted(s.outstanding for s in g.routes[b"llm"].upstreams))
                if sum(loads) == 8:
                    break
                time.sleep(0.02)
            assert [f.result() for f in futures] == [200] * 8
        print("outstanding per instance with 8 same-prefix requests:", loads)
        assert sum(loads) == 8 and loads[0] > 0, loads
        assert loads[1] <= 1.5 * loads[0] + 2, loads  # each pick: <= 1.5 x least + 1 before it


def test_non_llm_services_do_not_wait_for_the_body(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    with running_gateway(snapshot([a.port, b.port])) as gw:
        entries: Any = gw.call(
            lambda g: (g.routes[b"plain"].picker.wants_body, g.routes[b"llm"].picker.wants_body)
        )
        assert entries == (False, True)
