"""The `queue` block of an Async service spec: defaults, validation, settings the queue server uses."""

from __future__ import annotations

from typing import Any

import pytest

from openeas.queue.service import QueueSettings
from openeas.spec import SpecError, parse_service_spec
from openeas.spec.queue import duration_seconds


def spec(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": "q", "type": "Async"}, "containers": [{"command": "x"}]}
    out.update(extra)
    return out


def test_async_gets_defaults_and_settings_follow_rpc() -> None:
    s = parse_service_spec(spec())
    assert s.is_async and s.queue is not None
    settings = QueueSettings.from_spec("q", s.queue, s.metadata.rpc.worker_threads, s.metadata.rpc.keepalive)
    assert settings.window == 5 and settings.request_timeout_s == 5.0
    assert settings.source.max_length == 10_000 and settings.result_ttl_s == 86_400
    tuned = parse_service_spec(spec(queue={"window": 2, "max_idle": "2m", "sink": {"ttl": "30s"}}))
    assert tuned.queue is not None
    t = QueueSettings.from_spec("q", tuned.queue, 5, 5000)
    assert (t.window, t.request_timeout_s, t.result_ttl_s) == (2, 120.0, 30.0)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"metadata": {"name": "q"}, "containers": [{"command": "x"}], "queue": {}}, "(top level)", "Async"),
        (spec(queue={"sink": {"ttl": "soon"}}), "queue.sink.ttl", "duration"),
        (spec(queue={"max_delivery": 0}), "queue.max_delivery", "greater than or equal to 1"),
        (spec(queue={"source": {"max_lenght": 5}}), "queue.source.max_lenght", "unknown field"),
        (spec(queue={"path": "predict"}), "queue.path", 'starts with "/"'),
    ],
)
def test_bad_queue_blocks_name_the_field(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_service_spec(data)
    problems = {p.field: p.problem for p in err.value.problems}
    assert field in problems and words in problems[field], problems


def test_ignored_sizing_fields_warn() -> None:
    s = parse_service_spec(spec(queue={"cpu": 2, "min_replica": 1}))
    assert any("queue.cpu" in w for w in s.warnings()) and any("queue.min_replica" in w for w in s.warnings())


def test_durations() -> None:
    assert [duration_seconds(v) for v in (30, "30", "500ms", "10m", "1h", "2d")] == [
        30,
        30,
        0.5,
        600,
        3600,
        172800,
    ]
    with pytest.raises(ValueError):
        duration_seconds(-1)
