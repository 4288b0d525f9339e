"""The server's signature checks against signatures made by the SDK's own signing code.

`alibabacloud_tea_openapi` (in `.venv-alisdk`) signs a set of requests (queries with spaces,
unicode, `~*'()`, blank values; percent-encoded paths; JSON bodies) in both of its forms; the
test rebuilds each request as the server receives it (the query goes through the URL encoding
darabonba sends) and checks that `control/eas_api/signing.py` accepts it with the right secret
and refuses it with a wrong secret or one changed byte.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from openeas.control.eas_api.signing import (
    Authorization,
    ReceivedRequest,
    SignatureError,
    check_fresh,
    check_signature,
    parse_authorization,
)
from tests.control.eas_sdk import ensure_sdk_python

SIGNER = r"""
import hashlib, json, sys
from alibabacloud_tea_openapi.utils import Utils
from darabonba.request import DaraRequest
out = []
for case in json.load(sys.stdin):
    r = DaraRequest()
    r.method, r.pathname, r.query = case["method"], case["path"], case["query"]
    r.headers = dict(case["headers"])
    if case["algo"] == "acs3":
        payload = hashlib.sha256(case["body"].encode()).hexdigest()
        r.headers["x-acs-content-sha256"] = payload
        r.headers["Authorization"] = Utils.get_authorization(
            r, "ACS3-HMAC-SHA256", payload, case["id"], case["secret"])
    else:
        sts = Utils.get_string_to_sign(r)
        r.headers["authorization"] = "acs %s:%s" % (case["id"], Utils.get_roasignature(sts, case["secret"]))
    out.append(r.headers)
