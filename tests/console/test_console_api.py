"""The console's server side on a real `openeas server`: the static pages and their headers, and
the online-debug route through the real gateway to the demo service."""

from __future__ import annotations

import json

import httpx

from tests.console.conftest import DEMO, demo_spec_text, running
from tests.harness import Server, wait_for

DEBUG = f"/api/v2/services/local/{DEMO}/debug"


def test_console_pages_are_served_with_a_strict_policy(server: Server) -> None:
    resp = httpx.get(server.api + "/")
    assert resp.status_code == 307 and resp.headers["location"].endswith("/console/")
    resp = httpx.get(server.api + "/console")
    assert resp.status_code == 307 and resp.headers["location"].endswith("/console/")
    resp = httpx.get(server.api + "/", follow_redirects=True)
    assert resp.status_code == 200 and resp.url.path == "/console/"
    assert "text/html" in resp.headers["content-type"] and "openeas console" in resp.text
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert server.admin_token not in resp.text
    for name, ctype in (
        ("app.js", "javascript"),
        ("api.js", "javascript"),
        ("dom.js", "javascript"),
        ("examples.js", "javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        resp = httpx.get(f"{server.api}/console/{name}")
        assert resp.status_code == 200 and ctype in resp.headers["content-type"], name
        assert "content-security-policy" in resp.headers
    assert httpx.get(server.api + "/console/nothing.js").status_code == 404
    # Nothing outside the static folder.
    assert httpx.get(server.api + "/console/../control/server.py").status_code == 404
    assert httpx.get(server.api + "/console/%2e%2e/routes.py").status_code == 404


def test_online_debug_goes_through_the_gateway(server: Server) -> None:
    with server.client() as api:
        resp = api.post("/api/v2/services", content=demo_spec_text())
        assert resp.status_code == 201, resp.text
        view = running(server, DEMO)
        internet, vpc = view["endpoints"]["internet"], view["endpoints"]["vpc"]

        chat = {"model": "demo", "messages": [{"role": "user", "content": "hi there"}]}
        resp = api.post(
            DEBUG,
            json={"method": "POST", "path": "/v1/chat/completions", "body": json.dumps(chat)},
        )
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["status"] == 200 and out["url"] == internet + "/v1/chat/completions"
        assert json.loads(out["body"])["choices"][0]["message"]["content"] == "You said: hi there"
        names = {k.lower() for k, _ in out["headers"]}
        assert "content-type" in names

        # POST / echoes (what the eas-prediction SDK calls), through the VPC endpoint this time.
        out = api.post(DEBUG, json={"path": "/", "body": "ping", "endpoint": "vpc"}).json()
        assert out["status"] == 200 and out["body"] == "ping" and out["url"] == vpc + "/"
        out = api.post(DEBUG, json={"method": "GET", "path": "/v1/models"}).json()
        assert out["status"] == 200 and json.loads(out["body"])["data"][0]["id"] == "demo"

        # What the service or the gateway answers is reported, not raised.
        out = api.post(DEBUG, json={"method": "GET", "path": "/nope"}).json()
        assert out["status"] == 404 and "no route GET /nope" in out["body"]
        out = api.post(DEBUG, json={"method": "GET", "path": "/health", "headers": {"Authorization": "x"}})
        assert out.json()["status"] == 401  # the gateway refuses a wrong token

        # Bad requests and unknown services.
        resp = api.post(DEBUG, json={"path": "no-slash"})
        assert resp.status_code == 400 and resp.json()["code"] == "InvalidRequest"
        resp = api.post(DEBUG, content=b"{not json")
        assert resp.status_code == 400 and resp.json()["code"] == "InvalidJSON"
        resp = api.post("/api/v2/services/local/no_such_service/debug", json={})
        assert resp.status_code == 404 and resp.json()["code"] == "ServiceNotFound"
        resp = api.post(f"/api/v2/services/elsewhere/{DEMO}/debug", json={})
        assert resp.status_code == 404 and resp.json()["code"] == "RegionNotFound"

        # A stopped service: the gateway's 503 comes back as the answer.
        assert api.post(f"/api/v2/services/local/{DEMO}/stop").status_code == 200

        def stopped() -> bool:
            out = api.post(DEBUG, json={"method": "GET", "path": "/health"}).json()
            return bool(out["status"] == 503)

        wait_for(stopped, 15, "503 from a stopped service")
        assert api.delete(f"/api/v2/services/local/{DEMO}").status_code == 200

    # The debug route needs the admin token like the rest of the API.
    with server.client(token="") as anonymous:
        resp = anonymous.post(DEBUG, json={})
        assert resp.status_code == 401 and resp.json()["code"] == "Unauthorized"
