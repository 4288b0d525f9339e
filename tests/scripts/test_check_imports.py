"""scripts/check_imports.py, the CI's import-cycle check, run as CI runs it on tiny packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_imports.py"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _check(src: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(SCRIPT), str(src), "pkg"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_type_only_import_that_closes_a_circle_fails(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import B\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\nB = 1\n",
        },
    )
    done = _check(src)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pkg.a -> pkg.b -> pkg.a" in done.stdout
    assert "Protocol" in done.stdout  # says how to fix it


def test_function_level_and_relative_imports_count(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "",
            "sub/x.py": "def f():\n    from .. import y\n    return y\n",
            "y.py": "from .sub import x\n",
        },
    )
    done = _check(src)
    assert done.returncode == 1 and "pkg.sub.x" in done.stdout and "pkg.y" in done.stdout, done.stdout


def test_a_package_without_circles_passes(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            # the package re-exports its modules: the implicit parent import is not a circle
            "__init__.py": "from pkg.a import A\n",
            "a.py": "import json\nfrom pkg import b\nfrom pkg.b import helper\nA = helper\n",
            "b.py": "from typing import Protocol\nclass P(Protocol):\n    x: int\ndef helper(): ...\n",
        },
    )
    done = _check(src)
    assert done.returncode == 0, done.stdout
    assert "no import cycles in pkg: 3 modules" in done.stdout


def test_the_project_has_no_import_circle_in_its_gateway() -> None:
    """The whole of src/openeas is checked in CI (scripts/test.sh); the gateway's own part here."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode in (0, 1) and "in openeas" in done.stdout, done.stdout + done.stderr
    assert "openeas.gateway." not in done.stdout, done.stdout
