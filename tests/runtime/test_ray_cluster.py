"""The Ray runtime on a real 3-host Ray cluster (network namespaces on one bridge).

Host A (the root namespace, where this test process is the Ray driver) runs the Ray head with no
CPUs, so it hosts no instances; hosts B and C run a Ray worker each, and only C has the custom
resource `pool-x`. One cluster serves the whole module (Ray nodes are heavy on 2 cores); the
node-loss test destroys host C's node, so it comes last.

Measured: where instances land (SPREAD over B and C, a `resource` pin only on C), the Waiting
message of a spec no node can host, that stop and the death of an actor leave no process of the
instance (its group, a plain child and a setsid() escapee), that log tails come back through the
actor and stay readable after the instance ended, and that the loss of a whole node is reported
as the death of the instances it ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from openeas.runtime.base import NotPlaceable
from openeas.runtime.ray import RayHandle, RayRuntime
from openeas.spec import ServiceSpec, parse_service_spec
from tests.cluster.hosts import Host, hosts, run_on
from tests.cluster.ray_nodes import RayCluster, ray_cluster

TREE_APP = Path(__file__).parent / "apps" / "tree.py"

pytestmark = pytest.mark.timeout(600)


class Env:
    def __init__(self, hosts: dict[str, Host], cluster: RayCluster, runtime: RayRuntime):
        self.hosts = hosts
        self.cluster = cluster
        self.runtime = runtime


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    logs = tmp_path_factory.mktemp("ray-instance-logs")
    # host B's Ray runs with a python of its own path (a link to this one): what the node
    # runs processors with must be its python, not the control plane's
    node_python = tmp_path_factory.mktemp("node-b-python") / "python3"
    node_python.symlink_to(sys.executable)
    workers = {"b": {"pool-b": 1.0}, "c": {"pool-x": 1.0}}
    with (
        hosts(("a", "b", "c")) as h,
        ray_cluster(
            h["a"], {h[n]: r for n, r in workers.items()}, pythons={"b": str(node_python)}
        ) as cluster,
    ):
        runtime = RayRuntime(cluster.address, log_root=str(logs), node_address=h["a"].ip)
        try:
            yield Env(h, cluster, runtime)
        finally:
            runtime.close()


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def tree_spec_data(name: str, escape: bool = False, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "instance": 1, **metadata},
        "containers": [
            {
                "command": f"{sys.executable} {TREE_APP}",
                "port": 8000,
                "env": [{"name": "TREE_ESCAPE", "value": "1" if escape else "0"}],
            }
        ],
    }


def tree_spec(name: str, escape: bool = False, **metadata: Any) -> ServiceSpec:
    return parse_service_spec(tree_spec_data(name, escape, **metadata))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def get_json(host: str, port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as resp:
        return dict(json.loads(resp.read()))


async def ready(runtime: RayRuntime, handle: RayHandle, timeout: float = 60) -> dict[str, Any]:
    """Wait for the instance's TCP probe (through its actor), then ask it who it is."""
    deadline = time.monotonic() + timeout
    detail = ""
    while time.monotonic() < deadline:
        res = await runtime.probe(handle, None)
        if res.ok:
            return await asyncio.to_thread(get_json, handle.host, handle.port)
        detail = res.detail
        await asyncio.sleep(0.2)
    raise AssertionError(f"{handle.instance_id} not ready after {timeout} s: {detail}")


def tree_pids(handle: RayHandle, info: dict[str, Any]) -> list[int]:
    return [handle.keeper_pid, int(info["pid"]), *[int(c) for c in info["children"]]]


async def gone(pids: list[int], pgid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids) and not group_members(pgid):
            return
        await asyncio.sleep(0.1)
    left = [p for p in pids if alive(p)] + group_members(pgid)
    raise AssertionError(f"processes of the instance still alive after {timeout} s: {left}")


def test_instances_spread_over_workers_and_stop_leaves_nothing(env: Env) -> None:
    b, c = env.hosts["b"].ip, env.hosts["c"].ip

    async def main() -> None:
        spec = tree_spec("spread", escape=True, cpu=0.5)
        handles = await asyncio.gather(*(env.runtime.start(f"spread-{i}", "spread", spec) for i in range(4)))
        infos = [await ready(env.runtime, h) for h in handles]
        nodes = sorted(h.node for h in handles)
        assert sorted(info["host"] for info in infos) == nodes  # the node's address is where it listens
        assert set(nodes) == {b, c}, nodes
        assert nodes.count(b) == 2 and nodes.count(c) == 2, f"SPREAD placed 4 instances as {nodes}"
        assert env.hosts["a"].ip not in nodes  # the head has no CPUs: no instances
        lines = env.runtime.read_log("spread", "spread-0", 20)
        assert any("tree up on" in line for line in lines), lines
        pids = [tree_pids(h, i) for h, i in zip(handles, infos, strict=True)]
        assert all(alive(p) for group in pids for p in group)
        codes = await asyncio.gather(*(env.runtime.stop(h, 5.0) for h in handles))
        # the /bin/sh wrapping the command dies of the SIGTERM itself (as with the local runtime)
        assert set(codes) <= {0, -signal.SIGTERM}, codes
        for h, group in zip(handles, pids, strict=True):
            await gone(group, h.pid or 0)
            await gone([h.actor_pid], -1)  # the actor's worker ends with its instance
        # the log outlives the instance, read back from what the runtime kept
        kept = env.runtime.read_log("spread", "spread-0", 50)
        assert any("tree up on" in line for line in kept) and any("spread-0 exited:" in line for line in kept)
        assert set(env.runtime.log_instances("spread")) == {f"spread-{i}" for i in range(4)}

    run(main)


