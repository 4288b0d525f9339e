"""A small, dependency-free codec for the EAS SDK's protobuf bodies (TFRequest and TorchRequest).

The messages are defined in `proto/tf_request.proto` and `proto/pytorch_predict.proto`. They are
decoded here by hand instead of with generated `_pb2` modules because the official SDK pins
`protobuf<=3.20.3` while onnx/onnxruntime need protobuf 4+; a processor must not care which
protobuf runtime happens to be installed. The tests check this codec against classes generated
from the .proto files and against the real SDK.

Decoding is strict: an unknown field, a wrong wire type or a truncated value raises
`WireError`, which is how a processor tells a TF body from a Torch body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from openeas.processors._np import np

# ArrayDataType values, shared by both protos
DT_INVALID = 0
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_INT64 = 9
DT_BOOL = 10
DT_QINT8 = 11
DT_QUINT8 = 12
DT_QINT32 = 13
DT_QINT16 = 15
DT_QUINT16 = 16
DT_UINT16 = 17
DT_HALF = 19

DT_NAMES: Mapping[int, str] = {
    0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16",
    6: "DT_INT8", 7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64", 10: "DT_BOOL", 11: "DT_QINT8",
    12: "DT_QUINT8", 13: "DT_QINT32", 14: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16",
    17: "DT_UINT16", 18: "DT_COMPLEX128", 19: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT",
}  # fmt: skip

# dtype -> numpy dtype for the values that ArrayProto can carry
_NUMPY_OF: Mapping[int, np.dtype[np.generic]] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_INT32: np.dtype(np.int32),
    DT_UINT8: np.dtype(np.uint8),
    DT_INT16: np.dtype(np.int16),
    DT_INT8: np.dtype(np.int8),
    DT_STRING: np.dtype(object),
    DT_INT64: np.dtype(np.int64),
    DT_BOOL: np.dtype(np.bool_),
    DT_QINT8: np.dtype(np.int8),
    DT_QUINT8: np.dtype(np.uint8),
    DT_QINT32: np.dtype(np.int32),
    DT_QINT16: np.dtype(np.int16),
    DT_QUINT16: np.dtype(np.uint16),
    DT_UINT16: np.dtype(np.uint16),
}

# ArrayProto field numbers
_F_DTYPE, _F_SHAPE, _F_FLOAT, _F_DOUBLE, _F_INT, _F_STRING, _F_INT64, _F_BOOL = 1, 2, 3, 4, 5, 6, 7, 8
_INT_DTYPES = frozenset({DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_QINT8, DT_QUINT8, DT_QINT32, DT_QINT16,
                         DT_QUINT16, DT_UINT16})  # fmt: skip

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not the expected protobuf message."""


def dtype_code(dtype: np.dtype[np.generic]) -> int:
    """The ArrayDataType for a numpy dtype (strings and objects are DT_STRING)."""
    kind = dtype.kind
    if kind in "USO":
        return DT_STRING
    table = {
        np.dtype(np.float32): DT_FLOAT,
        np.dtype(np.float64): DT_DOUBLE,
        np.dtype(np.float16): DT_FLOAT,
        np.dtype(np.int32): DT_INT32,
        np.dtype(np.int16): DT_INT16,
        np.dtype(np.int8): DT_INT8,
        np.dtype(np.uint8): DT_UINT8,
        np.dtype(np.uint16): DT_UINT16,
        np.dtype(np.int64): DT_INT64,
        np.dtype(np.uint32): DT_INT64,
        np.dtype(np.uint64): DT_INT64,
        np.dtype(np.bool_): DT_BOOL,
    }
    code = table.get(np.dtype(dtype))
    if code is None:
        raise ValueError(f"numpy dtype {dtype} has no ArrayDataType")
    return code


def numpy_dtype(code: int) -> np.dtype[np.generic]:
    try:
        return _NUMPY_OF[code]
    except KeyError:
        name = DT_NAMES.get(code, str(code))
        raise ValueError(
            f"dtype {name} is not supported; use DT_FLOAT, DT_DOUBLE, DT_INT*, DT_STRING or DT_BOOL"
        ) from None


