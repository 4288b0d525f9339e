"""Fuzzing in every test run (issue 17, item 3): atheris over the request path and spec parsing.

`test_fuzz_*` run the coverage-guided fuzzers (run_fuzzer.py, targets.py) for a bounded time each,
starting from the committed seed corpus (tests/fuzz/corpus/<target>); a crash fails the test with
the crashing input in its message (add that input to the corpus: `test_corpus_replays` then keeps
it as a regression test). New inputs the fuzzer finds go to a temporary folder, not the repository.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import RequestTarget, spec_target

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECONDS = {"request": 20, "spec": 10}


@pytest.mark.parametrize("target", sorted(SECONDS))
def test_fuzz(target: str, tmp_path: Path) -> None:
    found = tmp_path / "found"
    found.mkdir()
    seconds = SECONDS[target]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run_fuzzer",
            target,
            str(found),
            str(HERE / "corpus" / target),
            f"-max_total_time={seconds}",
            "-max_len=8192",
            "-timeout=10",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        capture_output=True,
        timeout=seconds + 120,
    )
    crashes = [p for p in tmp_path.iterdir() if p.is_file()]
    detail = "".join(
        f"\n{p.name}: base64 {base64.b64encode(p.read_bytes()[:2000]).decode()}" for p in crashes
    )
    assert proc.returncode == 0 and not crashes, proc.stderr.decode(errors="replace")[-4000:] + detail
    assert b"Done " in proc.stderr, proc.stderr[-2000:]  # it ran its time and said how many runs


def test_corpus_replays() -> None:
    """Every committed input (seeds and past crashes) through the targets, without the fuzzer."""
    request = RequestTarget()
    files = sorted((HERE / "corpus" / "request").iterdir())
    assert len(files) >= 40
    for path in files:
        request(path.read_bytes())
    for path in sorted((HERE / "corpus" / "spec").iterdir()):
        spec_target(path.read_bytes())
