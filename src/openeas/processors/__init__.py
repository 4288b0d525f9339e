"""Built-in model servers, each started as an instance by the runtime.

A processor is named in a service spec (`"processor": "<name>"` plus `model_path`). The runtime
turns it into a command line with `processor_command`. The registry below is filled in as
processors land (see issue "Built-in processors").
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping

# name -> python module run with `python -m <module> --model-path <path> --port <port>`
_PROCESSOR_MODULES: Mapping[str, str] = {}


def known_processors() -> Mapping[str, str]:
    return _PROCESSOR_MODULES


def processor_command(name: str, model_path: str) -> str:
    module = _PROCESSOR_MODULES[name]
    return (
        f"{shlex.quote(sys.executable)} -m {module} --model-path {shlex.quote(model_path)} --port $PORT"
    )
