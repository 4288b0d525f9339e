"""Find the server and talk to its /api/v2 over HTTP. User-facing failures are CliError."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from openeas.config import ADMIN_TOKEN_FILE, SERVER_FILE, default_data_dir
from openeas.procfs import pid_alive


class CliError(Exception):
    """A user error or an error answered by the server: printed as one message, exit code 1."""

    def __init__(self, message: str, payload: Any = None):
        super().__init__(message)
        self.payload = payload  # the server's JSON error, for --json


@dataclass(frozen=True)
class ServerRef:
    api: str  # one base URL, or several comma-separated (control servers on one registry)
    token: str
    region: str | None = None

    @property
    def apis(self) -> list[str]:
        return [a.strip().rstrip("/") for a in self.api.split(",") if a.strip()]


def locate_server(data_dir: Path | None) -> ServerRef:
    """--data-dir wins; else OPENEAS_API + OPENEAS_ADMIN_TOKEN; else the default data dir."""
    api = os.environ.get("OPENEAS_API")
    if data_dir is None and api:
        token = os.environ.get("OPENEAS_ADMIN_TOKEN", "").strip()
        if not token:
            path = default_data_dir() / ADMIN_TOKEN_FILE
            token = path.read_text().strip() if path.exists() else ""
        if not token:
            raise CliError(
                "OPENEAS_API is set but OPENEAS_ADMIN_TOKEN is not: set it to the server's admin token"
            )
        apis = [a.strip().rstrip("/") for a in api.split(",") if a.strip()]
        if not apis:
            raise CliError("OPENEAS_API is empty: set it to http://host:8800 (or several, comma-separated)")
        return ServerRef(",".join(apis), token, os.environ.get("OPENEAS_REGION") or None)
    folder = (data_dir or default_data_dir()).expanduser()
    hint = "start one with `openeas server` (or set OPENEAS_API and OPENEAS_ADMIN_TOKEN)"
    try:
        info = json.loads((folder / SERVER_FILE).read_text())
    except FileNotFoundError:
        raise CliError(f"no openeas server found for data dir {folder}: {hint}") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {folder / SERVER_FILE} ({exc}): {hint}") from None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or not isinstance(info.get("api"), str):
        raise CliError(f"{folder / SERVER_FILE} is not a server file: {hint}")
    if not pid_alive(pid):
        raise CliError(
            f"no openeas server found for data dir {folder} "
            f"(the server with pid {pid} is not running): {hint}"
        )
    token = os.environ.get("OPENEAS_ADMIN_TOKEN", "").strip()
    if not token:
        try:
            token = (folder / ADMIN_TOKEN_FILE).read_text().strip()
        except OSError as exc:
            raise CliError(
                f"cannot read the admin token {folder / ADMIN_TOKEN_FILE} ({exc.strerror}); "
                "run as the user that runs the server, or set OPENEAS_ADMIN_TOKEN"
            ) from None
    region = info.get("region") if isinstance(info.get("region"), str) else None
    return ServerRef(info["api"].rstrip("/"), token, region)


def error_text(payload: Any, status: int) -> str:
    """One readable message from the API's JSON error (each spec problem on its own line)."""
    if not isinstance(payload, dict):
        return f"the server answered HTTP {status}"
    problems = payload.get("problems")
    if isinstance(problems, list) and problems:
        lines = ["the spec is not valid:"]
        lines += [f"  {p.get('field')}: {p.get('problem')}" for p in problems if isinstance(p, dict)]
        return "\n".join(lines)
    return str(payload.get("message") or f"the server answered HTTP {status}")


