"""Run one atheris (libFuzzer) fuzzer: `python -m tests.fuzz.run_fuzzer request|spec [libFuzzer args]`.

The openeas modules are imported under `atheris.instrument_imports` so the fuzzer is coverage-guided
over the gateway's parsing, framing and admission code (or the spec models). libFuzzer exits 0
when its time is up with no crash; a crash exits non-zero and writes the input to -artifact_prefix.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["openeas"]):
    from tests.fuzz.targets import RequestTarget, spec_target


def main() -> None:
    which = sys.argv[1]
    target = RequestTarget() if which == "request" else spec_target
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
