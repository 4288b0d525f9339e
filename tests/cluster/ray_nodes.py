"""A Ray cluster over the test hosts (tests/cluster/hosts.py): a head on host A, workers elsewhere.

Each node is `ray start --block` in its host's namespace, in a session of its own, so the test can
stop a whole node by signalling that session's process group (or SIGKILL every Ray process of
one host to play "node lost"). Kept lean for a 2-core machine: no dashboard, no usage stats, no
prestarted workers, head with `--num-cpus 0` (it runs no instances).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.hosts import Host, processes_on
from tests.harness import free_port

LEAN_ENV = {
    "RAY_enable_worker_prestart": "0",  # no idle python workers waiting on 2 cores
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
}


@dataclass
class RayNode:
    host: Host
    process: subprocess.Popen[bytes]
    log: Path

    def terminate(self) -> None:
        """SIGTERM the node's `ray start --block` group (it stops the node's Ray processes)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self, grace_s: float) -> None:
        """After up to `grace_s` for a terminated node to go, SIGKILL what is left of its group."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


@dataclass
class RayCluster:
    address: str  # HOST:PORT of the head's GCS
    temp_root: Path
    nodes: dict[str, RayNode] = field(default_factory=dict)

    def ray_pids(self, host: Host) -> list[int]:
        """The Ray processes of `host`: everything in its namespace except openeas instances and
        keepers (which are ours, not Ray's)."""
        out = []
        for pid in processes_on(host):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if b"openeas.runtime.keeper" in cmdline or b"OPENEAS_INSTANCE_ID=" in environ:
                continue
            out.append(pid)
        return out


def _ray_bin() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is missing; scripts/test.sh installs openeas[ray]")
    return found


def _start_node(
    host: Host, args: list[str], log: Path, env: Mapping[str, str], python: str | None = None
) -> RayNode:
    # `python`: the interpreter this node's Ray (and so its workers) runs with
    ray = [python, "-m", "ray.scripts.scripts"] if python else [_ray_bin()]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            host.command(*ray, "start", "--block", "--disable-usage-stats", *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **LEAN_ENV, **env},
            start_new_session=True,
        )
    return RayNode(host, process, log)


def _wait_nodes(address: str, count: int, timeout: float) -> None:
    """Until `count` nodes are alive (asked with `ray status`-free GCS polling via a subprocess)."""
    probe = (
        "import ray,sys;ray.init(address=sys.argv[1],logging_level='ERROR',log_to_driver=False);"
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", probe, address], capture_output=True, text=True, timeout=60
        )
        last = out.stdout.strip() or out.stderr.strip()[-300:]
        if out.returncode == 0 and last.isdigit() and int(last) >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"Ray cluster at {address} has not {count} nodes after {timeout:.0f} s: {last}")


@contextlib.contextmanager
def ray_cluster(
    head: Host,
    workers: Mapping[Host, Mapping[str, float]],
    worker_cpus: int = 4,
    pythons: Mapping[str, str] | None = None,
) -> Iterator[RayCluster]:
    """A head on `head` (no CPUs: it runs no instances) and a worker on each host of `workers`,
    with the custom resources given there ({} for none). `pythons`: host name -> the python a
    worker node runs with (default: the `ray` command's)."""
    root = Path(tempfile.mkdtemp(prefix="oer-", dir="/tmp"))  # short: Ray's socket paths max 107 chars
    port = free_port()
    cluster = RayCluster(f"{head.ip}:{port}", root)
    try:
        cluster.nodes[head.name] = _start_node(
            head,
            [
                "--head",
                f"--port={port}",
                f"--node-ip-address={head.ip}",
                "--num-cpus=0",
                "--include-dashboard=false",
                f"--temp-dir={root / head.name}",
            ],
            root / f"{head.name}.log",
            {},
        )

        def start_workers(attempt: int) -> None:
            for host, resources in workers.items():
                cluster.nodes[host.name] = _start_node(
                    host,
                    [
                        f"--address={cluster.address}",
                        f"--node-ip-address={host.ip}",
                        f"--num-cpus={worker_cpus}",
                        f"--resources={json.dumps(dict(resources))}",
                        f"--temp-dir={root / f'{host.name}{attempt}'}",
                    ],
                    root / f"{host.name}{attempt}.log",
                    {},
                    (pythons or {}).get(host.name),
                )

        start_workers(0)
        try:
            _wait_nodes(cluster.address, 1 + len(workers), 90)
        except RuntimeError:
            # Seen once on a loaded 2-core box: a worker never joined. Start every worker afresh
            # once; if that fails too, the error carries each node's log tail.
            for host in workers:
                cluster.nodes[host.name].terminate()
                cluster.nodes[host.name].kill(10)
            start_workers(1)
            try:
                _wait_nodes(cluster.address, 1 + len(workers), 120)
            except RuntimeError as e:
                tails = {
                    name: node.log.read_text(errors="replace")[-1500:] for name, node in cluster.nodes.items()
                }
                raise RuntimeError(f"{e}; node logs: {tails}") from None
        yield cluster
    finally:
        nodes = list(cluster.nodes.values())
        for node in nodes:  # all at once: each takes seconds to stop
            node.terminate()
        deadline = time.monotonic() + 15
        for node in nodes:
            node.kill(max(0.0, deadline - time.monotonic()))
        shutil.rmtree(root, ignore_errors=True)
