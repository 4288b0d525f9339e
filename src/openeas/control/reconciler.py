"""The reconciler: drives instances toward what each service's spec asks for.

One asyncio task runs a pass whenever the API changes something (`wake()`) and otherwise every
`interval_s`. A pass reads the services from the store and, per service, keeps
`metadata.instance` workers of the current spec (stopped services: none), performs a rolling
update when the runtime-relevant part of the spec changed (`metadata.rolling_strategy`: at most
max_surge extra instances, at most max_unavailable of the desired count not ready; the arithmetic
is in control/rollout.py), and writes the service status when it changes.

An instance being removed (rolling update, scale-down, stop, delete) is drained: its row goes to
"stopping" at once (gateways stop routing to it within ~100 ms; requests in flight on it go on),
after `drain_s` it gets SIGTERM, and SIGKILL after the spec's
`metadata.eas.termination_grace_period` (capped by the server's `--grace` when the server stops).

Each instance is owned by a `Worker` task: it starts the instance through the runtime, probes it
until ready (then writes state "ready", which the gateways route to), keeps probing it, notices
its exit at once (state "failed", so gateways stop routing), and restarts it with exponential
backoff. The store is written only when a state changes.

The runtime is any `runtime.base.Runtime` (local subprocesses, Ray actors, the in-memory fake of
tests/control/fake_runtime.py): the reconciler never knows which.

On taking the lead (a server start, a failover) `recover` adopts the instances a previous control
plane left running instead of restarting them: a worker supervises the same process (or Ray
actor) from where it was, and only dead or unknown instances are replaced. Rows keep the
revision of the spec their instance runs (also across restart-free changes), which is how a new
leader tells current instances from old ones of a rolling update in progress
(docs/distributed.md, "Adoption").

Statuses are EAS's: Waiting (nothing ready yet), Running (the desired number ready), Scaling
(count changing, or some not ready after having run), Stopped, Failed (an instance keeps
exiting before it ever becomes ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openeas.control.errors import log_failure
from openeas.control.rollout import plan_rollout
from openeas.runtime.base import DEFAULT_GRACE_S, InstanceHandle, NotPlaceable, ProbeResult, Runtime
from openeas.spec import ServiceSpec, SpecError, parse_service_spec
from openeas.spec.service import ProbeSpec
from openeas.store import InstanceRecord, NotFound, Registry, ServiceRecord

log = logging.getLogger("openeas.control")

# Spec fields whose change needs no new instances: the gateway reads them from the store.
RESTART_FREE_FIELDS: tuple[tuple[str, ...], ...] = (
    ("metadata", "instance"),
    ("metadata", "rpc", "keepalive"),
    ("metadata", "rpc", "rate_limit"),
    ("metadata", "rolling_strategy"),
    ("metadata", "eas"),
    ("networking",),
    ("autoscaler",),
    ("mirror",),
    ("labels",),
    ("token",),
)
# Enforced by the gateway for container services, but passed as flags to built-in processors.
GATEWAY_ONLY_FOR_CONTAINERS: tuple[tuple[str, ...], ...] = (
    ("metadata", "rpc", "worker_threads"),
    ("metadata", "rpc", "max_queue_size"),
)


@dataclass(frozen=True)
class ReconcilerSettings:
    interval_s: float = 0.5  # a pass at least this often
    startup_probe_s: float = 0.25  # probe period until an instance is first ready
    ready_probe_s: float = 2.0  # probe period once ready, when the spec has no health_check
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    backoff_reset_s: float = 60.0  # ready this long: the next crash restarts after backoff_initial_s
    crash_loop_failures: int = 3  # exits in a row before ever being ready -> service Failed
    grace_s: float = DEFAULT_GRACE_S  # SIGTERM -> SIGKILL when the server stops (caps the spec's)
    # between "stopping" in the store and SIGTERM: gateways poll every 100 ms, but on a busy
    # machine a poll and a snapshot rebuild can take several times that
    drain_s: float = 1.0
    settle_s: float = 0.3  # after "ready" in the store, before counting it: gateways route to it by then
    log_lines_in_message: int = 5


def runtime_fingerprint(spec: dict[str, Any]) -> str:
    """What the instances' processes depend on: the spec minus RESTART_FREE_FIELDS."""
    data = copy.deepcopy(spec)
    free = RESTART_FREE_FIELDS if spec.get("processor") else RESTART_FREE_FIELDS + GATEWAY_ONLY_FOR_CONTAINERS
    for path in free:
        node: Any = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return json.dumps(data, sort_keys=True)


