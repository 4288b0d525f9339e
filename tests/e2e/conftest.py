from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("openeas") / "data"
    srv = start_server(data_dir)
    try:
        yield srv
    finally:
        srv.stop()
        log = srv.log_path.read_text(errors="replace") if srv.log_path.exists() else ""
        # The admin token and service tokens must never reach the server's own log.
        admin = (data_dir / "admin_token").read_text().strip() if (data_dir / "admin_token").exists() else ""
        assert not admin or admin not in log, "admin token leaked into the server log"


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    return tmp_path
