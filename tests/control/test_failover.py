"""Two `openeas server`s on one PostgreSQL: both serve the API, exactly one leads, and `kill -9`
of the leader hands the lead to the other within 10 s (measured through the CLI with
OPENEAS_API=a,b, which fails over to the server that still answers).

First test: the servers have gateway ports of their own, so the new leader's shared gateway
record differs from the one the dead leader's gateway runs: that gateway is stopped (it used to
be left running) and the new leader's serves; the instance is adopted (same pid), not restarted.

Second test: both servers are given the same gateway ports (so the same shared gateway record),
50 requests a second go through that gateway, and the leader is killed in the middle of a
rolling update: the other leads within 10 s, adopts the gateway process and every instance (old
and new revision), and finishes the update; no request fails and no instance is started twice
(each instance appends `P <pid>` to its trace at start, and `starting <id>` to its log).

Both check that nothing is left running at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from openeas.procfs import running
from tests.control.test_adoption import end_all, gateway_pids, none_running
from tests.e2e.load import SteadyLoad
from tests.e2e.test_rolling_update import Trace, graceful_spec, instances, settled
from tests.harness import Server, app_spec, clean_env, start_server, terminate, wait_for
from tests.store.postgres_cluster import postgres_cluster


def cli_env(servers: list[Server]) -> dict[str, str]:
    env = clean_env(servers[0].data_dir)
    del env["OPENEAS_DATA_DIR"]
    env["OPENEAS_API"] = ",".join(s.api for s in servers)
    env["OPENEAS_ADMIN_TOKEN"] = servers[0].admin_token
    return env


def status(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "openeas", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def kill_and_wait_for_lead(a: Server, b: Server) -> float:
    """SIGKILL leader `a`; the seconds until `b` leads, which must be under 10."""
    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)

    def b_leads() -> bool:
        leader = b.client().get("/api/v2/control/servers").json()["leader"]
        return isinstance(leader, dict) and leader["api"] == b.api

    wait_for(b_leads, timeout=20, what="the second server to lead", every=0.2)
    took = time.monotonic() - killed
    assert took < 10, f"the second server led {took:.1f} s after the kill\n{b.log()}"
    return took


def test_kill_9_of_the_leader_hands_over_within_10_s(tmp_path: Path) -> None:
    with postgres_cluster() as url:
        a = start_server(tmp_path / "a", "--store-url", url)
        (tmp_path / "b").mkdir()
        # every server of one registry shares the admin token (docs/operations.md)
        shutil.copy(a.data_dir / "admin_token", tmp_path / "b" / "admin_token")
        b = start_server(tmp_path / "b", "--store-url", url)
        env = cli_env([a, b])
        leftovers: list[int] = []
        try:
            view = status(env)
            roles = {s["api"]: s["role"] for s in view["servers"]}
            assert roles == {a.api: "leader", b.api: "follower"}, view
            assert view["leader"]["api"] == a.api

            # the follower takes the API call; the leader's reconciler starts the instance
            spec_path = tmp_path / "svc.json"
            spec_path.write_text(json.dumps(app_spec(tmp_path, "ha", instance=1)))
            created = b.cli_json("create", str(spec_path), "--wait", timeout=120)
            assert created["status"] == "Running"
            token = created["token"]
            auth = {"Authorization": token}
            old_pid = httpx.get(f"{a.internet}/api/predict/ha/pid", headers=auth).json()["pid"]
            a_gateways = gateway_pids(a)
            row_pid = b.cli_json("instances", "ha")["instances"][0]["pid"]  # the instance's shell
            leftovers += a_gateways
            leftovers.append(row_pid)  # the instance's process group

            kill_and_wait_for_lead(a, b)
            # the CLI, given both addresses, finds the one that answers
            view = status(env)
            assert view["leader"]["api"] == b.api and view["this"] == view["leader"]["id"]
            roles = {s["api"]: s["role"] for s in view["servers"]}
            assert roles[b.api] == "leader" and roles.get(a.api) in ("follower", "gone"), view

            def served() -> bool:
                r = httpx.get(f"{b.internet}/api/predict/ha/pid", headers={"Authorization": token})
                return r.status_code == 200

            wait_for(served, timeout=60, what="the service on the new leader's gateway")
            desc = b.cli_json("desc", "ha")
            assert desc["status"] == "Running" and desc["running_instances"] == 1
            rows = b.cli_json("instances", "ha")["instances"]
            assert len(rows) == 1
            # adopted: the same process serves, through the new leader's gateway
            r = httpx.get(f"{b.internet}/api/predict/ha/pid", headers=auth)
            assert r.json()["pid"] == old_pid and rows[0]["pid"] == row_pid
            # the dead leader's gateway (another config) was stopped, not left running
            wait_for(lambda: none_running(a_gateways), timeout=30, what="the old leader's gateway gone")
            leftovers += gateway_pids(b)
            assert terminate(b.proc) == 0, b.log()
            wait_for(lambda: none_running(leftovers), timeout=30, what="nothing left after the stop")
        finally:
            end_all([a, b], leftovers)


def started(trace: Trace, logs: list[Path]) -> dict[str, list[str]]:
    """Instance id -> each start seen: the pids in its trace, and its `starting` log lines."""
    seen: dict[str, list[str]] = {}
    for path in trace.folder.glob("*.trace"):
        seen.setdefault(path.stem, []).extend(f"pid {p}" for p in trace.pids(path.stem))
    for root in logs:
        for log in root.glob("logs/*/*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if f" starting {log.stem} on port " in line:
                    seen.setdefault(log.stem, []).append(f"log {log}")
    return seen


def test_failover_during_a_rolling_update_under_load_adopts_everything(tmp_path: Path) -> None:
    trace_dir = tmp_path / "trace"
    trace_dir.mkdir()
    trace = Trace(trace_dir)
    with postgres_cluster() as url:
        a = start_server(tmp_path / "a", "--store-url", url)
        (tmp_path / "b").mkdir()
        shutil.copy(a.data_dir / "admin_token", tmp_path / "b" / "admin_token")
        same_gateway = ["--gateway-port", str(a.gateway_port), "--vpc-port", str(a.vpc_port)]
        b = start_server(tmp_path / "b", "--store-url", url, *same_gateway)
        leftovers = gateway_pids(a)
        try:
            spec = graceful_spec("roll", trace_dir, 2, "v1")
            created = b.deploy(spec, tmp_path, timeout=120)  # through the follower's API
            url_, token = created["endpoints"]["internet"], created["token"]
            b.wait_for(lambda: settled(b, "roll", 2), timeout=120, what="2 instances ready")
            # v2 takes 3 s to start listening: the update is still under way when the leader dies
            v2 = graceful_spec("roll", trace_dir, 2, "v2")["containers"]
            v2[0]["command"] = "sleep 3; exec " + v2[0]["command"]
            patch = tmp_path / "v2.json"
            patch.write_text(json.dumps({"containers": v2}))

            with SteadyLoad(url_, token, rate=50, seconds=150, keep_bodies=True) as load:
                time.sleep(2)
                revision = b.cli_json("modify", "roll", "-s", str(patch))["revision"]
                b.wait_for(
                    lambda: any(r["revision"] == revision for r in instances(b, "roll")),
                    timeout=30,
                    what="a v2 instance started by the leader",
                )
                leftovers += [r["pid"] for r in instances(b, "roll") if r["pid"]]
                took = kill_and_wait_for_lead(a, b)
                b.wait_for(lambda: settled(b, "roll", 2, revision), timeout=120, what="the update finished")
                leftovers += [r["pid"] for r in instances(b, "roll") if r["pid"]]
                time.sleep(2)  # and traffic on the new revision, under the new leader
                load.stop()
            report = load.report()
            print("failover during a rolling update:", report.describe(), f"; led after {took:.1f} s")
            assert len(report.results) == report.planned, report.describe()
            assert report.failures == [], report.describe()
            assert {json.loads(r.body)["version"] for r in report.results} == {"v1", "v2"}
            # the same gateway process served all along: adopted by the new leader
            assert gateway_pids(b) == leftovers[:1], b.log()
            assert f"adopted pid {leftovers[0]}" in b.log()
            # no instance was started twice: one start per instance id, over both servers
            starts = started(trace, [a.data_dir, b.data_dir])
            assert len(starts) >= 4, starts  # 2 of v1, 2 of v2
            assert all(len([s for s in v if s.startswith("pid")]) == 1 for v in starts.values()), starts
            assert all(len([s for s in v if s.startswith("log")]) == 1 for v in starts.values()), starts
            assert "adopted instance" in b.log()
            assert terminate(b.proc) == 0, b.log()
            wait_for(lambda: none_running(leftovers), timeout=30, what="nothing left after the stop")
            assert not any(running(p) for p in leftovers)
        finally:
            end_all([a, b], leftovers)
