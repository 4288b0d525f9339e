"""Tiny estimators pickled by the tests and loaded by the sklearn processor (importable as
`tests.processors.fake_models` from the repository root, where the processor runs)."""

from __future__ import annotations

import time

import numpy as np


class BatchSize:
    """predict() answers, for every row, how many rows were in the call: shows batching."""

    n_features_in_ = 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return np.full(len(x), len(x), dtype=np.int64)


class Sleepy:
    """predict() takes `seconds`: fills the worker and the queue."""

    n_features_in_ = 1

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return np.asarray(x)[:, 0]