print(json.dumps(out))
"""

KEY_ID, SECRET = "OEAKTESTKEY0000000000001", "s3cr3t-Value-With-30-chars-xx"
NOW = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


def acs3_headers(body: str) -> dict[str, str]:
    return {
        "host": "127.0.0.1:9100",
        "x-acs-version": "2021-07-01",
        "x-acs-action": "ListServices",
        "user-agent": "AlibabaCloud (Linux) Python/3.11 Core/1.0 TeaDSL/2",
        "x-acs-date": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": "5c5b6a4f0a7e4b44a9d1f3b2d8e0c111",
        "accept": "application/json",
        **({"content-type": "application/json; charset=utf-8"} if body else {}),
    }


def roa_headers(body: str) -> dict[str, str]:
    return {
        "date": NOW.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "host": "127.0.0.1:9100",
        "accept": "application/json",
        "x-acs-signature-nonce": "0f0e0d0c0b0a09080706050403020100",
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-version": "1.0",
        "x-acs-version": "2021-07-01",
        "x-acs-action": "DescribeService",
        "user-agent": "AlibabaCloud (Linux) Python/3.11 Core/1.0 TeaDSL/2",
        **({"content-type": "application/json; charset=utf-8"} if body else {}),
    }


SPEC = json.dumps({"metadata": {"name": "svc", "instance": 1}, "note": "ünïcode ✓"}, ensure_ascii=False)
CASES: list[dict[str, Any]] = [
    {
        "algo": "acs3",
        "method": "GET",
        "path": "/api/v2/services",
        "body": "",
        "query": {"Filter": "a b~*'()&=", "PageNumber": "2", "Label": '{"k": "v é"}', "Blank": ""},
    },
    {
        "algo": "acs3",
        "method": "POST",
        "path": "/api/v2/services",
        "body": SPEC,
        "query": {"Develop": "false"},
    },
    {
        "algo": "acs3",
        "method": "PUT",
        "path": "/api/v2/services/local/my%20svc/stop",
        "body": "",
        "query": {},
    },
    {
        "algo": "roa",
        "method": "GET",
        "path": "/api/v2/services",
        "body": "",
        "query": {"Filter": "a b", "PageSize": "10", "Blank": ""},
    },
    {"algo": "roa", "method": "PUT", "path": "/api/v2/services/local/svc/stop", "body": SPEC, "query": {}},
]


@pytest.fixture(scope="module")
def signed() -> list[tuple[dict[str, Any], dict[str, str]]]:
    cases = []
    for case in CASES:
        headers = acs3_headers(case["body"]) if case["algo"] == "acs3" else roa_headers(case["body"])
        cases.append({**case, "headers": headers, "id": KEY_ID, "secret": SECRET})
    python: Path = ensure_sdk_python()
    out = subprocess.run(
        [str(python), "-c", SIGNER], input=json.dumps(cases), capture_output=True, text=True, check=True
    )
    return list(zip(cases, json.loads(out.stdout), strict=True))


def received(case: dict[str, Any], headers: dict[str, str], **change: Any) -> ReceivedRequest:
    # the query as darabonba sends it (urlencode) and the server parses it back
    query = parse_qsl(urlencode(case["query"]), keep_blank_values=True)
    req = ReceivedRequest(
        method=case["method"],
        raw_path=case["path"],
        query=query,
        headers=[(k.lower(), v) for k, v in headers.items()],
        body=case["body"].encode(),
    )
    return dataclasses.replace(req, **change)


def auth_of(headers: dict[str, str]) -> Authorization:
    return parse_authorization(headers.get("Authorization") or headers["authorization"])


def test_sdk_signatures_verify(signed: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
    for case, headers in signed:
        auth = auth_of(headers)
        assert auth.key_id == KEY_ID
        req = received(case, headers)
        check_signature(auth, req, SECRET)  # raises when the canonical forms differ
        assert check_fresh(auth, req, NOW + timedelta(minutes=14)) == headers["x-acs-signature-nonce"]


def test_wrong_secret_and_tampering_refused(signed: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
    for case, headers in signed:
        auth = auth_of(headers)
        req = received(case, headers)
        with pytest.raises(SignatureError) as wrong:
            check_signature(auth, req, SECRET[:-1] + "y")
        assert (wrong.value.status, wrong.value.code) == (400, "SignatureDoesNotMatch")
        assert SECRET not in wrong.value.message and auth.signature not in wrong.value.message
        other_query = [(k, v + "x") for k, v in req.query] or [("extra", "1")]
        with pytest.raises(SignatureError):
            check_signature(auth, received(case, headers, query=other_query), SECRET)
        with pytest.raises(SignatureError):
            check_signature(auth, received(case, headers, raw_path=case["path"] + "x"), SECRET)
        if case["algo"] == "acs3":  # ACS3 covers the body; ROA (no Content-MD5 sent) does not
            with pytest.raises(SignatureError) as body:
                check_signature(auth, received(case, headers, body=case["body"].encode() + b" "), SECRET)
            assert body.value.code == "ContentSHA256NotMatch"


def test_stale_or_future_dates_refused(signed: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
    for case, headers in signed:
        auth, req = auth_of(headers), received(case, headers)
        for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
            with pytest.raises(SignatureError) as stale:
                check_fresh(auth, req, NOW + skew)
            assert (stale.value.status, stale.value.code) == (400, "InvalidTimeStamp.Expired")


def test_acs3_must_sign_date_nonce_host_and_body(signed: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
    case, headers = signed[0]
    auth = auth_of(headers)
    for dropped in ("x-acs-signature-nonce", "x-acs-date", "host", "x-acs-content-sha256"):
        weaker = Authorization(
            auth.algorithm, auth.key_id, auth.signature, tuple(h for h in auth.signed_headers if h != dropped)
        )
        with pytest.raises(SignatureError) as exc:
            check_signature(weaker, received(case, headers), SECRET)
        assert exc.value.code == "IncompleteSignature" and dropped in exc.value.message


@pytest.mark.parametrize(
    "header",
    ["ACS3-HMAC-SHA256 Credential=K,Signature=ab", "acs nocolon", "HMAC abc", "ACS3-HMAC-SHA256"],
)
def test_malformed_authorization(header: str) -> None:
    with pytest.raises(SignatureError) as exc:
        parse_authorization(header)
    assert exc.value.status == 400
