"""Fixtures for the end-to-end tests: one real `openeas server` per module (tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server stops cleanly at the end, and its log never held the admin token (serving)."""
    yield from serving(tmp_path_factory.mktemp("openeas") / "data")


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    return tmp_path
