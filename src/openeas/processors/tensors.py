"""Named tensors for the generic processors: what a model declares, and checking what callers send.

A model declares its inputs and outputs as `TensorSpec`s (name, numpy dtype or None = any,
shape with None for a free dimension or None = any rank). `conform` turns what a caller sent
(decoded JSON or protobuf) into the array the model takes, or raises a 400 that says what was
expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openeas.processors import eas_proto
from openeas.processors._np import np
from openeas.processors.serving import bad_request


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype[Any] | None = None  # None: whatever is sent (numbers become `default_float`)
    shape: tuple[int | None, ...] | None = None  # None: any rank; a None dim: any size
    type_name: str | None = None  # for non-tensor values (e.g. ONNX sequence of maps)

    @property
    def batchable(self) -> bool:
        """True when the first dimension is free, so requests can be stacked along it."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] is None

    def describe_shape(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"

    def type_label(self) -> str:
        if self.type_name:
            return self.type_name
        if self.dtype is None:
            return "DT_INVALID"
        try:
            return eas_proto.DT_NAMES[eas_proto.dtype_code(self.dtype)]
        except ValueError:
            return str(self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": None if self.shape is None else [-1 if d is None else d for d in self.shape],
            "type": self.type_label(),
            "dtype": None if self.dtype is None else str(self.dtype),
        }


def spec_from_json(data: Mapping[str, Any]) -> TensorSpec:
    """A TensorSpec from model_config (`{"name", "dtype": "float32", "shape": [-1, 4]}`)."""
    dtype = data.get("dtype")
    shape = data.get("shape")
    return TensorSpec(
        name=str(data["name"]),
        dtype=None if dtype is None else np.dtype(dtype),
        shape=None if shape is None else tuple(None if d is None or int(d) < 0 else int(d) for d in shape),
    )


def from_json_value(name: str, value: Any) -> np.ndarray:
    """A JSON value (number, string, nested lists) -> numpy array; ragged lists are refused."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise bad_request(
            f"input {name!r}: nested lists of different lengths; a tensor needs every row the same length"
        ) from None
    if arr.dtype == object:
        raise bad_request(
            f"input {name!r}: nested lists of different lengths or mixed types; "
            "a tensor needs every row the same length and one type"
        )
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    return arr


def conform(spec: TensorSpec, arr: np.ndarray, *, default_float: np.dtype[Any]) -> np.ndarray:
    """Check shape and cast dtype for one input; raise a 400 naming the problem."""
    if spec.shape is not None and (
        arr.ndim != len(spec.shape)
        or any(want is not None and want != got for want, got in zip(spec.shape, arr.shape, strict=True))
    ):
        raise bad_request(
            f"input {spec.name!r}: expected shape {spec.describe_shape()} (-1 = any size), "
            f"got {list(arr.shape)}"
        )
    return cast(spec.name, arr, spec.dtype, default_float=default_float)


def cast(
    name: str, arr: np.ndarray, dtype: np.dtype[Any] | None, *, default_float: np.dtype[Any]
) -> np.ndarray:
    kind = arr.dtype.kind
    if dtype is None:
        if kind == "f" and arr.dtype != default_float and arr.dtype == np.float64:
            return arr.astype(default_float)
        if kind == "O":
            return _strings(arr)
        return arr
    want = dtype.kind
    if want in "OUS":
        if kind in "OUS":
            return _strings(arr)
        raise bad_request(f"input {name!r}: expected strings, got {arr.dtype} values")
    if kind in "OUS":
        raise bad_request(f"input {name!r}: expected {dtype} numbers, got strings")
    if want == "b":
        if kind == "b":
            return arr
        if kind in "iu" and np.isin(arr, (0, 1)).all():
            return arr.astype(np.bool_)
        raise bad_request(f"input {name!r}: expected booleans (true/false), got {arr.dtype} values")
    if want in "iu":
        if kind == "f" and (not np.all(np.isfinite(arr)) or not np.all(np.equal(np.mod(arr, 1), 0))):
            raise bad_request(f"input {name!r}: expected integers ({dtype}), got fractional numbers")
        if kind in "iuf" or kind == "b":
            info = np.iinfo(dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise bad_request(f"input {name!r}: values out of range for {dtype}")
            return arr.astype(dtype)
    if want in "fc" and kind in "iufb":
        return arr.astype(dtype)
    raise bad_request(f"input {name!r}: cannot use {arr.dtype} values where {dtype} is expected")


def _strings(arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1)):
        flat[i] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return out


def to_jsonable(value: Any) -> Any:
    """Model output -> JSON-compatible value (arrays become nested lists)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [to_jsonable(v) for v in value.tolist()] if value.ndim else to_jsonable(value.item())
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def to_array(name: str, value: Any) -> np.ndarray:
    """Model output -> numpy array for a protobuf answer (a list of dicts becomes a matrix by key)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, Mapping) for v in value):
        keys = sorted(value[0].keys())
        return np.array([[row[k] for k in keys] for row in value])
    arr = np.asarray(value)
    if arr.dtype == object and any(isinstance(v, Mapping) for v in arr.reshape(-1)):
        raise bad_request(f"output {name!r} is not a tensor; ask for it as JSON")
    return arr
