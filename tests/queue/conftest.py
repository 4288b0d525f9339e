"""Fixtures for the queue tests: one redis-server for the module, the backend kinds to run on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import terminate
from tests.queue.harness import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    terminate(server.proc)


@pytest.fixture(params=["sql", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url_for(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """'' for the embedded backend, a Redis URL (a fresh database number per test) for Redis."""
    if backend_kind == "sql":
        return ""
    server: RedisServer = request.getfixturevalue("redis_server")
    import redis

    r = redis.Redis.from_url(server.url)
    r.flushall()
    r.close()
    return server.url
