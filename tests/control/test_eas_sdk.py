"""The official `alibabacloud-eas20210701` SDK, unmodified (own venv), manages openeas.

Against a real `openeas server`, with AccessKeys made by `openeas keys create`: the SDK creates a
service from a JSON spec, waits for Running by DescribeService, reads endpoints and token,
scales, updates to a new version and rolls back, stops, starts and deletes it, and manages a
dedicated gateway and its ACL; between the steps the service answers through the gateway it is
on. A wrong secret, a stale date, a replayed nonce, a read-only key calling CreateService and a
revoked key are each refused with EAS's error shape, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.eas_sdk import SdkDriver, ensure_sdk_python
from tests.harness import Server, app_spec, serving, wait_for

REGION = "local"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("eas-sdk") / "data")


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_python()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, dict[str, Any]]:
    full = server.cli_json("keys", "create", "--description", "pipeline")
    read_only = server.cli_json("keys", "create", "--read-only")
    return {"full": full, "read_only": read_only}


def driver(
    server: Server, python: Path, key: dict[str, Any], secret: str | None = None, algo: str | None = None
) -> SdkDriver:
    return SdkDriver(python, server.api, key["id"], secret or key["secret"], REGION, algo)


@pytest.fixture(scope="module")
def sdk(server: Server, sdk_python: Path, keys: dict[str, dict[str, Any]]) -> Iterator[SdkDriver]:
    d = driver(server, sdk_python, keys["full"])
    yield d
    d.close()


def spec_json(tmp: Path, name: str, **extra: Any) -> str:
    spec = app_spec(tmp, name)
    spec.update(extra)
    return json.dumps(spec)


def describe(sdk: SdkDriver, name: str) -> dict[str, Any]:
    return sdk.ok("describe_service", REGION, name)


def wait_status(
    sdk: SdkDriver, name: str, status: str, running: int | None = None, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = describe(sdk, name)
        if body["Status"] == status and (running is None or body["RunningInstance"] == running):
            return body
        return None

    return wait_for(check, timeout, f"{name} {status} ({running} running)", every=0.3)


def answer(endpoint: str, token: str, path: str = "/health") -> httpx.Response:
    return httpx.get(endpoint + path, headers={"Authorization": token}, timeout=10)


def service_names(server: Server) -> list[str]:
    return [s["name"] for s in server.client().get("/api/v2/services").json()["services"]]


def test_sdk_manages_a_service_and_a_dedicated_gateway(
    sdk: SdkDriver, server: Server, tmp_path: Path
) -> None:
    name = "sdk_svc"
    created = sdk.ok("create_service", request=("CreateServiceRequest", {"body": spec_json(tmp_path, name)}))
    assert created["ServiceName"] == name and created["Region"] == REGION and created["RequestId"]
    assert created["InternetEndpoint"].endswith(f"/api/predict/{name}")

    body = wait_status(sdk, name, "Running", running=1)
    assert body["TotalInstance"] == 1 and json.loads(body["ServiceConfig"])["metadata"]["name"] == name
    assert body["CurrentVersion"] == body["LatestVersion"] == 1
    eps = sdk.ok("describe_service_endpoints", REGION, name)
    token = eps["AccessToken"]
    assert token == body["AccessToken"]
    (entry,) = eps["Endpoints"]
    assert entry["EndpointType"] == "DefaultGateway" and entry["BackendId"] == "shared"
    internet = entry["InternetEndpoints"][0]
    assert internet == body["InternetEndpoint"] and entry["IntranetEndpoints"] == [body["IntranetEndpoint"]]
    assert answer(internet, token).json() == {"ok": True}
    assert answer(internet, "wrong-token").status_code == 401

    # scale: UpdateService with metadata.instance, as on EAS
    sdk.ok(
        "update_service",
        REGION,
        name,
        request=("UpdateServiceRequest", {"body": json.dumps({"metadata": {"instance": 2}})}),
    )
    wait_status(sdk, name, "Running", running=2)
    instances = sdk.ok("list_service_instances", REGION, name, request=("ListServiceInstancesRequest", {}))
    assert instances["TotalCount"] == 2 and {i["Status"] for i in instances["Instances"]} == {"Running"}

    # a new version (an env var), then back to version 1
    v2 = {
        "containers": [
            {**app_spec(tmp_path, name)["containers"][0], "env": [{"name": "APP_VERSION", "value": "two"}]}
        ]
    }
    sdk.ok("update_service", REGION, name, request=("UpdateServiceRequest", {"body": json.dumps(v2)}))
    wait_for(
        lambda: answer(internet, token, "/env?name=APP_VERSION").json()["value"] == "two",
        60,
        "version 2 answers",
    )
    versions = sdk.ok("list_service_versions", REGION, name, request=("ListServiceVersionsRequest", {}))
    assert [v["ImageId"] for v in versions["Versions"]] == [2, 1] and versions["TotalCount"] == 2
    sdk.ok("update_service_version", REGION, name, request=("UpdateServiceVersionRequest", {"Version": 1}))
    wait_for(
        lambda: answer(internet, token, "/env?name=APP_VERSION").json()["value"] is None,
        60,
        "back on version 1",
    )
    body = wait_status(sdk, name, "Running", running=2)
    # the rollback is recorded as version 3, with version 1's spec
    assert body["CurrentVersion"] == body["LatestVersion"] == 3
    versions = sdk.ok("list_service_versions", REGION, name, request=("ListServiceVersionsRequest", {}))
    by_id = {v["ImageId"]: json.loads(v["ServiceConfig"]) for v in versions["Versions"]}
    for spec in by_id.values():
        spec["metadata"].pop("instance")  # a version is what runs, not how many
    assert by_id[3] == by_id[1] != by_id[2]

    # a dedicated gateway with the Internet on; the service moves onto it
    gw = sdk.ok(
        "create_gateway",
        request=("CreateGatewayRequest", {"Name": "prod", "EnableInternet": True, "Replicas": 1}),
    )
    gw_id = gw["GatewayId"]
    assert gw_id.startswith("gw-") and gw["ClusterId"] == REGION
    desc = wait_for(
        lambda: (d := sdk.ok("describe_gateway", REGION, gw_id))["Status"] == "Running" and d,
        30,
        "gateway running",
    )
    assert desc["InternetEnabled"] is True and desc["InternetDomain"] and desc["IntranetDomain"]
    listed = sdk.ok("list_gateway", request=("ListGatewayRequest", {}))
    assert [g["GatewayId"] for g in listed["Gateways"]] == [gw_id]
    sdk.ok(
        "update_service",
        REGION,
        name,
        request=("UpdateServiceRequest", {"body": json.dumps({"networking": {"gateway": gw_id}})}),
    )
    moved = wait_for(
        lambda: (d := describe(sdk, name))["Gateway"] == gw_id and d, 30, "service on the gateway"
    )
    dedicated = moved["InternetEndpoint"]
    assert desc["InternetDomain"] in dedicated
    wait_for(lambda: answer(dedicated, token).status_code == 200, 30, "answers through the dedicated gateway")

    # its ACL: replace "anyone" by a foreign block -> loopback callers are refused; then allow loopback
    acl = sdk.ok("list_acl_policy", REGION, gw_id, request=("ListAclPolicyRequest", {}))
    assert [e["Entry"] for e in acl["InternetAclPolicyList"][0]["AclPolicyList"]] == ["0.0.0.0/0"]
    office = [{"Entry": "10.20.0.0/16", "Comment": "office"}]
    sdk.ok("create_acl_policy", REGION, gw_id, request=("CreateAclPolicyRequest", {"AclPolicyList": office}))
    sdk.ok(
        "delete_acl_policy",
        REGION,
        gw_id,
        request=("DeleteAclPolicyRequest", {"AclPolicyList": [{"Entry": "0.0.0.0/0"}]}),
    )
    acl = sdk.ok("list_acl_policy", REGION, gw_id, request=("ListAclPolicyRequest", {}))
    assert acl["InternetAclPolicyList"][0]["AclPolicyList"] == office
    wait_for(lambda: answer(dedicated, token).status_code == 403, 10, "loopback refused by the ACL")
    loopback = [{"Entry": "127.0.0.1/32", "Comment": "this host"}]
    sdk.ok(
        "create_acl_policy", REGION, gw_id, request=("CreateAclPolicyRequest", {"AclPolicyList": loopback})
    )
    wait_for(lambda: answer(dedicated, token).status_code == 200, 10, "loopback allowed again")

    sdk.ok(
        "update_gateway",
        gw_id,
        REGION,  # the SDK takes (gateway_id, cluster_id) here
        request=("UpdateGatewayRequest", {"Replicas": 2}),
    )
    wait_for(
        lambda: (
            (d := sdk.ok("describe_gateway", REGION, gw_id))["Replicas"] == 2 and d["Status"] == "Running"
        ),
        30,
        "2 replicas",
    )
    wait_for(lambda: answer(dedicated, token).status_code == 200, 30, "answers after the gateway restart")

    # stop, start
    sdk.ok("stop_service", REGION, name)
    wait_status(sdk, name, "Stopped")
    wait_for(lambda: answer(dedicated, token).status_code == 503, 30, "a stopped service answers 503")
    sdk.ok("start_service", REGION, name)
    wait_status(sdk, name, "Running", running=2)
    wait_for(lambda: answer(dedicated, token).status_code == 200, 30, "answers again")

    # the gateway cannot go while the service uses it (EAS's 4xx with Code/Message/RequestId)
    busy = sdk.call("delete_gateway", REGION, gw_id)
    assert (busy["ok"], busy["status"], busy["code"]) == (False, 409, "GatewayInUse")
    assert busy["data"]["RequestId"] and name in busy["data"]["Message"]
    sdk.ok("delete_service", REGION, name)
    gone = sdk.call("describe_service", REGION, name)
    assert (gone["status"], gone["code"]) == (404, "ServiceNotFound")
    sdk.ok("delete_gateway", REGION, gw_id)
    assert sdk.ok("list_gateway", request=("ListGatewayRequest", {}))["TotalCount"] == 0


def test_sdk_other_operations(sdk: SdkDriver, server: Server, tmp_path: Path) -> None:
    names = ["ops_a", "ops_b", "ops_c"]
    for i, name in enumerate(names):
        extra: dict[str, Any] = {"labels": {"team": "x" if i < 2 else "y"}}
        spec = json.loads(spec_json(tmp_path, name, **extra))
        spec["metadata"]["group"] = "opsgroup"
        sdk.ok("create_service", request=("CreateServiceRequest", {"body": json.dumps(spec)}))
    for name in names:
        wait_status(sdk, name, "Running", running=1)

    page = sdk.ok(
        "list_services",
        request=(
            "ListServicesRequest",
            {"Filter": "ops_", "PageSize": 2, "PageNumber": 2, "Sort": "ServiceName"},
        ),
    )
    assert page["TotalCount"] == 3 and [s["ServiceName"] for s in page["Services"]] == ["ops_c"]
    labelled = sdk.ok("list_services", request=("ListServicesRequest", {"Label": {"team": "x"}}))
    assert sorted(s["ServiceName"] for s in labelled["Services"]) == ["ops_a", "ops_b"]
    desc = sdk.ok(
        "list_services",
        request=("ListServicesRequest", {"GroupName": "opsgroup", "Order": "desc", "Sort": "ServiceName"}),
    )
    assert [s["ServiceName"] for s in desc["Services"]] == ["ops_c", "ops_b", "ops_a"]

    groups = sdk.ok("list_groups", request=("ListGroupsRequest", {"Filter": "opsgroup"}))
    assert [g["Name"] for g in groups["Groups"]] == ["opsgroup"]
    group = sdk.ok("describe_group", REGION, "opsgroup")
    assert group["AccessToken"] and group["InternetEndpoint"].endswith("/api/predict/opsgroup")
    assert answer(group["InternetEndpoint"], group["AccessToken"]).json() == {"ok": True}

    logs = sdk.ok(
        "describe_service_log",
        REGION,
        "ops_a",
        request=("DescribeServiceLogRequest", {"Keyword": "listening"}),
    )
    assert logs["TotalCount"] >= 1 and all("listening" in line for line in logs["Logs"])

    scaler = {"min": 1, "max": 3, "scaleStrategies": [{"metricName": "qps", "threshold": 50}]}
    sdk.ok("create_service_auto_scaler", REGION, "ops_a", request=("CreateServiceAutoScalerRequest", scaler))
    got = sdk.ok("describe_service_auto_scaler", REGION, "ops_a")
    assert (got["MinReplica"], got["MaxReplica"]) == (1, 3)
    assert got["ScaleStrategies"][0]["metricName"] == "qps" and got["ScaleStrategies"][0]["threshold"] == 50
    sdk.ok("delete_service_auto_scaler", REGION, "ops_a")
    assert sdk.ok("describe_service_auto_scaler", REGION, "ops_a").get("MaxReplica") is None

    sdk.ok(
        "create_service_mirror",
        REGION,
        "ops_a",
        request=("CreateServiceMirrorRequest", {"Ratio": 50, "Target": ["ops_b"]}),
    )
    mirror = sdk.ok("describe_service_mirror", REGION, "ops_a")
    assert (mirror["Ratio"], mirror["Target"]) == ("50", "ops_b")

    # UpdateType=replace is refused; merge (the default) adds to what is there
    whole = {"body": spec_json(tmp_path, "ops_b"), "UpdateType": "replace"}
    refused = sdk.call("update_service", REGION, "ops_b", request=("UpdateServiceRequest", whole))
    assert (refused["status"], refused["code"]) == (400, "UnsupportedOperation")
    more = {"body": json.dumps({"labels": {"env": "prod"}})}
    sdk.ok("update_service", REGION, "ops_b", request=("UpdateServiceRequest", more))
    labels = {lb["LabelKey"]: lb["LabelValue"] for lb in describe(sdk, "ops_b")["Labels"]}
    assert labels == {"team": "x", "env": "prod"}
    bad = sdk.call("update_service", REGION, "ops_b", request=("UpdateServiceRequest", {"body": "[1]"}))
    assert (bad["status"], bad["code"]) == (400, "InvalidParameter")

    before = {
        i["InstanceName"]
        for i in sdk.ok(
            "list_service_instances", REGION, "ops_c", request=("ListServiceInstancesRequest", {})
        )["Instances"]
    }
    sdk.ok("restart_service", REGION, "ops_c")

    def restarted() -> bool:
        rows = sdk.ok("list_service_instances", REGION, "ops_c", request=("ListServiceInstancesRequest", {}))[
            "Instances"
        ]
        return (
            bool(rows)
            and not {r["InstanceName"] for r in rows} & before
            and all(r["Status"] == "Running" for r in rows)
        )

    wait_for(restarted, 60, "ops_c restarted with new instances", every=0.3)
    for name in names:
        sdk.ok("delete_service", REGION, name)


def test_roa_hmac_sha1_signing(server: Server, sdk_python: Path, keys: dict[str, dict[str, Any]]) -> None:
    """The SDK's older ROA form (`signature_algorithm="v2"`: `acs <id>:<HMAC-SHA1>`) is verified too."""
    roa = driver(server, sdk_python, keys["full"], algo="v2")
    try:
        assert roa.ok("list_services", request=("ListServicesRequest", {"PageSize": 5}))["PageSize"] == 5
        wrong = driver(server, sdk_python, keys["full"], secret="x" * 30, algo="v2")
        try:
            refused = wrong.call("list_services", request=("ListServicesRequest", {}))
        finally:
            wrong.close()
        assert (refused["status"], refused["code"]) == (400, "SignatureDoesNotMatch")
    finally:
        roa.close()


