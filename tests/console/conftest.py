"""Fixtures for the console tests: a real `openeas server` with the demo service deployed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openeas.cli.main import demo_spec
from tests.harness import Server, serving, wait_for

REPO = Path(__file__).resolve().parents[2]
DEMO = "demo_chat"


def demo_spec_text() -> str:
    """The demo spec as `openeas up` deploys it (its `python3` as this interpreter), as the JSON
    text a user pastes into the deploy form."""
    return json.dumps(demo_spec(), indent=2)


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
