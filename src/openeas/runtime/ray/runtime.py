"""The Ray runtime: every instance is one Ray actor on whichever node Ray placed it.

The control plane (the Ray driver) asks Ray for an `InstanceActor` with the instance's resources
(openeas.runtime.ray.placement) and the SPREAD strategy, so instances of one service land on
different nodes when they can. The actor starts the instance on its node and reports the node's
address and port; probes, log tails and stop go through the actor.

Actors are named (`openeas-instance-<id>` in Ray namespace `openeas`) and detached: they do not
die with the driver, so a restarted control plane can find an instance again by its id
(`adopt` re-attaches to it; `cleanup_stale` stops one that is not wanted any more).

An actor that dies (its worker killed, its node lost) ends its instance: the keeper on the node
kills the instance's processes, and here `wait` returns -SIGKILL with `describe_exit` saying the
actor was lost, so the reconciler replaces the instance like any other that exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from openeas.runtime.base import (
    DEFAULT_GRACE_S,
    MARK,
    InstanceHandle,
    NotPlaceable,
    ProbeResult,
    Runtime,
    describe_exit,
)
from openeas.runtime.ray.actor import InstanceActor
from openeas.runtime.ray.placement import needs_of, unplaceable_reason
from openeas.spec import ServiceSpec
from openeas.spec.service import ProbeSpec

NAMESPACE = "openeas"
DEFAULT_LOG_ROOT = "/tmp/openeas-ray/logs"  # on each node
KEPT_TAILS = 64  # ended instances whose last log lines stay readable here
TAIL_LINES = 500
CALL_TIMEOUT_S = 30.0  # an actor call that takes longer than this: the node is in trouble
LOG_TIMEOUT_S = 5.0  # read_log is synchronous (the Runtime interface): it must not stall a caller long


def actor_name(instance_id: str) -> str:
    return f"openeas-instance-{instance_id}"


class RayHandle(InstanceHandle):
    def __init__(self, instance_id: str, service: str, info: dict[str, Any], actor: Any, started_at: float):
        super().__init__(
            instance_id, service, str(info["host"]), int(info["port"]), int(info["pid"]), started_at
        )
        self.actor = actor
        self.node = str(info["host"])  # the node's cluster address
        self.keeper_pid = int(info["keeper_pid"])
        self.actor_pid = int(info["actor_pid"])
        self.log_file = Path(str(info["log_path"]))  # on the node
        self.exited: asyncio.Task[int] | None = None
        self.lost: str | None = None  # why the actor died, when it died under the instance


class RayRuntime(Runtime):
    """Instances as Ray actors. `address` is the Ray cluster (HOST:PORT of its GCS), or None to
    use the cluster this process is already connected to. `node_address` is this machine's
    address in the cluster (Ray's `--node-ip-address` of the node the control plane runs on), when
    Ray would guess another one."""

    def __init__(
        self,
        address: str | None,
        log_root: str = DEFAULT_LOG_ROOT,
        connect: bool = True,
        node_address: str | None = None,
    ):
        import ray

        self.address = address
        self.log_root = log_root
        self._connected_here = False
        if connect and not ray.is_initialized():
            # ray.init installs SIGTERM/SIGINT handlers that exit at once with the signal number;
            # the process that connects (openeas server) stops its gateways and instances on those
            # signals itself, so its own handlers are put back afterwards.
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            ray.init(
                address=address,
                namespace=NAMESPACE,
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=False,
                _node_ip_address=node_address,
            )
            for sig, handler in handlers.items():
                if handler is not None:
                    with contextlib.suppress(ValueError):  # not the main thread: Ray set none
                        signal.signal(sig, handler)
            self._connected_here = True
        self._actor_class: Any = ray.remote(InstanceActor)
        self._live: dict[tuple[str, str], RayHandle] = {}
        self._ended: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self._started: dict[tuple[str, str], float] = {}

    def close(self) -> None:
        """Disconnect from Ray (when this runtime connected). Detached actors keep running."""
        import ray

        if self._connected_here and ray.is_initialized():
            ray.shutdown()
            self._connected_here = False

    # -- placement -------------------------------------------------------------------------
    @staticmethod
    def node_totals() -> list[dict[str, float]]:
        """Total resources of every live node."""
        import ray

        nodes: Any = ray.nodes  # untyped
        return [dict(node["Resources"]) for node in nodes() if node.get("Alive")]

    def placement_problem(self, spec: ServiceSpec) -> str | None:
        """None when some node can host an instance of `spec`, else what is missing."""
        return unplaceable_reason(needs_of(spec), self.node_totals())

    # -- start -----------------------------------------------------------------------------
    async def start(
        self, instance_id: str, service: str, spec: ServiceSpec, port: int | None = None
    ) -> RayHandle:
        import ray

        needs = needs_of(spec)
        problem = unplaceable_reason(needs, self.node_totals())
        if problem:
            raise NotPlaceable(problem)
        actor = self._actor_class.options(
            name=actor_name(instance_id),
            namespace=NAMESPACE,
            lifetime="detached",  # a control-plane restart must not take the instances with it
            scheduling_strategy="SPREAD",
            max_restarts=0,  # the reconciler, not Ray, decides about replacements
            max_concurrency=64,
            **needs.ray_options(),
        ).remote(instance_id, service, spec, self.log_root, port)
        try:
            info = await actor.start.remote()
        except ray.exceptions.RayError as exc:
            with contextlib.suppress(Exception):
                ray.kill(actor)
            raise RuntimeError(f"instance {instance_id} did not start on Ray: {_first_line(exc)}") from None
        handle = RayHandle(instance_id, service, info, actor, time.time())
        handle.exited = asyncio.ensure_future(self._watch(handle))
        key = (service, instance_id)
        self._live[key] = handle
        self._started[key] = handle.started_at
        return handle

    async def adopt(
        self,
        instance_id: str,
        service: str | None = None,
        *,
        pid: int | None = None,
        host: str = "",
        port: int = 0,
        spec: ServiceSpec | None = None,  # its limits are Ray resources, held by the actor
    ) -> RayHandle | None:
        """Re-attach to instance `instance_id` when its actor still runs (a control plane that
        restarted knows only the ids from the store); None when it is gone or not started, or
        runs another service than `service`. The actor, not the store row, says where it runs
        (`pid`, `host`, `port` are not needed)."""
        import ray

        try:
            actor = ray.get_actor(actor_name(instance_id), namespace=NAMESPACE)
            info: dict[str, Any] = await asyncio.wait_for(actor.info.remote(), CALL_TIMEOUT_S)
        except (ValueError, ray.exceptions.RayError, TimeoutError):
            return None
        if not info or (service is not None and info.get("service") != service):
            return None
        handle = RayHandle(instance_id, str(info["service"]), info, actor, time.time())
        handle.exited = asyncio.ensure_future(self._watch(handle))
        key = (handle.service, instance_id)
        self._live[key] = handle
        self._started[key] = handle.started_at
        return handle

    async def _watch(self, handle: RayHandle) -> int:
        import ray

        try:
            code = int(await handle.actor.wait_exit.remote())
        except ray.exceptions.RayError as exc:
            handle.lost = f"its Ray actor was lost (worker or node died): {_first_line(exc)}"
            code = -int(signal.SIGKILL)
            # Until Ray declares a lost node dead (missed heartbeats, ~20 s) the actor keeps its
            # name, and the replacement, which takes the same name, could not start. Killing it
            # frees the name now; what ran under it is gone or being ended by its keeper.
            with contextlib.suppress(Exception):
                ray.kill(handle.actor, no_restart=True)
        await self._keep_tail(handle)
        return code

    async def _keep_tail(self, handle: RayHandle) -> None:
        import ray

        key = (handle.service, handle.instance_id)
        lines: list[str] = self._ended.get(key, [])
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            lines = list(await asyncio.wait_for(handle.actor.read_log.remote(TAIL_LINES), CALL_TIMEOUT_S))
        if handle.lost:
            lines.append(f"{MARK} {handle.instance_id} ended: {handle.lost}")
        self._ended[key] = lines
        self._ended.move_to_end(key)
        while len(self._ended) > KEPT_TAILS:
            old, _ = self._ended.popitem(last=False)
            if old not in self._live:
                self._started.pop(old, None)

    # -- watch -----------------------------------------------------------------------------
    @staticmethod
    def _ray(handle: InstanceHandle) -> RayHandle:
        if not isinstance(handle, RayHandle) or handle.exited is None:
            raise TypeError(f"{handle!r} was not started by the Ray runtime")
        return handle

    async def wait(self, handle: InstanceHandle) -> int:
        task = self._ray(handle).exited
        assert task is not None
        return await asyncio.shield(task)

    def exit_code(self, handle: InstanceHandle) -> int | None:
        task = self._ray(handle).exited
        assert task is not None
        return task.result() if task.done() else None

    def describe_exit(self, handle: InstanceHandle, code: int) -> str:
        lost = self._ray(handle).lost
        return lost if lost else describe_exit(code)

    async def probe(self, handle: InstanceHandle, probe: ProbeSpec | None) -> ProbeResult:
        import ray

        ray_handle = self._ray(handle)
        timeout = probe.timeout_seconds if probe else 1.0
        kind, path = ("http", probe.http_get.path) if probe is not None and probe.http_get else ("tcp", "")
        try:
            ok, detail = await asyncio.wait_for(
                ray_handle.actor.probe.remote(kind, path, float(timeout)), timeout + CALL_TIMEOUT_S
            )
        except ray.exceptions.RayError as exc:
            return ProbeResult(False, f"the instance's Ray actor did not answer: {_first_line(exc)}")
        except TimeoutError:
            return ProbeResult(False, f"the instance's Ray actor did not answer in {CALL_TIMEOUT_S:.0f} s")
        return ProbeResult(bool(ok), str(detail))

    # -- stop ------------------------------------------------------------------------------
    async def stop(self, handle: InstanceHandle, grace_s: float = DEFAULT_GRACE_S) -> int:
        import ray

        ray_handle = self._ray(handle)
        task = ray_handle.exited
        assert task is not None
        if not task.done():
            with contextlib.suppress(ray.exceptions.RayError):
                await ray_handle.actor.stop.remote(grace_s)
        code = await asyncio.shield(task)
        with contextlib.suppress(Exception):
            ray.kill(ray_handle.actor, no_restart=True)  # the instance is gone: its actor ends
        self._live.pop((handle.service, handle.instance_id), None)
        return code

    async def cleanup_stale(self, instance_id: str, pid: int | None, service: str = "") -> bool:
        """Stop the actor (and so the instance) a previous control plane left running."""
        import ray

        try:
            actor = ray.get_actor(actor_name(instance_id), namespace=NAMESPACE)
        except ValueError:
            return False
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            await asyncio.wait_for(actor.stop.remote(3.0), CALL_TIMEOUT_S)
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
        return True

    # -- logs ------------------------------------------------------------------------------
    def log_path(self, service: str, instance_id: str) -> Path:
        """Where the log is on the node that runs (ran) the instance; read it with read_log."""
        handle = self._live.get((service, instance_id))
        return handle.log_file if handle else Path(self.log_root) / service / f"{instance_id}.log"

    def read_log(self, service: str, instance_id: str, tail: int) -> list[str]:
        import ray

        key = (service, instance_id)
        handle = self._live.get(key)
        if handle is not None and handle.exited is not None and not handle.exited.done():
            with contextlib.suppress(ray.exceptions.RayError):
                lines = ray.get(handle.actor.read_log.remote(tail), timeout=LOG_TIMEOUT_S)
                return [str(line) for line in lines]
        kept = self._ended.get(key, [])
        return kept[-tail:] if tail > 0 else []

    def log_instances(self, service: str) -> list[str]:
        ids = [(at, iid) for (svc, iid), at in self._started.items() if svc == service]
        return [iid for _, iid in sorted(ids, reverse=True)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
