"""`kill -9` of `openeas server` in the middle of creates, modifies and deletes loses nothing.

On SQLite and on PostgreSQL: four client threads drive the control API at once (each creates,
modifies and deletes services of its own, one request after the other), the server is killed
with SIGKILL at a random moment, started again on the same data dir and store, and read back.
Three rounds, then a clean stop. After each restart:

- the registry reads whole: every service has a valid spec, a token, its versions, and the row
  (token) of the group it names;
- every answered request holds: a create that succeeded (201) exists with the token it returned, a
  modify that returned 200 is in the spec, a delete that returned 200 is gone; a request cut by
  the kill either happened whole or not at all;
- no orphan instance: once every service runs, the instance processes of this data dir are
  exactly the registry's instance rows (processes of deleted services and instances that had no
  row yet were cleaned up on start), the only queue server of the Async service is the new
  server's (the killed server's was stopped), and every service answers through the gateway with
  its token.

The seed of the random kill moments is printed; set CRASH_SEED to replay one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from openeas.runtime.orphans import instance_processes
from openeas.spec import parse_service_spec
from openeas.store import Registry, sqlite_url
from tests.harness import APP, Server, start_server, wait_for
from tests.queue.harness import WORKER_APP
from tests.store.postgres_cluster import postgres_cluster

ROUNDS = 3
THREADS = 4
SERVICES = "/api/v2/services"
ANY = "*any token*"


@dataclass
class Expect:
    """What the registry must hold for one service name. `maybe`: the last request on it was cut
    by the kill, so either outcome is right (`alternatives` lists the acceptable labels, None:
    absent)."""

    token: str | None = None  # None: absent
    label: str = ""
    # after a cut request: each acceptable (token, label); token ANY: any token
    alternatives: list[tuple[str | None, str]] = field(default_factory=list)


@dataclass
class Ledger:
    expect: dict[str, Expect] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0
    cut: int = 0
    errors: list[str] = field(default_factory=list)  # answers that were not 2xx


def spec_for(app: Path, name: str, label: str) -> dict[str, Any]:
    group = {"group": f"g{name[1]}"} if name[1] in "02" else {}  # threads 0 and 2: in groups
    return {
        "metadata": {"name": name, "instance": 1, **group},
        "labels": {"gen": label},
        "containers": [
            {
                "command": f"{sys.executable} {app}",
                "port": 8000,
                "health_check": {"http_get": {"path": "/health"}},
                "env": [{"name": "GEN", "value": label}],
            }
        ],
    }


def client_thread(
    server: Server, app: Path, ledger: Ledger, tid: int, rnd: int, stop: threading.Event
) -> None:
    """Create, modify and delete services named c<tid>_..., one request at a time, until the
    server dies; every outcome goes into the ledger."""
    rng = random.Random(f"{tid}-{rnd}")
    mine = [n for n, e in ledger.expect.items() if n.startswith(f"c{tid}_") and e.token is not None]
    api = httpx.Client(
        base_url=server.api, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30
    )
    serial = 0
    try:
        while not stop.is_set():
            serial += 1
            if len(mine) < 2 or rng.random() < 0.3:
                name = f"c{tid}_r{rnd}_{serial}"
                op = "create"
            else:
                name = rng.choice(mine)
                op = "delete" if rng.random() < 0.35 else "modify"
            before = ledger.expect.get(name, Expect())
            label = str(serial)
            try:
                if op == "create":
                    resp = api.post(SERVICES, json=spec_for(app, name, label))
                elif op == "modify":
                    change: dict[str, Any] = {"labels": {"gen": label}}
                    if rng.random() < 0.3:  # a runtime change too: a rolling update
                        change = spec_for(app, name, label)
                    resp = api.put(f"{SERVICES}/local/{name}", json={"spec": change})
                else:
                    resp = api.delete(f"{SERVICES}/local/{name}")
            except httpx.HTTPError:
                # cut by the kill: before or after, nothing in between (a created service's
                # token was never seen: any token, but one)
                after = {"create": (ANY, label), "modify": (before.token, label), "delete": (None, "")}[op]
                with ledger.lock:
                    ledger.cut += 1
                    ledger.expect[name] = Expect(
                        before.token, before.label, [(before.token, before.label), after]
                    )
                return
            if not resp.is_success:
                with ledger.lock:
                    ledger.errors.append(f"{op} {name}: {resp.status_code} {resp.text}")
                return
            with ledger.lock:
                ledger.answered += 1
                if op == "create":
                    ledger.expect[name] = Expect(resp.json()["token"], label)
                    mine.append(name)
                elif op == "modify":
                    ledger.expect[name] = Expect(before.token, label)
                else:
                    ledger.expect[name] = Expect(None)
                    mine.remove(name)
    finally:
        api.close()


def read_back(server: Server, ledger: Ledger, store_url: str) -> dict[str, dict[str, Any]]:
    """The services as the restarted server has them, checked whole and against the ledger;
    the ledger is then set to what was found (the cut requests resolved)."""
    registry = Registry(store_url)  # the rows themselves: the API would make a missing group row
    try:
        group_tokens = {g.name: g.token for g in registry.list_groups()}
    finally:
        registry.close()
    with server.client() as api:
        views = {v["name"]: v for v in api.get(SERVICES).json()["services"]}
        for name, view in views.items():
            assert view["token"], f"{name} has no token"
            parse_service_spec({**view["spec"], "token": view["token"]})  # whole and valid
            group = view["spec"]["metadata"].get("group")
            assert group is None or group_tokens.get(group), f"{name}: group {group} has no row"
            versions = api.get(f"{SERVICES}/local/{name}/versions").json()["versions"]
            assert versions and versions[-1]["spec"]["labels"] == view["spec"]["labels"], (name, versions)
    for name, exp in ledger.expect.items():
        view = views.get(name)
        found = (view["token"], view["spec"]["labels"]["gen"]) if view is not None else (None, "")
        if exp.alternatives:
            ok = [
                (found[0] if tok == ANY and found[0] else tok, lab if tok else "")
                for tok, lab in exp.alternatives
            ]
            assert found in ok, f"{name}: found {found}, expected one of {exp.alternatives}"
        elif exp.token is None:
            assert view is None, f"{name} was deleted (200) but is back"
        else:
            assert found == (exp.token, exp.label), (
                f"{name}: found {found}, answered {(exp.token, exp.label)}"
            )
        ledger.expect[name] = Expect(found[0], found[1])
    unknown = set(views) - set(ledger.expect)
    assert not unknown, f"services nobody created: {unknown}"
    return views


def queue_servers(store_url: str) -> dict[int, int]:
    """pid -> parent pid of the live queue servers of the registry at `store_url`."""
    want = f"OPENEAS_STORE_URL={store_url}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                queue = b"openeas.queue" in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if queue and want in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    if stat[0] not in ("Z", "X"):
                        found[int(entry)] = int(stat[1])
    return found


def check_instances(server: Server, views: dict[str, dict[str, Any]], store_url: str) -> None:
    """Every service runs and answers with its token; instance processes == instance rows; one
    queue server (the Async service's), this server's."""

    def all_running() -> bool:
        with server.client() as api:
            return all(v["status"] == "Running" for v in api.get(SERVICES).json()["services"])

    wait_for(all_running, 120, "every service to run again")

    def consistent() -> tuple[set[str], set[str]] | None:
        with server.client() as api:
            rows = {
                i["id"] for n in views for i in api.get(f"{SERVICES}/local/{n}/instances").json()["instances"]
            }
        procs = {inst for inst, _ in instance_processes(server.data_dir).values()}
        return (rows, procs) if rows == procs else None

    try:
        wait_for(consistent, 30, "instance processes to match the registry")
    except AssertionError:
        with server.client() as api:
            rows = {
                i["id"] for n in views for i in api.get(f"{SERVICES}/local/{n}/instances").json()["instances"]
            }
        procs = {inst for inst, _ in instance_processes(server.data_dir).values()}
        raise AssertionError(f"orphans: {procs - rows}; rows without a process: {rows - procs}") from None
    wait_for(lambda: list(queue_servers(store_url).values()) == [server.pid], 30, "one queue server, ours")
    with server.client() as api:
        views = {v["name"]: v for v in api.get(SERVICES).json()["services"]}  # today's endpoints
    for name, view in views.items():
        if name == "queued":
            continue  # its endpoint is its queue
        url = view["endpoints"]["internet"] + "/health"
        auth = {"Authorization": view["token"]}
        wait_for(functools.partial(answers, url, auth), 20, f"{name} to answer")


def answers(url: str, headers: dict[str, str]) -> bool:
    return httpx.get(url, headers=headers, timeout=10).status_code == 200


def leading(server: Server) -> Server:
    """Wait until the restarted server leads (on PostgreSQL it waits out the killed one's lease
    first, serving as a follower): only the leader recovers instances and starts gateways."""

    def leads() -> bool:
        with server.client() as api:
            view = api.get("/api/v2/control/servers").json()
        return bool(view["leader"]) and view["leader"]["id"] == view["this"]

    wait_for(leads, 60, "the restarted server to lead")
    return server


def gateway_pids(server_pid: int) -> list[int]:
    """The server's gateway processes (they live in their own sessions and outlive a SIGKILL)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == server_pid and b"openeas.gateway" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
    return out


@contextlib.contextmanager
def store_env(kind: str) -> Iterator[dict[str, str]]:
    if kind == "postgres":
        with postgres_cluster() as url:
            yield {"OPENEAS_STORE_URL": url}
    else:
        yield {}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_during_changes_loses_nothing(kind: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    app = tmp_path / "app.py"
    app.write_text(APP)
    data = tmp_path / "data"
    ledger = Ledger()
    leftovers: list[int] = []
    with store_env(kind) as extra_env:
        store_url = extra_env.get("OPENEAS_STORE_URL") or sqlite_url(data)

        def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
            with open(log_path, "wb") as log:
                return subprocess.Popen(argv, env={**env, **extra_env}, stdout=log, stderr=subprocess.STDOUT)

        try:
            for rnd in range(ROUNDS):
                server = start_server(data, spawn=spawn, timeout=90)
                if rnd == 0:  # an Async service: its queue server outlives a SIGKILL too
                    spec = spec_for(app, "queued", "0")
                    spec["metadata"]["type"] = "Async"
                    worker = f"{sys.executable} {WORKER_APP} $PORT 0.1 {tmp_path / 'q.log'}"
                    spec["containers"][0]["command"] = worker
                    with server.client() as api:
                        token = api.post(SERVICES, json=spec).json()["token"]
                    ledger.expect["queued"] = Expect(token, "0")
                else:
                    check_instances(leading(server), read_back(leading(server), ledger, store_url), store_url)
                stop = threading.Event()
                threads = [
                    threading.Thread(target=client_thread, args=(server, app, ledger, t, rnd, stop))
                    for t in range(THREADS)
                ]
                for t in threads:
                    t.start()
                time.sleep(rng.uniform(0.5, 3.0))
                leftovers += gateway_pids(server.pid)
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
                stop.set()
                for t in threads:
                    t.join(60)
                    assert not t.is_alive()
                assert not ledger.errors, ledger.errors
                print(f"round {rnd}: {ledger.answered} answered, {ledger.cut} cut so far")
            server = start_server(data, spawn=spawn, timeout=90)
            check_instances(leading(server), read_back(leading(server), ledger, store_url), store_url)
            assert ledger.answered >= ROUNDS * THREADS, "too few requests were answered to mean anything"
            assert server.stop() == 0, server.log()
        finally:
            for pid in leftovers:  # safety net: a restarted server stops those of the one before
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            for _pid, (_, pgid) in instance_processes(data).items():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            for pid in queue_servers(store_url):  # each leads its own session
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
