"""The local runtime with real subprocesses: $PORT, probes, exit detection, SIGTERM then SIGKILL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from openeas.runtime import LocalRuntime
from openeas.runtime.local import tail_lines
from openeas.spec import parse_service_spec
from openeas.spec.service import ProbeSpec

HTTP_APP = """
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == '/health' else 503
        self.send_response(code); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a):
        print('request', self.path, flush=True)
print('listening on', os.environ['PORT'], 'as', os.environ['OPENEAS_INSTANCE_ID'], os.environ['GREETING'])
HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"""

STUBBORN_APP = """
import signal, time
signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))
print('started', flush=True)
while True:
    time.sleep(0.05)
"""


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def spec_for(tmp: Path, name: str, code: str, **container: Any) -> Any:
    script = tmp / f"{name}.py"
    script.write_text(code)
    return parse_service_spec(
        {
            "metadata": {"name": name},
            "containers": [{"command": f"{sys.executable} {script}", "port": 8000, **container}],
        }
    )


async def until(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_start_probe_and_stop_http_instance(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = LocalRuntime(tmp_path / "data")
        spec = spec_for(
            tmp_path,
            "web",
            HTTP_APP,
            env=[{"name": "GREETING", "value": "hi-there"}],
            health_check={"http_get": {"path": "/health"}},
        )
        handle = await runtime.start("web-1-0", "web", spec)
        assert handle.port > 0 and handle.pid
        health = spec.containers[0].health_check

        async def ready() -> bool:
            return (await runtime.probe(handle, health)).ok

        await until(ready)
        ok = await runtime.probe(handle, health)
        assert ok.detail.endswith("-> 200")
        # A path answering 503 fails the HTTP probe; a bare TCP probe passes.
        bad = await runtime.probe(handle, ProbeSpec.model_validate({"http_get": {"path": "/nope"}}))
        assert not bad.ok and "503" in bad.detail
        assert (await runtime.probe(handle, None)).ok
        assert runtime.exit_code(handle) is None

        code = await runtime.stop(handle, grace_s=5)
        assert code == -15  # SIGTERM, the default action
        assert runtime.exit_code(handle) == -15
        assert not (await runtime.probe(handle, None)).ok

        log = runtime.log_path("web", "web-1-0")
        assert log == tmp_path / "data" / "logs" / "web" / "web-1-0.log"
        text = log.read_text()
        assert f"listening on {handle.port} as web-1-0 hi-there" in text
        assert "request /health" in text
        assert "exited: killed by SIGTERM" in text
        assert runtime.log_instances("web") == ["web-1-0"]
        assert runtime.read_log("web", "web-1-0", 1)[0].endswith("killed by SIGTERM")
        assert (tmp_path / "data" / "work" / "web").is_dir()

    run(main)


def test_exit_is_detected_at_once_and_logged(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = LocalRuntime(tmp_path)
        spec = parse_service_spec(
            {"metadata": {"name": "crash"}, "containers": [{"command": "echo boom; sleep 0.3; exit 7"}]}
        )
        handle = await runtime.start("crash-1-0", "crash", spec)
        started = time.monotonic()
        code = await asyncio.wait_for(runtime.wait(handle), 5)
        assert code == 7
        assert time.monotonic() - started < 3
        assert runtime.exit_code(handle) == 7
        lines = runtime.read_log("crash", "crash-1-0", 10)
        assert "boom" in lines and lines[-1].endswith("exited: exit code 7")
        # Stopping something that already exited just returns its status.
        assert await runtime.stop(handle, grace_s=1) == 7

    run(main)


def test_sigterm_ignored_then_sigkill_whole_group(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = LocalRuntime(tmp_path)
        script = tmp_path / "stubborn.py"
        script.write_text(STUBBORN_APP)
        # Two stubborn processes in one instance: the shell stays as the group leader.
        command = f"{sys.executable} {script} & {sys.executable} {script}; wait"
        spec = parse_service_spec({"metadata": {"name": "stub"}, "containers": [{"command": command}]})
        handle = await runtime.start("stub-1-0", "stub", spec)

        async def both_started() -> bool:
            # Count in the joined text: with PYTHONUNBUFFERED print() writes "started" and "\n"
            # separately, so the two processes' lines can interleave ("startedstarted\n\n").
            return "\n".join(runtime.read_log("stub", "stub-1-0", 10)).count("started") == 2

        await until(both_started)
        pgid = handle.pid
        assert pgid is not None
        started = time.monotonic()
        code = await runtime.stop(handle, grace_s=0.6)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 5, elapsed
        assert code == -9 or code == -15  # the shell may die of SIGTERM; the python ones need SIGKILL
        assert "ignoring SIGTERM" in "\n".join(runtime.read_log("stub", "stub-1-0", 20))

        def group_gone() -> bool:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            return False

        deadline = time.monotonic() + 3
        while not group_gone() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert group_gone(), "a process of the instance survived the stop"

    run(main)


def test_cleanup_stale_kills_only_its_own_instance(tmp_path: Path) -> None:
    async def main() -> None:
        first = LocalRuntime(tmp_path)
        spec = parse_service_spec({"metadata": {"name": "left"}, "containers": [{"command": "sleep 30"}]})
        handle = await first.start("left-1-0", "left", spec)
        await asyncio.sleep(0.2)
        second = LocalRuntime(tmp_path)  # as if the server restarted
        assert not await second.cleanup_stale("another-1-0", handle.pid)
        assert first.exit_code(handle) is None
        assert await second.cleanup_stale("left-1-0", handle.pid)
        assert await asyncio.wait_for(first.wait(handle), 5) == -15

    run(main)


def test_adopt_takes_over_only_its_own_live_instance(tmp_path: Path) -> None:
    """A second runtime (a restarted server) adopts a running instance by pid: not another
    instance's id or service, not a dead one; the adopted one is probed and stopped as if it
    had been started here, and its end is seen although it is not this runtime's child."""

    async def main() -> None:
        first = LocalRuntime(tmp_path)
        spec = spec_for(tmp_path, "kept", HTTP_APP, env=[{"name": "GREETING", "value": "hi"}])
        handle = await first.start("kept-1-0", "kept", spec)
        probe = ProbeSpec.model_validate({"http_get": {"path": "/health"}})
        await until(lambda: _ok(first.probe(handle, probe)))
        second = LocalRuntime(tmp_path / "elsewhere")  # another data dir: the log is found anyway

        async def adopt(instance_id: str, service: str, pid: int | None = handle.pid) -> Any:
            return await second.adopt(instance_id, service, pid=pid, host="127.0.0.1", port=handle.port)

        assert await adopt("kept-1-1", "kept") is None  # the pid runs another instance
        assert await adopt("kept-1-0", "other") is None
        assert await adopt("kept-1-0", "kept", pid=os.getpid()) is None
        adopted = await adopt("kept-1-0", "kept")
        assert adopted is not None and adopted.pid == handle.pid and adopted.port == handle.port
        assert (await second.probe(adopted, probe)).ok
        assert second.exit_code(adopted) is None
        assert any("listening on" in line for line in second.read_log("kept", "kept-1-0", 20))
        code = await asyncio.wait_for(second.stop(adopted, 5), 10)
        assert "status unknown" in second.describe_exit(adopted, code)
        assert await asyncio.wait_for(first.wait(handle), 5) == -15  # it really ended
        assert await adopt("kept-1-0", "kept") is None  # gone: nothing to adopt
        assert "adopted by a new control plane" in "\n".join(first.read_log("kept", "kept-1-0", 20))

    run(main)


