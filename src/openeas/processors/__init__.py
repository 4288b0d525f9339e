"""Built-in model servers, each started as an instance by the runtime.

A processor is named in a service spec (`"processor": "<name>"` plus `model_path`). The runtime
turns it into a command line with `processor_command`, passing the spec's `metadata.rpc`
settings and `model_config` as flags. Importing this package needs none of the processors'
optional dependencies: a processor whose extra is missing fails at start with the pip command
that installs it. See docs/processors.md.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# name -> python module run with `python -m <module> --model-path <path> --port <port>`
_PROCESSOR_MODULES: Mapping[str, str] = MappingProxyType(
    {
        "llm": "openeas.processors.llm",
        "embedding": "openeas.processors.embedding",
        "rerank": "openeas.processors.rerank",
        "onnx": "openeas.processors.onnx",
        "sklearn": "openeas.processors.sklearn",
        "pmml": "openeas.processors.pmml",
        "torchscript": "openeas.processors.torchscript",
    }
)

# name -> the optional-dependency extra that a processor needs (`pip install 'openeas[<extra>]'`)
PROCESSOR_EXTRAS: Mapping[str, str] = MappingProxyType(
    {
        "llm": "llm",
        "embedding": "embedding",
        "rerank": "rerank",
        "onnx": "onnx",
        "sklearn": "sklearn",
        "pmml": "pmml",
        "torchscript": "torch",
    }
)

# metadata.rpc key -> processor flag; booleans become a bare flag when true
_RPC_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "worker_threads": "--workers",
        "max_queue_size": "--max-queue-size",
        "batching": "--batching",
        "max_batch_size": "--max-batch-size",
        "max_batch_timeout": "--max-batch-timeout",
    }
)


def known_processors() -> Mapping[str, str]:
    return _PROCESSOR_MODULES


def processor_command(
    name: str,
    model_path: str,
    rpc: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | str | None = None,
) -> str:
    """The shell command that starts processor `name` on `$PORT`.

    `rpc` is the spec's `metadata.rpc` (a dict, e.g. `spec.metadata.rpc.model_dump()`); only
    worker_threads, max_queue_size, batching, max_batch_size and max_batch_timeout matter to a
    processor. `model_config` is the spec's `model_config` (an object or a JSON string).
    """
    module = _PROCESSOR_MODULES[name]
    parts = [
        shlex.quote(sys.executable),
        "-m",
        module,
        "--model-path",
        shlex.quote(model_path),
        "--port",
        "$PORT",
    ]
    for key, flag in _RPC_FLAGS.items():
        value = (rpc or {}).get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        else:
            parts += [flag, shlex.quote(str(int(value)))]
    if model_config:
        text = (
            model_config if isinstance(model_config, str) else json.dumps(model_config, separators=(",", ":"))
        )
        parts += ["--model-config", shlex.quote(text)]
    return " ".join(parts)