class Worker:
    """One instance slot: start, probe, restart on exit, stop. Owns its row in the store."""

    def __init__(
        self,
        *,
        instance_id: str,
        service: str,
        index: int,
        revision: int,
        spec: ServiceSpec,
        fingerprint: str,
        registry: Registry,
        runtime: Runtime,
        settings: ReconcilerSettings,
        on_change: Callable[[], None],
        adopted: InstanceHandle | None = None,
        adopted_state: str = "",
        restarts: int = 0,
    ):
        self.id = instance_id
        self.service = service
        self.index = index
        self.revision = revision
        self.spec = spec
        self.fingerprint = fingerprint
        self.registry = registry
        self.runtime = runtime
        self.settings = settings
        self.on_change = on_change
        self.state = "starting"
        self.message = ""
        self.last_probe = ""  # the last failed probe, for status messages
        self.restarts = restarts
        self.consecutive_failures = 0  # for the backoff
        self.failures_before_ready = 0  # for Failed (crash loop)
        self.last_exit = ""
        self.handle: InstanceHandle | None = None
        # an instance a previous control plane started, still running: the first run supervises
        # it instead of starting one; `adopted_state` is its state in the store ("ready": it
        # stays in routing, probed at once)
        self._adopted = adopted
        self.forgotten = False  # the service is gone: write nothing more
        self.stop_requested = asyncio.Event()
        self._kick = asyncio.Event()  # cut a backoff short (`openeas start` on a failing service)
        self._written: tuple[object, ...] | None = None
        self._unwritten: tuple[str, str] | None = None  # a state whose write failed: retried
        self.ready_written_at: float | None = None
        self._exit: asyncio.Future[Any] | None = None
        self._stop_wait: asyncio.Future[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        # SIGTERM -> SIGKILL; the reconciler keeps it up to date with the service's spec
        self.grace_s = float(spec.metadata.eas.termination_grace_period)
        self._write_lock = asyncio.Lock()  # one store write at a time: "stopping" is never overtaken
        if adopted is not None:
            self.handle = adopted
            self.state = "ready" if adopted_state == "ready" else "starting"
            if self.state == "ready":  # in the gateways' snapshot already: no settling
                self.ready_written_at = time.monotonic() - settings.settle_s
                self._written = ("ready", "", restarts, adopted.pid, revision)

    # -- public ----------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"instance {self.id}")

    def request_stop(self, forget: bool = False) -> None:
        if forget:
            self.forgotten = True
        self.stop_requested.set()

    async def announce_stopping(self) -> None:
        """Take the instance out of routing now, before the drain and SIGTERM (call after
        request_stop)."""
        handle = self.handle
        if handle is not None and self.runtime.exit_code(handle) is None:
            self.state = "stopping"
            await self._write("stopping", "")

    async def confirm_revision(self, revision: int) -> None:
        """The service's spec moved to `revision` without a change this instance must restart
        for (a scale, a limit): its row says so, so that a control plane that takes over knows
        it runs the current spec (docs/distributed.md, "Adoption")."""
        if revision == self.revision:
            return
        self.revision = revision
        if self._written is not None and not self.stop_requested.is_set():
            await self._write(str(self._written[0]), str(self._written[1]), same_state=True)

    def kick(self) -> None:
        self.failures_before_ready = 0
        self.consecutive_failures = 0
        self._kick.set()

    @property
    def ready(self) -> bool:
        """Ready and known to the gateways (they poll the change feed every 100 ms)."""
        if self.state != "ready" or self.stop_requested.is_set() or self.ready_written_at is None:
            return False
        return time.monotonic() - self.ready_written_at >= self.settings.settle_s

    @property
    def crash_looping(self) -> bool:
        return self.failures_before_ready >= self.settings.crash_loop_failures

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while not self.stop_requested.is_set():
                outcome = await self._one_run()
                if outcome == "stop":
                    break
                delay = self._backoff()
                self.message = f"{self.last_exit}; restarting in {delay:g} s"
                await self._write("failed", self.message)
                self._kick.clear()
                waiters = [asyncio.ensure_future(e.wait()) for e in (self.stop_requested, self._kick)]
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if not self.stop_requested.is_set():
                    self.restarts += 1
        except Exception as exc:
            log_failure(log, f"instance {self.id}: supervisor failed", exc)
        finally:
            await self._finish()

    def _backoff(self) -> float:
        s = self.settings
        delay = s.backoff_initial_s * 2 ** max(0, self.consecutive_failures - 1)
        return float(min(s.backoff_max_s, delay))

    async def _one_run(self) -> str:
        if self._adopted is not None:
            handle, self._adopted = self._adopted, None
            return await self._run_handle(handle, adopted_ready=self.state == "ready")
        # The row before the instance: a leader killed after starting it but before writing its
        # pid leaves a row by which the next leader still finds the instance (Runtime.adopt
        # without a pid), instead of starting a second one beside it under the same id.
        self.handle = None
        self.state = "starting"
        await self._write("starting", "")
        try:
            handle = await self.runtime.start(self.id, self.service, self.spec)
        except NotPlaceable as exc:
            # no node can host it (yet): the service waits, saying what is missing, and this is
            # tried again with backoff; not a crash loop (a node that has it may join)
            self.handle = None
            self.state = "failed"
            self.last_exit = str(exc)
            self.consecutive_failures += 1
            return "failed"
        except Exception as exc:
            self.handle = None
            self._failed(f"could not start: {exc}", ever_ready=False, ready_for=0.0)
            return "failed"
        self.handle = handle
        self.state = "starting"
        self.last_probe = ""
        await self._write("starting", "")
        return await self._run_handle(handle, adopted_ready=False)

    async def _run_handle(self, handle: InstanceHandle, adopted_ready: bool) -> str:
        """Supervise one started (or adopted) instance until it exits, fails or is stopped."""
        self._exit = asyncio.ensure_future(self.runtime.wait(handle))
        stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self.stop_requested.wait())
        self._stop_wait = stop_wait
        ready_at: list[float] = []
        try:
            outcome = await self._supervise(handle, ready_at, adopted_ready)
        finally:
            stop_wait.cancel()
        if outcome == "stop":
            return "stop"
        ready_for = time.monotonic() - ready_at[0] if ready_at else 0.0
        if outcome in ("startup", "liveness"):
            reason = self.message
            await self.runtime.stop(handle, self.grace_s)
            self._failed(reason, ever_ready=bool(ready_at), ready_for=ready_for)
        else:
            code = await self._exit
            self._failed(
                self.runtime.describe_exit(handle, code), ever_ready=bool(ready_at), ready_for=ready_for
            )
        return "failed"

    def _failed(self, reason: str, *, ever_ready: bool, ready_for: float) -> None:
        self.state = "failed"
        self.last_exit = reason
        if ready_for >= self.settings.backoff_reset_s:
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        if not ever_ready:
            self.failures_before_ready += 1
        log.warning("instance %s: %s", self.id, reason)

    async def _supervise(self, handle: InstanceHandle, ready_at: list[float], adopted_ready: bool) -> str:
        container = self.spec.containers[0] if self.spec.containers else None
        startup = container.startup_check if container else None
        readiness = container.health_check if container else None
        liveness = container.liveness_check if container else None
        s = self.settings
        if adopted_ready:  # it passed its startup and readiness under the previous control plane
            ready_at.append(time.monotonic())
            return await self._steady(handle, readiness, liveness, probe_now=True)

        # 1. startup probe (k8s semantics: failing it failure_threshold times restarts)
        if startup is not None:
            if out := await self._pause(startup.initial_delay_seconds):
                return out
            fails = 0
            while True:
                res = await self._race(self.runtime.probe(handle, startup))
                if isinstance(res, str):
                    return res
                if res.ok:
                    break
                fails += 1
                self.last_probe = res.detail
                if fails >= startup.failure_threshold:
                    self.message = f"startup_check failed {fails} times: {res.detail}"
                    return "startup"
                if out := await self._pause(startup.period_seconds):
                    return out

        # 2. readiness until first ready, probed often so traffic starts soon
        if readiness is not None and (out := await self._pause(readiness.initial_delay_seconds)):
            return out
        while True:
            res = await self._race(self.runtime.probe(handle, readiness))
            if isinstance(res, str):
                return res
            if res.ok:
                break
            self.last_probe = res.detail
            if out := await self._pause(s.startup_probe_s):
                return out
        ready_at.append(time.monotonic())
        self.failures_before_ready = 0
        self.state = "ready"
        self.last_probe = ""
        await self._write("ready", "")
        return await self._steady(handle, readiness, liveness, probe_now=False)

    async def _steady(
        self, handle: InstanceHandle, readiness: ProbeSpec | None, liveness: ProbeSpec | None, probe_now: bool
    ) -> str:
        """3. steady state: readiness (ready <-> unready) and liveness (restart)."""
        s = self.settings
        period = readiness.period_seconds if readiness else s.ready_probe_s
        fail_limit = readiness.failure_threshold if readiness else 3
        ok_needed = readiness.success_threshold if readiness else 1
        now = time.monotonic()
        next_ready = now if probe_now else now + period
        next_live = now + (liveness.initial_delay_seconds or liveness.period_seconds) if liveness else None
        fails = oks = live_fails = 0
        while True:
            due = min(next_ready, next_live) if next_live is not None else next_ready
            if out := await self._pause(max(0.0, due - time.monotonic())):
                return out
            now = time.monotonic()
            if self._unwritten is not None:  # else the row would keep a stale state for good
                await self._write(*self._unwritten)
            if now >= next_ready:
                next_ready = now + period
                res = await self._race(self.runtime.probe(handle, readiness))
                if isinstance(res, str):
                    return res
                if res.ok:
                    fails, oks = 0, oks + 1
                    if self.state == "unready" and oks >= ok_needed:
                        self.state = "ready"
                        await self._write("ready", "")
                else:
                    fails, oks = fails + 1, 0
                    self.last_probe = res.detail
                    if self.state == "ready" and fails >= fail_limit:
                        self.state = "unready"
                        await self._write("unready", f"health check failed {fails} times: {res.detail}")
            if liveness is not None and next_live is not None and now >= next_live:
                next_live = now + liveness.period_seconds
                res = await self._race(self.runtime.probe(handle, liveness))
                if isinstance(res, str):
                    return res
                live_fails = 0 if res.ok else live_fails + 1
                if live_fails >= liveness.failure_threshold:
                    self.message = f"liveness_check failed {live_fails} times: {res.detail}"
                    return "liveness"

    async def _race(self, probe: Any) -> ProbeResult | str:
        """Run a probe, but return "exited" / "stop" at once if that happens first."""
        assert self._exit is not None and self._stop_wait is not None
        task: asyncio.Future[Any] = asyncio.ensure_future(probe)
        waiting: set[asyncio.Future[Any]] = {task, self._exit, self._stop_wait}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._stop_wait.done():
            task.cancel()
            return "stop"
        if self._exit.done():
            task.cancel()
            return "exited"
        result: ProbeResult = task.result()
        return result

    async def _pause(self, seconds: float) -> str | None:
        assert self._exit is not None and self._stop_wait is not None
        if seconds > 0:
            waiting: set[asyncio.Future[Any]] = {self._exit, self._stop_wait}
            await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        if self._stop_wait.done():
            return "stop"
        if self._exit.done():
            return "exited"
        return None

    async def _finish(self) -> None:
        handle = self.handle
        if handle is not None and self.runtime.exit_code(handle) is None:
            self.state = "stopping"
            await self._write("stopping", "")
            # A deleted service's row is gone already: the gateways drop it on the same schedule.
            await asyncio.sleep(self.settings.drain_s)
            try:
                await self.runtime.stop(handle, self.grace_s)
            except Exception as exc:
                log_failure(log, f"instance {self.id}: stop failed", exc)
        self.state = "stopped"
        try:
            await asyncio.to_thread(self.registry.delete_instance, self.id)
        except Exception as exc:
            log_failure(log, f"instance {self.id}: cannot remove its row", exc)
        self.on_change()

    # -- the store -------------------------------------------------------------------------
    async def _write(self, state: str, message: str, same_state: bool = False) -> None:
        async with self._write_lock:
            await self._write_locked(state, message, same_state)

    async def _write_locked(self, state: str, message: str, same_state: bool = False) -> None:
        handle = self.handle
        key = (state, message, self.restarts, handle.pid if handle else None, self.revision)
        if self.forgotten or key == self._written:
            return
        if self.stop_requested.is_set() and state != "stopping":
            return  # a probe that finished late must not put a draining instance back in routing
        now = time.time()
        record = InstanceRecord(
            id=self.id,
            service=self.service,
            revision=self.revision,
            host=handle.host if handle else "",
            port=handle.port if handle else 0,
            pid=handle.pid if handle else None,
            state=state,
            restarts=self.restarts,
            message=message,
            started_at=handle.started_at if handle else now,
            updated_at=now,
        )
        try:
            await asyncio.to_thread(self.registry.put_instance, record)
            self._written = key
            self._unwritten = None
        except Exception as exc:  # the store away, or fenced while the lease is renewed late
            log_failure(log, f"instance {self.id}: cannot write state {state}", exc)
            self._unwritten = (state, message)  # `_steady` writes it again each probe period
        if same_state:  # the state did not change (a new revision only): routing is as it was
            return
        if state == "ready":
            self.ready_written_at = time.monotonic()
            asyncio.get_running_loop().call_later(self.settings.settle_s, self.on_change)
        else:
            self.ready_written_at = None
        self.on_change()


