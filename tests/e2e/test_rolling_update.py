"""Rolling update, scale-down and a killed instance under steady load, on real processes.

A real `openeas server`, its shared gateway and instances of tests/e2e/apps/graceful.py (a
~30 ms echo under uvicorn, which on SIGTERM stops accepting, finishes what is in flight and
exits). Open-loop load (tests/e2e/load.py) goes through the gateway while the test changes the
service; every request is accounted for.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.load import SteadyLoad
from tests.harness import Server, app_command, service_spec, wait_for

# What this 2-core box sustains next to other test suites: see docs/traffic.md. The load
# generator is one Python thread; above this rate it falls behind its own clock.
RATE = 200.0


def graceful_spec(name: str, trace: Path, instance: int, version: str, **env: str) -> dict[str, Any]:
    spec = service_spec(name, app_command("graceful.py"), instance=instance)
    spec["metadata"]["rolling_strategy"] = {"max_surge": 1, "max_unavailable": 0}
    spec["metadata"]["eas"] = {"termination_grace_period": 20}
    values = {"TRACE_DIR": str(trace), "VERSION": version, **env}
    spec["containers"][0]["env"] = [{"name": k, "value": v} for k, v in values.items()]
    return spec


class Trace:
    """The request trace the graceful app writes, one file per instance."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def events(self, instance: str) -> list[tuple[str, str]]:
        path = self.folder / f"{instance}.trace"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(line[0], line[2:]) for line in lines if len(line) > 2]

    def pids(self, instance: str) -> list[int]:
        return [int(v) for k, v in self.events(instance) if k == "P"]

    def unfinished(self, instance: str) -> set[int]:
        started = {int(v) for k, v in self.events(instance) if k == "S"}
        finished = {int(v) for k, v in self.events(instance) if k == "F"}
        return started - finished

    def started_anywhere(self) -> set[int]:
        return {int(v) for path in self.folder.glob("*.trace") for k, v in self.events(path.stem) if k == "S"}

    def served(self, instance: str) -> int:
        return sum(1 for k, _ in self.events(instance) if k == "F")


class Sampler:
    """Reads the service's instances from the API every 0.1 s while something happens."""

    def __init__(self, server: Server, name: str) -> None:
        self.url = f"{server.api}/api/v2/services/local/{name}/instances"
        self.headers = {"Authorization": f"Bearer {server.admin_token}"}
        self.samples: list[list[dict[str, Any]]] = []
        self.times: list[float] = []  # time.monotonic() of each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                rows = client.get(self.url).json()["instances"]
                self.times.append(time.monotonic())
                self.samples.append(rows)
                self._stop.wait(0.1)


