"""`torchscript` processor: a TorchScript module (`torch.jit.save`) run by torch on the CPU.

model_path: the .pt/.pth file (or a directory holding exactly one). Input names come from the
module's forward() arguments; outputs are named `output_0`, `output_1`, ... in the order the
module returns them (a dict output keeps its keys). JSON floats become float32 tensors, JSON
integers int64. model_config: `inputs` (`[{"name", "dtype", "shape"}]`, declares dtype/shape to
check), `outputs` (names), `batchable` (true when every input's first dimension is the batch:
allows rpc.batching), `num_threads` (torch intra-op threads), `signature_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openeas.processors._np import np
from openeas.processors.generic import declared_specs, run_generic
from openeas.processors.serving import ProcessorOptions, fail_start, require
from openeas.processors.tensors import TensorSpec

PROCESSOR = "torchscript"


def _model_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.suffix in (".pt", ".pth", ".torchscript"))
        if len(found) != 1:
            fail_start(f"{path} is a directory with {len(found)} .pt files; point model_path at one")
        return found[0]
    return p


class TorchScriptModel:
    default_float = np.dtype(np.float32)

    def __init__(self, path: str, config: dict[str, Any]) -> None:
        self._torch = torch = require("torch", extra="torch", processor=PROCESSOR)
        if "num_threads" in config:
            torch.set_num_threads(int(config["num_threads"]))
        file = _model_file(path)
        try:
            self._module = torch.jit.load(str(file), map_location="cpu")
        except Exception as exc:
            fail_start(f"torch.jit.load cannot load {file} (is it a TorchScript file?): {exc}")
        self._module.eval()
        declared = declared_specs(config, "inputs")
        if declared is not None:
            self.inputs = declared
        else:
            args = self._module.forward.schema.arguments[1:]  # skip self
            self.inputs = [TensorSpec(a.name) for a in args]
        names = config.get("outputs")
        self.outputs = [TensorSpec(str(n)) for n in names] if isinstance(names, list) else []
        self._batchable = bool(config.get("batchable", False))

    @property
    def batchable(self) -> bool:
        return self._batchable

    def _name(self, i: int) -> str:
        return self.outputs[i].name if i < len(self.outputs) else f"output_{i}"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in self.inputs]
        with torch.inference_mode():
            result = self._module(*args)
        if isinstance(result, dict):
            return {str(k): self._numpy(v) for k, v in result.items()}
        if isinstance(result, list | tuple):
            return {self._name(i): self._numpy(v) for i, v in enumerate(result)}
        return {self._name(0): self._numpy(result)}

    def _numpy(self, value: Any) -> Any:
        if isinstance(value, self._torch.Tensor):
            return value.detach().cpu().numpy()
        return value


def load(options: ProcessorOptions) -> TorchScriptModel:
    return TorchScriptModel(options.model_path, options.model_config)


def main(argv: Sequence[str] | None = None) -> None:
    run_generic(PROCESSOR, load, argv, prefer_torch=True)


if __name__ == "__main__":
    main()
