"""Several hosts: the cost of a cross-host hop and of starting instances on Ray (issue 12's bench).

    python -m bench.multi_host [--requests 3000] [--instances 50] [--out FILE.json]

Run as root from the repository root (network namespaces, like tests/cluster). Two parts:

1. Hop latency. Hosts A (root namespace), B and C on one bridge (tests/cluster/hosts.py). A
   gateway (`python -m openeas.gateway --internet-bind B:0`, SQLite registry) runs on B; one tiny
   HTTP instance on B and one on C; service `same` routes to B's, `cross` to C's. The bench (on
   A) sends sequential keep-alive GETs through the gateway to each, interleaved in rounds, and
   to each instance directly. Reported: p50/p90/p99 per path; the hop's added latency is
   cross - same. On one machine the "network" is veth + bridge: this measures the software
   path of a hop (namespaces, bridge, the gateway's extra connection), not a physical network.
2. Instances to ready. `openeas server` deploys a service of N tiny instances (`create --wait`,
   timed until Running) with the local runtime, then with `--runtime ray` on a Ray cluster
   (head on A with no CPUs, one worker on B): the time to bring N instances to ready.

The load average before and after each part is reported with the numbers (a shared machine).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cluster.hosts import Host, hosts
from tests.cluster.ray_nodes import ray_cluster
from tests.harness import parse_gateway_ready_line, read_line, start_server, terminate

from openeas.store import InstanceRecord, Registry, sqlite_url

TINY_APP = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # head and body in one write (unbuffered: Nagle + delayed ACK = 40 ms each)
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
# argv: HOST PORT (the bench's own); else $PORT, and $HOST on Ray (the local runtime gives none)
host = sys.argv[1] if len(sys.argv) > 2 else os.environ.get("HOST", "127.0.0.1")
port = int(sys.argv[2] if len(sys.argv) > 2 else os.environ["PORT"])
s = ThreadingHTTPServer((host, port), H)
print("listening", s.server_address[1], flush=True)
s.serve_forever()
"""
TOKEN = "bench-token-0123456789"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.mean(ordered) * 1000, 3),
    }


def timed_gets(host: str, port: int, path: str, n: int, headers: dict[str, str]) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    out = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - started)
            if resp.status != 200:
                raise RuntimeError(f"GET {host}:{port}{path} answered {resp.status}")
    finally:
        conn.close()
    return out


