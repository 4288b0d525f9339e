"""Soak (issue 17, item 5; `slow`, out of the default run): a million mixed requests, flat memory.

`pytest -m slow tests/gateway/test_soak.py` drives OPENEAS_SOAK_REQUESTS (default 1,000,000)
requests through an in-process gateway from two load processes (soak_client.py): valid (200), 401,
404, 413 and malformed (400) in a fixed mix. It asserts that every valid request got 200, every
other kind its status, and that the gateway process's RSS after the run is within 5% of its RSS
after the first 10% of the requests (warm: pools, buffers and allocator arenas filled). The result
is in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from openeas.gateway.snapshot import RoutingSnapshot
from tests.gateway.inprocess import route, running_gateway, settings
from tests.gateway.misbehaving_upstream import start_misbehaving_upstream

CLIENT = Path(__file__).with_name("soak_client.py")
TOKEN = "soak-token"
LOADERS = 2


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run(port: int, count: int) -> Counter[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), str(port), str(count // LOADERS), TOKEN], stdout=subprocess.PIPE
        )
        for _ in range(LOADERS)
    ]
    total: Counter[str] = Counter()
    for proc in procs:
        out, _ = proc.communicate(timeout=7200)
        assert proc.returncode == 0
        result = json.loads(out)
        assert result["valid_errors"] == 0, result
        total.update(result["statuses"])
    return total


@pytest.mark.slow
@pytest.mark.timeout(7200)  # a million requests take ~10 min on two shared cores
def test_soak_mixed_requests_flat_rss() -> None:
    n = int(os.environ.get("OPENEAS_SOAK_REQUESTS", "1000000"))
    port, sock = start_misbehaving_upstream()
    svc = replace(route("svc", TOKEN, [port]), timeout_s=30.0)
    try:
        with running_gateway(RoutingSnapshot(1, {"svc": svc}), settings()) as gw:
            started = time.monotonic()
            warm = _run(gw.port(), n // 10)
            rss_warm = _rss()
            rest = _run(gw.port(), n - n // 10)
            rss_end = _rss()
            elapsed = time.monotonic() - started
    finally:
        sock.close()
    statuses = warm + rest
    growth = (rss_end - rss_warm) / rss_warm
    print(
        f"soak: {sum(statuses.values())} requests in {elapsed:.0f} s, statuses {dict(statuses)}, "
        f"RSS warm {rss_warm / 2**20:.1f} MiB, end {rss_end / 2**20:.1f} MiB, growth {growth * 100:.2f}%"
    )
    assert sum(statuses.values()) == (n // 10 // LOADERS + (n - n // 10) // LOADERS) * LOADERS
    kinds = {"200", "401", "404", "413", "400"}
    assert set(statuses) == kinds, statuses
    assert growth < 0.05, (rss_warm, rss_end)
