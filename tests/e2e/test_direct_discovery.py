"""VPC direct connection: the unmodified eas-prediction SDK in DIRECT mode asks the VPC gateway
for the service's instances and calls them itself (no gateway on the request path)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import Server, app_command, service_spec

SVC = "direct_svc"

SDK_DIRECT = """
import json, sys, time
from eas_prediction import PredictClient, StringRequest
from eas_prediction.predict_client import ENDPOINT_TYPE_DIRECT

endpoint, service, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = PredictClient(endpoint, service)
client.set_endpoint_type(ENDPOINT_TYPE_DIRECT)
client.set_token(token)
client.init()
time.sleep(1.5)  # the first discovery runs in the SDK's sync thread
answers = []
for _ in range(n):
    resp = client.predict(StringRequest('{"x": 1}'))
    data = resp.response_data
    answers.append(json.loads(data.decode() if isinstance(data, bytes) else data))
client.destroy()
sys.stdout.write(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def direct(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = service_spec(SVC, app_command("whoami.py"), instance=2)
    created: dict[str, Any] = server.deploy(spec, tmp_path_factory.mktemp("direct"))
    server.wait_for(lambda: server.cli_json("desc", SVC)["running_instances"] == 2, what="2 instances")
    return created


def test_discovery_answers_on_the_vpc_listener_only(server: Server, direct: dict[str, Any]) -> None:
    vpc = direct["endpoints"]["vpc"].split("/api/predict/")[0]
    internet = direct["endpoints"]["internet"].split("/api/predict/")[0]
    instances = server.cli_json("desc", SVC)
    for path in (
        f"/api/v1/servicediscovery/upstreams/{SVC}",
        f"/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{SVC}",
    ):
        resp = requests.get(vpc + path, timeout=10)  # no token
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["correlative"] == [SVC]
        items = body["endpoints"]["items"]
        assert len(items) == instances["running_instances"] == 2
        assert all(i["app"] == SVC and i["weight"] == 100 and i["ip"] == "127.0.0.1" for i in items)
        assert requests.get(internet + path, timeout=10).status_code == 404
    resp = requests.get(vpc + "/api/v1/servicediscovery/upstreams/no_such_svc", timeout=10)
    assert resp.status_code == 404 and resp.json()["code"] == 404


def test_sdk_direct_mode_calls_instances(direct: dict[str, Any], eas_python: Path, tmp_path: Path) -> None:
    vpc = direct["endpoints"]["vpc"].split("/api/predict/")[0]
    script = tmp_path / "sdk_direct.py"
    script.write_text(SDK_DIRECT)
    result = subprocess.run(
        [str(eas_python), str(script), vpc, SVC, direct["token"], "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == 20
    assert {a["service"] for a in answers} == {SVC}
    # both instances answered (the SDK's weighted round robin), and they saw the SDK's own path:
    # the request went to the instance directly, not through the gateway (which strips it)
    assert len({a["instance"] for a in answers}) == 2
    assert {a["path"] for a in answers} == {f"/api/predict/{SVC}"}
