"""A new control plane adopts the instances the previous one left running (reconciler `recover`),
on the in-memory runtime (tests/control/fake_runtime.py): no processes, a real SQLite registry.

A previous control plane is stood for by instances started straight on the fake runtime and
rows written as its reconciler would have written them; then a fresh `Reconciler` recovers.
The real-process versions (kill -9 of `openeas server`, local and Ray; a failover on
PostgreSQL during a rolling update) are tests/control/test_adoption.py and
tests/control/test_failover.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from openeas.control.reconciler import Reconciler
from openeas.spec import parse_service_spec
from openeas.store import InstanceRecord, Registry, sqlite_url
from tests.control.fake_runtime import FakeRuntime
from tests.control.test_reconciler_unit import FAST, Plane, spec


async def left_running(
    registry: Registry, fake: FakeRuntime, service: str, ids: list[str], revision: int, state: str = "ready"
) -> None:
    """Instances a previous control plane started, and their rows."""
    svc_spec = parse_service_spec(registry.get_service(service).spec)
    for instance_id in ids:
        handle = await fake.start(instance_id, service, svc_spec)
        registry.put_instance(
            InstanceRecord(
                id=instance_id,
                service=service,
                revision=revision,
                host=handle.host,
                port=handle.port,
                pid=None,
                state=state,
                restarts=2,
                message="",
                started_at=time.time() - 100,
                updated_at=time.time(),
            )
        )


@asynccontextmanager
async def recovered(registry: Registry, fake: FakeRuntime) -> AsyncIterator[Plane]:
    reconciler = Reconciler(registry, fake, FAST)
    await reconciler.recover()
    task = asyncio.create_task(reconciler.run())
    try:
        yield Plane(registry, fake, reconciler, None)  # type: ignore[arg-type]  # no ops needed
    finally:
        await reconciler.shutdown()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def registry_with(tmp_path: Path, name: str, body: dict[str, Any]) -> Registry:
    registry = Registry(sqlite_url(tmp_path))
    registry.create_schema()
    registry.create_service(name, body, "token", "shared")
    return registry


def test_live_instances_are_adopted_not_restarted_and_stay_in_routing(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime()
        registry = registry_with(tmp_path, "web", spec("web", instance=3))
        await left_running(registry, fake, "web", ["web-1-0", "web-1-7", "web-1-4"], revision=1)
        fake.crash("web-1-7")  # died while no control plane ran (the highest index)
        # a row the previous plane was draining, and one of a service deleted meanwhile
        await left_running(registry, fake, "web", ["web-1-5"], revision=1, state="stopping")
        before = {h.instance_id: h for h in fake.live("web")}
        async with recovered(registry, fake) as plane:
            # adopted at once, still "ready" in the store: the gateways never lost them
            rows = {r.id: r for r in plane.rows("web")}
            assert rows["web-1-0"].state == rows["web-1-4"].state == "ready"
            assert "web-1-7" not in rows
            await plane.running("web", 3)
            live = {h.instance_id: h for h in fake.live("web")}
            assert live["web-1-0"] is before["web-1-0"] and live["web-1-4"] is before["web-1-4"]
            assert set(fake.adoptions) == {"web-1-0", "web-1-4", "web-1-5"}
            # one replacement for the dead one, with an id never used before; the draining one ends
            assert fake.starts.count("web-1-0") == 1 and fake.starts.count("web-1-4") == 1
            new = [i for i in live if i not in before]
            assert new == ["web-1-8"], (new, fake.starts)
            assert "web-1-5" in fake.stops
            rows = {r.id: r for r in plane.rows("web")}
            assert rows["web-1-0"].restarts == 2  # its history came along
            # a scale (restart-free) moves the adopted rows to the new revision: the next
            # control plane knows they run the current spec
            registry.update_service("web", spec={**spec("web", instance=2)})
            await plane.until(
                lambda: {r.revision for r in plane.rows("web")} == {2} and len(plane.rows("web")) == 2,
                "the rows on revision 2",
            )
            assert {h.instance_id for h in fake.live("web")} == {"web-1-0", "web-1-4"}  # newest went

    asyncio.run(scenario())


def test_an_adopted_rolling_update_goes_on_within_its_surge(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeRuntime(probes_before_ready=2)
        rolling = {"max_surge": 1, "max_unavailable": 0}
        registry = registry_with(tmp_path, "api", spec("api", instance=2, rolling_strategy=rolling))
        await left_running(registry, fake, "api", ["api-1-0", "api-1-1"], revision=1)
        # the update: revision 2 changes the container; one new instance had started, not ready
        container = {**spec("api")["containers"][0], "env": [{"name": "V", "value": "2"}]}
        registry.update_service("api", spec={**spec("api", instance=2, rolling_strategy=rolling),
                                             "containers": [container]})  # fmt: skip
        await left_running(registry, fake, "api", ["api-2-2"], revision=2, state="starting")
        samples: list[tuple[int, int]] = []
        async with recovered(registry, fake) as plane:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                rows = plane.rows("api")
                samples.append(
                    (sum(r.state != "stopping" for r in rows), sum(r.state == "ready" for r in rows))
                )
                if (
                    {r.revision for r in rows} == {2}
                    and len(rows) == 2
                    and all(r.state == "ready" for r in rows)
                ):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError(f"the update did not finish: {plane.rows('api')}")
            assert fake.starts.count("api-2-2") == 1  # adopted, not started again
            assert "api-2-2" in fake.adoptions and {"api-1-0", "api-1-1"} <= set(fake.stops)
            assert max(n for n, _ in samples) <= 2 + 1, samples
            assert min(r for _, r in samples) >= 2, samples  # never fewer ready than desired

    asyncio.run(scenario())
