"""Drives the official, unmodified `alibabacloud-eas20210701` SDK for the tests (run with the
python of `.venv-alisdk`, where the SDK lives; this file imports nothing of openeas).

    python eas_sdk_driver.py ENDPOINT KEY_ID KEY_SECRET REGION [v2]

Reads one JSON command per line on stdin and writes one JSON answer per line on stdout:

    {"call": "create_service", "args": ["..."], "request": ["CreateServiceRequest", {...}]}
      -> {"ok": true, "status": 200, "body": {...}}          (the response model's to_map())
      -> {"ok": false, "status": 400, "code": "...", "message": "...", "data": {...}}
    {"raw": {"method": "GET", "path": "/api/v2/services", "date": "...", "nonce": "...",
             "repeat": 2, "secret": "..."}}
      -> {"answers": [{"status": ..., "body": ...}, ...]}

`raw` signs one request with the SDK's own signing functions (`Utils.get_authorization` of
alibabacloud_tea_openapi) with a chosen x-acs-date and nonce, and sends it `repeat` times: the
stale-date and replayed-nonce checks use it. The last argument `v2` makes the client sign with
the older ROA HMAC-SHA1 form instead of the default ACS3-HMAC-SHA256.
"""

import hashlib
import json
import sys

import requests
from alibabacloud_eas20210701 import models as eas_models
from alibabacloud_eas20210701.client import Client
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.exceptions import ResponseException
from darabonba.request import DaraRequest


def make_client(endpoint: str, key_id: str, secret: str, region: str, algorithm: str | None) -> Client:
    config = Config(
        access_key_id=key_id,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol="http",
        region_id=region,
        read_timeout=60000,
        connect_timeout=5000,
    )
    if algorithm:
        config.signature_algorithm = algorithm
    return Client(config)


def run_call(client: Client, cmd: dict) -> dict:
    args = list(cmd.get("args", []))
    if "request" in cmd:
        cls_name, data = cmd["request"]
        args.append(getattr(eas_models, cls_name)().from_map(data))
    try:
        resp = getattr(client, cmd["call"])(*args)
    except ResponseException as exc:
        return {
            "ok": False,
            "status": exc.status_code,
            "code": exc.code,
            "message": exc.message,
            "data": getattr(exc, "data", None),
        }
    return {"ok": True, "status": resp.status_code, "body": resp.body.to_map() if resp.body else None}


def run_raw(endpoint: str, key_id: str, default_secret: str, cmd: dict) -> dict:
    """One request signed by the SDK's signer with a chosen date and nonce, sent `repeat` times."""
    raw = cmd["raw"]
    req = DaraRequest()
    req.method = raw["method"]
    req.pathname = raw["path"]
    req.query = raw.get("query", {})
    body = raw.get("body")
    payload = (json.dumps(body) if body is not None else "").encode()
    req.headers = {
        "host": endpoint,
        "x-acs-version": "2021-07-01",
        "x-acs-action": raw.get("action", "ListServices"),
        "user-agent": "openeas-test",
        "x-acs-date": raw["date"],
        "x-acs-signature-nonce": raw["nonce"],
        "accept": "application/json",
        "x-acs-content-sha256": hashlib.sha256(payload).hexdigest(),
    }
    if body is not None:
        req.headers["content-type"] = "application/json; charset=utf-8"
    secret = raw.get("secret", default_secret)
    req.headers["Authorization"] = Utils.get_authorization(
        req, "ACS3-HMAC-SHA256", req.headers["x-acs-content-sha256"], key_id, secret
    )
    answers = []
    for _ in range(int(raw.get("repeat", 1))):
        resp = requests.request(
            req.method,
            f"http://{endpoint}{req.pathname}",
            params=req.query,
            headers=req.headers,
            data=payload or None,
            timeout=30,
        )
        try:
            parsed = resp.json()
        except ValueError:
            parsed = resp.text
        answers.append({"status": resp.status_code, "body": parsed})
    return {"answers": answers}


def main() -> None:
    endpoint, key_id, secret, region = sys.argv[1:5]
    algorithm = sys.argv[5] if len(sys.argv) > 5 else None
    client = make_client(endpoint, key_id, secret, region, algorithm)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        answer = run_raw(endpoint, key_id, secret, cmd) if "raw" in cmd else run_call(client, cmd)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
