"""The control API cannot be driven cross-site from a browser (issue 17, item 6).

A page on another origin can make a browser send "simple" requests (a form post, an image GET)
with whatever ambient credentials the browser holds, but not an `Authorization` header without the
server's CORS consent. So the API takes its admin token from the `Authorization: Bearer` header only
(no cookie, no query parameter) and grants no CORS. This test drives a real `openeas server`:
form-encoded and text/plain posts from a foreign Origin, the token in a cookie or the query string,
and a CORS preflight; every one is refused and nothing is created.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, serving

EVIL = {"Origin": "http://evil.example", "Referer": "http://evil.example/page"}
SVC = "/api/v2/services"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("cross-site") / "data")


def test_no_ambient_credentials_and_no_cors(server: Server) -> None:
    token = server.admin_token
    body = '{"name": "xsite", "processor": "pmml", "metadata": {"instance": 1}}'
    attempts = [
        # a form post and a text/plain post: what a foreign page can send without a preflight
        httpx.post(server.api + SVC, content=body, headers={**EVIL, "Content-Type": "text/plain"}),
        httpx.post(server.api + SVC, data={"name": "xsite"}, headers=EVIL),
        # the token where a browser would add it by itself: a cookie; or in the URL
        httpx.post(server.api + SVC, content=body, headers={**EVIL, "Cookie": f"token={token}"}),
        httpx.post(server.api + SVC + f"?token={token}", content=body, headers=EVIL),
        httpx.delete(
            server.api + SVC + "/local/anything", headers={**EVIL, "Cookie": f"admin_token={token}"}
        ),
    ]
    for resp in attempts:
        assert resp.status_code == 401, (resp.request.method, resp.request.url, resp.status_code, resp.text)
        assert "access-control-allow-origin" not in resp.headers
    preflight = httpx.options(
        server.api + SVC,
        headers={
            **EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers, preflight.headers
    assert "access-control-allow-headers" not in preflight.headers
    with server.client() as api:
        names = [s["name"] for s in api.get(SVC).json()["services"]]
    assert "xsite" not in names