def test_resource_pin_lands_only_on_the_node_that_has_it(env: Env) -> None:
    async def main() -> None:
        spec = tree_spec("pinned", resource="pool-x")
        handles = await asyncio.gather(*(env.runtime.start(f"pinned-{i}", "pinned", spec) for i in range(3)))
        try:
            assert {h.node for h in handles} == {env.hosts["c"].ip}
            for h in handles:
                assert (await ready(env.runtime, h))["host"] == env.hosts["c"].ip
            # reachable across hosts: from host B (where a gateway replica would run) to C
            out = run_on(env.hosts["b"], "curl", "-sS", "--max-time", "10", f"http://{h.host}:{h.port}/")
            assert out.returncode == 0 and json.loads(out.stdout)["host"] == env.hosts["c"].ip, out.stderr
        finally:
            await asyncio.gather(*(env.runtime.stop(h, 2.0) for h in handles))

    run(main)


def test_a_spec_no_node_can_host_is_not_placeable_with_what_is_missing(env: Env) -> None:
    async def main() -> None:
        with pytest.raises(NotPlaceable) as gpu:
            await env.runtime.start("gpu-0", "gpu", tree_spec("gpu", gpu=1))
        assert str(gpu.value) == "needs gpu: 1; no node has it"
        with pytest.raises(NotPlaceable) as pool:
            await env.runtime.start("pool-0", "pool", tree_spec("pool", resource="pool-y"))
        assert str(pool.value) == "needs resource: pool-y; no node has it"
        with pytest.raises(NotPlaceable) as big:
            await env.runtime.start("big-0", "big", tree_spec("big", cpu=8))
        assert str(big.value) == "needs cpu: 8; no node has it"
        assert env.runtime.placement_problem(tree_spec("fits", cpu=2, resource="pool-x")) is None

    run(main)


def test_actor_death_kills_every_process_of_the_instance(env: Env) -> None:
    async def main() -> None:
        handle = await env.runtime.start("orphan-0", "orphan", tree_spec("orphan", escape=True))
        info = await ready(env.runtime, handle)
        pids = tree_pids(handle, info)
        assert len(pids) == 4 and all(alive(p) for p in pids)  # keeper, leader, child, escapee
        escapee = int(info["children"][1])
        assert os.getsid(escapee) != os.getsid(int(info["pid"]))  # it really left the session
        os.kill(handle.actor_pid, signal.SIGKILL)  # what the OOM killer or a crash does
        code = await asyncio.wait_for(env.runtime.wait(handle), 60)
        assert code == -signal.SIGKILL
        assert "Ray actor was lost" in env.runtime.describe_exit(handle, code)
        await gone(pids, handle.pid or 0)
        # stop after the death is harmless and says the same
        assert await env.runtime.stop(handle, 1.0) == -signal.SIGKILL

    run(main)


def test_cleanup_stale_finds_an_instance_by_id_after_a_restart(env: Env) -> None:
    """A restarted control plane only knows the instance id from the store: that is enough."""

    async def main() -> None:
        handle = await env.runtime.start("stale-0", "stale", tree_spec("stale"))
        info = await ready(env.runtime, handle)
        pids = tree_pids(handle, info)
        assert await env.runtime.cleanup_stale("stale-0", None) is True
        await gone(pids, handle.pid or 0)
        assert await env.runtime.cleanup_stale("stale-0", None) is False  # nothing left to find

    run(main)


