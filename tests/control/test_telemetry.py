"""Unit tests of control/telemetry.py on recorded /stats payloads: parsing, deltas across reads,
gateway restarts, several gateways, windows, percentiles, the console series and the waiting
callback. No I/O: `Telemetry.ingest` is driven with parsed payloads and explicit times."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from openeas.control.telemetry import (
    StatsError,
    Telemetry,
    TelemetrySettings,
    parse_stats,
    quantile,
)

BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


def hist(total: float, counts: dict[int, int]) -> dict[str, Any]:
    """A /stats histogram: `counts` maps a bucket index (len(BUCKETS) = +Inf) to a count."""
    return {"sum": total, "counts": [counts.get(i, 0) for i in range(len(BUCKETS) + 1)]}


def svc(
    requests: int, codes: dict[str, int], duration: dict[int, int], dsum: float, **more: Any
) -> dict[str, Any]:
    return {
        "requests": requests,
        "codes": codes,
        "in_flight": more.get("in_flight", 0),
        "waiting": more.get("waiting", 0),
        "duration": hist(dsum, duration),
        "upstream": hist(more.get("usum", dsum * 0.9), more.get("upstream", duration)),
        "gateway": hist(dsum * 0.1, {0: requests}),
        "bytes_in": requests * 100,
        "bytes_out": requests * 200,
        "rejected": more.get("rejected", {}),
    }


def payload(pid: int, started: float, services: dict[str, Any], gateway: str = "shared") -> dict[str, Any]:
    return {"gateway": gateway, "pid": pid, "started": started, "buckets": BUCKETS, "services": services}


# a recorded sequence: 3 reads of one gateway, 1 s apart
READ_1 = payload(100, 1000.0, {"chat": svc(10, {"200": 10}, {1: 10}, 0.08)})
READ_2 = payload(
    100, 1000.0, {"chat": svc(30, {"200": 25, "404": 3, "503": 2}, {1: 28, 5: 2}, 0.6, in_flight=3)}
)
READ_3 = payload(
    100, 1000.0, {"chat": svc(60, {"200": 55, "404": 3, "503": 2}, {1: 58, 5: 2}, 0.9, in_flight=1)}
)


def telemetry(now: list[float], born: float = 1500.0, **settings: Any) -> Telemetry:
    """A Telemetry that began watching at `born` (gateways started before: their first read is
    a baseline)."""
    now[0] = born
    return Telemetry(lambda: [], TelemetrySettings(**settings), clock=lambda: now[0])


def feed(
    t: Telemetry, now: list[float], at: float, reads: dict[str, dict[str, Any]], dt: float = 1.0
) -> None:
    now[0] = at
    t.ingest({a: parse_stats(p) for a, p in reads.items()}, at, dt, reads.keys())


def test_parse_checks_the_contract() -> None:
    stats = parse_stats(READ_2)
    assert stats.pid == 100 and stats.buckets[-1] == 30
    chat = stats.services["chat"]
    assert chat.requests == 30 and chat.codes["404"] == 3 and chat.in_flight == 3
    assert chat.duration.count == 30
    bad_counts = copy.deepcopy(READ_1)
    bad_counts["services"]["chat"]["duration"]["counts"] = [1, 2]
    with pytest.raises(StatsError, match=r"services.chat.duration.counts: expected 13 counts"):
        parse_stats(bad_counts)
    with pytest.raises(StatsError, match="buckets"):
        parse_stats({**READ_1, "buckets": [1, 0.5]})
    with pytest.raises(StatsError, match="requests"):
        parse_stats(payload(1, 1.0, {"x": {"requests": -1}}))
    with pytest.raises(StatsError, match="not a JSON object"):
        parse_stats([])


def test_rates_from_deltas_and_first_read_is_a_baseline() -> None:
    now = [0.0]
    t = telemetry(now)
    feed(t, now, 2000.0, {"gw:1": READ_1})
    # the first read of a process that ran before we looked: its counters are history, not load
    assert t.load("chat", 60).qps == 0
    feed(t, now, 2001.0, {"gw:1": READ_2})
    feed(t, now, 2002.0, {"gw:1": READ_3})
    load = t.load("chat", 60)
    assert load.qps == pytest.approx((60 - 10) / 3)  # 50 requests over the 3 s the samples cover
    assert load.in_flight == pytest.approx((0 + 3 + 1) / 3)
    assert load.waiting == 0
    assert load.last_request_at == 2002.0
    # a window that holds only the last read
    assert t.load("chat", 0.5).qps == pytest.approx(30)
    points = t.series("chat", 60)
    assert [p["requests"] for p in points] == [0, 20, 30]
    second = points[1]
    assert second["qps"] == 20
    assert second["classes"] == {"2xx": 15, "4xx": 3, "5xx": 2}
    assert second["codes"] == {"200": 15, "404": 3, "503": 2}
    # 18 requests in (0.005, 0.01], 2 in (0.1, 0.25]: p50 inside the first, p99 inside the second
    assert second["p50_ms"] == pytest.approx(5 + 5 * 10 / 18, rel=1e-3)
    assert 100 < second["p99_ms"] <= 250
    assert second["mean_ms"] == pytest.approx((0.6 - 0.08) / 20 * 1000)
    assert second["upstream_ms"] == pytest.approx((0.6 - 0.08) * 0.9 / 20 * 1000)
    assert second["gateway_ms"] == pytest.approx((0.6 - 0.08) * 0.1 / 20 * 1000)
    assert points[0]["p50_ms"] is None and points[0]["mean_ms"] is None
    assert t.load("other", 60).qps == 0 and t.load("other", 60).last_request_at is None


def test_a_restarted_gateway_starts_from_zero() -> None:
    now = [0.0]
    t = telemetry(now)
    feed(t, now, 10.0, {"gw:1": READ_1})
    feed(t, now, 11.0, {"gw:1": READ_3})  # +50
    # another pid (the supervisor restarted the gateway): its 4 requests are all new
    restarted = payload(101, 11.5, {"chat": svc(4, {"200": 4}, {0: 4}, 0.01)})
    feed(t, now, 12.0, {"gw:1": restarted})
    assert [p["requests"] for p in t.series("chat", 60)] == [0, 50, 4]
    # same pid, counters went down (a reset we were not told about): taken whole too
    feed(t, now, 13.0, {"gw:1": payload(101, 11.5, {"chat": svc(2, {"200": 2}, {0: 2}, 0.004)})})
    assert t.series("chat", 60)[-1]["requests"] == 2
    assert t.series("chat", 60)[-1]["classes"]["2xx"] == 2


def test_new_process_counts_whole_and_several_gateways_sum() -> None:
    now = [0.0]
    t = telemetry(now, born=150.0)
    a1 = payload(1, 100.0, {"chat": svc(5, {"200": 5}, {0: 5}, 0.01, in_flight=2)})
    feed(t, now, 200.0, {"a:1": a1})
    a2 = payload(1, 100.0, {"chat": svc(15, {"200": 15}, {0: 15}, 0.03, in_flight=1, waiting=2)})
    # gateway b started after the telemetry began (150): everything it counted is news
    b1 = payload(2, 200.5, {"chat": svc(7, {"200": 6, "429": 1}, {0: 7}, 0.02, in_flight=3, waiting=1)})
    feed(t, now, 201.0, {"a:1": a2, "b:1": b1})
    last = t.series("chat", 10)[-1]
    assert last["requests"] == 10 + 7
    assert last["classes"] == {"2xx": 16, "4xx": 1, "5xx": 0}
    assert last["in_flight"] == 4
    load = t.load("chat", 0.5)
    assert load.waiting == 3 and load.qps == 17 and load.in_flight == 4


def test_down_gateway_is_skipped_and_the_next_delta_covers_the_gap() -> None:
    now = [0.0]
    t = telemetry(now)
    feed(t, now, 10.0, {"gw:1": READ_1})
    now[0] = 11.0
    t.ingest({}, 11.0, 1.0, ["gw:1"])  # listed but did not answer
    feed(t, now, 12.0, {"gw:1": READ_3}, dt=1.0)
    assert sum(p["requests"] for p in t.series("chat", 60)) == 50


def test_waiting_callback_and_bounded_ring() -> None:
    now = [0.0]
    t = telemetry(now, retention_s=5, interval_s=1)
    called: list[str] = []
    t.on_waiting(called.append)
    t.on_waiting(lambda name: 1 / 0)  # a failing callback does not stop the others or the round
    feed(
        t,
        now,
        1.0,
        {"g:1": payload(1, 0.5, {"cold": svc(0, {}, {}, 0.0, waiting=1), "warm": svc(0, {}, {}, 0)})},
    )
    assert called == ["cold"]
    for i in range(2, 20):
        feed(t, now, float(i), {"g:1": payload(1, 0.5, {"cold": svc(0, {}, {}, 0.0)})})
    assert called == ["cold"]
    assert len(t.series("cold", 1000)) == 5  # retention_s / interval_s
    assert t.services() == ["cold"]  # "warm" vanished from the stats: forgotten after retention
    assert t.load("cold", 60).last_request_at == 1.0  # waiting counts as a request seen


def test_series_downsamples_long_windows() -> None:
    now = [0.0]
    t = telemetry(now, max_points=10)
    stats = payload(1, 0.0, {"s": svc(0, {}, {}, 0.0)})
    feed(t, now, 1.0, {"g": stats})
    for i in range(2, 102):
        stats = copy.deepcopy(stats)
        s = stats["services"]["s"]
        s["requests"] += 2
        s["codes"]["200"] = s["codes"].get("200", 0) + 2
        s["duration"]["counts"][3] += 2
        feed(t, now, float(i), {"g": stats})
    points = t.series("s", 1000)
    assert len(points) <= 10
    assert sum(p["requests"] for p in points) == 200
    assert all(p["qps"] == pytest.approx(2) for p in points[1:])


def test_gateway_share_without_its_histogram_is_the_difference_of_means() -> None:
    now = [0.0]
    t = telemetry(now)
    first, second = copy.deepcopy(READ_1), copy.deepcopy(READ_2)
    for p in (first, second):
        del p["services"]["chat"]["gateway"]  # a gateway from before the `gateway` histogram
    feed(t, now, 1.0, {"g": first})
    feed(t, now, 2.0, {"g": second})
    point = t.series("chat", 60)[-1]
    assert point["gateway_ms"] == pytest.approx(point["mean_ms"] - point["upstream_ms"])


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [0.1, 0.2, 0.4]
    assert quantile(0.5, buckets, [0, 0, 0, 0]) is None
    assert quantile(0.5, buckets, [10, 0, 0, 0]) == pytest.approx(0.05)
    assert quantile(0.75, buckets, [0, 4, 0, 0]) == pytest.approx(0.175)
    assert quantile(0.99, buckets, [1, 0, 0, 99]) == 0.4  # in +Inf: the highest bound
