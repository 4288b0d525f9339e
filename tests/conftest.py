"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