class ApiClient:
    """The /api/v2 client. With several addresses (OPENEAS_API=http://a:8800,http://b:8800; every
    control server on one registry serves the API) a request that could not reach one goes to the
    next; the one that answered is tried first from then on."""

    def __init__(self, ref: ServerRef, timeout: float = 60.0):
        self.ref = ref
        self._region = ref.region
        self._apis = ref.apis
        self._http = httpx.Client(headers={"Authorization": f"Bearer {ref.token}"}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        unreachable: list[str] = []
        for api in list(self._apis):
            try:
                resp = self._http.request(method, api + path, json=body, params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # never reached that server, so no change was made there: the next may take it
                unreachable.append(api)
                continue
            except httpx.TimeoutException:
                raise CliError(f"the openeas server at {api} did not answer in time") from None
            except httpx.HTTPError as exc:
                raise CliError(f"request to {api} failed: {type(exc).__name__}") from None
            if unreachable:
                self._apis = [api, *(a for a in self._apis if a != api)]
            break
        else:
            where = ", ".join(unreachable)
            raise CliError(
                f"cannot reach the openeas server at {where}: is it running? start one with `openeas server`"
            ) from None
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            raise CliError(error_text(payload, resp.status_code), payload)
        return payload

    # -- paths -----------------------------------------------------------------------------
    @property
    def region(self) -> str:
        if self._region is None:
            health = self.request("GET", "/api/v2/health")
            self._region = str(health.get("region", "local")) if isinstance(health, dict) else "local"
        return self._region

    def service_path(self, name: str, action: str = "") -> str:
        return f"/api/v2/services/{self.region}/{name}" + (f"/{action}" if action else "")

    # -- calls -----------------------------------------------------------------------------
    def create(self, spec: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/api/v2/services", spec)
        return out

    def list_services(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/api/v2/services")["services"]
        return out

    def describe(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", self.service_path(name))
        return out

    def exists(self, name: str) -> bool:
        try:
            self.describe(name)
        except CliError as exc:
            if isinstance(exc.payload, dict) and exc.payload.get("code") == "ServiceNotFound":
                return False
            raise
        return True

    def modify(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body`: {"spec": patch} and/or {"assignments": [...]} (output.Patch.body)."""
        out: dict[str, Any] = self.request("PUT", self.service_path(name), body)
        return out

    def delete(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("DELETE", self.service_path(name))
        return out

    def action(self, name: str, action: str, body: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", self.service_path(name, action), body)
        return out

    def get(self, name: str, what: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", self.service_path(name, what), params=params)
        return out

    # -- gateways --------------------------------------------------------------------------
    def gateway_path(self, name: str) -> str:
        return f"/api/v2/gateways/{self.region}/{name}"

    def gateway_create(self, spec: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/api/v2/gateways", spec)
        return out

    def gateway_list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", "/api/v2/gateways")["gateways"]
        return out

    def gateway_describe(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", self.gateway_path(name))
        return out

    def gateway_modify(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.request("PUT", self.gateway_path(name), body)
        return out

    def gateway_delete(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("DELETE", self.gateway_path(name))
        return out

    def wait_gateway_running(self, name: str, timeout: float, interval: float = 0.2) -> dict[str, Any]:
        """Poll until the gateway is Running; Failed or the timeout raise CliError."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.gateway_describe(name)
            if view["status"] == "Running":
                return view
            if view["status"] == "Failed":
                raise CliError(f"gateway {name} failed: {view.get('message')}", view)
            if time.monotonic() >= deadline:
                detail = f": {view['message']}" if view.get("message") else ""
                raise CliError(
                    f"timed out after {timeout:g} s waiting for gateway {name} to be Running "
                    f"(status {view['status']}{detail})",
                    view,
                )
            time.sleep(interval)

    def wait_running(
        self,
        name: str,
        timeout: float,
        on_poll: Callable[[dict[str, Any]], None] = lambda v: None,
        interval: float = 0.3,
    ) -> dict[str, Any]:
        """Poll until the service is Running at its current revision. Failed, Stopped or the
        timeout raise CliError (with the last view as payload)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.describe(name)
            on_poll(view)
            settled = view.get("observed_revision", 0) >= view.get("revision", 0)
            # The status may still be the last pass's: also require the desired count ready.
            enough = view.get("running_instances", 0) >= view.get("instance", 0)
            if settled and enough and view["status"] == "Running":
                return view
            if settled and view["status"] == "Failed":
                raise CliError(f"service {name} failed: {view.get('message')}", view)
            if view["status"] == "Stopped":
                raise CliError(f"service {name} is stopped; start it with `openeas start {name}`", view)
            if time.monotonic() >= deadline:
                detail = f": {view['message']}" if view.get("message") else ""
                raise CliError(
                    f"timed out after {timeout:g} s waiting for {name} to be Running "
                    f"(status {view['status']}{detail}); `openeas logs {name}` shows its log",
                    view,
                )
            time.sleep(interval)