# ---------------------------------------------------------------- wire primitives


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): value is an int for varints, a view otherwise."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise WireError("truncated length-delimited field")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == _I64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire}")


def _varints(buf: memoryview) -> list[int]:
    out = []
    pos = 0
    while pos < len(buf):
        value, pos = _read_varint(buf, pos)
        out.append(value)
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF  # an int32 is sign-extended to 64 bits on the wire; keep the low 32
    return v - (1 << 32) if v >= 1 << 31 else v


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(payload)) + payload


def _text(view: memoryview, what: str) -> str:
    try:
        return bytes(view).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None


# ---------------------------------------------------------------- ArrayProto


def decode_array(buf: memoryview, *, allow_bool: bool = True) -> np.ndarray:
    """ArrayProto -> numpy array of its dtype and shape."""
    dtype = DT_INVALID
    dims: list[int] = []
    floats: list[bytes] = []
    doubles: list[bytes] = []
    ints: list[int] = []
    int64s: list[int] = []
    bools: list[int] = []
    strings: list[bytes] = []
    for number, wire, value in _fields(buf):
        if number == _F_DTYPE and wire == _VARINT:
            assert isinstance(value, int)
            dtype = value
        elif number == _F_SHAPE and wire == _LEN:
            assert isinstance(value, memoryview)
            for n, w, v in _fields(value):
                if n != 1:
                    raise WireError("unknown field in ArrayShape")
                if w == _LEN:
                    assert isinstance(v, memoryview)
                    dims.extend(_signed64(d) for d in _varints(v))
                elif w == _VARINT:
                    assert isinstance(v, int)
                    dims.append(_signed64(v))
                else:
                    raise WireError("bad wire type for ArrayShape.dim")
        elif number == _F_FLOAT and wire in (_LEN, _I32):
            assert isinstance(value, memoryview)
            floats.append(bytes(value))
        elif number == _F_DOUBLE and wire in (_LEN, _I64):
            assert isinstance(value, memoryview)
            doubles.append(bytes(value))
        elif number in (_F_INT, _F_INT64) or (number == _F_BOOL and allow_bool):
            target = ints if number == _F_INT else int64s if number == _F_INT64 else bools
            if wire == _LEN:
                assert isinstance(value, memoryview)
                target.extend(_varints(value))
            elif wire == _VARINT:
                assert isinstance(value, int)
                target.append(value)
            else:
                raise WireError("bad wire type for an integer list")
        elif number == _F_STRING and wire == _LEN:
            assert isinstance(value, memoryview)
            strings.append(bytes(value))
        else:
            raise WireError(f"unknown field {number} (wire type {wire}) in ArrayProto")
    np_dtype = numpy_dtype(dtype) if dtype != DT_INVALID else None
    if dtype == DT_FLOAT:
        raw = b"".join(floats)
        if len(raw) % 4:
            raise WireError("float_val length is not a multiple of 4")
        flat: np.ndarray = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == DT_DOUBLE:
        raw = b"".join(doubles)
        if len(raw) % 8:
            raise WireError("double_val length is not a multiple of 8")
        flat = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    elif dtype == DT_INT64:
        flat = np.array([_signed64(v) for v in int64s], dtype=np.int64)
    elif dtype in _INT_DTYPES:
        assert np_dtype is not None
        flat = np.array([_signed32(v) for v in ints], dtype=np.int64).astype(np_dtype)
    elif dtype == DT_BOOL:
        flat = np.array([bool(v) for v in bools], dtype=np.bool_)
    elif dtype == DT_STRING:
        flat = np.empty(len(strings), dtype=object)
        for i, s in enumerate(strings):
            flat[i] = s
    elif dtype == DT_INVALID:
        raise WireError("ArrayProto without dtype")
    else:
        raise ValueError(f"dtype {DT_NAMES.get(dtype, dtype)} is not supported")
    shape = tuple(dims)
    expected = int(np.prod(shape)) if shape else 1
    if any(d < 0 for d in shape) or flat.size != expected:
        raise ValueError(
            f"array_shape {list(shape)} needs {expected} values but {flat.size} were sent "
            f"({DT_NAMES.get(dtype, dtype)}); the values are the tensor flattened in row-major order"
        )
    return flat.reshape(shape)


