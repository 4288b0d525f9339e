"""The reconciler and the service layer on an in-memory runtime (tests/control/fake_runtime.py).

No process, no HTTP: a real SQLite registry, `ControlOps` for the changes a user makes, the
real `Reconciler` loop, and a fake runtime that records what it was asked to start, probe and
stop. Each test runs in well under a second on an idle machine; the waits are bounded by
`until` (10 s) so a loaded machine only makes them slower.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from openeas.config import ServerConfig
from openeas.control.context import ControlContext
from openeas.control.errors import ConflictError, NotFoundError
from openeas.control.gateways import GatewayManager
from openeas.control.ops import ControlOps
from openeas.control.reconciler import Reconciler, ReconcilerSettings
from openeas.spec import SpecError, shared_gateway_spec
from openeas.store import InstanceRecord, Registry, sqlite_url
from openeas.store.leases import FencedRegistry, try_lead
from tests.control.fake_runtime import FakeRuntime

FAST = ReconcilerSettings(
    interval_s=0.05,
    startup_probe_s=0.01,
    ready_probe_s=0.05,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    crash_loop_failures=3,
    grace_s=0.5,
    drain_s=0.01,
    settle_s=0.01,
)


@dataclass
class Plane:
    registry: Registry
    runtime: FakeRuntime
    reconciler: Reconciler
    ops: ControlOps

    def rows(self, service: str) -> list[InstanceRecord]:
        return self.registry.list_instances(service)

    async def until(self, check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await asyncio.to_thread(check)
            if last:
                return last
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")

    async def running(self, service: str, count: int) -> None:
        def check() -> bool:
            svc = self.registry.get_service(service)
            ready = [r for r in self.rows(service) if r.state == "ready"]
            return (
                svc.status == "Running" and len(ready) == count and len(self.runtime.live(service)) == count
            )

        await self.until(check, f"{service} Running with {count} ready instance(s)")


@asynccontextmanager
async def control_plane(
    tmp_path: Path, runtime: FakeRuntime | None = None, fence: Callable[[], int | None] | None = None
) -> AsyncIterator[Plane]:
    """`fence`: the reconciler writes as a leader holding that fencing token (None: not leading)."""
    registry = Registry(sqlite_url(tmp_path))
    registry.create_schema()
    registry.put_gateway("shared", shared_gateway_spec("127.0.0.1:0", "127.0.0.1:0", "", "").to_json())
    fake = runtime or FakeRuntime()
    reconciler = Reconciler(FencedRegistry(registry, fence) if fence else registry, fake, FAST)
    gateways = GatewayManager(registry, sqlite_url(tmp_path), tmp_path / "logs")
    ctx = ControlContext(ServerConfig(data_dir=tmp_path), registry, reconciler, fake, "admin", gateways)
    task = asyncio.create_task(reconciler.run())
    try:
        yield Plane(registry, fake, reconciler, ControlOps(ctx))
    finally:
        await reconciler.shutdown()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        registry.close()


def spec(name: str, instance: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "instance": instance, **metadata},
        "containers": [{"command": "serve --port $PORT", "port": 8000}],
    }


def test_create_starts_probes_and_reaches_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime(probes_before_ready=3)
        async with control_plane(tmp_path, fake) as plane:
            svc = await plane.ops.services.create(spec("svc", instance=2))
            assert svc.status == "Waiting" and svc.desired == "running"
            await plane.running("svc", 2)
            # each instance was probed until its probes passed, then written ready
            assert sorted(fake.starts) == ["svc-1-0", "svc-1-1"]
            assert all(h.probes > 3 for h in fake.live("svc"))
            rows = plane.rows("svc")
            assert {r.port for r in rows} == {h.port for h in fake.live("svc")}
            assert plane.reconciler.observed_revision("svc") == 1
            details = await plane.ops.services.describe("svc")
            assert len(details.instances) == 2 and details.observed_revision == 1
            with pytest.raises(ConflictError) as exc:
                await plane.ops.services.create(spec("svc"))
            assert exc.value.code == "ServiceAlreadyExists"

    asyncio.run(scenario())


def test_not_ready_instance_keeps_service_waiting_with_the_probe_in_the_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime()
        fake.unhealthy.add("slow-1-0")
        async with control_plane(tmp_path, fake) as plane:
            await plane.ops.services.create(spec("slow"))
            svc = await plane.until(
                lambda: "fake probe" in (s := plane.registry.get_service("slow")).message and s,
                "the failing probe in the status message",
            )
            assert svc.status == "Waiting"
            assert "0/1 instances ready" in svc.message and "fake probe" in svc.message
            fake.unhealthy.clear()
            await plane.running("slow", 1)

    asyncio.run(scenario())


def test_scale_up_and_down(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as plane:
            fake = plane.runtime
            await plane.ops.services.create(spec("web"))
            await plane.running("web", 1)
            first = fake.live("web")[0].instance_id
            svc = await plane.ops.services.scale("web", 3)
            assert svc.revision == 2
            await plane.running("web", 3)
            assert first in {h.instance_id for h in fake.live("web")}  # scale-up restarts nothing
            # a count change makes no new version (same spec otherwise)
            assert [v.version for v in await asyncio.to_thread(plane.registry.list_versions, "web")] == [1]
            await plane.ops.services.scale("web", 1)
            await plane.running("web", 1)
            assert [h.instance_id for h in fake.live("web")] == [first]  # the newest went first
            assert len(fake.stops) == 2 and first not in fake.stops
            await plane.until(lambda: len(plane.rows("web")) == 1, "the stopped instances' rows gone")

    asyncio.run(scenario())


def test_rolling_update_keeps_within_surge_and_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime(probes_before_ready=2)
        async with control_plane(tmp_path, fake) as plane:
            rolling = {"max_surge": 1, "max_unavailable": 0}
            await plane.ops.services.create(spec("api", instance=3, rolling_strategy=rolling))
            await plane.running("api", 3)
            old = {h.instance_id for h in fake.live("api")}
            samples: list[tuple[int, int]] = []  # (instances not stopping, ready) over time
            done = asyncio.Event()

            async def sample() -> None:
                while not done.is_set():
                    rows = await asyncio.to_thread(plane.rows, "api")
                    samples.append(
                        (sum(r.state != "stopping" for r in rows), sum(r.state == "ready" for r in rows))
                    )
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            container = {**spec("api")["containers"][0], "env": [{"name": "V", "value": "2"}]}
            svc = await plane.ops.services.modify("api", {"containers": [container]}, [])
            assert svc.revision == 2
            await plane.until(
                lambda: (
                    {r.revision for r in plane.rows("api")} == {2}
                    and len(plane.rows("api")) == 3
                    and plane.registry.get_service("api").status == "Running"
                ),
                "all instances on revision 2",
            )
            done.set()
            await sampler
            new = {h.instance_id for h in fake.live("api")}
            assert not new & old and set(fake.stops) >= old
            assert len(samples) > 10
            assert max(n for n, _ in samples) == 3 + 1, samples  # desired + max_surge, used
            assert min(r for _, r in samples) >= 3, samples  # desired - max_unavailable
            assert all(h.spec.containers[0].env[0].value == "2" for h in fake.live("api"))

    asyncio.run(scenario())


def test_an_instance_that_dies_is_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as plane:
            fake = plane.runtime
            await plane.ops.services.create(spec("crashy", instance=2))
            await plane.running("crashy", 2)
            victim = fake.live("crashy")[0]
            fake.crash(victim.instance_id, code=3)
            # out of routing at once, then restarted after the backoff
            await plane.until(
                lambda: any(r.id == victim.instance_id and r.state == "failed" for r in plane.rows("crashy")),
                "the crashed instance's row failed",
            )
            failed = next(r for r in plane.rows("crashy") if r.id == victim.instance_id)
            assert "exit code 3" in failed.message
            await plane.running("crashy", 2)
            assert fake.starts.count(victim.instance_id) == 2
            assert fake.handles[victim.instance_id] is not victim
            row = next(r for r in plane.rows("crashy") if r.id == victim.instance_id)
            assert row.restarts == 1

    asyncio.run(scenario())


def test_crash_loop_fails_the_service_with_the_instances_own_output(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime()
        fake.unhealthy.add("bad-1-0")
        async with control_plane(tmp_path, fake) as plane:
            await plane.ops.services.create(spec("bad"))
            for _ in range(FAST.crash_loop_failures):
                await plane.until(lambda: fake.live("bad"), "an instance of bad")
                fake.crash("bad-1-0", code=2, output="ImportError: no module named model")
                await plane.until(lambda: not fake.live("bad") or None, "the crash noticed")
            svc = await plane.until(
                lambda: (s := plane.registry.get_service("bad")).status == "Failed" and s, "status Failed"
            )
            assert "exited 3 times without becoming ready" in svc.message
            assert "ImportError: no module named model" in svc.message
            assert "[openeas]" not in svc.message  # the runtime's own log lines are left out

    asyncio.run(scenario())


def test_stop_start_and_delete_stop_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as plane:
            fake = plane.runtime
            await plane.ops.services.create(spec("a", instance=2))
            await plane.ops.services.create(spec("b", instance=1))
            await plane.running("a", 2)
            await plane.running("b", 1)
            svc = await plane.ops.services.stop("a")
            assert svc.status == "Stopped" and svc.desired == "stopped"
            await plane.until(lambda: not fake.live("a") and not plane.rows("a"), "a's instances stopped")
            assert len(fake.live("b")) == 1  # the other service is untouched
            await plane.ops.services.start("a")
            await plane.running("a", 2)
            await plane.ops.services.delete("a")
            assert not fake.live("a")  # delete waits for the instances to stop
            with pytest.raises(NotFoundError):
                await plane.ops.services.get("a")
            await plane.until(lambda: not plane.rows("a"), "a's rows gone")
        # shutting the control plane down stops the rest
        assert not fake.live()

    asyncio.run(scenario())


def test_bad_changes_raise_domain_errors_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as plane:
            await plane.ops.services.create(spec("x"))
            with pytest.raises(SpecError) as bad:
                await plane.ops.services.modify("x", {"metadata": {"name": "y"}}, [])
            assert bad.value.to_json()["problems"][0]["field"] == "metadata.name"
            with pytest.raises(SpecError) as unbound:
                await plane.ops.services.modify("x", {}, ["networking.gateway=nope"])
            assert "gateway 'nope' does not exist" in str(unbound.value.to_json())
            with pytest.raises(NotFoundError) as missing:
                await plane.ops.services.rollback("x", 7)
            assert missing.value.code == "VersionNotFound" and missing.value.extra["versions"] == [1]
            assert (await plane.ops.services.get("x")).revision == 1

    asyncio.run(scenario())


def test_a_state_write_refused_while_fenced_is_written_once_the_lease_is_back(tmp_path: Path) -> None:
    """A lease renewed late (a starved CPU) fences the leader's writes for a moment: an instance
    that became ready meanwhile must not keep its `starting` row (out of routing) for good."""

    async def scenario() -> None:
        token: list[int | None] = [None]
        fake = FakeRuntime(probes_before_ready=30)
        async with control_plane(tmp_path, fake, fence=lambda: token[0]) as plane:
            token[0] = try_lead(plane.registry, "single-server", 60.0)
            await plane.ops.services.create(spec("svc"))
            await plane.until(lambda: [r for r in plane.rows("svc") if r.state == "starting"], "starting")
            token[0] = None  # the lease lapses: every write of the reconciler is refused
            await plane.until(lambda: [h for h in fake.live("svc") if h.probes > 32], "probed ready")
            await asyncio.sleep(0.3)  # several probe periods of the ready instance, all fenced
            assert [r.state for r in plane.rows("svc")] == ["starting"]
            token[0] = try_lead(plane.registry, "single-server", 60.0)  # the lease back
            await plane.until(lambda: [r for r in plane.rows("svc") if r.state == "ready"], "row ready")

    asyncio.run(scenario())