def test_refusals_write_nothing(
    server: Server, sdk_python: Path, keys: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    spec = spec_json(tmp_path, "refused_svc")
    create = ("CreateServiceRequest", {"body": spec})

    def refused(answer: dict[str, Any], status: int, code: str) -> None:
        assert (answer["ok"], answer["status"], answer["code"]) == (False, status, code), answer
        assert {"Code", "Message", "RequestId"} <= set(answer["data"]) and answer["data"]["RequestId"]
        assert "refused_svc" not in service_names(server)

    wrong = driver(server, sdk_python, keys["full"], secret="W" * 30)
    try:
        refused(wrong.call("create_service", request=create), 400, "SignatureDoesNotMatch")
    finally:
        wrong.close()

    ro = driver(server, sdk_python, keys["read_only"])
    try:
        assert ro.ok("list_services", request=("ListServicesRequest", {}))["RequestId"]
        refused(ro.call("create_service", request=create), 403, "NoPermission")
    finally:
        ro.close()

    raw = driver(server, sdk_python, keys["full"])
    try:
        stale = (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.loads(spec)
        (old,) = raw.raw(
            method="POST",
            path="/api/v2/services",
            body=body,
            date=stale,
            nonce="n-stale-1",
            action="CreateService",
        )
        assert old["status"] == 400 and old["body"]["Code"] == "InvalidTimeStamp.Expired"
        assert "refused_svc" not in service_names(server)

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        first, replay = raw.raw(
            method="POST",
            path="/api/v2/services",
            body=body,
            date=now,
            nonce="n-once-1",
            action="CreateService",
            repeat=2,
        )
        assert first["status"] == 200 and first["body"]["ServiceName"] == "refused_svc"
        # refused as a replay, before the operation runs (not ServiceAlreadyExists)
        assert replay["status"] == 400 and replay["body"]["Code"] == "SignatureNonceUsed"
        assert set(replay["body"]) == {"Code", "Message", "RequestId"}
        raw.ok("delete_service", REGION, "refused_svc")
        nonce = "n-delete-1"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        (listed,) = raw.raw(method="GET", path="/api/v2/services", date=now, nonce=nonce)
        assert listed["status"] == 200
    finally:
        raw.close()

    # EAS's shape without a credential: 401 in EAS's error body; the same path with the admin
    # token and without x-acs-action stays openeas's own shape
    anon = httpx.get(f"{server.api}/api/v2/services", headers={"x-acs-action": "ListServices"}, timeout=10)
    assert anon.status_code == 401 and set(anon.json()) == {"Code", "Message", "RequestId"}
    assert anon.headers["x-acs-request-id"] == anon.json()["RequestId"]
    with server.client() as admin:
        assert "services" in admin.get("/api/v2/services").json()
        eas = admin.get("/api/v2/services", headers={"x-acs-action": "ListServices"}).json()
        assert {"Services", "TotalCount", "PageNumber", "PageSize", "RequestId"} <= set(eas)

    server.cli("keys", "revoke", keys["read_only"]["id"])
    revoked = driver(server, sdk_python, keys["read_only"])
    try:
        answer_ = revoked.call("list_services", request=("ListServicesRequest", {}))
        assert (answer_["status"], answer_["code"]) == (404, "InvalidAccessKeyId.NotFound")
    finally:
        revoked.close()

    log = server.log()
    for key in keys.values():
        assert key["secret"] not in log
    assert "Signature=" not in log and "acs OEAK" not in log


def test_docs_example_runs(
    server: Server, sdk_python: Path, keys: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The Python example of docs/management-api.md, as printed there, with this server's key."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "management-api.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    key = keys["full"]
    for printed, real in (
        ('"OEAK..."', repr(key["id"])),
        ('access_key_secret="..."', f"access_key_secret={key['secret']!r}"),
        ('"127.0.0.1:8080"', repr(server.api.removeprefix("http://"))),
    ):
        assert printed in code
        code = code.replace(printed, real)
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([str(sdk_python), str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    endpoint, token = out.stdout.split()
    assert endpoint.endswith("/api/predict/demo") and len(token) >= 16
    assert "demo" not in service_names(server)  # the example deletes what it made