def test_a_builtin_processor_runs_on_the_node_and_listens_on_its_address(env: Env, tmp_path: Path) -> None:
    """The processor command is made on the node (its python, `--host $HOST`), not on host A."""
    from tests.processors.models import fit_classifier, save_joblib

    model = save_joblib(fit_classifier(), tmp_path / "model.joblib")
    spec = parse_service_spec(
        {
            "metadata": {"name": "proc", "instance": 1, "resource": "pool-b"},
            "processor": "sklearn",
            "model_path": str(model),
        }
    )

    async def main() -> None:
        handle = await env.runtime.start("proc-0", "proc", spec)
        try:
            assert handle.node == env.hosts["b"].ip
            deadline = time.monotonic() + 90
            while not (await env.runtime.probe(handle, None)).ok:
                assert time.monotonic() < deadline, env.runtime.read_log("proc", "proc-0", 30)
                await asyncio.sleep(0.3)
            rows = [[0, 0, 0, 0], [4, 4, 0, 0], [0, 4, 4, 4]]
            body = json.dumps({"inputs": {"input": rows}}).encode()
            url = f"http://{handle.host}:{handle.port}/"
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=20) as resp:
                assert json.loads(resp.read())["outputs"]["label"] == [0, 1, 2]
            started = "\n".join(env.runtime.read_log("proc", "proc-0", 200))
            assert '--host "$HOST"' in started
            # B's python (its own path), not the one of this control plane
            assert "node-b-python" in started and sys.executable not in started, started
        finally:
            await env.runtime.stop(handle, 5.0)

    run(main)


# A control plane that starts an instance and exits (its Ray driver goes with it).
ONE_SHOT_DRIVER = """
import asyncio, json, sys
from openeas.runtime.ray import RayRuntime
from openeas.spec import parse_service_spec

async def main() -> None:
    runtime = RayRuntime(sys.argv[1], log_root=sys.argv[3], node_address=sys.argv[2])
    handle = await runtime.start("adopted-0", "adopted", parse_service_spec(json.loads(sys.argv[4])))
    print(json.dumps({"pid": handle.pid, "node": handle.node, "port": handle.port}), flush=True)

asyncio.run(main())
"""


def test_instances_outlive_their_control_plane_and_are_adopted_by_the_next(env: Env) -> None:
    log_root = str(Path(env.runtime.log_root))
    started = subprocess.run(
        [sys.executable, "-c", ONE_SHOT_DRIVER, env.cluster.address, env.hosts["a"].ip, log_root,
         json.dumps(tree_spec_data("adopted"))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    first = json.loads(started.stdout.strip().splitlines()[-1])

    async def main() -> None:
        assert alive(first["pid"])  # the driver that started it is gone; the instance is not
        handle = await env.runtime.adopt("adopted-0")
        assert handle is not None
        assert (handle.pid, handle.node, handle.port) == (first["pid"], first["node"], first["port"])
        info = await ready(env.runtime, handle)
        # the same process tree answers (the app under the first leader), not a restarted one
        app = int(info["pid"])
        assert app == first["pid"] or Path(f"/proc/{app}/stat").read_text().rsplit(")", 1)[1].split()[
            1
        ] == str(first["pid"])
        assert any("tree up on" in line for line in env.runtime.read_log("adopted", "adopted-0", 10))
        pids = tree_pids(handle, info)
        await env.runtime.stop(handle, 2.0)
        await gone(pids, first["pid"])
        assert await env.runtime.adopt("adopted-0") is None  # stopped: nothing to adopt
        assert await env.runtime.adopt("never-started") is None

    run(main)


def test_node_loss_reports_its_instances_dead(env: Env) -> None:
    """Every Ray process on host C is SIGKILLed (last test: host C's node stays dead)."""
    c = env.hosts["c"]

    async def main() -> None:
        handles = await asyncio.gather(
            *(env.runtime.start(f"lost-{i}", "lost", tree_spec("lost", resource="pool-x")) for i in range(2))
        )
        infos = [await ready(env.runtime, h) for h in handles]
        assert {h.node for h in handles} == {c.ip}
        ray_pids = env.cluster.ray_pids(c)
        assert ray_pids, "no Ray process found on host C"
        started = time.monotonic()
        for pid in ray_pids:
            os.kill(pid, signal.SIGKILL)
        codes = await asyncio.wait_for(asyncio.gather(*(env.runtime.wait(h) for h in handles)), 90)
        assert codes == [-signal.SIGKILL, -signal.SIGKILL]
        took = time.monotonic() - started
        print(f"node loss seen by the runtime after {took:.1f} s")
        assert took < 60, f"the runtime took {took:.0f} s (over 60 s) to see the node loss"
        for h, info in zip(handles, infos, strict=True):
            assert "Ray actor was lost" in env.runtime.describe_exit(h, -signal.SIGKILL)
            await gone(tree_pids(h, info), h.pid or 0)  # the keepers cleaned up on the lost node
        # once Ray has marked C dead (missed heartbeats), what only C could host says so
        spec = tree_spec("lost", resource="pool-x")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and env.runtime.placement_problem(spec) is None:
            await asyncio.sleep(1)
        with pytest.raises(NotPlaceable, match="needs resource: pool-x; no node has it"):
            await env.runtime.start("lost-9", "lost", spec)

    run(main)
