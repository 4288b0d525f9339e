"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def eas_python() -> Path:
    """The Python of a separate venv holding the official `eas-prediction` SDK, unmodified.

    It pins protobuf<=3.20.3, which conflicts with onnx/onnxruntime, so it cannot share our
    environment. scripts/test.sh creates it; this fixture creates it too when missing.
    """
    venv = Path(os.environ.get("OPENEAS_EAS_VENV", REPO / ".venv-eas"))
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import eas_prediction"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "eas-prediction"], check=True)
    return python


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Under OPENEAS_STRICT_SKIPS=1 (set by scripts/test.sh) a skipped test is a failure.

    Optional dependencies are guarded with importorskip so a partial install still runs what it
    can; the full test command installs everything, so there a skip would hide a missing check.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("OPENEAS_STRICT_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under OPENEAS_STRICT_SKIPS=1: {report.longrepr}"
