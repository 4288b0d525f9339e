"""The autoscaler's decisions (pure): formula, tolerance, windows, bounds, scale to / from zero."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from openeas.control.autoscaler import (
    CpuMeter,
    History,
    Observation,
    Policy,
    decide,
    process_tree_ticks,
    recommend,
)
from openeas.spec import parse_service_spec


def policy(**kw: object) -> Policy:
    base: dict[str, object] = {
        "min": 1,
        "max": 10,
        "thresholds": (("qps", 10.0),),
        "up_window_s": 0.0,
        "down_window_s": 0.0,
    }
    base.update(kw)
    return Policy(**base)  # type: ignore[arg-type]


def obs(
    now: float, current: int, qps: float | None = None, ready: int | None = None, **kw: object
) -> Observation:
    totals: dict[str, float] = {} if qps is None else {"qps": qps}
    totals.update(kw.pop("totals", {}))  # type: ignore[call-overload]
    return Observation(now, current, current if ready is None else ready, totals, **kw)  # type: ignore[arg-type]


def test_formula_ceil_of_current_times_ratio() -> None:
    # 2 instances at 35 qps in total = 17.5 each, threshold 10 -> ceil(2 * 1.75) = 4
    assert recommend(policy(), obs(0, 2, 35.0))[0] == 4
    # 4 instances at 12 qps in total = 3 each -> ceil(4 * 0.3) = 2
    assert recommend(policy(), obs(0, 4, 12.0))[0] == 2


def test_tolerance_band_keeps_the_count() -> None:
    p = policy()
    assert recommend(p, obs(0, 3, 32.0))[0] == 3  # 10.67 per instance: within 10 %
    assert recommend(p, obs(0, 3, 28.0))[0] == 3  # 9.33: within
    assert recommend(p, obs(0, 3, 34.0))[0] == 4  # 11.33: 13 % over -> ceil(3.4)
    assert recommend(p, obs(0, 3, 26.0))[0] == 3  # 8.67 -> ceil(2.6) = 3 (no lower count fits)
    assert recommend(p, obs(0, 3, 17.0))[0] == 2


def test_highest_metric_wins_and_clamps() -> None:
    p = policy(thresholds=(("qps", 10.0), ("concurrency", 2.0)), max=5)
    # qps asks for 2, concurrency (8 in flight over 2 = 4 each, threshold 2) asks for 4
    assert recommend(p, obs(0, 2, 20.5, totals={"concurrency": 8.0}))[0] == 4
    assert recommend(p, obs(0, 2, 200.0, totals={"concurrency": 1.0}))[0] == 5  # max
    assert recommend(policy(min=2), obs(0, 3, 0.0))[0] == 2  # min


def test_scale_up_at_once_with_no_up_window() -> None:
    p = policy(down_window_s=300.0)
    d = decide(p, History(since=0), obs(10, 1, 38.0))
    assert d.desired == 4 and "qps 38.0/instance vs threshold 10" in d.reason


def test_scale_down_waits_for_the_whole_down_window() -> None:
    p = policy(down_window_s=30.0)
    h = History(since=0)
    assert decide(p, h, obs(0, 4, 40.0)).desired == 4  # steady
    # load gone: the metric asks for 1 but 4 was recommended within the last 30 s
    for t in (1, 10, 20, 30):
        assert decide(p, h, obs(t, 4, 0.0)).desired == 4, t
    assert decide(p, h, obs(31, 4, 0.0)).desired == 1


def test_scale_down_to_the_highest_recent_recommendation() -> None:
    p = policy(down_window_s=10.0)
    h = History(since=0)
    decide(p, h, obs(0, 6, 60.0))  # 6
    decide(p, h, obs(5, 6, 30.0))  # 3
    decide(p, h, obs(8, 6, 20.0))  # 2
    assert decide(p, h, obs(11, 6, 10.0)).desired == 3  # 6 left the window, 3 is the highest left
    assert decide(p, h, obs(16, 3, 5.0)).desired == 2


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    p = policy(up_window_s=10.0, down_window_s=60.0)
    h = History(since=0)
    assert decide(p, h, obs(0, 1, 10.0)).desired == 1
    assert decide(p, h, obs(1, 1, 50.0)).desired == 1  # a spike: 1 was recommended 1 s ago
    assert decide(p, h, obs(5, 1, 40.0)).desired == 1
    assert decide(p, h, obs(11, 1, 40.0)).desired == 4  # the 1 left the window; lowest is 4


def test_count_outside_bounds_is_clamped() -> None:
    assert decide(policy(min=2, max=4), History(since=0), obs(0, 1, 0.0)).desired == 2
    assert decide(policy(min=2, max=4), History(since=0), obs(0, 7, 100.0)).desired == 4
    assert decide(policy(min=3), History(since=0), obs(0, 0)).desired == 3


def test_scale_to_zero_after_the_grace_period_only() -> None:
    p = policy(min=0, zero_grace_s=60.0)
    h = History(since=0)
    assert decide(p, h, obs(30, 1, 0.0, last_request_at=10.0)).desired == 1
    assert decide(p, h, obs(69, 1, 0.0, last_request_at=10.0)).desired == 1
    d = decide(p, h, obs(70, 1, 0.0, last_request_at=10.0))
    assert d.desired == 0 and "no request for 60 s" in d.reason
    # never a request: the grace counts from when the autoscaler began to follow the service
    assert decide(p, History(since=100), obs(150, 1, 0.0)).desired == 1
    assert decide(p, History(since=100), obs(160, 1, 0.0)).desired == 0
    # min 1: never to zero
    assert decide(policy(min=1, zero_grace_s=1), History(since=0), obs(100, 1, 0.0)).desired == 1


def test_no_scale_to_zero_while_requests_are_in_flight_or_waiting() -> None:
    p = policy(min=0, zero_grace_s=5.0, thresholds=(("concurrency", 4.0),))
    assert decide(p, History(since=0), obs(100, 1, totals={"concurrency": 0.5})).desired == 1
    assert decide(p, History(since=0), obs(100, 1, totals={"concurrency": 0.0}, waiting=1)).desired == 1


def test_scale_from_zero_when_a_request_waits() -> None:
    p = policy(min=0)
    h = History(since=0, zero_at=50.0)
    assert decide(p, h, obs(60, 0, last_request_at=40.0)).desired == 0
    d = decide(p, h, obs(61, 0, waiting=2, last_request_at=40.0))
    assert d.desired == 1 and "2 request(s) waiting" in d.reason
    # a request came after it went to zero (held and timed out before it was seen waiting)
    assert decide(p, h, obs(62, 0, last_request_at=55.0)).desired == 1


def test_no_metric_decision_without_a_ready_instance() -> None:
    assert decide(policy(), History(since=0), obs(0, 3, 100.0, ready=0)).desired == 3


def test_starting_instances_do_not_make_it_overshoot() -> None:
    # 4 wanted, 1 ready carrying 40 qps: ceil(1 * 4) = 4, not 4 * 4
    p = policy(down_window_s=30.0)
    assert decide(p, History(since=0), obs(0, 4, 40.0, ready=1)).desired == 4


def test_policy_from_the_spec() -> None:
    spec = parse_service_spec(
        {
            "metadata": {"name": "a"},
            "containers": [{"command": "x", "port": 8000}],
            "autoscaler": {
                "min": 0,
                "max": 5,
                "scaleStrategies": [
                    {"metricName": "qps", "threshold": 15},
                    {"metricName": "cpu", "threshold": 80},
                ],
                "behavior": {
                    "scaleDown": {"stabilizationWindowSeconds": 5},
                    "onZero": {"scaleDownGracePeriodSeconds": 3},
                },
            },
        }
    )
    assert spec.autoscaler is not None
    p = Policy.from_spec(spec.autoscaler)
    assert p == Policy(0, 5, (("qps", 15.0), ("cpu", 80.0)), 0.0, 5.0, 3.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_cpu_of_a_busy_process_tree() -> None:
    # a shell whose child burns CPU: the child's time counts for the parent's instance
    proc = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c 'while True: pass' & wait"], start_new_session=True
    )
    try:
        meter = CpuMeter()
        assert meter.percent([proc.pid]) is None  # one sample: no rate yet
        time.sleep(1.5)
        busy = meter.percent([proc.pid])
        assert busy is not None and busy > 30.0, busy  # about 100 on an idle core; the box is shared
        assert process_tree_ticks(proc.pid) is not None
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    assert process_tree_ticks(proc.pid) is None