def instances(server: Server, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = server.cli_json("instances", name)["instances"]
    return out


def settled(server: Server, name: str, count: int, revision: int | None = None) -> bool:
    view = server.cli_json("desc", name)
    rows = instances(server, name)
    return (
        view["status"] == "Running"
        and view["observed_revision"] >= view["revision"]
        and len(rows) == count
        and all(r["state"] == "ready" for r in rows)
        and (revision is None or all(r["revision"] == revision for r in rows))
    )


def test_rolling_update_and_scale_down_under_load_fail_nothing(server: Server, work: Path) -> None:
    trace_dir = work / "trace"
    trace_dir.mkdir()
    trace = Trace(trace_dir)
    created = server.deploy(graceful_spec("roll", trace_dir, 3, "v1"), work, timeout=120)
    url, token = created["endpoints"]["internet"], created["token"]
    server.wait_for(lambda: settled(server, "roll", 3), timeout=120, what="3 instances ready")
    before = {r["id"]: r["pid"] for r in instances(server, "roll")}
    patch = work / "v2.json"
    patch.write_text(json.dumps({"containers": graceful_spec("roll", trace_dir, 3, "v2")["containers"]}))

    with SteadyLoad(url, token, rate=RATE, seconds=20, keep_bodies=True) as load:
        time.sleep(2)
        with Sampler(server, "roll") as during_update:
            revision = server.cli_json("modify", "roll", "-s", str(patch))["revision"]
            server.wait_for(
                lambda: settled(server, "roll", 3, revision), timeout=120, what="3 new instances ready"
            )
        after_update = {r["id"]: r["pid"] for r in instances(server, "roll")}
        time.sleep(1)
        with Sampler(server, "roll") as during_scale:
            server.cli("scale", "roll", "1")
            server.wait_for(lambda: settled(server, "roll", 1), timeout=120, what="1 instance left")
    report = load.report()
    print("rolling update + scale-down:", report.describe())

    # Every request answered 200, through the update and the scale-down.
    assert len(report.results) == report.planned, report.describe()
    assert report.failures == [], report.describe()
    # Instances really were replaced: new ids, new processes; both versions answered.
    assert not set(after_update) & set(before)
    assert not set(after_update.values()) & set(before.values())
    versions = {json.loads(r.body)["version"] for r in report.results}
    assert versions == {"v1", "v2"}
    # max_surge 1, max_unavailable 0: never more than 4 instances not being stopped, never fewer
    # than 3 ready, in any sample.
    assert during_update.samples
    live = [sum(1 for r in s if r["state"] != "stopping") for s in during_update.samples]
    ready = [sum(1 for r in s if r["state"] == "ready") for s in during_update.samples]
    assert max(live) <= 4, live
    assert min(ready) >= 3, ready
    assert max(live) == 4, live  # the surge was used (one at a time)
    # The scale-down drained: the two removed instances were "stopping" (out of routing) first.
    assert any(r["state"] == "stopping" for s in during_scale.samples for r in s)
    # Requests in flight on removed instances finished: each one's trace has no open request.
    removed = set(before) | (set(after_update) - {r["id"] for r in instances(server, "roll")})
    for inst in removed:
        assert trace.served(inst) > 0, f"{inst} never served a request"
        assert trace.unfinished(inst) == set(), f"{inst} did not finish {trace.unfinished(inst)}"


def test_killed_instance_fails_only_its_requests_in_flight(server: Server, work: Path) -> None:
    trace_dir = work / "trace"
    trace_dir.mkdir()
    trace = Trace(trace_dir)
    spec = graceful_spec("kill", trace_dir, 2, "v1", DELAY_S="0.1")  # more requests in flight
    created = server.deploy(spec, work, timeout=120)
    url, token = created["endpoints"]["internet"], created["token"]
    server.wait_for(lambda: settled(server, "kill", 2), timeout=120, what="2 instances ready")
    victim = instances(server, "kill")[0]["id"]
    pid = trace.pids(victim)[-1]  # the app itself, not the shell that started it

    with SteadyLoad(url, token, rate=RATE / 2, seconds=10) as load, Sampler(server, "kill") as sampler:
        server.wait_for(lambda: trace.served(victim) >= 50, timeout=60, what="traffic on the victim")
        # Kill while the victim has requests open (each takes 0.1 s): a stall of this loaded box
        # can leave it idle for a moment, and a kill then would prove nothing.
        wait_for(
            lambda: len(trace.unfinished(victim)) >= 2,
            timeout=30,
            what="requests open on the victim",
            every=0.01,
        )
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        server.wait_for(lambda: len(trace.pids(victim)) == 2, timeout=60, what="the victim restarted")
    report = load.report()
    in_flight = trace.unfinished(victim)
    # Sent to the victim, but still in its socket buffer (or on a kept-alive connection the
    # gateway wrote to as the process died): no instance ever started these.
    never_started = {r.rid for r in report.results} - trace.started_anywhere()
    print(
        f"killed instance: {report.describe()}; {len(in_flight)} in flight on the victim, "
        f"{len(never_started)} sent to it and never read"
    )

    assert len(report.results) == report.planned, report.describe()
    failed = {r.rid for r in report.failures}
    # Only requests in flight on the instance failed, as clear 503s (no hangs, no connection
    # errors): started there and not finished, or on their way to it when it died.
    assert failed <= in_flight | never_started, (
        f"failed {sorted(failed)}; started and not finished on {victim}: {sorted(in_flight)}; "
        f"started nowhere: {sorted(never_started)}"
    )
    # Every failure happened between the kill and the store saying the instance is not ready:
    # once the gateways knew, every request succeeded.
    gone = next(
        (
            t
            for t, rows in zip(sampler.times, sampler.samples, strict=True)
            if t > killed_at and not any(r["id"] == victim and r["state"] == "ready" for r in rows)
        ),
        None,
    )
    assert gone is not None, "the store never showed the killed instance as not ready"
    assert all(killed_at < r.ended and r.started < gone for r in report.failures), report.describe()
    assert {r.status for r in report.failures} <= {503}, report.describe()
    assert all("crashed" in r.detail or "instance" in r.detail for r in report.failures), report.describe()
    assert in_flight, "the victim had nothing in flight when killed: the test proved nothing"
    # The reconciler restarted the killed instance (above); both serve again.
    server.wait_for(lambda: settled(server, "kill", 2), timeout=120, what="2 instances ready again")


def test_versions_and_rollback_through_the_cli(server: Server, work: Path) -> None:
    trace_dir = work / "trace"
    trace_dir.mkdir()
    created = server.deploy(graceful_spec("ver", trace_dir, 2, "v1"), work, timeout=120)
    url, token = created["endpoints"]["internet"], created["token"]

    def answers() -> set[str]:
        return {httpx.post(url, headers={"Authorization": token}).json()["version"] for _ in range(10)}

    assert answers() == {"v1"}
    patch = work / "v2.json"
    patch.write_text(json.dumps({"containers": graceful_spec("ver", trace_dir, 2, "v2")["containers"]}))
    server.cli("modify", "ver", "-s", str(patch), "--wait", timeout=180)
    # Running means the old instances are out of routing in the store; each gateway applies that
    # with its next snapshot (a poll of 100 ms, longer on a loaded machine): at most a few seconds
    server.wait_for(lambda: answers() == {"v2"}, timeout=5, what="only v2 answering")
    # scaling and a token change are not versions
    server.cli("scale", "ver", "3", "--wait", timeout=180)
    server.cli("modify", "ver", "-D", "token=TokenOfVersions0123456789", "--wait", timeout=180)
    token = "TokenOfVersions0123456789"

    listed = server.cli_json("versions", "ver")
    assert [(v["version"], v["note"], v["current"]) for v in listed["versions"]] == [
        (1, "created", False),
        (2, "changed containers[0].env[1].value", True),
    ]
    assert listed["current"] == 2
    text = server.cli("versions", "ver").stdout
    assert "VERSION" in text and "changed containers[0].env[1].value" in text and "current" in text

    before = {r["id"] for r in instances(server, "ver")}
    view = server.cli_json("rollback", "ver", "1", "--wait", timeout=180)
    assert view["status"] == "Running" and view["instance"] == 3 and view["token"] == token
    assert answers() == {"v1"}
    now = {r["id"] for r in instances(server, "ver") if r["state"] != "stopping"}
    assert len(now) == 3 and not before & now  # replaced
    listed = server.cli_json("versions", "ver")
    assert [(v["version"], v["note"]) for v in listed["versions"]][-1] == (3, "rollback to version 1")
    assert listed["current"] == 3

    # An unknown version is a clear error naming the versions there are; nothing changes.
    bad = server.cli("rollback", "ver", "9", check=False)
    said = bad.stdout + bad.stderr
    assert bad.returncode == 1 and "no version 9" in said and "1, 2, 3" in said and "Traceback" not in said
    assert len(server.cli_json("versions", "ver")["versions"]) == 3
    # Deleting the service deletes its versions: a new one of the same name starts at 1.
    server.cli("delete", "ver")
    gone = server.cli("versions", "ver", check=False)
    assert gone.returncode == 1 and "no service named 'ver'" in gone.stdout + gone.stderr
    server.deploy(graceful_spec("ver", trace_dir, 1, "v9"), work, timeout=120)
    assert [v["version"] for v in server.cli_json("versions", "ver")["versions"]] == [1]
    server.cli("delete", "ver")
