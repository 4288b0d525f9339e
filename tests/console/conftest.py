"""Fixtures for the console tests: a real `openeas server` with the demo service deployed."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.control.harness import Server, serving, wait_for

REPO = Path(__file__).resolve().parents[2]
DEMO = "demo_chat"


def demo_spec_text() -> str:
    """src/openeas/examples/chat_service/spec.json with its `python3` as this interpreter (what
    `openeas up` does), as the JSON text a user pastes into the deploy form."""
    spec: dict[str, Any] = json.loads(
        (REPO / "src" / "openeas" / "examples" / "chat_service" / "spec.json").read_text()
    )
    container = spec["containers"][0]
    container["command"] = container["command"].replace("python3 ", shlex.quote(sys.executable) + " ", 1)
    return json.dumps(spec, indent=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("console") / "data")


def running(server: Server, name: str, count: int = 1, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        with server.client() as api:
            v: dict[str, Any] = api.get(f"/api/v2/services/local/{name}").json()
        ok = v.get("status") == "Running" and v.get("running_instances") == count
        return v if ok else None

    out: dict[str, Any] = wait_for(check, timeout, f"{name} Running with {count} instance(s)")
    return out
