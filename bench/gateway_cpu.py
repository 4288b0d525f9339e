"""Gateway CPU per request, two code trees in one run: is a change to the gateway as cheap as before?

    python3 -m bench.gateway_cpu --before OTHER/src [--after src] [--rounds 6] [--duration 4]
    python3 -m bench.gateway_cpu --before src --after-redis     # shared limits: Redis on vs off

Starts one static nginx upstream (bench/nginx.py) and two gateway processes
(`python -m openeas.gateway --access-log ...`, as the server runs its gateway), each from its own
private SQLite registry holding the same service (auth and the rate limiter on, as in the main
bench): "before" runs the code under `--before`, "after" the code of this checkout. wrk loads each
in turn (GET and POST 6 KB at 64 connections), alternating the order every round, and the CPU
time (user + system, /proc/<pid>/stat) each gateway used during its cell is divided by the
requests it served. On a shared, noisy machine that is much steadier than req/s; medians over the
rounds are reported, and the median of the per-round after/before ratios (the two cells of a
round run back to back, so the ratio cancels slow drift in the machine's load), with every run,
as one JSON document on stdout.

`--after-redis` starts a redis-server (Debian `redis-server`) and gives the "after" gateway
`--redis-url`, so its service QPS limit is counted in Redis (docs/gateway.md "Shared limits"):
with `--before src` the ratio is the cost of shared limits on the same code.

Why a separate script from `python3 -m bench`: the full bench needs `openeas server`, nginx as a
reference proxy and ten minutes; this answers one question (did the gateway get dearer?) in two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import nginx
from bench.main import UPSTREAM_SERVICE, body_file, cpu_split, service_fields
from bench.private_gateway import start_private_gateway
from bench.procs import ProcessSet, free_port, wait_port
from bench.wrk import Cell, run_wrk

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-gateway-cpu-token-0123456789"
CASES = (("GET", "GET", "get", 0), ("POST 6KB", "POST", "post", 6 * 1024))
CONNS = 64


def start_upstream(work: Path, procs: ProcessSet) -> int:
    """A static nginx (the main bench's upstream) on a free port."""
    ndir = work / "nginx"
    tmpl = nginx.prepare_upstream(ndir)
    port = free_port()
    conf = ndir / f"up-{port}.conf"
    conf.write_text(tmpl.read_text().replace("__PORT__", str(port)))
    proc = procs.spawn("upstream", nginx.proxy_argv(ndir, conf), work / "upstream.log")
    if not wait_port(port, 20, proc):
        raise RuntimeError(f"the nginx upstream did not start: {(work / 'upstream.log').read_text()[-1000:]}")
    return port


def start_redis(work: Path, procs: ProcessSet) -> str:
    """A redis-server on a free port (no persistence); its URL."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)]
    proc = procs.spawn("redis", argv, work / "redis.log")
    if not wait_port(port, 20, proc):
        raise RuntimeError(f"redis-server did not start: {(work / 'redis.log').read_text()[-1000:]}")
    return f"redis://127.0.0.1:{port}/0"


def start_gateway(
    work: Path, procs: ProcessSet, tag: str, src: Path, upstream_port: int, extra_args: tuple[str, ...] = ()
) -> tuple[int, str]:
    """`python -m openeas.gateway` with PYTHONPATH=`src` (bench/private_gateway.py); (pid, base URL)."""
    fields = service_fields()
    spec = {"metadata": {"name": UPSTREAM_SERVICE, "instance": 1, "rpc": fields["rpc"]}}
    spec["networking"] = fields["networking"]
    gw = start_private_gateway(
        procs,
        work,
        tag,
        service=UPSTREAM_SERVICE,
        service_spec=spec,
        token=TOKEN,
        upstream_port=upstream_port,
        env=dict(os.environ, PYTHONPATH=str(src)),
        extra_args=extra_args,
    )
    return gw.proc.pid, gw.base


def measure(pid: int, cell: Cell, duration: float) -> dict[str, Any]:
    u0, s0 = cpu_split([pid])
    res = run_wrk(cell, duration)
    u1, s1 = cpu_split([pid])
    n = max(1, res["requests"])
    return {
        "rps": res["rps"],
        "requests": res["requests"],
        "errors": res["error_count"],
        "cpu_us_per_req": ((u1 - u0) + (s1 - s0)) * 1e6 / n,
        "user_us_per_req": (u1 - u0) * 1e6 / n,
        "sys_us_per_req": (s1 - s0) * 1e6 / n,
    }


def run(before: Path, after: Path, rounds: int, duration: float, after_redis: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="openeas-gwcpu-"))
    os.chmod(work, 0o755)
    procs = ProcessSet()
    try:
        up = start_upstream(work, procs)
        extra = ("--redis-url", start_redis(work, procs)) if after_redis else ()
        gws = {
            "before": start_gateway(work, procs, "before", before, up),
            "after": start_gateway(work, procs, "after", after, up, extra),
        }
        body = body_file(work, 6 * 1024)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {t: {c[0]: [] for c in CASES} for t in gws}
        cells = {
            (tag, case): Cell(tag, case, CONNS, f"{base}/{sub}", method, body if size else None, TOKEN)
            for tag, (_, base) in gws.items()
            for case, method, sub, size in CASES
        }
        for cell in cells.values():  # warm-up, not recorded
            run_wrk(cell, 1)
        order = list(gws)
        for r in range(rounds):
            for case, *_ in CASES:
                for tag in order if r % 2 == 0 else order[::-1]:
                    res = measure(gws[tag][0], cells[(tag, case)], duration)
                    runs[tag][case].append(res)
                    print(
                        f"[round {r + 1}] {tag:>6} {case:<8} {res['rps']:>8.0f} req/s "
                        f"{res['cpu_us_per_req']:6.2f} us CPU/req  errors {res['errors']}",
                        file=sys.stderr,
                        flush=True,
                    )
        summary: dict[str, Any] = {}
        for case, *_ in CASES:
            row: dict[str, Any] = {}
            for tag in gws:
                rs = runs[tag][case]
                row[tag] = {
                    "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] for x in rs),
                    "user_us_per_req": statistics.median(x["user_us_per_req"] for x in rs),
                    "rps": statistics.median(x["rps"] for x in rs),
                    "errors": sum(x["errors"] for x in rs),
                }
            row["after_over_before"] = row["after"]["cpu_us_per_req"] / row["before"]["cpu_us_per_req"]
            # the same round's two cells ran back to back: their ratio cancels the drift of the
            # machine's load between rounds
            pairs = zip(runs["after"][case], runs["before"][case], strict=True)
            row["paired_ratio_median"] = statistics.median(
                a["cpu_us_per_req"] / b["cpu_us_per_req"] for a, b in pairs
            )
            summary[case] = row
        return {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "before": str(before),
            "after": str(after),
            "after_redis": after_redis,
            "rounds": rounds,
            "duration_s": duration,
            "conns": CONNS,
            "loadavg": Path("/proc/loadavg").read_text().strip(),
            "summary": summary,
            "runs": runs,
        }
    finally:
        procs.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.gateway_cpu", description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, required=True, help="the `src` folder of the code to compare with")
    p.add_argument(
        "--after",
        type=Path,
        default=REPO / "src",
        help="the `src` folder of the code measured (this checkout's)",
    )
    p.add_argument("--rounds", type=int, default=6, help="rounds of every cell; medians are reported (6)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per wrk cell (4)")
    p.add_argument(
        "--after-redis",
        action="store_true",
        help="give the after gateway --redis-url (a redis-server started here)",
    )
    args = p.parse_args(argv)
    for flag, path in (("--before", args.before), ("--after", args.after)):
        if not (path / "openeas" / "gateway").is_dir():
            p.error(f"{flag} {path}: no openeas/gateway in it; give the `src` folder of a checkout")
    result = run(
        args.before.resolve(),
        args.after.resolve(),
        max(1, args.rounds),
        max(1.0, args.duration),
        args.after_redis,
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
