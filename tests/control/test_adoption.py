"""`kill -9` of `openeas server` and a restart under load: the new server adopts what runs.

Real processes: `openeas server` (embedded default: SQLite, local runtime; and `--runtime ray` on
a one-node Ray cluster), its shared gateway and two instances of tests/e2e/apps/graceful.py,
which appends `P <pid>` to its trace file each time an instance process starts. 50 requests a
second go through the gateway while the server is SIGKILLed and started again on the same data
dir and gateway ports.

Measured: every request answered 200 (none failed, none missing); every instance kept its id
and its process (one `P` line per instance in the trace: none was started twice; same pid in the
store; on Ray the same actor id); the gateways kept their processes (same pids: the shared one,
and locally a dedicated one too); the new server's log says it adopted them; locally, a
dedicated gateway whose record was deleted while no server ran is stopped by the new server.
Then a clean stop of the new server leaves no instance or gateway process.

The two-server version (failover on PostgreSQL during a rolling update) is in
tests/control/test_failover.py; the reconciler's adoption rules on the in-memory runtime in
tests/control/test_adoption_unit.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openeas.control.gateways import find_gateway
from openeas.procfs import running
from openeas.store import Registry, sqlite_url
from tests.cluster.hosts import Host, hosts
from tests.cluster.ray_nodes import LEAN_ENV, _ray_bin, _wait_nodes
from tests.e2e.load import SteadyLoad
from tests.e2e.test_rolling_update import Trace, graceful_spec, instances, settled
from tests.harness import Server, free_port, start_server, terminate, wait_for

RATE = 50.0

pytestmark = pytest.mark.timeout(600)


def gateway_pids(server: Server) -> list[int]:
    return list(json.loads((server.data_dir / "server.json").read_text())["gateway_pids"])


def kill_groups(pids: list[int]) -> None:
    """End what a failed test left (each instance and gateway leads its own process group)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def end_all(servers: list[Server | None], pids: list[int]) -> None:
    """After a test, pass or fail: SIGKILL the servers still running, then every process group in
    `pids` and every gateway a server's server.json names (a killed server leaves them)."""
    for srv in servers:
        if srv is not None and srv.proc.poll() is None:
            terminate(srv.proc, signal.SIGKILL)
    for srv in servers:
        if srv is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                pids = [*pids, *gateway_pids(srv)]
    kill_groups(pids)


def none_running(pids: list[int]) -> bool:
    return not any(running(pid) for pid in pids)


def restart_under_load(
    tmp_path: Path,
    server: Server,
    extra: list[str],
    identify: Callable[[list[str]], dict[str, str]] | None = None,
    dedicated: bool = False,
) -> tuple[Server, dict[str, int]]:
    """Deploy, then kill -9 and restart `server` under load; asserts the load saw no failure
    and every instance kept its process (and, with `identify`, what it says of each instance
    id). With `dedicated`, two dedicated gateways run too: `dedi` must be adopted as well, and
    `gone`, whose record is deleted while no server runs, must be stopped by the new server.
    Returns the new server and the instances' pids."""
    instance_count = 2
    stray = 0
    if dedicated:
        for name in ("dedi", "gone"):
            listen = {"internet": f"127.0.0.1:{free_port()}", "intranet": f"127.0.0.1:{free_port()}"}
            (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "listen": listen}))
            view = server.cli_json("gateway", "create", str(tmp_path / f"{name}.json"), "--wait")
            assert view["status"] == "Running", view
        stray = find_gateway("gone", sqlite_url(server.data_dir)) or 0
        assert stray in gateway_pids(server)
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    trace = Trace(trace_dir)
    spec = graceful_spec("keep", trace_dir, instance_count, "v1")
    if "ray" in extra:
        spec["metadata"]["cpu"] = 0.5
    created = server.deploy(spec, tmp_path, timeout=180)
    url, token = created["endpoints"]["internet"], created["token"]
    server.wait_for(lambda: settled(server, "keep", instance_count), timeout=120, what="instances ready")
    before = {r["id"]: r["pid"] for r in instances(server, "keep")}
    gateways = [pid for pid in gateway_pids(server) if pid != stray]
    assert len(before) == instance_count and len(gateways) == (2 if dedicated else 1)
    identities = identify(sorted(before)) if identify else {}

    with SteadyLoad(url, token, rate=RATE, seconds=120) as load:
        time.sleep(3)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        time.sleep(1)  # no control plane at all: the gateway and the instances serve alone
        assert all(running(pid) for pid in [*before.values(), *gateways]), "killed with the server"
        if stray:  # deleted while no server runs: its process is left to the next server
            registry = Registry(sqlite_url(server.data_dir))
            registry.delete_gateway("gone")
            registry.close()
        again = start_server(
            server.data_dir,
            "--gateway-port",
            str(server.gateway_port),
            "--vpc-port",
            str(server.vpc_port),
            *extra,
            timeout=120,
        )
        again.wait_for(lambda: settled(again, "keep", instance_count), timeout=120, what="Running again")
        time.sleep(2)  # and traffic on the adopted gateway and instances under the new server
        load.stop()
    report = load.report()
    print("kill -9 and restart of the server:", report.describe())
    assert len(report.results) == report.planned, report.describe()
    assert report.failures == [], report.describe()

    after = {r["id"]: r["pid"] for r in instances(again, "keep")}
    assert after == before, (before, after)  # same instances, same processes
    for instance in before:
        assert len(trace.pids(instance)) == 1, f"{instance} started {trace.pids(instance)}"
    assert sorted(gateway_pids(again)) == sorted(gateways)  # gateways adopted, not restarted
    log = again.log()
    assert all(f"adopted instance {i}" in log for i in before), log
    assert all(f"adopted pid {pid} " in log for pid in gateways), log
    if dedicated:
        assert again.cli_json("gateway", "desc", "dedi")["status"] == "Running"
        wait_for(lambda: not running(stray), timeout=30, what="the deleted gateway's process stopped")
        assert f"stopping pid {stray} left by a previous server (no such gateway)" in again.log()
    if identify:
        assert identify(sorted(before)) == identities
    return again, before


