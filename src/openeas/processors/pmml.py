"""`pmml` processor: a PMML model evaluated by pypmml (PMML4S on an in-process JVM; needs Java 8+).

model_path: the .pmml/.xml file (or a directory holding exactly one). Inputs: one column per
PMML input field (shape [-1]); outputs: the model's output fields. The EAS PMML request format,
a JSON list of records (`[{"x1": 1.0, "x2": "a"}]`) or one record, is answered with a list of
records; named columns (`{"inputs": {"x1": [...]}}`) and TFRequest bodies work too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openeas.processors._np import np
from openeas.processors.generic import run_generic
from openeas.processors.serving import ProcessorOptions, fail_start, require
from openeas.processors.tensors import TensorSpec

PROCESSOR = "pmml"

_PMML_TYPES: dict[str, str] = {
    "double": "float64",
    "float": "float64",
    "real": "float64",
    "integer": "int64",
    "string": "object",
    "boolean": "bool",
}


def _dtype(pmml_type: str | None) -> np.dtype[Any] | None:
    name = _PMML_TYPES.get(str(pmml_type).lower())
    return None if name is None else np.dtype(name)


def _model_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.suffix in (".pmml", ".xml"))
        if len(found) != 1:
            fail_start(f"{path} is a directory with {len(found)} .pmml files; point model_path at one")
        return found[0]
    return p


class PmmlModel:
    default_float = np.dtype(np.float64)
    batchable = True

    def __init__(self, path: str) -> None:
        pypmml = require("pypmml", extra="pmml", processor=PROCESSOR)
        file = _model_file(path)
        try:
            self._model = pypmml.Model.load(str(file))
        except Exception as exc:
            fail_start(f"pypmml cannot load {file} (is Java installed? `java -version`): {exc}")
        self.inputs = [TensorSpec(f.name, _dtype(f.dataType), (None,)) for f in self._model.inputFields]
        self.outputs = [TensorSpec(f.name, _dtype(f.dataType), (None,)) for f in self._model.outputFields]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        names = [s.name for s in self.inputs]
        columns = {n: inputs[n].tolist() for n in names}
        rows = len(columns[names[0]]) if names else 0
        records = [{n: columns[n][i] for n in names} for i in range(rows)]
        result = json.loads(self._model.predict(json.dumps(records)))
        out: dict[str, Any] = {}
        for spec in self.outputs:
            values = [r.get(spec.name) for r in result]
            dtype = spec.dtype if spec.dtype is not None and None not in values else np.dtype(object)
            out[spec.name] = np.array(values, dtype=dtype)
        return out


def load(options: ProcessorOptions) -> PmmlModel:
    return PmmlModel(options.model_path)


def main(argv: Sequence[str] | None = None) -> None:
    run_generic(PROCESSOR, load, argv)


if __name__ == "__main__":
    main()