def _index_of(instance_id: str) -> int:
    """The index in `<service>-<revision>-<index>`, or -1."""
    tail = instance_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class Reconciler:
    def __init__(self, registry: Registry, runtime: Runtime, settings: ReconcilerSettings | None = None):
        self.registry = registry
        self.runtime = runtime
        self.settings = settings or ReconcilerSettings()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._workers: dict[str, list[Worker]] = {}  # service -> workers not asked to stop
        self._stopping: set[Worker] = set()  # asked to stop, task not finished yet
        self._next_index: dict[str, int] = {}
        self._observed: dict[str, int] = {}  # service -> revision its status was computed for

    # -- called by the API -----------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def observed_revision(self, service: str) -> int:
        return self._observed.get(service, 0)

    def retry_failed(self, service: str) -> None:
        """Restart crash-looping instances now, with a fresh backoff."""
        for w in self._workers.get(service, []):
            w.kick()
        self.wake()

    async def forget(self, service: str, wait_s: float | None = None) -> None:
        """The service was deleted: stop its instances without writing to the store, and wait."""
        async with self._lock:
            workers = self._workers.pop(service, [])
            self._observed.pop(service, None)
            for w in workers:
                self._stop_worker(w, forget=True)
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            longest = max(w.grace_s for w in workers) + self.settings.drain_s + 5
            await asyncio.wait(tasks, timeout=wait_s if wait_s is not None else longest)

    # -- server lifecycle ------------------------------------------------------------------
    async def recover(self) -> None:
        """On taking the lead (a server start, a failover): adopt the instances a previous control
        plane left running, replace the rest.

        An instance row is adopted when its service still wants instances, the runtime finds the
        same instance still running (`Runtime.adopt`: same pid and instance id, or the same Ray
        actor), and it was not already failed. It keeps its process, its state in the store (a
        ready one stays in routing) and its restart count; its worker probes it at once. Its row's
        revision says whether it runs the current spec (rows follow restart-free spec changes,
        `Worker.confirm_revision`): if not, it is an old instance of a rolling update and the
        update goes on. Every other row's instance is stopped (`cleanup_stale`) and the row
        removed; the next pass starts what is missing."""
        services = {svc.name: svc for svc in await asyncio.to_thread(self.registry.list_services)}
        adopted: set[str] = set()
        rows = await asyncio.to_thread(self.registry.list_instances)
        for row in rows:
            svc = services.get(row.service)
            worker = await self._adopt(row, svc) if svc is not None else None
            if worker is None:
                if await self.runtime.cleanup_stale(row.id, row.pid, row.service):
                    log.info("stopped instance %s (pid %s) left over from a previous run", row.id, row.pid)
                await asyncio.to_thread(self.registry.delete_instance, row.id)
                continue
            adopted.add(row.service)
            log.info("adopted instance %s (pid %s, %s)", row.id, row.pid, row.state)
        for name in services:
            # ids stay unique: a new instance never takes the id of one that ran before
            used = [_index_of(i) for i in self.runtime.log_instances(name)]
            used += [_index_of(row.id) for row in rows if row.service == name]
            self._next_index[name] = max([self._next_index.get(name, 0), *(i + 1 for i in used if i >= 0)])
        for svc in services.values():
            if svc.desired == "running" and svc.name not in adopted and svc.status != "Waiting":
                await asyncio.to_thread(self.registry.set_status, svc.name, "Waiting", "")

    async def _adopt(self, row: InstanceRecord, svc: ServiceRecord) -> Worker | None:
        """A worker supervising `row`'s instance if it can be adopted (see `recover`), else None."""
        if svc.desired != "running" or row.state not in ("starting", "ready", "unready", "stopping"):
            return None
        try:
            spec = parse_service_spec(svc.spec)
            handle = await self.runtime.adopt(
                row.id, row.service, pid=row.pid, host=row.host, port=row.port, spec=spec
            )
        except Exception as exc:
            log_failure(log, f"instance {row.id}: cannot adopt it", exc)
            return None
        if handle is None:
            return None
        handle.started_at = row.started_at
        # the current spec, when the row says it runs it; otherwise an old revision whose spec
        # is not kept: a fingerprint that matches nothing, so the rolling update replaces it
        current = row.revision == svc.revision
        worker = Worker(
            instance_id=row.id,
            service=row.service,
            index=_index_of(row.id),
            revision=row.revision,
            spec=spec,
            fingerprint=runtime_fingerprint(svc.spec) if current else f"adopted at revision {row.revision}",
            registry=self.registry,
            runtime=self.runtime,
            settings=self.settings,
            on_change=self.wake,
            adopted=handle,
            adopted_state=row.state,
            restarts=row.restarts,
        )
        worker.start()
        if row.state == "stopping":  # it was being drained: finish that
            self._stop_worker(worker)
        else:
            self._workers.setdefault(row.service, []).append(worker)
        return worker

    async def run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self.reconcile_once()
            except Exception as exc:
                log_failure(log, "reconcile pass failed; retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.interval_s)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop every instance (SIGTERM, then SIGKILL after the grace period) and wait."""
        self._closing = True
        self.wake()
        async with self._lock:
            workers = [w for ws in self._workers.values() for w in ws]
            self._workers.clear()
            cap = grace_s if grace_s is not None else self.settings.grace_s
            for w in workers:
                w.grace_s = min(w.grace_s, cap)
                self._stop_worker(w)
        tasks = [w.task for w in self._stopping if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=cap + self.settings.drain_s + 5)

    async def kill_now(self) -> None:
        """Skip what is left of the grace period: SIGKILL every instance being stopped."""
        handles = [w.handle for w in list(self._stopping) if w.handle is not None]
        await asyncio.gather(*(self.runtime.stop(h, 0) for h in handles), return_exceptions=True)

    # -- the pass --------------------------------------------------------------------------
    async def reconcile_once(self) -> None:
        async with self._lock:
            if self._closing:
                return
            services = await asyncio.to_thread(self.registry.list_services)
            names = {s.name for s in services}
            for gone in [n for n in self._workers if n not in names]:
                for w in self._workers.pop(gone):
                    self._stop_worker(w, forget=True)
                self._observed.pop(gone, None)
            for svc in services:
                with contextlib.suppress(NotFound):  # deleted meanwhile
                    await self._reconcile_service(svc)
            await self._collect_orphans()

    async def _collect_orphans(self) -> None:
        """Remove instance rows no worker owns (a write that raced a delete)."""
        owned = {w.id for ws in self._workers.values() for w in ws} | {w.id for w in self._stopping}
        for row in await asyncio.to_thread(self.registry.list_instances):
            if row.id not in owned:
                await asyncio.to_thread(self.registry.delete_instance, row.id)

    def _stop_worker(self, worker: Worker, forget: bool = False) -> None:
        worker.request_stop(forget=forget)
        self._stopping.add(worker)
        if worker.task is not None:

            def done(_task: asyncio.Task[None], w: Worker = worker) -> None:
                self._stopping.discard(w)

            worker.task.add_done_callback(done)
        else:
            self._stopping.discard(worker)

    async def _reconcile_service(self, svc: ServiceRecord) -> None:
        workers = self._workers.setdefault(svc.name, [])
        if svc.desired != "running":
            for w in workers:
                self._stop_worker(w)
            workers.clear()
            await self._set_status(svc, "Stopped", "")
            return
        try:
            spec = parse_service_spec(svc.spec)
        except SpecError as exc:
            await self._set_status(svc, "Failed", f"the stored spec is no longer valid: {exc}")
            return
        desired = spec.metadata.instance
        grace = float(spec.metadata.eas.termination_grace_period)
        for w in workers:
            w.grace_s = grace  # restart-free: applies to instances already running
        fingerprint = runtime_fingerprint(svc.spec)
        current = [w for w in workers if w.fingerprint == fingerprint]
        old = [w for w in workers if w.fingerprint != fingerprint]
        # a restart-free change: the rows of the instances that run it say the new revision
        await asyncio.gather(*(w.confirm_revision(svc.revision) for w in current))

        # Old instances that serve nothing (failed, starting, or new ones of an update that a
        # later modify replaced) go at once; ready ones go as the plan allows, oldest first.
        going = [w for w in old if not w.ready]
        old_ready = sorted((w for w in old if w.ready), key=lambda w: w.index)
        if len(current) > desired:  # scale-down: the not-ready and newest go first
            keep = sorted(current, key=lambda w: (not w.ready, w.index))[:desired]
            going += [w for w in current if w not in keep]
            current = keep
        new_ready = sum(1 for w in current if w.ready)
        strategy = spec.metadata.rolling_strategy
        start_n, stop_n = plan_rollout(
            desired,
            len(old_ready),
            new_ready,
            len(current) - new_ready,
            strategy.surge_for(desired),
            strategy.unavailable_for(desired),
        )
        going += old_ready[:stop_n]
        keep_old = old_ready[stop_n:]
        for w in going:
            self._stop_worker(w)
        # out of routing before anything new starts, so instances never exceed desired + surge
        await asyncio.gather(*(w.announce_stopping() for w in going))
        for _ in range(start_n):
            current.append(self._new_worker(svc, spec, fingerprint))
        self._workers[svc.name] = current + keep_old

        status, message = self._status(svc, desired, current, keep_old)
        await self._set_status(svc, status, message)

    def _new_worker(self, svc: ServiceRecord, spec: ServiceSpec, fingerprint: str) -> Worker:
        index = self._next_index.get(svc.name, 0)
        self._next_index[svc.name] = index + 1
        worker = Worker(
            instance_id=f"{svc.name}-{svc.revision}-{index}",
            service=svc.name,
            index=index,
            revision=svc.revision,
            spec=spec,
            fingerprint=fingerprint,
            registry=self.registry,
            runtime=self.runtime,
            settings=self.settings,
            on_change=self.wake,
        )
        worker.start()
        return worker

    def _status(
        self, svc: ServiceRecord, desired: int, current: list[Worker], old: list[Worker]
    ) -> tuple[str, str]:
        ready_current = sum(1 for w in current if w.ready)
        ready_all = ready_current + sum(1 for w in old if w.ready)
        looping = [w for w in current if w.crash_looping]
        if looping and ready_current < desired:
            return "Failed", self._crash_message(svc.name, looping[0], bool(old))
        if ready_current >= desired and not old:
            return "Running", ""
        progress = f"{ready_current}/{desired} instances ready"
        if old:
            progress += f" (rolling update; {len(old)} of the previous revision still serving)"
        waiting = [w for w in current if not w.ready]
        if waiting:
            w = waiting[0]
            detail = w.last_probe or w.message or w.state
            progress += f"; {w.id}: {detail}"
        if ready_all == 0 and svc.status not in ("Running", "Scaling"):
            return "Waiting", progress
        return "Scaling", progress

    def _crash_message(self, service: str, worker: Worker, old_serving: bool) -> str:
        lines = self.runtime.output_lines(service, worker.id, self.settings.log_lines_in_message)
        text = (
            f"instance {worker.id} exited {worker.failures_before_ready} times without becoming ready "
            f"(last: {worker.last_exit}); it keeps being restarted with backoff. "
        )
        if old_serving:
            text += "The previous revision keeps serving. "
        text += f"Read its log with `openeas logs {service} --instance {worker.id}`"
        if lines:
            text += "; last lines:\n" + "\n".join("  " + line for line in lines)
        return text

    async def _set_status(self, svc: ServiceRecord, status: str, message: str) -> None:
        if (svc.status, svc.message) != (status, message):
            if svc.status != status:
                # A status change is worth a change-feed bump: gateways quote it in 503 messages.
                await asyncio.to_thread(
                    self.registry.update_service, svc.name, status=status, message=message
                )
                log.info("service %s: %s -> %s", svc.name, svc.status, status)
            else:
                await asyncio.to_thread(self.registry.set_status, svc.name, status, message)
        self._observed[svc.name] = svc.revision
