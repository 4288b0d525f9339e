"""The `openeas` command against a real server: every command with --json, user errors, `up`."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.harness import Server, app_spec, clean_env, pid_alive, wait_for


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_every_command_with_json(server: Server, tmp_path: Path) -> None:
    spec = write(tmp_path / "svc.json", app_spec(tmp_path, "cli_svc"))
    created = server.cli_json("create", str(spec), "--wait")
    assert created["name"] == "cli_svc" and created["status"] == "Running"
    assert created["endpoints"]["internet"] == f"{server.internet}/api/predict/cli_svc"
    assert created["endpoints"]["vpc"] == f"{server.vpc}/api/predict/cli_svc"
    token = created["token"]
    r = httpx.get(created["endpoints"]["internet"] + "/pid", headers={"Authorization": token})
    assert r.status_code == 200

    assert [s["name"] for s in server.cli_json("list")] == ["cli_svc"]
    assert server.cli_json("desc", "cli_svc")["token"] == token
    panel = server.cli_json("endpoints", "cli_svc")
    assert panel["endpoints"] == created["endpoints"] and panel["token"] == token
    text = server.cli("endpoints", "cli_svc").stdout
    for word in ("Internet endpoint", "VPC endpoint", "Token", token, created["endpoints"]["vpc"]):
        assert word in text

    changed = server.cli_json(
        "modify", "cli_svc", "-D", "metadata.instance=2", "-D", "labels.team=ml", "--wait"
    )
    assert changed["running_instances"] == 2 and changed["spec"]["labels"] == {"team": "ml"}
    insts = server.cli_json("instances", "cli_svc")["instances"]
    assert len(insts) == 2 and {i["state"] for i in insts} == {"ready"}
    scaled = server.cli_json("scale", "cli_svc", "1", "--wait")
    assert scaled["instance"] == 1 and scaled["status"] == "Running"
    patch = write(tmp_path / "patch.json", {"metadata": {"rpc": {"keepalive": 15000}}})
    patched = server.cli_json("modify", "cli_svc", "-s", str(patch))
    assert patched["spec"]["metadata"]["rpc"]["keepalive"] == 15000

    logs = server.cli("logs", "cli_svc", "--tail", "500").stdout
    assert "GET /pid" in logs
    assert server.cli_json("logs", "cli_svc", "--tail", "3")["logs"][0]["lines"]

    assert server.cli_json("stop", "cli_svc")["status"] == "Stopped"
    assert server.cli_json("start", "cli_svc", "--wait")["status"] == "Running"
    assert "Status             Running" in server.cli("desc", "cli_svc").stdout
    assert server.cli_json("delete", "cli_svc") == {"name": "cli_svc", "deleted": True}
    assert server.cli_json("list") == []
    assert "no services yet" in server.cli("list").stdout


def test_user_errors_are_one_clear_message(server: Server, tmp_path: Path) -> None:
    bad = app_spec(tmp_path, "bad_cli")
    bad["metadata"]["instanc"] = 2
    bad["containers"][0]["port"] = 9090
    result = server.cli("create", str(write(tmp_path / "bad.json", bad)), check=False)
    assert result.returncode == 1
    assert "metadata.instanc: unknown field" in result.stderr
    assert "containers[0].port:" in result.stderr and "reserved" in result.stderr
    as_json = server.cli("create", str(tmp_path / "bad.json"), "--json", check=False)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["code"] == "InvalidSpec"

    (tmp_path / "broken.json").write_text("{nope")
    result = server.cli("create", str(tmp_path / "broken.json"), check=False)
    assert result.returncode == 1 and "is not valid JSON" in result.stderr and "line 1" in result.stderr
    result = server.cli("create", str(tmp_path / "missing.json"), check=False)
    assert result.returncode == 1 and "no such file" in result.stderr
    result = server.cli("desc", "nobody", check=False)
    assert result.returncode == 1 and "no service named 'nobody'" in result.stderr
    result = server.cli("modify", "nobody", check=False)
    assert result.returncode == 1 and "nothing to change" in result.stderr
    result = server.cli("modify", "nobody", "-D", "novalue", check=False)
    assert result.returncode == 1 and "key=value" in result.stderr

    looping = {
        "metadata": {"name": "cli_loop"},
        "containers": [{"command": "echo 'no GPU here' >&2; exit 4"}],
    }
    result = server.cli(
        "create", str(write(tmp_path / "loop.json", looping)), "--wait", "--timeout", "30", check=False
    )
    assert result.returncode == 1
    assert "service cli_loop failed" in result.stderr and "no GPU here" in result.stderr
    assert "openeas logs cli_loop" in result.stderr
    result = server.cli("create", str(tmp_path / "loop.json"), check=False)
    assert result.returncode == 1 and "exists already" in result.stderr
    server.cli("delete", "cli_loop")
    for result in (server.cli("list", check=False), server.cli("desc", "x", check=False)):
        assert "Traceback" not in result.stdout + result.stderr


def test_finding_the_server(server: Server, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "empty")
    result = subprocess.run(
        [sys.executable, "-m", "openeas", "list"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert f"no openeas server found for data dir {tmp_path / 'empty'}" in result.stderr
    assert "openeas server" in result.stderr and "Traceback" not in result.stderr
    # OPENEAS_API + OPENEAS_ADMIN_TOKEN, no data dir at all
    env.update(OPENEAS_API=server.api, OPENEAS_ADMIN_TOKEN=server.admin_token)
    result = subprocess.run(
        [sys.executable, "-m", "openeas", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == []
    env["OPENEAS_ADMIN_TOKEN"] = "wrong"
    result = subprocess.run(
        [sys.executable, "-m", "openeas", "list"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "admin token" in result.stderr
    # --data-dir names the server explicitly
    result = subprocess.run(
        [sys.executable, "-m", "openeas", "list", "--json", "--data-dir", str(server.data_dir)],
        env=clean_env(tmp_path / "elsewhere"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and marker.encode() not in out:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


def test_up_prints_a_curl_line_that_works(tmp_path: Path) -> None:
    data = tmp_path / "updata"
    command = [sys.executable, "-m", "openeas", "up", "--data-dir", str(data), "--api-port", "0",
               "--gateway-port", "0", "--vpc-port", "0"]  # fmt: skip
    proc = subprocess.Popen(command, env=clean_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = _read_until(proc, "Press Ctrl-C", 180)
        assert "Press Ctrl-C" in out, out + (proc.stderr.read().decode() if proc.poll() is not None else "")
        for label in ("Internet endpoint", "VPC endpoint", "Token"):
            assert label in out
        # the headline: the real chat model (SmolLM2 on llama.cpp) answers its printed curl as is
        assert "the chat model service smollm2_chat" in out, out
        curls = [line for line in out.splitlines() if line.startswith("curl ")]
        assert len(curls) == 2 and "/smollm2_chat/" in curls[0], curls
        answer = subprocess.run(["sh", "-c", curls[0] + " -sS"], capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr
        chat = json.loads(answer.stdout)
        assert chat["model"] == "smollm2" and chat["object"] == "chat.completion", chat
        assert chat["choices"][0]["message"]["content"].strip(), chat
        assert 0 < chat["usage"]["completion_tokens"] <= 256  # the demo's default_max_tokens
        # and the echo demo, an extra service
        curl = curls[1]
        assert "/demo_chat/" in curl
        answer = subprocess.run(["sh", "-c", curl + " -sS"], capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["choices"][0]["message"]["content"] == "You said: hello!"
        token = re.search(r"Authorization: ([^\"]+)\"", curl)
        assert token is not None

        # a second `up` on the same data dir reuses the running server and its demo service
        again = subprocess.run(command, env=clean_env(data), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "already runs" in again.stdout and token.group(1) in again.stdout

        server_pid = json.loads((data / "server.json").read_text())["pid"]
        demo_pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and _environ_has(p, b"OPENEAS_SERVICE=demo_chat")
            # this server's instance, not another test's demo (they inherit the data dir)
            and _environ_has(p, b"OPENEAS_DATA_DIR=" + str(data).encode())
        )
        assert server_pid == proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0
    assert not (data / "server.json").exists()
    wait_for(lambda: not pid_alive(demo_pid), timeout=5, what="the demo instance stopped")


def _environ_has(proc_dir: Path, needle: bytes) -> bool:
    try:
        return needle in (proc_dir / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