def encode_array(array: np.ndarray, *, allow_bool: bool = True) -> bytes:
    """numpy array -> ArrayProto bytes (the value list that the SDK reads for its dtype)."""
    arr = np.asarray(array)
    code = dtype_code(arr.dtype)
    if code == DT_BOOL and not allow_bool:  # the Torch proto has no bool_val
        arr, code = arr.astype(np.int32), DT_INT32
    out = bytearray()
    out += _key(_F_DTYPE, _VARINT) + _varint(code)
    shape = b"".join(_varint(int(d)) for d in arr.shape)
    out += _len_field(_F_SHAPE, _len_field(1, shape) if arr.shape else b"")
    flat = arr.reshape(-1)
    if code == DT_FLOAT:
        if flat.size:
            out += _len_field(_F_FLOAT, flat.astype("<f4").tobytes())
    elif code == DT_DOUBLE:
        if flat.size:
            out += _len_field(_F_DOUBLE, flat.astype("<f8").tobytes())
    elif code == DT_INT64:
        if flat.size:
            out += _len_field(_F_INT64, b"".join(_varint(int(v)) for v in flat))
    elif code == DT_BOOL:
        if flat.size:
            out += _len_field(_F_BOOL, bytes(int(bool(v)) for v in flat))
    elif code == DT_STRING:
        for v in flat:
            data = v if isinstance(v, bytes) else str(v).encode("utf-8")
            out += _len_field(_F_STRING, data)
    else:
        if flat.size:
            out += _len_field(_F_INT, b"".join(_varint(int(v)) for v in flat))
    return bytes(out)


# ---------------------------------------------------------------- TF PredictRequest/Response


@dataclass
class TFPredictRequest:
    signature_name: str = ""
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    output_filter: list[str] = field(default_factory=list)


def _map_entry(buf: memoryview, what: str) -> tuple[str, memoryview]:
    key = ""
    value: memoryview | None = None
    for number, wire, v in _fields(buf):
        if number == 1 and wire == _LEN:
            assert isinstance(v, memoryview)
            key = _text(v, f"{what} key")
        elif number == 2 and wire == _LEN:
            assert isinstance(v, memoryview)
            value = v
        else:
            raise WireError(f"unknown field {number} in a {what} entry")
    return key, value if value is not None else memoryview(b"")


def decode_tf_request(data: bytes) -> TFPredictRequest:
    req = TFPredictRequest()
    raw_inputs: dict[str, memoryview] = {}
    for number, wire, value in _fields(memoryview(data)):
        if wire != _LEN:
            raise WireError(f"field {number} has wire type {wire} in a TF PredictRequest")
        assert isinstance(value, memoryview)
        if number == 1:
            req.signature_name = _text(value, "signature_name")
        elif number == 2:
            key, arr = _map_entry(value, "inputs")
            raw_inputs[key] = arr
        elif number == 3:
            req.output_filter.append(_text(value, "output_filter"))
        else:
            raise WireError(f"unknown field {number} in a TF PredictRequest")
    # the arrays are decoded only once the message as a whole looks right
    for key, arr in raw_inputs.items():
        try:
            req.inputs[key] = decode_array(arr)
        except ValueError as exc:
            if isinstance(exc, WireError):
                raise
            raise ValueError(f"input {key!r}: {exc}") from None
    return req


def encode_tf_request(
    inputs: Mapping[str, np.ndarray], signature_name: str = "", output_filter: Sequence[str] = ()
) -> bytes:
    out = bytearray()
    if signature_name:
        out += _len_field(1, signature_name.encode())
    for name, arr in inputs.items():
        out += _len_field(2, _len_field(1, name.encode()) + _len_field(2, encode_array(arr)))
    for name in output_filter:
        out += _len_field(3, name.encode())
    return bytes(out)


def encode_tf_response(outputs: Mapping[str, np.ndarray]) -> bytes:
    out = bytearray()
    for name, arr in outputs.items():
        out += _len_field(1, _len_field(1, name.encode()) + _len_field(2, encode_array(arr)))
    return bytes(out)