def start_tiny(host: Host, app: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(host.command(sys.executable, str(app), host.ip, "0"), stdout=subprocess.PIPE)
    return proc, int(read_line(proc, 20, "tiny app").split()[1])


def hop_latency(requests: int, work: Path) -> dict[str, Any]:
    app = work / "tiny.py"
    app.write_text(TINY_APP)
    procs: list[subprocess.Popen[bytes]] = []
    with hosts(("a", "b", "c")) as h:
        try:
            (work / "hop").mkdir()
            registry = Registry(sqlite_url(work / "hop"))
            registry.create_schema()
            registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0"}})
            ports = {}
            for name in ("b", "c"):
                proc, ports[name] = start_tiny(h[name], app)
                procs.append(proc)
            now = time.time()
            for service, name in (("same", "b"), ("cross", "c")):
                registry.create_service(
                    service, {"metadata": {"name": service, "instance": 1}}, TOKEN, "shared"
                )
                inst = InstanceRecord(
                    f"{service}-0", service, 1, h[name].ip, ports[name], None, "ready", 0, "", now, now
                )
                registry.put_instance(inst)
            env = {**os.environ, "OPENEAS_STORE_URL": registry.url}
            argv = [
                sys.executable,
                "-m",
                "openeas.gateway",
                "--name",
                "shared",
                "--internet-bind",
                f"{h['b'].ip}:0",
            ]
            gateway = subprocess.Popen(h["b"].command(*argv), stdout=subprocess.PIPE, env=env)
            procs.append(gateway)
            gw_port = parse_gateway_ready_line(read_line(gateway, 30, "gateway"))[0]["internet"]
            auth = {"Authorization": TOKEN}
            paths: dict[str, Callable[[int], list[float]]] = {
                "gateway on B -> instance on B": lambda n: timed_gets(
                    h["b"].ip, gw_port, "/api/predict/same/", n, auth
                ),
                "gateway on B -> instance on C": lambda n: timed_gets(
                    h["b"].ip, gw_port, "/api/predict/cross/", n, auth
                ),
                "direct to instance on B": lambda n: timed_gets(h["b"].ip, ports["b"], "/", n, {}),
                "direct to instance on C": lambda n: timed_gets(h["c"].ip, ports["c"], "/", n, {}),
            }
            for run in paths.values():
                run(200)  # warm up: pools, caches
            samples: dict[str, list[float]] = {k: [] for k in paths}
            load_before = load()
            rounds = 10
            for _ in range(rounds):
                for key, run in paths.items():
                    samples[key] += run(requests // rounds)
            result: dict[str, Any] = {k: percentiles(v) for k, v in samples.items()}
            same, cross = result["gateway on B -> instance on B"], result["gateway on B -> instance on C"]
            result["added_by_cross_host_hop"] = {k: round(cross[k] - same[k], 3) for k in same}
            result["requests_per_path"] = requests
            result["load_before"], result["load_after"] = load_before, load()
            registry.close()
            return result
        finally:
            for proc in procs:
                terminate(proc, timeout=10)


def instances_to_ready(count: int, work: Path, runtimes: set[str]) -> dict[str, Any]:
    app = work / "tiny_instance.py"
    app.write_text(TINY_APP)
    spec = {
        "metadata": {"name": "many", "instance": count},
        "containers": [{"command": f"{sys.executable} {app}", "port": 8000}],
    }
    out: dict[str, Any] = {"instances": count}

    def deploy(server_args: tuple[str, ...], data: Path) -> dict[str, Any]:
        server = start_server(data, *server_args, timeout=120)
        try:
            before = load()
            path = work / "many.json"
            path.write_text(json.dumps(spec))
            started = time.monotonic()
            server.cli("create", str(path))
            while server.cli_json("desc", "many")["running_instances"] < count:  # ready ones
                if time.monotonic() - started > 900:
                    raise RuntimeError(f"{count} instances not ready after 900 s:\n{server.log()[-3000:]}")
                time.sleep(1)
            took = time.monotonic() - started
            after = load()
            server.cli("delete", "many")
            time.sleep(5)
        finally:
            terminate(server.proc, timeout=180)
        return {"seconds": round(took, 1), "load_before": before, "load_after": after}

    if "local" in runtimes:
        out["local"] = deploy((), work / "local")
    if "ray" in runtimes:
        with hosts(("a", "b")) as h, ray_cluster(h["a"], {h["b"]: {}}, worker_cpus=4) as ray:
            out["ray"] = deploy(("--runtime", "ray", "--ray-address", ray.address), work / "ray")
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.multi_host", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=3000, help="timed requests per path (hop latency)")
    p.add_argument("--instances", type=int, default=50, help="instances to bring to ready (local, Ray)")
    p.add_argument("--out", default="bench-multi-host.json", help="where the results go (JSON)")
    p.add_argument("--parts", default="hop,local,ray", help="which parts to run: hop, local, ray")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("python -m bench.multi_host needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what was started (finally blocks)
    with tempfile.TemporaryDirectory(prefix="oe-bench-mh-") as tmp:
        work = Path(tmp)
        parts = set(args.parts.split(","))
        results: dict[str, Any] = {"cpus": os.cpu_count()}
        if "hop" in parts:
            results["hop_latency"] = hop_latency(args.requests, work)
            print(json.dumps(results["hop_latency"], indent=2), flush=True)
        if parts & {"local", "ray"}:
            results["instances_to_ready"] = instances_to_ready(args.instances, work, parts)
            print(json.dumps(results["instances_to_ready"], indent=2), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
