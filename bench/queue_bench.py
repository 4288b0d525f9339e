"""Asynchronous queue bench: put -> result throughput and latency for a no-op Async service.

    python3 -m bench.queue_bench [--n 2000] [--conns 16] [--backends sql,redis] [--via gateway|direct]
                                 [--write-docs]

For each backend it starts, on free loopback ports: a registry (SQLite), a no-op instance
(`tests/gateway/upstream_app.py`, route `/raw` echoes the body), `python -m openeas.queue` for the
service (SQL backend, or a private `redis-server` for `redis`) and, with `--via gateway` (the
default), the shared gateway in front of it. Then `--conns` producers put `--n` requests (through
the gateway, token auth on) while one consumer long-polls the sink through the same path
(`GET <endpoint>/sink?_length_=200&_timeout_=1s&_auto_delete_=true`). It reports puts/s, results/s
(first put to last result) and the put -> result latency percentiles, and with `--write-docs`
writes them into docs/benchmarks.md (inside the kept "Notes" section, between its own markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import ProcessSet, free_port, wait_port
from openeas.store import InstanceRecord, Registry, sqlite_url

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_APP = REPO / "tests" / "gateway" / "upstream_app.py"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- queue-bench:begin -->", "<!-- queue-bench:end -->"
TOKEN = "queue-bench-token-0123456789"
SERVICE = "qbench"


def _line(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip().splitlines()[0]
        time.sleep(0.05)
    raise RuntimeError(f"no ready line in {path} after {timeout}s")


def start_stack(tmp: Path, procs: ProcessSet, backend: str, via: str, window: int) -> str:
    """Everything for one backend; returns the base URL callers use."""
    registry = Registry(sqlite_url(tmp))
    registry.create_schema()
    gw_port = free_port()
    registry.put_gateway(
        "shared",
        {
            "listen": {"internet": f"127.0.0.1:{gw_port}", "intranet": "127.0.0.1:0"},
            "max_body_bytes": 1 << 20,
        },
    )
    up_port = free_port()
    procs.spawn(
        "noop",
        [sys.executable, str(UPSTREAM_APP), "--name", "noop", "--port", str(up_port)],
        tmp / "noop.log",
    )
    if not wait_port(up_port, 15):
        raise RuntimeError("the no-op instance did not start")
    spec = {
        "metadata": {
            "name": SERVICE,
            "type": "Async",
            "instance": 1,
            "rpc": {"worker_threads": window, "keepalive": 30000},
        },
        "containers": [{"command": f"{sys.executable} {UPSTREAM_APP} --name noop --port $PORT"}],
        "networking": {"gateway_policy": {"rate_limit": {"enable": True, "limit": 100_000_000}}},
        "queue": {"path": "/raw", "source": {"max_length": 1_000_000}, "sink": {"max_length": 1_000_000}},
    }
    registry.create_service(SERVICE, spec, TOKEN, "shared")
    now = time.time()
    registry.put_instance(
        InstanceRecord(f"{SERVICE}-0", SERVICE, 1, "127.0.0.1", up_port, None, "ready", 0, "", now, now)
    )
    registry.set_status(SERVICE, "Running")
    argv = [sys.executable, "-m", "openeas.queue", "--store-url", registry.url, "--service", SERVICE]
    if backend == "redis":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is missing (apt-get install redis-server)")
        rport = free_port()
        procs.spawn(
            "redis",
            [
                exe,
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(tmp),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            tmp / "redis.log",
        )
        if not wait_port(rport, 15):
            raise RuntimeError("redis-server did not start")
        argv += ["--redis-url", f"redis://127.0.0.1:{rport}/0"]
    procs.spawn("queue", argv, tmp / "queue.log")
    ready = json.loads(_line(tmp / "queue.log", 30))
    if via == "direct":
        return f"http://127.0.0.1:{ready['port']}/api/predict/{SERVICE}"
    procs.spawn(
        "gateway",
        [sys.executable, "-m", "openeas.gateway", "--store-url", registry.url, "--name", "shared"],
        tmp / "gateway.log",
    )
    if not wait_port(gw_port, 30):
        raise RuntimeError("the gateway did not start")
    registry.close()
    return f"http://127.0.0.1:{gw_port}/api/predict/{SERVICE}"


async def drive(base: str, n: int, conns: int, rate: float = 0.0) -> dict[str, Any]:
    """`conns` producers put `n` requests as fast as they can (rate 0), or one producer puts them
    at `rate` per second (a latency measure below saturation)."""
    headers = {"Authorization": TOKEN}
    put_at: dict[str, float] = {}
    got_at: dict[str, float] = {}
    errors = 0
    limits = httpx.Limits(max_connections=conns + 4, max_keepalive_connections=conns + 4)
    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        # warm up: one round trip, so connections and the dispatcher are going
        r = await client.post(base, content=b"warm")
        r.raise_for_status()
        while (
            await client.get(base + "/sink", params={"_timeout_": "1s", "_length_": "10"})
        ).status_code != 200:
            pass
        todo = iter(range(n))

        async def producer() -> None:
            nonlocal errors
            start = time.monotonic()
            for i in todo:
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                resp = await client.post(base, content=f"req-{i}".encode())
                if resp.status_code != 200:
                    errors += 1
                    continue
                put_at[resp.headers["X-Eas-Queueservice-Request-Id"]] = time.monotonic()

        async def consumer() -> None:
            nonlocal errors
            while len(got_at) < n - errors:
                resp = await client.get(
                    base + "/sink",
                    params={"_index_": "0", "_length_": "200", "_timeout_": "1s", "_auto_delete_": "true"},
                )
                now = time.monotonic()
                if resp.status_code == 200:
                    for item in resp.json():
                        got_at.setdefault(item["tags"]["requestId"], now)
                elif resp.status_code != 204:
                    errors += 1

        t0 = time.monotonic()
        cons = asyncio.create_task(consumer())
        await asyncio.gather(*(producer() for _ in range(1 if rate else conns)))
        put_s = time.monotonic() - t0
        await asyncio.wait_for(cons, timeout=max(60, n / 10))
        total_s = max(got_at.values()) - t0
    lat = sorted((got_at[r] - put_at[r]) * 1000 for r in put_at if r in got_at)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    return {
        "n": n,
        "conns": conns,
        "puts_per_s": n / put_s,
        "results_per_s": len(lat) / total_s,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "errors": errors,
        "results": len(lat),
    }


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, took: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    path = " through the shared gateway (token auth on)" if args.via == "gateway" else " to the queue server"
    cmd = f"python3 -m bench.queue_bench --n {args.n} --conns {args.conns} --via {args.via}"
    lines = [
        BEGIN,
        "### Asynchronous queue: put -> result",
        "",
        f"`{cmd}`, run on {when} ({took:.0f} s; {os.cpu_count()} CPUs, {python}; load average "
        f"{args.load_at_start:.1f} when it started: other work shared the CPUs). "
        f"A no-op Async service (window {args.window}); {args.conns} producers put over HTTP keep-alive{path}"
        ", one consumer long-polls the sink the same way (`_length_=200&_auto_delete_=true`). "
        "Latency is from the put's answer to the poll that returned the result: at full speed it is "
        f"mostly time waiting in the queue; the paced phase puts {args.paced_n} requests at "
        f"{args.rate:g}/s, below saturation.",
        "",
        "| backend | requests | puts/s | results/s | p50 / p90 / p99 ms (full speed) "
        "| p50 / p99 ms (paced) | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['results']}/{r['n']} | {r['puts_per_s']:,.0f} "
            f"| {r['results_per_s']:,.0f} | {r['p50_ms']:,.0f} / {r['p90_ms']:,.0f} / {r['p99_ms']:,.0f} "
            f"| {r['paced_p50_ms']:,.1f} / {r['paced_p99_ms']:,.1f} | {r['errors'] + r['paced_errors']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_docs(block: str) -> None:
    text = DOCS.read_text()
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        marker = "<!-- notes:end -->" if "<!-- notes:end -->" in text else None
        if marker:
            head, _, tail = text.partition(marker)
            text = head + block + "\n" + marker + tail
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.queue_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--window", type=int, default=32, help="requests in flight on the instance")
    p.add_argument("--backends", default="sql,redis")
    p.add_argument("--via", choices=("gateway", "direct"), default="gateway")
    p.add_argument("--rate", type=float, default=10.0, help="puts/s of the paced (latency) phase")
    p.add_argument("--paced-n", type=int, default=100, help="requests of the paced phase")
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    args.load_at_start = os.getloadavg()[0]
    rows = []
    t0 = time.monotonic()
    for backend in args.backends.split(","):
        procs = ProcessSet()
        with tempfile.TemporaryDirectory(prefix=f"qbench-{backend}-") as d:
            try:
                base = start_stack(Path(d), procs, backend, args.via, args.window)
                row = asyncio.run(drive(base, args.n, args.conns))
                paced = asyncio.run(drive(base, args.paced_n, 1, args.rate))
                row.update({f"paced_{k}": v for k, v in paced.items()})
            finally:
                procs.close()
        row["backend"] = backend
        rows.append(row)
        print(json.dumps(row), flush=True)
    block = markdown(rows, args, time.monotonic() - t0)
    print(block)
    if args.write_docs:
        write_docs(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
