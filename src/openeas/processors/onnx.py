"""`onnx` processor: an ONNX model run by onnxruntime (CPU).

model_path: the .onnx file (or a directory holding exactly one). model_config:
`intra_op_num_threads`, `inter_op_num_threads` (onnxruntime session threads; default: its own),
`inputs` (override the declared inputs: `[{"name", "dtype", "shape"}]`), `signature_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openeas.processors._np import np
from openeas.processors.generic import declared_specs, run_generic
from openeas.processors.serving import ProcessorOptions, fail_start, require
from openeas.processors.tensors import TensorSpec

PROCESSOR = "onnx"

_ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


def _spec(node: Any) -> TensorSpec:
    dtype_name = _ORT_TYPES.get(node.type)
    shape = node.shape
    dims: tuple[int | None, ...] | None = None
    if isinstance(shape, list):
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
    if dtype_name is None:  # sequences, maps: JSON only
        return TensorSpec(node.name, None, None, type_name=node.type)
    return TensorSpec(node.name, np.dtype(dtype_name), dims)


def find_model_file(path: str, suffix: str) -> Path:
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob(f"*{suffix}"))
        if len(found) != 1:
            fail_start(
                f"{path} is a directory with {len(found)} {suffix} files; point model_path at one file"
            )
        return found[0]
    return p


class OnnxModel:
    default_float = np.dtype(np.float32)

    def __init__(self, path: str, config: dict[str, Any]) -> None:
        ort = require("onnxruntime", extra="onnx", processor=PROCESSOR)
        opts = ort.SessionOptions()
        if "intra_op_num_threads" in config:
            opts.intra_op_num_threads = int(config["intra_op_num_threads"])
        if "inter_op_num_threads" in config:
            opts.inter_op_num_threads = int(config["inter_op_num_threads"])
        file = find_model_file(path, ".onnx")
        try:
            self._session = ort.InferenceSession(
                str(file), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            fail_start(f"onnxruntime cannot load {file}: {exc}")
        self.inputs = declared_specs(config, "inputs") or [_spec(n) for n in self._session.get_inputs()]
        self.outputs = [_spec(n) for n in self._session.get_outputs()]

    @property
    def batchable(self) -> bool:
        return all(s.batchable for s in self.inputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        names = [s.name for s in self.outputs]
        values = self._session.run(names, inputs)
        return dict(zip(names, values, strict=True))


def load(options: ProcessorOptions) -> OnnxModel:
    return OnnxModel(options.model_path, options.model_config)


def main(argv: Sequence[str] | None = None) -> None:
    run_generic(PROCESSOR, load, argv)


if __name__ == "__main__":
    main()
