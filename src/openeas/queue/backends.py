"""Choose a queue backend by configuration: Redis when a URL is given, else the registry's database."""

from __future__ import annotations

from openeas.queue.backend import QueueBackend


def make_backend(store_url: str, redis_url: str, service: str) -> QueueBackend:
    if redis_url:
        from openeas.queue.redis_backend import RedisBackend

        return RedisBackend(redis_url, service)
    from openeas.queue.sql_backend import SqlBackend

    return SqlBackend(store_url, service)
