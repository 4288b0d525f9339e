"""A leader killed between starting an instance and writing its pid: the next leader adopts that
instance, it does not start a second one under the same id beside it.

Real processes: a first control plane (a `Reconciler` on the local runtime, in a subprocess of its
own, on a SQLite registry) starts the one instance of a service, and is SIGKILLed the moment the
instance's process exists, before `Runtime.start` returned its pid. A second control plane on
the same registry, with another data dir (another server of the registry on this machine),
recovers: the row the first wrote before starting the instance (state "starting", no pid) leads
it to the process by its ids and registry id in /proc (`LocalRuntime.find`). It adopts it (same
pid, probed to ready), and no other process of that instance id ever starts.

Before the row was written first, the second control plane found no row, took the same id and
started a second process: two instances under one id, the first never stopped (CI saw it in
tests/control/test_failover.py).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from openeas.control.reconciler import Reconciler
from openeas.runtime import LocalRuntime
from openeas.runtime.orphans import instance_processes
from openeas.store import Registry, sqlite_url
from tests.control.test_adoption import kill_groups
from tests.control.test_reconciler_unit import FAST
from tests.harness import wait_for

APP = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a):
        pass
HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"""

# The first control plane: its runtime starts the instance, says so, and never returns (the
# server dies right there, as a SIGKILL would catch it between the fork and the pid's write).
FIRST = """
import asyncio, sys
from pathlib import Path
from openeas.control.reconciler import Reconciler
from openeas.runtime import LocalRuntime
from openeas.store import Registry
from tests.control.test_adoption import kill_groups
from tests.control.test_reconciler_unit import FAST

class KilledAfterSpawn(LocalRuntime):
    async def start(self, instance_id, service, spec, port=None):
        handle = await super().start(instance_id, service, spec, port)
        print("spawned", handle.pid, flush=True)
        await asyncio.Event().wait()

async def main():
    registry = Registry(sys.argv[1])
    runtime = KilledAfterSpawn(Path(sys.argv[2]), registry_id=registry.identity())
    await Reconciler(registry, runtime, FAST).run()

asyncio.run(main())
"""


def test_the_next_leader_adopts_an_instance_whose_pid_was_never_written(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    registry = Registry(url)
    registry.create_schema()
    app = tmp_path / "app.py"
    app.write_text(APP)
    body = {
        "metadata": {"name": "web", "instance": 1},
        "containers": [{"command": f"{sys.executable} {app}", "health_check": {"http_get": {"path": "/"}}}],
    }
    registry.create_service("web", body, "token", "shared")
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FIRST), url, str(tmp_path / "a")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        line = first.stdout.readline().split()
        assert line[:1] == ["spawned"], line
        spawned = int(line[1])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        rows = registry.list_instances("web")
        assert [(r.state, r.pid) for r in rows] == [("starting", None)], rows
        instance_id = rows[0].id

        async def second() -> None:
            runtime = LocalRuntime(tmp_path / "b", registry_id=registry.identity())
            reconciler = Reconciler(registry, runtime, FAST)
            await reconciler.recover()
            task = asyncio.create_task(reconciler.run())
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    rows = registry.list_instances("web")
                    if [(r.id, r.state, r.pid) for r in rows] == [(instance_id, "ready", spawned)]:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"not adopted as {instance_id}, pid {spawned}: {rows}")
                await asyncio.sleep(0.5)  # a few more passes: still one process, the same
                running = instance_processes(tmp_path / "a") | instance_processes(tmp_path / "b")
                assert set(running.values()) == {(instance_id, spawned)}  # one process group: the shell's
                assert registry.get_service("web").status == "Running"
            finally:
                await reconciler.shutdown()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(second())
        wait_for(lambda: not instance_processes(tmp_path / "a"), timeout=10, what="the instance stopped")
    finally:
        first.kill()
        kill_groups([group for _, group in instance_processes(tmp_path / "a").values()])
        registry.close()
