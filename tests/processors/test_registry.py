"""The processor registry, the command line the runtime gets, and missing extras at start."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from openeas.processors import PROCESSOR_EXTRAS, known_processors, processor_command
from openeas.spec.service import parse_service_spec
from tests.processors.harness import REPO

ALL = {"llm", "embedding", "rerank", "onnx", "sklearn", "pmml", "torchscript"}


def test_every_processor_is_registered_with_an_extra() -> None:
    assert set(known_processors()) == ALL
    assert set(PROCESSOR_EXTRAS) == ALL
    for module in known_processors().values():
        assert module.startswith("openeas.processors.")


def test_modules_import_without_their_extras() -> None:
    # importing a processor module must not import its heavy optional dependency
    modules = [m if m != "openeas.processors.llm" else m + ".server" for m in known_processors().values()]
    heavy = ("torch", "onnxruntime", "llama_cpp", "pypmml", "sentence_transformers", "sklearn")
    code = (
        "import sys, importlib\n"
        f"for m in {sorted(modules)!r}:\n"
        "    importlib.import_module(m)\n"
        f"print([n for n in {heavy!r} if n in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_processor_command_keeps_the_two_argument_form() -> None:
    cmd = processor_command("onnx", "/models/my model.onnx")
    assert shlex.split(cmd)[1:] == [
        "-m", "openeas.processors.onnx", "--model-path", "/models/my model.onnx", "--port", "$PORT",
    ]  # fmt: skip


def test_processor_command_passes_rpc_and_model_config() -> None:
    spec = parse_service_spec(
        {
            "metadata": {
                "name": "clf",
                "rpc": {"worker_threads": 3, "max_queue_size": 10, "batching": True, "max_batch_timeout": 20},
            },
            "processor": "sklearn",
            "model_path": "/m/clf.joblib",
            "model_config": {"signature_name": "sig"},
        }
    )
    cmd = processor_command("sklearn", "/m/clf.joblib", spec.metadata.rpc.model_dump(), spec.model_config_)
    args = shlex.split(cmd)
    assert args[args.index("--workers") + 1] == "3"
    assert args[args.index("--max-queue-size") + 1] == "10"
    assert "--batching" in args
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert args[args.index("--max-batch-timeout") + 1] == "20"
    assert json.loads(args[args.index("--model-config") + 1]) == {"signature_name": "sig"}
    no_batching = processor_command("sklearn", "/m", {"batching": False})
    assert "--batching" not in no_batching
    # a JSON-string model_config is passed as is
    assert "--model-config '{\"n_ctx\": 512}'" in processor_command("llm", "/m.gguf", None, '{"n_ctx": 512}')


@pytest.mark.parametrize(
    ("name", "blocked", "extra"),
    [
        ("onnx", "onnxruntime", "onnx"),
        ("sklearn", "joblib", "sklearn"),
        ("pmml", "pypmml", "pmml"),
        ("torchscript", "torch", "torch"),
        ("llm", "llama_cpp", "llm"),
        ("embedding", "sentence_transformers", "embedding"),
        ("rerank", "sentence_transformers", "rerank"),
    ],
)
def test_missing_extra_fails_at_start_naming_it(name: str, blocked: str, extra: str, tmp_path: Path) -> None:
    # a package of the same name earlier on sys.path that cannot be imported = "not installed"
    shadow = tmp_path / "shadow" / blocked
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError('{blocked} is blocked by the test')\n")
    model = tmp_path / ("model.gguf" if name == "llm" else "model")
    if name in ("embedding", "rerank"):
        model.mkdir()
    else:
        model.write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    proc = subprocess.run(
        [sys.executable, "-m", known_processors()[name], "--model-path", str(model), "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'openeas[{extra}]'" in proc.stderr
    assert f"processor {name!r} needs the optional dependency {blocked!r}" in proc.stderr


def test_missing_model_path_fails_at_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openeas.processors.onnx",
            "--model-path",
            str(tmp_path / "nope.onnx"),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_missing_numpy_names_the_extra(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "numpy"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('numpy is blocked by the test')\n")
    model = tmp_path / "m.pmml"
    model.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "openeas.processors.pmml", "--model-path", str(model), "--port", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "shadow")},
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "processor 'pmml' needs numpy" in proc.stderr and "pip install 'openeas[pmml]'" in proc.stderr
