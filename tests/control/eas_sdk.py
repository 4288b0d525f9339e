"""The official `alibabacloud-eas20210701` SDK in its own venv, driven from the tests.

The SDK and its dependencies (alibabacloud_tea_openapi, darabonba, aiohttp, cryptography 50...)
live in `.venv-alisdk` so they never shape the project's own environment; scripts/test.sh
creates it, and `ensure_sdk_python` does when it is missing. `SdkDriver` runs
`eas_sdk_driver.py` there and exchanges one JSON line per call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("eas_sdk_driver.py")
SDK_PACKAGE = "alibabacloud-eas20210701"


def ensure_sdk_python() -> Path:
    venv = Path(os.environ.get("OPENEAS_ALISDK_VENV", REPO / ".venv-alisdk"))
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import alibabacloud_eas20210701.client"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", SDK_PACKAGE], check=True)
    return python


class SdkDriver:
    """One SDK client (one AccessKey) in a subprocess."""

    def __init__(
        self, python: Path, api_url: str, key_id: str, secret: str, region: str, algorithm: str | None = None
    ):
        endpoint = api_url.removeprefix("http://").rstrip("/")
        self.endpoint = endpoint
        args = [str(python), str(DRIVER), endpoint, key_id, secret, region]
        if algorithm:
            args.append(algorithm)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HTTP_PROXY", "http_proxy")}
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def _send(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the SDK driver died:\n{err}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(
        self, method: str, *args: str, request: tuple[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """`client.<method>(*args, <Request>.from_map(data))`: {"ok", "status", "body"} or the error."""
        cmd: dict[str, Any] = {"call": method, "args": list(args)}
        if request is not None:
            cmd["request"] = list(request)
        return self._send(cmd)

    def ok(
        self, method: str, *args: str, request: tuple[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        answer = self.call(method, *args, request=request)
        assert answer["ok"], f"{method} failed: {answer}"
        body: dict[str, Any] = answer["body"]
        return body

    def raw(self, **raw: Any) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = self._send({"raw": raw})["answers"]
        return answers

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
