"""Shared by the `embedding` and `rerank` processors: offline loading of sentence-transformers
models, served model names, `GET /v1/models` and the `model` check (vLLM's 404)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openeas.processors.serving import cpu_count, fail_start, json_response, not_found, require


def offline() -> None:
    """Nothing is downloaded from a hub at run time: the model must be on this machine."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_sentence_transformers(processor: str, extra: str, config: Mapping[str, Any]) -> Any:
    offline()
    torch = require("torch", extra=extra, processor=processor)
    torch.set_num_threads(int(config.get("num_threads", cpu_count())))
    return require("sentence_transformers", extra=extra, processor=processor)


def check_dir(path: Path) -> None:
    if not path.is_dir():
        fail_start(f"{path} is not a directory; give the local directory of a sentence-transformers model")


def served_names(path: Path, config: Mapping[str, Any]) -> list[str]:
    value = config.get("served_model_name", config.get("model_name"))
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return [path.name]


class ModelNames:
    def __init__(self, names: list[str], **extra: Any) -> None:
        self.names = names
        self.created = int(time.time())
        self.extra = extra

    def check(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        if model is None:
            return self.names[0]
        if model not in self.names:
            raise not_found(f"The model `{model}` does not exist.")
        return str(model)

    async def models(self, _: Request) -> Response:
        data = [
            {"id": n, "object": "model", "created": self.created, "owned_by": "openeas", **self.extra}
            for n in self.names
        ]
        return json_response({"object": "list", "data": data})
