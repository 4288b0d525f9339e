"""The generic processors (onnx, sklearn, pmml, torchscript) as real subprocesses over HTTP:
JSON and the official SDK's TFRequest/TorchRequest, signatures, bad inputs, batching, 450."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.processors import models
from tests.processors.harness import Running, processor, run_sdk

ROWS = [[0.1, -0.2, 0.0, 0.3], [4.2, 3.9, 0.1, -0.1], [0.2, 4.1, 3.8, 4.3]]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generic")


@pytest.fixture(scope="module")
def classifier() -> Any:
    pytest.importorskip("sklearn")
    return models.fit_classifier()


@pytest.fixture(scope="module")
def sklearn_proc(work: Path, classifier: Any) -> Iterator[Running]:
    path = models.save_joblib(classifier, work / "clf.joblib")
    with processor("sklearn", path, work) as p:
        yield p


@pytest.fixture(scope="module")
def onnx_proc(work: Path, classifier: Any) -> Iterator[Running]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    path = models.save_onnx(classifier, work / "clf.onnx")
    with processor("onnx", path, work) as p:
        yield p


@pytest.fixture(scope="module")
def pmml_proc(work: Path) -> Iterator[Running]:
    pytest.importorskip("pypmml")
    path = work / "linear.pmml"
    path.write_text(models.PMML_LINEAR)
    with processor("pmml", path, work) as p:
        yield p


@pytest.fixture(scope="module")
def torch_proc(work: Path) -> Iterator[Running]:
    pytest.importorskip("torch")
    path = models.save_torchscript(work / "net.pt")
    with processor("torchscript", path, work) as p:
        yield p


def post(p: Running, body: Any, path: str = "/") -> requests.Response:
    return requests.post(p.url + path, json=body, timeout=30)


# ---------------------------------------------------------------- sklearn


def test_sklearn_json_matches_the_model(sklearn_proc: Running, classifier: Any) -> None:
    r = post(sklearn_proc, {"inputs": {"input": ROWS}})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert out["label"] == classifier.predict(np.array(ROWS)).tolist() == [0, 1, 2]
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(np.array(ROWS)), rtol=1e-9)
    # a bare list is the only input; the SDK's path /api/predict/<svc> is served too
    r2 = post(sklearn_proc, ROWS, "/api/predict/anything")
    assert r2.json()["outputs"]["label"] == [0, 1, 2]


def test_sklearn_signature(sklearn_proc: Running) -> None:
    sig = requests.get(sklearn_proc.url + "/", timeout=10).json()
    assert sig["signature_name"] == "serving_default"
    assert sig["inputs"] == [{"name": "input", "shape": [-1, 4], "type": "DT_DOUBLE", "dtype": "float64"}]
    assert [o["name"] for o in sig["outputs"]] == ["label", "probabilities"]
    assert sig["outputs"][1]["shape"] == [-1, 3]


def test_sklearn_sdk_tf_and_torch_requests(sklearn_proc: Running, classifier: Any, eas_python: Path) -> None:
    flat = [v for row in ROWS for v in row]
    proba = classifier.predict_proba(np.array(ROWS))
    tf, tf_fetch, torch_req = run_sdk(
        eas_python,
        sklearn_proc.port,
        [
            {
                "kind": "tf",
                "feeds": [{"name": "input", "shape": [3, 4], "dtype": "DT_FLOAT", "values": flat}],
            },
            {
                "kind": "tf",
                "feeds": [{"name": "input", "shape": [3, 4], "dtype": "DT_DOUBLE", "values": flat}],
                "fetch": ["label"],
            },
            {"kind": "torch", "feeds": [{"index": 0, "shape": [3, 4], "dtype": "DT_DOUBLE", "values": flat}]},
        ],
    )
    assert tf["outputs"]["label"] == {"shape": [3], "values": [0, 1, 2]}
    assert tf["outputs"]["probabilities"]["shape"] == [3, 3]
    # DT_FLOAT values were float32 on the wire: close to, not equal to, the float64 answer
    np.testing.assert_allclose(tf["outputs"]["probabilities"]["values"], proba.reshape(-1), rtol=1e-5)
    assert set(tf_fetch["outputs"]) == {"label"}
    assert torch_req["outputs"]["0"] == {"shape": [3], "values": [0, 1, 2]}
    np.testing.assert_allclose(torch_req["outputs"]["1"]["values"], proba.reshape(-1), rtol=1e-12)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": {"input": [[1.0, 2.0, 3.0]]}}, 400, "expected shape [-1, 4]"),
        ({"inputs": {"input": [["a", "b", "c", "d"]]}}, 400, "expected float64 numbers, got strings"),
        ({"inputs": {"input": [[1.0, 2.0, 3.0, 4.0], [1.0]]}}, 400, "different lengths"),
        ({"inputs": {"nope": [[1, 2, 3, 4]]}}, 400, "unknown input"),
        ({"inputs": {"input": [[1, 2, 3, 4]]}, "output_filter": ["nope"]}, 400, "unknown output"),
        ({"something": 1}, 400, 'expected {"inputs"'),
        ("not a tensor", 400, "expected a JSON object or list"),
    ],
)
def test_sklearn_bad_json_inputs(sklearn_proc: Running, body: Any, status: int, words: str) -> None:
    r = post(sklearn_proc, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == status and words in err["message"], err


def test_sklearn_bad_bodies_and_paths_then_still_serving(sklearn_proc: Running) -> None:
    r = requests.post(sklearn_proc.url + "/", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = requests.post(sklearn_proc.url + "/", data=b"\x00\x01garbage")
    assert r.status_code == 400 and "neither JSON nor an EAS TFRequest" in r.json()["message"]
    r = requests.post(sklearn_proc.url + "/", data=b"")
    assert r.status_code == 400
    r = requests.get(sklearn_proc.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["code"] == 404
    r = requests.put(sklearn_proc.url + "/")
    assert r.status_code == 405
    assert sklearn_proc.alive()
    assert post(sklearn_proc, [ROWS[0]]).json()["outputs"]["label"] == [0]


def test_sklearn_sdk_bad_shape_is_400(sklearn_proc: Running, eas_python: Path) -> None:
    [res] = run_sdk(
        eas_python,
        sklearn_proc.port,
        [
            {
                "kind": "tf",
                "feeds": [{"name": "input", "shape": [1, 3], "dtype": "DT_FLOAT", "values": [1, 2, 3]}],
            }
        ],
    )
    assert res["error"] == 400 and "expected shape [-1, 4]" in res["message"]
    [res] = run_sdk(
        eas_python,
        sklearn_proc.port,
        [
            {
                "kind": "tf",
                "feeds": [{"name": "input", "shape": [2, 4], "dtype": "DT_FLOAT", "values": [1, 2]}],
            }
        ],
    )
    assert res["error"] == 400 and "needs 8 values but 2 were sent" in res["message"]


# ---------------------------------------------------------------- onnx


def test_onnx_json_and_signature(onnx_proc: Running, classifier: Any) -> None:
    sig = requests.get(onnx_proc.url, timeout=10).json()
    assert sig["inputs"] == [{"name": "features", "shape": [-1, 4], "type": "DT_FLOAT", "dtype": "float32"}]
    assert [o["name"] for o in sig["outputs"]] == ["label", "probabilities"]
    r = post(onnx_proc, {"inputs": {"features": ROWS}})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert out["label"] == [0, 1, 2]
    np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(np.array(ROWS)), atol=1e-5)


def test_onnx_sdk_tf_request(onnx_proc: Running, classifier: Any, eas_python: Path) -> None:
    flat = [v for row in ROWS for v in row]
    [res, bad] = run_sdk(
        eas_python,
        onnx_proc.port,
        [
            {
                "kind": "tf",
                "feeds": [{"name": "features", "shape": [3, 4], "dtype": "DT_FLOAT", "values": flat}],
                "fetch": ["probabilities", "label"],
            },
            {
                "kind": "tf",
                "feeds": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "dtype": "DT_STRING",
                        "values": ["a", "b", "c", "d"],
                    }
                ],
            },
        ],
    )
    assert res["outputs"]["label"] == {"shape": [3], "values": [0, 1, 2]}
    assert res["outputs"]["probabilities"]["shape"] == [3, 3]
    np.testing.assert_allclose(
        res["outputs"]["probabilities"]["values"],
        classifier.predict_proba(np.array(ROWS)).reshape(-1),
        atol=1e-5,
    )
    assert bad["error"] == 400 and "expected float32 numbers, got strings" in bad["message"]


def test_onnx_wrong_dtype_and_shape(onnx_proc: Running) -> None:
    r = post(onnx_proc, {"inputs": {"features": [[1, 2, 3, 4, 5]]}})
    assert r.status_code == 400 and "expected shape [-1, 4]" in r.json()["message"]
    r = post(onnx_proc, {"inputs": {"features": [[True, False, True, False]]}})
    assert r.status_code == 200  # booleans are numbers 0/1 to a float input
    r = post(onnx_proc, {"inputs": {"features": [[1, 2, 3, "x"]]}})
    assert r.status_code == 400


# ---------------------------------------------------------------- pmml


def test_pmml_records_json_and_signature(pmml_proc: Running) -> None:
    sig = requests.get(pmml_proc.url, timeout=10).json()
    assert [i["name"] for i in sig["inputs"]] == ["x1", "x2"]
    assert sig["outputs"][0]["name"] == "predicted_y"
    r = post(pmml_proc, [{"x1": 1.0, "x2": 2.0}, {"x1": 0, "x2": 0, "ignored": "yes"}])
    assert r.status_code == 200, r.text
    assert r.json() == [{"predicted_y": 9.0}, {"predicted_y": 1.0}]
    assert post(pmml_proc, {"x1": 2, "x2": 1}).json() == [{"predicted_y": 8.0}]
    assert post(pmml_proc, {"inputs": {"x1": [1, 2], "x2": [0, 1]}}).json() == {
        "outputs": {"predicted_y": [3.0, 8.0]}
    }


def test_pmml_sdk_tf_and_string_requests(pmml_proc: Running, eas_python: Path) -> None:
    tf, string = run_sdk(
        eas_python,
        pmml_proc.port,
        [
            {
                "kind": "tf",
                "feeds": [
                    {"name": "x1", "shape": [3], "dtype": "DT_DOUBLE", "values": [1, 2, -1]},
                    {"name": "x2", "shape": [3], "dtype": "DT_DOUBLE", "values": [2, 0, 0.5]},
                ],
            },
            {"kind": "string", "body": '[{"x1": 1, "x2": 1}]'},
        ],
    )
    assert tf["outputs"]["predicted_y"] == {"shape": [3], "values": [9.0, 5.0, 0.5]}
    assert string["body"] == '[{"predicted_y":6.0}]'


def test_pmml_bad_records(pmml_proc: Running) -> None:
    r = post(pmml_proc, [{"x1": 1.0}])
    assert r.status_code == 400 and "has no field 'x2'" in r.json()["message"]
    r = post(pmml_proc, [{"x1": "one", "x2": 1}])
    assert r.status_code == 400 and "'x1'" in r.json()["message"]
    assert pmml_proc.alive()


# ---------------------------------------------------------------- torchscript


def test_torchscript_json_named_inputs(torch_proc: Running) -> None:
    x = np.array([[1.0, 0.0, 2.0], [0.5, 0.5, 0.5]])
    scale = np.array([[2.0, 1.0], [1.0, 1.0]])
    r = post(torch_proc, {"inputs": {"x": x.tolist(), "scale": scale.tolist()}})
    assert r.status_code == 200, r.text
    want0, want1 = models.torch_reference(x, scale)
    out = r.json()["outputs"]
    np.testing.assert_allclose(out["output_0"], want0, rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], want1, rtol=1e-6)
    sig = requests.get(torch_proc.url, timeout=10).json()
    assert [i["name"] for i in sig["inputs"]] == ["x", "scale"]


def test_torchscript_sdk_torch_and_tf_requests(torch_proc: Running, eas_python: Path) -> None:
    x = np.array([[1.0, 2.0, 3.0]])
    scale = np.array([[1.0, 10.0]])
    want0, want1 = models.torch_reference(x, scale)
    pos, mapped, filtered, tf = run_sdk(
        eas_python,
        torch_proc.port,
        [
            {
                "kind": "torch",
                "feeds": [
                    {"index": 0, "shape": [1, 3], "dtype": "DT_FLOAT", "values": [1, 2, 3]},
                    {"index": 1, "shape": [1, 2], "dtype": "DT_FLOAT", "values": [1, 10]},
                ],
            },
            {
                "kind": "torch",
                "map_feeds": [
                    {"name": "scale", "shape": [1, 2], "dtype": "DT_FLOAT", "values": [1, 10]},
                    {"name": "x", "shape": [1, 3], "dtype": "DT_FLOAT", "values": [1, 2, 3]},
                ],
            },
            {
                "kind": "torch",
                "feeds": [
                    {"index": 0, "shape": [1, 3], "dtype": "DT_FLOAT", "values": [1, 2, 3]},
                    {"index": 1, "shape": [1, 2], "dtype": "DT_FLOAT", "values": [1, 10]},
                ],
                "fetch": [1],
            },
            {
                "kind": "tf",
                "feeds": [
                    {"name": "x", "shape": [1, 3], "dtype": "DT_FLOAT", "values": [1, 2, 3]},
                    {"name": "scale", "shape": [1, 2], "dtype": "DT_FLOAT", "values": [1, 10]},
                ],
            },
        ],
    )
    assert pos["outputs"]["0"]["shape"] == [1, 2]
    np.testing.assert_allclose(pos["outputs"]["0"]["values"], want0.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(pos["outputs"]["1"]["values"], want1, rtol=1e-6)
    np.testing.assert_allclose(mapped["outputs"]["map:output_0"]["values"], want0.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(filtered["outputs"]["0"]["values"], want1, rtol=1e-6)
    assert len(filtered["outputs"]) == 1
    np.testing.assert_allclose(tf["outputs"]["output_0"]["values"], want0.reshape(-1), rtol=1e-6)


def test_torchscript_model_error_is_400_and_instance_lives(torch_proc: Running) -> None:
    r = post(torch_proc, {"inputs": {"x": [[1.0, 2.0]], "scale": [[1.0, 1.0]]}})  # 2 columns, not 3
    assert r.status_code == 400
    assert "the model could not run on this input" in r.json()["message"]
    r = post(torch_proc, {"inputs": {"x": [[1.0, 2.0, 3.0]]}})
    assert r.status_code == 400 and "missing input(s) ['scale']" in r.json()["message"]
    r = post(torch_proc, [[1.0, 2.0, 3.0]])
    assert r.status_code == 400 and "this model has 2 inputs" in r.json()["message"]
    assert post(torch_proc, {"inputs": {"x": [[0.0, 0.0, 0.0]], "scale": [[1.0, 1.0]]}}).status_code == 200


# ---------------------------------------------------------------- rpc: batching and the queue


def _concurrently(n: int, fn: Any) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def test_batching_merges_concurrent_requests(work: Path) -> None:
    pytest.importorskip("sklearn")
    from tests.processors.fake_models import BatchSize

    path = models.save_joblib(BatchSize(), work / "batch.joblib")
    flags = ["--batching", "--max-batch-size", "8", "--max-batch-timeout", "200", "--workers", "2"]
    with processor("sklearn", path, work, *flags) as p:
        assert requests.get(p.url, timeout=10).json()["batching"] is True
        results = _concurrently(8, lambda i: post(p, {"inputs": {"input": [[float(i)]] * (1 + i % 2)}}))
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        sizes = [r.json()["outputs"]["prediction"] for r in results]
        # every request gets back its own rows, and some ran in a batch bigger than themselves
        assert [len(s) for s in sizes] == [1 + i % 2 for i in range(8)]
        assert max(s[0] for s in sizes) > 2
        # a bad request in a batch fails alone
        mixed = _concurrently(4, lambda i: post(p, {"inputs": {"input": [[1.0]] if i else [["bad"]]}}))
        assert [r.status_code for r in mixed] == [400, 200, 200, 200]


def test_batching_keeps_rows_apart_for_a_real_model(work: Path, classifier: Any) -> None:
    path = models.save_joblib(classifier, work / "clf-batch.joblib")
    with processor("sklearn", path, work, "--batching", "--max-batch-timeout", "100") as p:
        results = _concurrently(6, lambda i: post(p, {"inputs": {"input": [ROWS[i % 3]]}}))
        assert [r.json()["outputs"]["label"] for r in results] == [[0], [1], [2], [0], [1], [2]]


def test_full_queue_answers_450_and_recovers(work: Path) -> None:
    pytest.importorskip("sklearn")
    from tests.processors.fake_models import Sleepy

    path = models.save_joblib(Sleepy(0.6), work / "sleepy.joblib")
    with processor("sklearn", path, work, "--workers", "1", "--max-queue-size", "1") as p:
        results = _concurrently(6, lambda i: post(p, [[float(i)]]))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and codes.count(450) >= 3, codes
        err = next(r.json() for r in results if r.status_code == 450)
        assert err["code"] == 450 and "queue is full" in err["message"]
        assert post(p, [[5.0]]).json()["outputs"]["prediction"] == [5.0]


def test_sklearn_feature_names_and_text_pipeline(work: Path, classifier: Any, eas_python: Path) -> None:
    import copy

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    named = copy.deepcopy(classifier)
    named.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)  # as if fitted on a DataFrame
    texts = ["good great fine", "bad awful poor", "great good", "poor bad"]
    text_clf = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, ["pos", "neg", "pos", "neg"])
    named_path = models.save_joblib(named, work / "named.joblib")
    text_path = models.save_joblib(text_clf, work / "text.joblib")
    with processor("sklearn", named_path, work) as p:
        assert [i["name"] for i in requests.get(p.url, timeout=10).json()["inputs"]] == ["a", "b", "c", "d"]
        records = [dict(zip("abcd", row, strict=True)) for row in ROWS]
        r = post(p, records)
        assert r.status_code == 200, r.text
        assert [rec["label"] for rec in r.json()] == [0, 1, 2]
    with processor("sklearn", text_path, work) as p:
        r = post(p, {"inputs": ["a great day", "a bad day"]})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"]["label"] == ["pos", "neg"]
        [res] = run_sdk(
            eas_python,
            p.port,
            [
                {
                    "kind": "tf",
                    "feeds": [
                        {"name": "input", "shape": [2], "dtype": "DT_STRING", "values": ["great", "awful"]}
                    ],
                }
            ],
        )
        assert res["outputs"]["label"] == {"shape": [2], "values": ["pos", "neg"]}
