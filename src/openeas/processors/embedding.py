"""`embedding` processor: OpenAI-compatible `POST /v1/embeddings` on a local sentence-transformers
model directory (nothing is downloaded: HF_HUB_OFFLINE=1).

Request: `{"input": "text" | ["text", ...], "model"?, "encoding_format"?: "float" | "base64",
"dimensions"?}`. Embeddings are L2-normalized unless model_config `normalize` is false.
`--workers` threads encode; with `--batching`, texts of concurrent requests are encoded together.
model_config: `normalize`, `batch_size` (encode batch, default 32), `num_threads`,
`max_inputs` (texts per request, default 2048), `served_model_name`.
"""

from __future__ import annotations

import base64
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
    Batcher,
    ProcessorOptions,
    WorkerPool,
    bad_request,
    fail_start,
    json_response,
    make_app,
    read_json,
    run_processor,
)

PROCESSOR = "embedding"


class Embedder:
    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        st = load_sentence_transformers(PROCESSOR, "embedding", config)
        check_dir(path)
        try:
            self._model = st.SentenceTransformer(str(path), device=str(config.get("device", "cpu")))
        except Exception as exc:
            fail_start(f"sentence-transformers cannot load {path}: {exc}")
        self.normalize = bool(config.get("normalize", True))
        self.batch_size = int(config.get("batch_size", 32))
        model = self._model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dimension = int(dim) if dim is not None else None

    def count_tokens(self, texts: Sequence[str]) -> int:
        tok = self._model.tokenizer
        limit = self._model.max_seq_length or 10**9
        return sum(min(len(ids), limit) for ids in tok(list(texts))["input_ids"])

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=self.normalize, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_many(self, requests: list[list[str]]) -> list[np.ndarray | Exception]:
        flat = [t for texts in requests for t in texts]
        vectors = self.encode(flat)
        out: list[np.ndarray | Exception] = []
        start = 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out


class EmbeddingService:
    def __init__(self, embedder: Embedder, names: list[str], options: ProcessorOptions) -> None:
        self.embedder = embedder
        self.names = ModelNames(names)
        self.pool = WorkerPool(options.workers, options.max_queue_size)
        self.max_inputs = int(options.model_config.get("max_inputs", 2048))
        self.batcher: Batcher[list[str], np.ndarray] | None = None
        if options.batching:
            self.batcher = Batcher(
                embedder.encode_many, self.pool, options.max_batch_size, options.max_batch_timeout_ms / 1000
            )

    def _texts(self, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if len(value) > self.max_inputs:
                raise bad_request(f"input has {len(value)} texts; at most {self.max_inputs} per request")
            return value
        if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
            raise bad_request(
                "token-id input is not supported; send the text (a string or a list of strings)"
            )
        raise bad_request("input must be a string or a non-empty list of strings")

    async def embeddings(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        model = self.names.check(body)
        texts = self._texts(body.get("input"))
        fmt = body.get("encoding_format", "float") or "float"
        if fmt not in ("float", "base64"):
            raise bad_request('encoding_format must be "float" or "base64"')
        dims = body.get("dimensions")
        if dims is not None and (
            not isinstance(dims, int)
            or isinstance(dims, bool)
            or not 1 <= dims <= (self.embedder.dimension or dims)
        ):
            raise bad_request(f"dimensions must be an integer from 1 to {self.embedder.dimension}")
        with self.pool.admit():
            if self.batcher is not None:
                vectors = await self.batcher.submit(texts)
            else:
                vectors = await self.pool.run(self.embedder.encode, texts)
            tokens = await self.pool.run(self.embedder.count_tokens, texts)
        if dims is not None and dims < vectors.shape[1]:
            vectors = vectors[:, :dims]
            if self.embedder.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.where(norms == 0, 1, norms)
        data = []
        for i, vec in enumerate(vectors):
            emb: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode() if fmt == "base64" else vec.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def root(self, _: Request) -> Response:
        return json_response(
            {
                "processor": PROCESSOR,
                "models": self.names.names,
                "dimension": self.embedder.dimension,
                "normalized": self.embedder.normalize,
                "routes": ["/v1/models", "/v1/embeddings"],
            }
        )

    def app(self) -> Starlette:
        routes = [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.names.models, methods=["GET"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
        ]
        return make_app(routes, on_shutdown=self.pool.shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    run_processor(
        PROCESSOR,
        lambda options: Embedder(Path(options.model_path), options.model_config),
        lambda embedder, options: EmbeddingService(
            embedder, served_names(Path(options.model_path), options.model_config), options
        ).app(),
        argv,
    )


if __name__ == "__main__":
    main()
