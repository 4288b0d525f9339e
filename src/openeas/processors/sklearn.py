"""`sklearn` processor: a scikit-learn estimator or pipeline saved with joblib (or pickle).

Loading a joblib/pickle file runs code from the file: deploy only models you trust.

model_path: the .joblib/.pkl file (or a directory holding exactly one). Inputs: one matrix
`input` of shape [-1, n_features_in_] (float64), or, for a model fitted on a pandas DataFrame,
one column per feature name (records JSON works well then). Outputs: `label` (predict of a
classifier; `prediction` for other estimators) and, for classifiers that have it,
`probabilities` (predict_proba). model_config: `inputs` (override),
`signature_name`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openeas.processors._np import np
from openeas.processors.generic import declared_specs, run_generic
from openeas.processors.serving import ProcessorOptions, fail_start, require
from openeas.processors.tensors import TensorSpec

PROCESSOR = "sklearn"
_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _model_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.suffix in _SUFFIXES)
        if len(found) != 1:
            fail_start(
                f"{path} is a directory with {len(found)} model files ({_SUFFIXES}); point model_path at one"
            )
        return found[0]
    return p


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class SklearnModel:
    default_float = np.dtype(np.float64)

    def __init__(self, path: str, config: dict[str, Any]) -> None:
        joblib = require("joblib", extra="sklearn", processor=PROCESSOR)
        require("sklearn", extra="sklearn", processor=PROCESSOR)
        file = _model_file(path)
        try:
            self._model = joblib.load(file)
        except Exception as exc:
            fail_start(f"cannot load {file} with joblib: {type(exc).__name__}: {exc}")
        if not hasattr(self._model, "predict"):
            fail_start(f"{file} holds a {type(self._model).__name__}, which has no predict()")
        self._features: list[str] | None = None
        self._pd: Any = None
        names = getattr(self._model, "feature_names_in_", None)
        declared = declared_specs(config, "inputs")
        if declared is not None:
            self.inputs = declared
        elif names is not None:
            self._pd = _optional("pandas")  # without it, a matrix in feature order (sklearn warns)
            self._features = [str(n) for n in names]
            self.inputs = [TensorSpec(n, None, (None,)) for n in self._features]
        else:
            n = getattr(self._model, "n_features_in_", None)
            if n is not None:
                self.inputs = [TensorSpec("input", np.dtype(np.float64), (None, int(n)))]
            else:  # e.g. a text pipeline: one value per row
                self.inputs = [TensorSpec("input", None, None)]
        self._proba = hasattr(self._model, "predict_proba")
        classes = getattr(self._model, "classes_", None)
        label_dtype = np.asarray(classes).dtype if classes is not None else np.dtype(np.float64)
        if label_dtype.kind in "OU":
            label_dtype = np.dtype(object)
        self._label = "label" if classes is not None else "prediction"
        self.outputs = [TensorSpec(self._label, label_dtype, (None,))]
        if self._proba:
            width = None if classes is None else len(classes)
            self.outputs.append(TensorSpec("probabilities", np.dtype(np.float64), (None, width)))

    @property
    def batchable(self) -> bool:
        return all(s.batchable for s in self.inputs)

    def _matrix(self, inputs: dict[str, np.ndarray]) -> Any:
        if self._features is not None:
            if self._pd is None:
                return np.column_stack([inputs[n] for n in self._features])
            return self._pd.DataFrame({n: inputs[n] for n in self._features})
        return inputs[self.inputs[0].name]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        x = self._matrix(inputs)
        out: dict[str, Any] = {self._label: np.asarray(self._model.predict(x))}
        if self._proba:
            out["probabilities"] = np.asarray(self._model.predict_proba(x), dtype=np.float64)
        return out


def load(options: ProcessorOptions) -> SklearnModel:
    return SklearnModel(options.model_path, options.model_config)


def main(argv: Sequence[str] | None = None) -> None:
    run_generic(PROCESSOR, load, argv)


if __name__ == "__main__":
    main()
