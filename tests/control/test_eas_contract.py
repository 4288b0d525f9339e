"""Contract test: schemathesis runs the management API against its own OpenAPI document.

The document (`GET /api/v2/openapi.json`) is generated from the code's models; schemathesis
generates requests from it against a real `openeas server` and checks that no answer is a 500,
every answer's status is documented, and every body matches its schema.

Two passes, bounded (a few hundred requests, well under two minutes):
1. on real objects (a running service in a group, a dedicated gateway): the path names are drawn
   from those most of the time, so the operations do their work, not only their 404. The
   operations that could make this box run hundreds of processes from generated numbers
   (autoscaler min/max, gateway replicas) and the deletes are left to pass 2;
2. every operation but the three that start arbitrary work (CreateService/UpdateService run the
   generated spec's commands; CreateGateway starts gateway processes), on generated names
   (fuzzing only: the boundary values of the coverage phase ran in pass 1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, app_spec, serving, wait_for

NEVER = ["CreateService", "UpdateService", "CreateGateway"]
NOT_ON_REAL_OBJECTS = [
    "CreateServiceAutoScaler",
    "UpdateServiceAutoScaler",
    "UpdateGateway",
    "DeleteService",
    "DeleteGateway",
    "RestartService",
]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("eas-contract") / "data")


def schemathesis(server: Server, tmp: Path, excluded: list[str], phases: str, config: str = "") -> str:
    # its CLI, from this interpreter (the package has no __main__)
    args = [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
    ]
    if config:
        cfg = tmp / "schemathesis.toml"
        cfg.write_text(config)
        args += ["--config-file", str(cfg)]
    args += [
        "run",
        f"{server.api}/api/v2/openapi.json",
        "-H",
        f"Authorization: Bearer {server.admin_token}",
        "--mode",
        "positive",
        "--phases",
        phases,
        "--max-examples",
        "4",
        "--seed",
        "20260301",
        "--checks",
        CHECKS,
        "--warnings",
        "off",
        "--request-timeout",
        "30",
    ]
    for op in excluded:
        args += ["--exclude-operation-id", op]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    return out


def test_openapi_document_is_generated_from_the_models(server: Server) -> None:
    doc = httpx.get(f"{server.api}/api/v2/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    assert {"CreateService", "StopService", "ListAclPolicy", "DescribeServiceEndpoints"} <= set(ops)
    assert "put" in doc["paths"]["/api/v2/services/{ClusterId}/{ServiceName}/stop"]
    schemas = doc["components"]["schemas"]
    assert {"AccessToken", "InternetEndpoint", "ServiceName", "Status"} <= set(
        schemas["Service"]["properties"]
    )
    assert set(schemas["ErrorBody"]["required"]) == {"Code", "Message", "RequestId"}
    # the service spec is openeas.spec's model, not a hand-written stand-in
    assert "metadata" in schemas["ServiceSpec"]["properties"]


def test_contract_no_500_and_every_response_matches(server: Server, tmp_path: Path) -> None:
    spec = app_spec(tmp_path, "contract_svc")
    spec["metadata"]["group"] = "contract_grp"
    with server.client() as admin:
        assert admin.post("/api/v2/services", json=spec).status_code == 201
        eas = {"x-acs-action": "CreateGateway"}  # the admin token on the EAS shape
        gw = admin.post("/api/v2/gateways", json={"EnableInternet": True}, headers=eas)
        assert gw.status_code == 200, gw.text
        gateway = gw.json()["GatewayId"]
        wait_for(
            lambda: admin.get("/api/v2/services/local/contract_svc").json()["status"] == "Running",
            60,
            "contract_svc running",
        )
    objects = f"""
[dictionaries.services]
values = ["contract_svc"]
[dictionaries.gateways]
values = [{json.dumps(gateway)}]
[dictionaries.groups]
values = ["contract_grp"]
[parameters]
"path.ClusterId" = "local"
"path.ServiceName" = {{ dictionary = "services", probability = 0.85 }}
"path.GatewayId" = {{ dictionary = "gateways", probability = 0.85 }}
"path.GroupName" = {{ dictionary = "groups", probability = 0.85 }}
"""
    real = schemathesis(server, tmp_path, NEVER + NOT_ON_REAL_OBJECTS, "coverage,fuzzing", objects)
    generated = schemathesis(server, tmp_path, NEVER, "fuzzing")  # names that mostly do not exist
    for out, least in ((real, 300), (generated, 60)):
        summary = out.split("SUMMARY")[-1]
        found = re.search(r"(\d+) generated, (\d+) passed", summary)
        assert found is not None and "failed" not in summary, summary
        assert int(found[1]) == int(found[2]) >= least, summary  # a real run, not an empty one
        print(summary)
    with server.client() as admin:  # the server is still whole after the fuzzing
        assert admin.get("/api/v2/health").json()["status"] == "ok"
