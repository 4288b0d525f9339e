"""`openeas server --runtime ray` end to end: the real server, CLI and shared gateway on host A
(the Ray head, no CPUs), the instances on host B (a Ray worker in its own network namespace).

Measured: a 2-instance service deployed with the CLI becomes Running with its instances on B;
calls through the shared gateway on A reach them across the hosts' network (the answer names B's
address); `openeas logs` shows the instance's output fetched through its actor; `openeas delete`
leaves no instance process, keeper or instance actor behind on B.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.cluster.hosts import Host, hosts, processes_on
from tests.cluster.ray_nodes import RayCluster, ray_cluster
from tests.harness import Server, start_server, terminate

TREE_APP = Path(__file__).parent.parent / "runtime" / "apps" / "tree.py"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[dict[str, Host], RayCluster]]:
    with hosts(("a", "b")) as h, ray_cluster(h["a"], {h["b"]: {}}) as c:
        yield h, c


def instance_processes(host: Host) -> list[int]:
    """Processes on `host` that belong to an openeas instance (its keeper or the instance)."""
    out = []
    for pid in processes_on(host):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"openeas.runtime.keeper" in cmdline or b"OPENEAS_INSTANCE_ID=" in environ:
            out.append(pid)
    return out


def test_deploy_call_and_delete_on_ray(cluster: tuple[dict[str, Host], RayCluster], tmp_path: Path) -> None:
    h, ray = cluster
    server: Server = start_server(tmp_path / "data", "--runtime", "ray", "--ray-address", ray.address)
    try:
        spec = {
            "metadata": {"name": "onray", "instance": 2, "cpu": 0.5},
            "containers": [{"command": f"{sys.executable} {TREE_APP}", "port": 8000}],
        }
        created = server.deploy(spec, tmp_path, timeout=180)
        url, token = created["endpoints"]["internet"], created["token"]
        desc = server.cli_json("desc", "onray")
        assert desc["running_instances"] == 2, desc
        listed = server.cli_json("instances", "onray")["instances"]
        ids = sorted(i["id"] for i in listed)
        assert {i["host"] for i in listed} == {h["b"].ip}  # the node's address, where the gateway goes
        assert len(ids) == 2 and sorted(live_actors(ray, ids)) == ids
        answers = [requests.get(url, headers={"Authorization": token}, timeout=10) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        assert {a.json()["host"] for a in answers} == {h["b"].ip}  # served on B, called on A
        assert len({a.json()["pid"] for a in answers}) == 2  # both instances get traffic
        assert len(instance_processes(h["b"])) >= 4  # two keepers, two instances (and children)
        logs = server.cli("logs", "onray").stdout
        assert "tree up on" in logs, logs

        server.cli("delete", "onray")
        server.wait_for(
            lambda: requests.get(url, headers={"Authorization": token}, timeout=10).status_code == 404,
            timeout=60,
            what="404 after delete",
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and instance_processes(h["b"]):
            time.sleep(0.2)
        assert instance_processes(h["b"]) == [], "instance processes left on host B after delete"
        assert live_actors(ray, ids) == [], "instance actors left after delete"

        # a service no node can host waits, saying what is missing
        gpu = {**spec, "metadata": {"name": "ongpu", "instance": 1, "gpu": 1}}
        (tmp_path / "ongpu.json").write_text(json.dumps(gpu))
        server.cli("create", str(tmp_path / "ongpu.json"))
        seen = server.wait_for(
            lambda: (d := server.cli_json("desc", "ongpu"))["message"] and d,
            timeout=60,
            what="a message on the gpu service",
        )
        print("gpu service:", seen["status"], seen["message"])
        assert "needs gpu: 1; no node has it" in seen["message"]
        time.sleep(5)
        later = server.cli_json("desc", "ongpu")
        assert later["status"] == "Waiting" and "needs gpu: 1; no node has it" in later["message"], later
    finally:
        # Stopping on Ray takes longer than locally (actors stop through the cluster); the harness'
        # 30 s then SIGKILL would orphan the gateways, so give it time; it must end by itself.
        code = terminate(server.proc, timeout=120)
    assert code != -signal.SIGKILL, "openeas server did not stop within 120 s of SIGTERM"
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(server.data_dir))]
    assert left == [], f"processes of this server left after it stopped: {left}"


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
    except OSError:
        return False


def live_actors(ray: RayCluster, instance_ids: list[str]) -> list[str]:
    """Which of the instances' actors Ray still has, asked from a separate driver."""
    probe = (
        "import json,sys,ray\n"
        "from openeas.runtime.ray import NAMESPACE, actor_name\n"
        "ray.init(address=sys.argv[1],logging_level='ERROR',log_to_driver=False)\n"
        "live=[]\n"
        "for i in json.loads(sys.argv[2]):\n"
        "    try:\n"
        "        ray.get_actor(actor_name(i), namespace=NAMESPACE); live.append(i)\n"
        "    except ValueError:\n"
        "        pass\n"
        "print(json.dumps(live))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, ray.address, json.dumps(instance_ids)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout.strip().splitlines()[-1]))
