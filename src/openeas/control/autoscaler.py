"""The autoscaler: keep a service's instance count near its metric thresholds (spec `autoscaler`).

Two parts, kept apart so the decisions can be tested without processes:

- `decide()` (pure): EAS's formula per metric, `desired = ceil(ready * value / threshold)`
  with `value` per instance; the highest of the metrics wins; no change while every metric is
  within 10 % of its threshold; k8s-style stabilization (scale up only to the lowest
  recommendation of the scale-up window, down only to the highest of the scale-down window);
  clamped to [min, max]. With `min: 0`: to zero after `onZero.scaleDownGracePeriodSeconds`
  without a request, and from zero to one as soon as a request waits at a gateway.
- `Autoscaler` (I/O): a loop (~1 s) that reads each autoscaled service's load from the
  telemetry (gateway `/stats`, summed) and CPU from the instances' processes, calls `decide()`
  and applies a change through the same path as `openeas scale` (then the reconciler wakes).
  `Telemetry.on_waiting` wakes it at once for a service with requests held for an instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from openeas.procfs import stat_fields
from openeas.spec.service import AutoscalerSpec
from openeas.store import InstanceRecord, Registry, ServiceRecord

log = logging.getLogger("openeas.control")

TOLERANCE = 0.1  # no change while value / threshold is within 1 +- this (as k8s's HPA)
INTERVAL_S = 1.0
LOAD_WINDOW_S = 5.0  # qps and concurrency are averaged over this window


# -- the metrics source (control/telemetry.py) -----------------------------------------------


class LoadLike(Protocol):
    @property
    def qps(self) -> float: ...  # finished requests/s over the window, all gateways summed
    @property
    def in_flight(self) -> float: ...  # mean requests in flight over the window, all gateways
    @property
    def waiting(self) -> int: ...  # requests held waiting for an instance (scale from zero)
    @property
    def last_request_at(self) -> float | None: ...  # unix time of the last request seen


class QueueLoads(Protocol):  # async queue hook (control/queue_servers.py)
    def load(self, service: str) -> QueueLoadLike | None: ...


class QueueLoadLike(Protocol):
    @property
    def backlog(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def last_activity(self) -> float | None: ...


class LoadSource(Protocol):
    def load(self, service: str, window_s: float) -> LoadLike: ...
    def on_waiting(self, callback: Callable[[str], None]) -> None: ...


# -- pure decisions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    min: int
    max: int
    thresholds: tuple[tuple[str, float], ...]  # (metric, threshold per instance)
    up_window_s: float = 0.0
    down_window_s: float = 300.0
    zero_grace_s: float = 600.0

    @classmethod
    def from_spec(cls, spec: AutoscalerSpec) -> Policy:
        behavior = spec.behavior
        return cls(
            min=spec.min,
            max=spec.max,
            thresholds=tuple((s.metric_name, s.threshold) for s in spec.scale_strategies),
            up_window_s=behavior.scale_up.stabilization_window_seconds,
            down_window_s=behavior.scale_down.stabilization_window_seconds,
            zero_grace_s=behavior.on_zero.scale_down_grace_period_seconds,
        )


@dataclass(frozen=True)
class Observation:
    """What the autoscaler sees of one service at one moment."""

    now: float  # unix time
    current: int  # the desired instance count in the spec now
    ready: int  # instances ready (the metrics are divided among these)
    totals: dict[str, float]  # metric -> sum over the service's instances (qps, concurrency, cpu)
    waiting: int = 0  # requests held at a gateway for an instance
    last_request_at: float | None = None


@dataclass
class History:
    """Per service: the recent recommendations (for the stabilization windows) and zero state."""

    since: float  # when the autoscaler started to follow the service (an idle floor)
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    zero_at: float | None = None  # when it was scaled to zero by the autoscaler


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str

    def changes(self, current: int) -> bool:
        return self.desired != current


def recommend(policy: Policy, obs: Observation) -> tuple[int, str]:
    """The count the metrics ask for now (before stabilization), clamped, and why."""
    floor = max(policy.min, 1)  # metrics never ask for zero; idleness does (see decide)
    best: int | None = None
    why: list[str] = []
    for metric, threshold in policy.thresholds:
        total = obs.totals.get(metric)
        if total is None:
            continue
        value = total / obs.ready  # per instance
        ratio = value / threshold
        # within the band: this metric asks for no change
        n = obs.current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(obs.ready * ratio)
        why.append(f"{metric} {value:.1f}/instance vs threshold {threshold:g} -> {n}")
        best = n if best is None else max(best, n)
    if best is None:
        return obs.current, "no metric"
    return min(max(best, floor), policy.max), "; ".join(why)


def decide(policy: Policy, history: History, obs: Observation) -> Decision:
    """The instance count to have now, and why (desired == obs.current: no change)."""
    now, current = obs.now, obs.current
    if current == 0:
        if policy.min > 0:
            return Decision(policy.min, f"below min {policy.min}")
        woken = obs.last_request_at is not None and history.zero_at is not None
        if obs.waiting > 0 or (woken and obs.last_request_at > history.zero_at):  # type: ignore[operator]
            return Decision(1, f"scale from zero: {obs.waiting} request(s) waiting for an instance")
        return Decision(0, "at zero, no request")
    if current < policy.min or current > policy.max:
        target = min(max(current, policy.min), policy.max)
        return Decision(target, f"outside [min {policy.min}, max {policy.max}]")
    if policy.min == 0 and obs.waiting == 0 and obs.totals.get("concurrency", 0.0) <= 0.0:
        last = max(obs.last_request_at or 0.0, history.since)
        if now - last >= policy.zero_grace_s:
            return Decision(0, f"scale to zero: no request for {now - last:.0f} s")
    if obs.ready == 0:
        return Decision(current, "no ready instance to measure")
    rec, why = recommend(policy, obs)
    recs = history.recommendations
    recs.append((now, rec))
    keep = max(policy.up_window_s, policy.down_window_s)
    while recs and recs[0][0] < now - keep:
        recs.popleft()
    up = min(n for t, n in recs if t >= now - policy.up_window_s)
    down = max(n for t, n in recs if t >= now - policy.down_window_s)
    desired = current
    if up > desired:
        desired = up
    elif down < desired:
        desired = down
    return Decision(desired, why)


# -- CPU of the instances' processes ----------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_ticks(pid: int) -> int | None:
    """utime + stime (clock ticks) of `pid` and its descendants; None when `pid` is gone."""
    total = 0
    todo = [pid]
    seen: set[int] = set()
    first = True
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        fields = stat_fields(p)
        if fields is None:
            if first:
                return None
            continue
        first = False
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
    return total


class CpuMeter:
    """Percent of one core per instance process tree, from /proc deltas between two calls."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int]] = {}  # pid -> (monotonic time, ticks)

    def percent(self, pids: list[int]) -> float | None:
        """Sum over `pids` of their CPU percent since the last call; None before a second sample."""
        now = time.monotonic()
        total = 0.0
        measured = False
        last: dict[int, tuple[float, int]] = {}
        for pid in pids:
            ticks = process_tree_ticks(pid)
            if ticks is None:
                continue
            last[pid] = (now, ticks)
            prev = self._last.get(pid)
            if prev is not None and now > prev[0]:
                total += 100.0 * (ticks - prev[1]) / _TICKS / (now - prev[0])
                measured = True
        self._last = {**{p: v for p, v in self._last.items() if p in last}, **last}
        return total if measured else None


