"""The autoscaler through a real `openeas server`: 1 -> N under load and back, scale to zero
after the grace period, scale from zero on the first request (held at the shared gateway), and
the 503 a held request gets past its keepalive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

from tests.e2e.load import SteadyLoad
from tests.harness import Server, app_command, service_spec


def autoscaled(name: str, command: str, autoscaler: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    spec = service_spec(name, command, **metadata)
    spec["autoscaler"] = autoscaler
    return spec


def desc(server: Server, name: str) -> dict[str, Any]:
    view: dict[str, Any] = server.cli_json("desc", name)
    return view


def instances(server: Server, name: str) -> tuple[int, int]:
    """(desired instance count in the spec, ready instances)."""
    view = desc(server, name)
    return int(view["instance"]), int(view["running_instances"])


def test_scales_out_under_load_and_back_in(server: Server, work: Path) -> None:
    spec = autoscaled(
        "auto_qps",
        app_command("whoami.py"),
        {
            "min": 1,
            "max": 5,
            "scaleStrategies": [{"metricName": "qps", "threshold": 10}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
        },
    )
    view = server.deploy(spec, work)
    url = view["endpoints"]["internet"]
    seen: list[int] = []
    # 35 requests/s need ceil(35 / 10) = 4 instances
    with SteadyLoad(url + "/x", view["token"], rate=35, seconds=40, timeout_s=30) as load:

        def scaled_out() -> bool:
            n, ready = instances(server, "auto_qps")
            seen.append(n)
            return ready >= 3

        server.wait_for(scaled_out, timeout=60, what="3+ ready instances under 35 req/s")
    report = load.report()
    assert report.failures == [], report.describe()
    assert max(seen) in (3, 4, 5), seen
    target = desc(server, "auto_qps")["autoscaler"]
    assert target is not None and "qps" in target["reason"], target
    # load over: down to min (1) once the 5 s scale-down window has only low recommendations
    server.wait_for(lambda: instances(server, "auto_qps") == (1, 1), timeout=60, what="back to 1")
    log = server.log_path.read_text(errors="replace")
    assert "autoscaler: service auto_qps 1 -> " in log and "qps " in log
    server.cli("delete", "auto_qps")


def test_scale_to_zero_and_back_on_the_first_request(server: Server, work: Path) -> None:
    spec = autoscaled(
        "auto_zero",
        app_command("whoami.py"),
        {
            "min": 0,
            "max": 2,
            "scaleStrategies": [{"metricName": "qps", "threshold": 50}],
            "behavior": {"onZero": {"scaleDownGracePeriodSeconds": 3}},
        },
        rpc={"keepalive": 60_000},
    )
    view = server.deploy(spec, work)
    url, token = view["endpoints"]["internet"], view["token"]
    assert requests.get(url + "/warm", headers={"Authorization": token}, timeout=30).status_code == 200
    # no request for 3 s: to zero
    server.wait_for(lambda: instances(server, "auto_zero") == (0, 0), timeout=60, what="scaled to zero")
    assert desc(server, "auto_zero")["autoscaler"]["target"] == 0
    # the first request waits at the gateway while an instance starts, then gets its answer
    t0 = time.monotonic()
    r = requests.post(url + "/first", data=b"{}", headers={"Authorization": token}, timeout=90)
    waited = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json()["service"] == "auto_zero" and r.json()["path"] == "/first"
    assert instances(server, "auto_zero")[0] == 1
    log = server.log_path.read_text(errors="replace")
    assert "autoscaler: service auto_zero 1 -> 0 instances (scale to zero" in log
    assert "autoscaler: service auto_zero 0 -> 1 instances (scale from zero" in log
    print(f"first request after scale to zero answered in {waited:.1f} s")
    server.cli("delete", "auto_zero")


def test_held_request_past_keepalive_is_503(server: Server, work: Path) -> None:
    # the instance takes 8 s to start; the caller's keepalive is 1.5 s
    spec = autoscaled(
        "auto_late",
        "sleep 8; exec " + app_command("whoami.py"),
        {"min": 0, "max": 1, "scaleStrategies": [{"metricName": "qps", "threshold": 50}]},
        instance=0,
        rpc={"keepalive": 1500},
    )
    view = server.cli_json("create", str(_write(work, spec)))
    url, token = view["endpoints"]["internet"], view["token"]
    server.wait_for(lambda: desc(server, "auto_late")["status"] != "", timeout=10)
    r = requests.get(url + "/late", headers={"Authorization": token}, timeout=60)
    assert r.status_code == 503, r.text
    assert "scaled to zero" in r.json()["message"] and "1500 ms" in r.json()["message"]
    assert r.headers.get("Retry-After") == "1"
    # the request still woke the service: an instance starts and later requests are answered
    server.wait_for(lambda: instances(server, "auto_late") == (1, 1), timeout=60, what="woken")
    assert requests.get(url + "/after", headers={"Authorization": token}, timeout=60).status_code == 200
    server.cli("delete", "auto_late")


def _write(work: Path, spec: dict[str, Any]) -> Path:
    import json

    path = work / f"{spec['metadata']['name']}.json"
    path.write_text(json.dumps(spec))
    return path
