from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Server, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `openeas server` per test module (see harness.serving for the checks at the end)."""
    yield from serving(tmp_path_factory.mktemp("cli") / "data")