def test_an_instance_without_a_pid_in_its_row_is_found_by_its_ids_in_its_registry_only(
    tmp_path: Path,
) -> None:
    """A server killed between starting an instance and writing its pid leaves a row without one:
    another server of the same registry (another data dir) finds the instance by its ids and
    registry id, adopts or stops it; a runtime of another registry, or of none, never does."""

    async def main() -> None:
        first = LocalRuntime(tmp_path / "a", registry_id="5eed")
        spec = spec_for(tmp_path, "kept", HTTP_APP, env=[{"name": "GREETING", "value": "hi"}])
        handle = await first.start("kept-1-0", "kept", spec)
        probe = ProbeSpec.model_validate({"http_get": {"path": "/health"}})
        await until(lambda: _ok(first.probe(handle, probe)))
        other_registry = LocalRuntime(tmp_path / "c", registry_id="0dd")
        unmarked = LocalRuntime(tmp_path / "d")
        for runtime in (other_registry, unmarked):
            assert await runtime.adopt("kept-1-0", "kept") is None
            assert not await runtime.cleanup_stale("kept-1-0", None, "kept")
        second = LocalRuntime(tmp_path / "b", registry_id="5eed")
        assert second.find("kept-1-0", "other") is None and second.find("kept-1-1", "kept") is None
        adopted = await second.adopt("kept-1-0", "kept")  # no pid, no port: as the row has them
        assert adopted is not None and (adopted.pid, adopted.port) == (handle.pid, handle.port)
        assert (await second.probe(adopted, probe)).ok
        third = LocalRuntime(tmp_path / "e", registry_id="5eed")
        assert await third.cleanup_stale("kept-1-0", None, "kept")
        assert await asyncio.wait_for(first.wait(handle), 5) == -15
        assert third.find("kept-1-0", "kept") is None

    run(main)


async def _ok(result: Coroutine[Any, Any, Any]) -> bool:
    return bool((await result).ok)


def test_tail_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(20000)))
    assert tail_lines(path, 3) == ["line 19997", "line 19998", "line 19999"]
    assert tail_lines(path, 0) == []
    assert tail_lines(tmp_path / "missing.log", 5) == []
