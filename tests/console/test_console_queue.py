"""The console's Queue tab and endpoint panel for an Async service, in a real browser against a
real `openeas server`: requests put through the gateway show as queue numbers (input, in flight,
dead letters, sink), a dead letter is listed and retried from the page (it goes back into the
input queue and, failing again, dies again), and "View Endpoint Information" shows the sink
endpoints and a QueueClient example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.console.conftest import running
from tests.console.test_console_browser import (  # noqa: F401 (browser, page: fixtures)
    browser,
    log_in,
    page,
    run_python,
)
from tests.harness import Server, app_spec
from tests.queue.test_async_server import async_spec


def test_queue_tab_and_sink_endpoint(
    page: Any,  # noqa: F811 (the fixture imported above)
    server: Server,
    tmp_path: Path,
    eas_python: Path,
) -> None:
    name = "queue_ui"
    spec = async_spec(name, tmp_path / "jobs.log", delay=0.1, queue={"max_delivery": 1})
    with server.client() as api:
        assert api.post("/api/v2/services", json=spec).status_code == 201
        view = running(server, name)
        server.wait_for(
            lambda: api.get(f"/api/v2/services/local/{name}/queue").status_code == 200,
            timeout=30,
            what="the queue server",
        )
    endpoint, token = view["endpoints"]["internet"], view["token"]
    with httpx.Client(headers={"Authorization": token}, timeout=30) as gw:
        for i in range(3):
            assert gw.post(endpoint, content=f"req-{i}".encode()).status_code == 200
        bad = gw.post(endpoint, content=b"fail <b>on purpose</b>")
        assert bad.status_code == 200
        rid = bad.headers["X-Eas-Queueservice-Request-Id"]

    log_in(page, server)
    page.goto(f"{server.api}/console/#/services/{name}/queue")
    # 3 answers reach the sink; the failing one is a dead letter (max_delivery 1); nothing waits
    page.wait_for_selector("#queue-sink-length[data-value='3']")
    page.wait_for_selector("#queue-dead[data-value='1']")
    page.wait_for_selector("#queue-input-length[data-value='0']")
    page.wait_for_selector("#queue-in-flight[data-value='0']")
    row = page.locator("#dead-body tr[data-index]")
    assert row.count() == 1
    text = row.inner_text()
    assert rid in text and "fail <b>on purpose</b>" in text  # shown as text, not markup
    assert page.locator("#dead-body b").count() == 0
    # Retry from the page: back into the input queue, delivered again (and dead again)
    with server.client() as api:
        before = api.get(f"/api/v2/services/local/{name}/queue").json()["counters"]
    row.locator("button[data-retry]").click()
    page.wait_for_selector("text=Retried 1 dead letter.")

    def retried() -> bool:
        with server.client() as api:
            c = api.get(f"/api/v2/services/local/{name}/queue").json()["counters"]
        return bool(c["delivered"] == before["delivered"] + 1 and c["dead"] == before["dead"] + 1)

    server.wait_for(retried, timeout=30, what="the dead letter retried and dead again")
    page.wait_for_selector("#queue-dead[data-value='1']")
    # the instance saw the failing request twice: the first delivery and the one after Retry
    assert (tmp_path / "jobs.log").read_text().split().count(rid) == 2

    # View Endpoint Information: the sink endpoints and the QueueClient example
    page.click("#view-endpoint")
    panel = page.locator("#endpoint-panel")
    panel.wait_for()
    assert panel.locator("#endpoint-sink-internet").inner_text() == endpoint + "/sink"
    vpc = view["endpoints"]["vpc"]
    if vpc:
        assert panel.locator("#endpoint-sink-vpc").inner_text() == vpc + "/sink"
    panel.locator("[data-example=queue]").click()
    code = panel.locator("#example-queue").inner_text()
    host = endpoint.split("//", 1)[1].split("/", 1)[0]
    assert "from eas_prediction import QueueClient" in code
    assert f'QueueClient(endpoint, "{name}/sink")' in code and f'endpoint = "{host}"' in code
    assert token in code
    # and it runs as shown (the unmodified SDK in its own venv): the answer comes back from the sink
    out = run_python(code, str(eas_python))
    assert out.splitlines()[-1] == '200 done:{"hello":"world"}', out

    # a service that is not Async has no Queue tab (and #/.../queue falls back to the overview)
    with server.client() as api:
        api.delete(f"/api/v2/services/local/{name}")
        assert api.post("/api/v2/services", json=app_spec(tmp_path, "plain_ui")).status_code == 201
    page.goto(f"{server.api}/console/#/services/plain_ui/queue")
    page.wait_for_selector("#tab-overview")
    assert page.locator("[data-tab=queue]").count() == 0
    with server.client() as api:
        api.delete("/api/v2/services/local/plain_ui")
