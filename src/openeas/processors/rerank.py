"""`rerank` processor: `POST /v1/rerank` (also `/rerank`, `/v2/rerank`, as vLLM serves them) on a
local model directory (nothing is downloaded: HF_HUB_OFFLINE=1).

Request: `{"query": "...", "documents": ["..." | {"text": "..."}], "top_n"?, "return_documents"?,
"model"?}`. Answer: `results` sorted by `relevance_score` (highest first), each with the
document's `index` in the request and the `document` itself.

Two scorers:
- cross-encoder (a `*ForSequenceClassification` model directory, e.g. a bge/ms-marco reranker):
  the score is the model's output for the (query, document) pair (sigmoid for one label);
- bi-encoder (a sentence-transformers embedding model directory): the score is the cosine
  similarity of the query and document embeddings. Less precise than a cross-encoder, but it
  needs no second model. Chosen automatically from the directory; model_config `mode`
  ("cross-encoder" | "bi-encoder") overrides. Other keys: `batch_size`, `num_threads`,
  `max_length`, `served_model_name`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openeas.processors._np import np
from openeas.processors.sentence_models import ModelNames, check_dir, load_sentence_transformers, served_names
from openeas.processors.serving import (
    ProcessorOptions,
    WorkerPool,
    bad_request,
    fail_start,
    json_response,
    make_app,
    read_json,
    run_processor,
)

PROCESSOR = "rerank"


def detect_mode(path: Path, config: dict[str, Any]) -> str:
    mode = str(config.get("mode", "auto")).lower().replace("_", "-")
    if mode in ("cross-encoder", "bi-encoder"):
        return mode
    if mode != "auto":
        fail_start(f"model_config.mode {mode!r} is unknown; use cross-encoder or bi-encoder")
    try:
        archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        archs = []
    if any(str(a).endswith("ForSequenceClassification") for a in archs):
        return "cross-encoder"
    if (path / "modules.json").exists():
        return "bi-encoder"
    fail_start(
        f"{path} is neither a cross-encoder (config.json with a *ForSequenceClassification architecture) "
        "nor a sentence-transformers model (modules.json); set model_config.mode"
    )


class Scorer:
    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        st = load_sentence_transformers(PROCESSOR, "rerank", config)
        check_dir(path)
        self.mode = detect_mode(path, config)
        self.batch_size = int(config.get("batch_size", 32))
        device = str(config.get("device", "cpu"))
        try:
            if self.mode == "cross-encoder":
                kwargs: dict[str, Any] = {"device": device}
                if "max_length" in config:
                    kwargs["max_length"] = int(config["max_length"])
                self._model = st.CrossEncoder(str(path), **kwargs)
            else:
                self._model = st.SentenceTransformer(str(path), device=device)
        except Exception as exc:
            fail_start(f"sentence-transformers cannot load {path} as a {self.mode}: {exc}")

    def count_tokens(self, query: str, documents: Sequence[str]) -> int:
        tok = self._model.tokenizer
        if self.mode == "cross-encoder":
            enc = tok([query] * len(documents), list(documents), truncation=True)
            return sum(len(ids) for ids in enc["input_ids"])
        return sum(len(ids) for ids in tok([query, *documents], truncation=True)["input_ids"])

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        if self.mode == "cross-encoder":
            pairs = [(query, d) for d in documents]
            scores = self._model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True)
            scores = np.asarray(scores, dtype=np.float64)
            return scores if scores.ndim == 1 else scores[:, -1]
        vectors = self._model.encode(
            [query, *documents], batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        vectors = np.asarray(vectors, dtype=np.float64)
        return np.asarray(vectors[1:] @ vectors[0], dtype=np.float64)


class RerankService:
    def __init__(self, scorer: Scorer, names: list[str], options: ProcessorOptions) -> None:
        self.scorer = scorer
        self.names = ModelNames(names)
        self.pool = WorkerPool(options.workers, options.max_queue_size)
        self.max_documents = int(options.model_config.get("max_documents", 1000))

    def _documents(self, value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            raise bad_request('documents must be a non-empty list of strings or {"text": ...} objects')
        if len(value) > self.max_documents:
            raise bad_request(f"{len(value)} documents sent; at most {self.max_documents} per request")
        docs = []
        for i, d in enumerate(value):
            if isinstance(d, dict) and isinstance(d.get("text"), str):
                docs.append(d["text"])
            elif isinstance(d, str):
                docs.append(d)
            else:
                raise bad_request(f'documents[{i}] must be a string or {{"text": "..."}}')
        return docs

    async def rerank(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        model = self.names.check(body)
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise bad_request("query must be a non-empty string")
        docs = self._documents(body.get("documents"))
        top_n = body.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise bad_request("top_n must be a positive integer")
        return_documents = body.get("return_documents", True)
        with self.pool.admit():
            scores = await self.pool.run(self.scorer.score, query, docs)
            tokens = await self.pool.run(self.scorer.count_tokens, query, docs)
        order = sorted(range(len(docs)), key=lambda i: float(scores[i]), reverse=True)
        if top_n is not None:
            order = order[:top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        return json_response(
            {
                "id": "rerank-" + uuid.uuid4().hex,
                "model": model,
                "usage": {"total_tokens": tokens},
                "results": results,
            }
        )

    async def root(self, _: Request) -> Response:
        return json_response(
            {
                "processor": PROCESSOR,
                "models": self.names.names,
                "mode": self.scorer.mode,
                "routes": ["/v1/models", "/v1/rerank", "/rerank", "/v2/rerank"],
            }
        )

    def app(self) -> Starlette:
        routes = [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.names.models, methods=["GET"]),
            Route("/v1/rerank", self.rerank, methods=["POST"]),
            Route("/rerank", self.rerank, methods=["POST"]),
            Route("/v2/rerank", self.rerank, methods=["POST"]),
        ]
        return make_app(routes, on_shutdown=self.pool.shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    run_processor(
        PROCESSOR,
        lambda options: Scorer(Path(options.model_path), options.model_config),
        lambda scorer, options: RerankService(
            scorer, served_names(Path(options.model_path), options.model_config), options
        ).app(),
        argv,
    )


if __name__ == "__main__":
    main()
