"""Defaults of the `llm` processor that other parts read without loading it (the gateway, the spec).

Why: the gateway lets `metadata.rpc.worker_threads` requests into each instance at once (5 by
default). An LLM instance on llama.cpp decodes `model_config.n_parallel` sequences together; with
the gateway's 5 it never fills a batch of 8 or 16. So for an llm service that does not set
worker_threads, the gateway's per-instance concurrency follows n_parallel.
"""

from __future__ import annotations

import json
from typing import Any

# llama.cpp sequences decoded together when model_config has no n_parallel: each costs n_ctx KV
# cells, not a context (transformers keeps 1: each slot there is a thread running the model)
DEFAULT_PARALLEL = 4


def gateway_in_flight(model_config: Any) -> int:
    """Requests the gateway sends one llm instance at once when the spec sets no worker_threads:
    `model_config.n_parallel` (an object or its JSON text), else DEFAULT_PARALLEL."""
    if isinstance(model_config, str):
        try:
            model_config = json.loads(model_config)
        except ValueError:
            return DEFAULT_PARALLEL
    value = model_config.get("n_parallel") if isinstance(model_config, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return DEFAULT_PARALLEL
    return value
