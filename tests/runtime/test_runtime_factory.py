"""`--runtime` is configuration: the factory builds the local runtime, and refuses bad choices with
a message that says what to do (connecting to a real Ray is in test_ray_cluster.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openeas.runtime.factory import make_runtime
from openeas.runtime.local import LocalRuntime
from tests.harness import clean_env


def test_local_is_built(tmp_path: Path) -> None:
    runtime = make_runtime("local", tmp_path)
    assert isinstance(runtime, LocalRuntime) and runtime.data_dir == tmp_path


@pytest.mark.parametrize(
    ("kind", "address", "message"),
    [
        ("docker", None, "--runtime must be one of local, ray, got 'docker'"),
        ("ray", None, "--runtime ray needs --ray-address HOST:PORT"),
        ("ray", "10.0.0.1", "--ray-address must be HOST:PORT"),
        ("ray", "10.0.0.1:99999", "--ray-address must be HOST:PORT"),
        ("ray", ":6379", "--ray-address must be HOST:PORT"),
        ("local", "10.0.0.1:6379", "--ray-address is for --runtime ray"),
    ],
)
def test_bad_choices_say_what_to_do(tmp_path: Path, kind: str, address: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_runtime(kind, tmp_path, ray_address=address)


def test_server_refuses_a_bad_runtime_choice_with_the_reason(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openeas", "server", "--data-dir", str(tmp_path / "data"),
         "--api-port", "0", "--gateway-port", "0", "--vpc-port", "0", "--runtime", "ray"],
        env=clean_env(tmp_path / "data"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "--runtime ray needs --ray-address HOST:PORT" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