def test_kill_9_and_restart_adopts_local_instances_and_the_gateway(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    again: Server | None = None
    pids: list[int] = []
    try:
        pids = gateway_pids(server)
        again, before = restart_under_load(tmp_path, server, [], dedicated=True)
        pids += list(before.values())
        # a clean stop of the new server stops what it adopted: nothing is left behind
        assert again.stop() == 0, again.log()
        wait_for(lambda: none_running(pids), timeout=30, what="adopted processes stopped")
    finally:
        end_all([server, again], pids)


@contextlib.contextmanager
def ray_head(host: Host, root: Path) -> Iterator[str]:
    """A one-node Ray cluster (a head with CPUs, so it hosts the instances); its GCS address."""
    port = free_port()
    log = root / "ray-head.log"
    argv = [_ray_bin(), "start", "--block", "--disable-usage-stats", "--head", f"--port={port}",
            f"--node-ip-address={host.ip}", "--num-cpus=2", "--include-dashboard=false",
            f"--temp-dir={root / 'ray'}"]  # fmt: skip
    with open(log, "wb") as out:
        node = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **LEAN_ENV},
            start_new_session=True,
        )
    try:
        _wait_nodes(f"{host.ip}:{port}", 1, 120)
        yield f"{host.ip}:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(5)


ACTOR_IDS = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace="openeas", logging_level="ERROR", log_to_driver=False)
print(json.dumps({i: ray.get_actor("openeas-instance-" + i)._actor_id.hex() for i in sys.argv[2:]}))
"""


def actor_ids(address: str, ids: list[str]) -> dict[str, str]:
    """The Ray actor id of each instance, asked from a driver of its own."""
    out = subprocess.run(
        [sys.executable, "-c", ACTOR_IDS, address, *ids], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_kill_9_and_restart_adopts_ray_actors(tmp_path: Path) -> None:
    short = Path(f"/tmp/oe-adopt-{os.getpid()}")  # Ray's socket paths: at most 107 characters
    short.mkdir()
    with hosts(("a",)) as h, ray_head(h["a"], short) as address:
        extra = ["--runtime", "ray", "--ray-address", address]
        server = start_server(tmp_path / "data", *extra, timeout=120)
        again: Server | None = None
        pids: list[int] = []
        try:
            pids = gateway_pids(server)
            # same actor ids before and after (an instance started again gets a new actor)
            again, before = restart_under_load(tmp_path, server, extra, lambda ids: actor_ids(address, ids))
            pids += list(before.values())
            assert again.stop() == 0, again.log()
            wait_for(lambda: none_running(pids), timeout=60, what="adopted processes stopped")
        finally:
            end_all([server, again], pids)
    with contextlib.suppress(OSError):
        subprocess.run(["rm", "-rf", str(short)], check=False)