# -- the loop -----------------------------------------------------------------------------------

Scale = Callable[[str, int], Awaitable[Any]]  # (service, instance count): the `openeas scale` path


@dataclass
class ServiceStatus:
    """What `desc` shows: the autoscaler's last target and why."""

    target: int
    reason: str
    at: float  # unix time of the decision

    def view(self) -> dict[str, Any]:
        return {"target": self.target, "reason": self.reason, "decided_at": self.at}


class Autoscaler:
    def __init__(
        self,
        registry: Registry,
        telemetry: LoadSource,
        scale: Scale,
        *,
        interval_s: float = INTERVAL_S,
        window_s: float = LOAD_WINDOW_S,
    ) -> None:
        self.registry = registry
        self.telemetry = telemetry
        self.scale = scale
        self.interval_s = interval_s
        self.window_s = window_s
        self.cpu: dict[str, CpuMeter] = {}
        self.history: dict[str, History] = {}
        self.status: dict[str, ServiceStatus] = {}
        self._wake = asyncio.Event()
        self._urgent: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.queues: QueueLoads | None = None  # async queue hook: Async services' backlogs
        telemetry.on_waiting(self.request_waiting)

    def view(self, service: str) -> dict[str, Any] | None:
        status = self.status.get(service)
        return status.view() if status is not None else None

    def request_waiting(self, service: str) -> None:
        """A gateway holds requests for `service` (which has no instance): decide now.

        May be called from another thread (the telemetry's scraper)."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._mark_urgent(service)
        else:
            loop.call_soon_threadsafe(self._mark_urgent, service)

    def _mark_urgent(self, service: str) -> None:
        self._urgent.add(service)
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            urgent, self._urgent = self._urgent, set()
            try:
                await self.tick(urgent)
            except Exception as exc:  # keep scaling the other services next time
                log.warning("autoscaler pass failed: %s: %s", type(exc).__name__, exc)

    async def tick(self, urgent: set[str] | None = None) -> None:
        services, instances = await asyncio.to_thread(self._read_store)
        by_service: dict[str, list[InstanceRecord]] = {}
        for inst in instances:
            by_service.setdefault(inst.service, []).append(inst)
        followed: set[str] = set()
        for svc in services:
            policy = self._policy(svc)
            if policy is None or svc.desired != "running":
                continue
            followed.add(svc.name)
            await self._one(svc, policy, by_service.get(svc.name, []), urgent or set())
        for name in list(self.history):
            if name not in followed:  # no autoscaler (any more), stopped or deleted
                self.history.pop(name, None)
                self.status.pop(name, None)
                self.cpu.pop(name, None)

    def _read_store(self) -> tuple[list[ServiceRecord], list[InstanceRecord]]:
        return self.registry.list_services(), self.registry.list_instances()

    @staticmethod
    def _policy(svc: ServiceRecord) -> Policy | None:
        data = svc.spec.get("autoscaler")
        if not data:
            return None
        # Only the autoscaler block: the stored spec was validated whole when it was written.
        try:
            return Policy.from_spec(AutoscalerSpec.model_validate(data))
        except ValidationError:
            return None

    async def _one(
        self, svc: ServiceRecord, policy: Policy, instances: list[InstanceRecord], urgent: set[str]
    ) -> None:
        now = time.time()
        name = svc.name
        current = int(svc.spec.get("metadata", {}).get("instance", 1))
        history = self.history.setdefault(name, History(since=now))
        ready = [i for i in instances if i.state == "ready"]
        load = self.telemetry.load(name, self.window_s)
        totals = {"qps": load.qps, "concurrency": load.in_flight}
        if any(m == "cpu" for m, _ in policy.thresholds):
            meter = self.cpu.setdefault(name, CpuMeter())
            cpu = await asyncio.to_thread(meter.percent, [i.pid for i in ready if i.pid])
            if cpu is not None:
                totals["cpu"] = cpu
        waiting = max(load.waiting, 1 if name in urgent else 0)
        last_request_at = load.last_request_at
        queue = self.queues.load(name) if self.queues is not None else None
        if queue is not None:  # async queue hook: an Async service scales on its backlog
            totals["queue"] = float(queue.backlog)
            totals["concurrency"] = float(queue.in_flight)
            waiting = max(waiting, queue.backlog)  # from zero: the first put wakes it
            last_request_at = queue.last_activity  # sink polls at the gateway do not keep it up
        obs = Observation(now, current, len(ready), totals, waiting, last_request_at)
        decision = decide(policy, history, obs)
        previous = self.status.get(name)
        if decision.changes(current) or previous is None or previous.target != decision.desired:
            self.status[name] = ServiceStatus(decision.desired, decision.reason, now)
        if not decision.changes(current):
            return
        log.info(
            "autoscaler: service %s %d -> %d instances (%s)", name, current, decision.desired, decision.reason
        )
        if decision.desired == 0:
            history.zero_at = now
            history.recommendations.clear()  # from zero, the windows start over
        try:
            await self.scale(name, decision.desired)
        except Exception as exc:
            log.warning("autoscaler: cannot scale service %s to %d: %s", name, decision.desired, exc)
