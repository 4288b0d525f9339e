"""The console renders hostile text as text (issue 17, item 6): no script from a spec or a log line runs.

A service whose spec carries HTML with script in a label, and whose instance writes such a line
to its log, is shown in the console (Chromium): the spec tab and the logs tab show the markup as
literal text, and none of the payloads' scripts ran (`window.__xss` stays unset). The console puts
text in through `textContent` only (static/dom.js) and is served with a strict CSP
(test_console_api.py); this test shows the result in a real browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.console.conftest import running
from tests.console.test_console_browser import browser, log_in, page  # noqa: F401  (fixtures)
from tests.harness import Server, app_spec

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_spec_and_log_markup_is_shown_as_text(page: Any, server: Server, tmp_path: Path) -> None:  # noqa: F811
    name = "xss_probe"
    spec = app_spec(tmp_path, name)
    spec["labels"] = {"note": PAYLOAD}
    # the instance prints the payload to its log before serving
    container = spec["containers"][0]
    container["command"] = (
        f"sh -c 'echo \"{PAYLOAD.replace(chr(34), chr(92) + chr(34))}\"; exec {container['command']}'"
    )
    with server.client() as api:
        resp = api.post("/api/v2/services", json=spec)
        assert resp.status_code == 201, resp.text
    running(server, name)
    try:
        log_in(page, server)
        page.goto(f"{server.api}/console/#/services/{name}/spec")
        page.get_by_text(
            "onerror=", exact=False
        ).first.wait_for()  # (no wait_for_function: the CSP forbids eval)
        page.goto(f"{server.api}/console/#/services/{name}/logs")
        page.get_by_text("<script>window.__xss=2</script>", exact=False).first.wait_for()
        assert page.evaluate("window.__xss === undefined")
        assert page.locator("img[src=x]").count() == 0
    finally:
        with server.client() as api:
            api.delete(f"/api/v2/services/local/{name}")