def decode_tf_response(data: bytes) -> dict[str, np.ndarray]:
    outputs = {}
    for number, wire, value in _fields(memoryview(data)):
        if number != 1 or wire != _LEN:
            raise WireError(f"unknown field {number} in a TF PredictResponse")
        assert isinstance(value, memoryview)
        key, arr = _map_entry(value, "outputs")
        outputs[key] = decode_array(arr)
    return outputs


# ---------------------------------------------------------------- Torch PredictRequest/Response


@dataclass
class TorchPredictRequest:
    inputs: list[np.ndarray] = field(default_factory=list)
    output_filter: list[int] = field(default_factory=list)
    map_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    debug_level: int = 0


def decode_torch_request(data: bytes) -> TorchPredictRequest:
    req = TorchPredictRequest()
    raw_inputs: list[memoryview] = []
    raw_map: dict[str, memoryview] = {}
    for number, wire, value in _fields(memoryview(data)):
        if number == 1 and wire == _LEN:
            assert isinstance(value, memoryview)
            raw_inputs.append(value)
        elif number == 2 and wire == _LEN:
            assert isinstance(value, memoryview)
            req.output_filter.extend(_signed32(v) for v in _varints(value))
        elif number == 2 and wire == _VARINT:
            assert isinstance(value, int)
            req.output_filter.append(_signed32(value))
        elif number == 3 and wire == _LEN:
            assert isinstance(value, memoryview)
            key, arr = _map_entry(value, "map_inputs")
            raw_map[key] = arr
        elif number == 100 and wire == _VARINT:
            assert isinstance(value, int)
            req.debug_level = _signed32(value)
        else:
            raise WireError(f"unknown field {number} (wire type {wire}) in a Torch PredictRequest")
    if not raw_inputs and not raw_map:
        raise WireError("a Torch PredictRequest without inputs")
    for i, arr in enumerate(raw_inputs):
        try:
            req.inputs.append(decode_array(arr, allow_bool=False))
        except ValueError as exc:
            if isinstance(exc, WireError):
                raise
            raise ValueError(f"input {i}: {exc}") from None
    for key, arr in raw_map.items():
        try:
            req.map_inputs[key] = decode_array(arr, allow_bool=False)
        except ValueError as exc:
            if isinstance(exc, WireError):
                raise
            raise ValueError(f"input {key!r}: {exc}") from None
    return req


def encode_torch_request(
    inputs: Sequence[np.ndarray] = (),
    map_inputs: Mapping[str, np.ndarray] | None = None,
    output_filter: Sequence[int] = (),
) -> bytes:
    out = bytearray()
    for arr in inputs:
        out += _len_field(1, encode_array(arr, allow_bool=False))
    if output_filter:
        out += _len_field(2, b"".join(_varint(i) for i in output_filter))
    for name, arr in (map_inputs or {}).items():
        out += _len_field(
            3, _len_field(1, name.encode()) + _len_field(2, encode_array(arr, allow_bool=False))
        )
    return bytes(out)


def encode_torch_response(
    outputs: Sequence[np.ndarray], map_outputs: Mapping[str, np.ndarray] | None = None
) -> bytes:
    out = bytearray()
    for arr in outputs:
        out += _len_field(1, encode_array(arr, allow_bool=False))
    for name, arr in (map_outputs or {}).items():
        out += _len_field(
            2, _len_field(1, name.encode()) + _len_field(2, encode_array(arr, allow_bool=False))
        )
    return bytes(out)


def decode_torch_response(data: bytes) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    outputs: list[np.ndarray] = []
    map_outputs: dict[str, np.ndarray] = {}
    for number, wire, value in _fields(memoryview(data)):
        if wire != _LEN:
            raise WireError(f"field {number} has wire type {wire} in a Torch PredictResponse")
        assert isinstance(value, memoryview)
        if number == 1:
            outputs.append(decode_array(value, allow_bool=False))
        elif number == 2:
            key, arr = _map_entry(value, "map_outputs")
            map_outputs[key] = decode_array(arr, allow_bool=False)
        else:
            raise WireError(f"unknown field {number} in a Torch PredictResponse")
    return outputs, map_outputs
