"""Models made by the tests (no hub): sklearn/joblib, ONNX (skl2onnx), PMML, TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PMML_LINEAR = """<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="y = 1 + 2*x1 + 3*x2, and a label from x1"/>
  <DataDictionary numberOfFields="3">
    <DataField name="x1" optype="continuous" dataType="double"/>
    <DataField name="x2" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression" modelName="linear">
    <MiningSchema>
      <MiningField name="x1"/>
      <MiningField name="x2"/>
      <MiningField name="y" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="1.0">
      <NumericPredictor name="x1" coefficient="2.0"/>
      <NumericPredictor name="x2" coefficient="3.0"/>
    </RegressionTable>
  </RegressionModel>
</PMML>
"""


def training_data() -> tuple[np.ndarray, np.ndarray]:
    """Three well separated classes in 4 features."""
    rng = np.random.default_rng(7)
    centers = np.array([[0, 0, 0, 0], [4, 4, 0, 0], [0, 4, 4, 4]], dtype=np.float64)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(30, 4)) for c in centers])
    y = np.repeat([0, 1, 2], 30)
    return x, y


def fit_classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    return LogisticRegression(max_iter=500).fit(x, y)


def save_joblib(model: Any, path: Path) -> Path:
    import joblib

    joblib.dump(model, path)
    return path


def save_onnx(model: Any, path: Path) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    path.write_bytes(onx.SerializeToString())
    return path


def save_torchscript(path: Path) -> Path:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
            self.bias = torch.nn.Parameter(torch.tensor([0.5, -0.5]))

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = x @ self.weight + self.bias
            return y * scale, y.sum(dim=1)

    torch.jit.script(Net()).save(str(path))
    return path


def torch_reference(x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    y = x.astype(np.float32) @ w + np.array([0.5, -0.5], dtype=np.float32)
    return y * scale.astype(np.float32), y.sum(axis=1)
