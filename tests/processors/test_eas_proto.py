"""The hand-written codec for the SDK's protobuf bodies, against classes that protoc generates
from our .proto files (grpcio-tools) and on its own (round trips, strictness)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from openeas.processors import eas_proto

PROTO_DIR = Path(eas_proto.__file__).with_name("proto")


@pytest.fixture(scope="module")
def pb2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, ModuleType]]:
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path_factory.mktemp("pb2")
    for name in ("tf_request.proto", "pytorch_predict.proto"):
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", str(PROTO_DIR / name)])
        assert rc == 0, name
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tf_request_pb2"), importlib.import_module("pytorch_predict_pb2")
    finally:
        sys.path.remove(str(out))


FIELDS = {
    eas_proto.DT_FLOAT: "float_val",
    eas_proto.DT_DOUBLE: "double_val",
    eas_proto.DT_INT64: "int64_val",
    eas_proto.DT_BOOL: "bool_val",
    eas_proto.DT_STRING: "string_val",
}

ARRAYS = {
    "f32": np.array([[1.5, -2.25], [0.0, 3.0e10]], dtype=np.float32),
    "f64": np.array([1e-300, -7.0, 0.1], dtype=np.float64),
    "i32": np.array([[-1, 2, -2147483648]], dtype=np.int32),
    "i64": np.array([-(2**62), 0, 2**40], dtype=np.int64),
    "u8": np.array([0, 255, 7], dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "str": np.array([b"abc", "h\u00e9llo".encode(), b""], dtype=object),
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
}


def test_tf_request_generated_by_protoc_decodes(pb2: tuple[ModuleType, ModuleType]) -> None:
    tf, _ = pb2
    req = tf.PredictRequest(signature_name="serving_default")
    req.output_filter.append("out")
    for name, arr in ARRAYS.items():
        proto = req.inputs[name]
        code = eas_proto.dtype_code(arr.dtype)
        proto.dtype = code
        proto.array_shape.dim.extend(arr.shape)
        flat = arr.reshape(-1).tolist()
        field = FIELDS.get(code, "int_val")
        getattr(proto, field).extend(flat)
    got = eas_proto.decode_tf_request(req.SerializeToString())
    assert got.signature_name == "serving_default" and got.output_filter == ["out"]
    for name, arr in ARRAYS.items():
        assert got.inputs[name].dtype == (arr.dtype if arr.dtype != object else np.dtype(object)), name
        np.testing.assert_array_equal(got.inputs[name], arr)


def test_our_tf_response_parses_with_protoc_classes(pb2: tuple[ModuleType, ModuleType]) -> None:
    tf, _ = pb2
    resp = tf.PredictResponse()
    resp.ParseFromString(eas_proto.encode_tf_response(ARRAYS))
    assert set(resp.outputs) == set(ARRAYS)
    assert list(resp.outputs["f32"].array_shape.dim) == [2, 2]
    assert resp.outputs["f32"].dtype == tf.DT_FLOAT
    np.testing.assert_array_equal(resp.outputs["f32"].float_val, ARRAYS["f32"].reshape(-1))
    assert list(resp.outputs["i32"].int_val) == [-1, 2, -2147483648]
    assert list(resp.outputs["i64"].int64_val) == ARRAYS["i64"].tolist()
    assert list(resp.outputs["bool"].bool_val) == [True, False, True]
    assert list(resp.outputs["str"].string_val) == ARRAYS["str"].tolist()
    assert list(resp.outputs["scalar"].array_shape.dim) == []
    assert list(resp.outputs["empty"].array_shape.dim) == [0, 3]


def test_torch_request_and_response_against_protoc(pb2: tuple[ModuleType, ModuleType]) -> None:
    _, pt = pb2
    req = pt.PredictRequest()
    a = req.inputs.add()
    a.dtype = pt.DT_FLOAT
    a.array_shape.dim.extend([1, 2])
    a.float_val.extend([1.0, 2.0])
    m = req.map_inputs["mask"]
    m.dtype = pt.DT_INT64
    m.array_shape.dim.extend([2])
    m.int64_val.extend([-3, 4])
    req.output_filter.extend([1, 0])
    req.debug_level = 2
    got = eas_proto.decode_torch_request(req.SerializeToString())
    np.testing.assert_array_equal(got.inputs[0], np.array([[1.0, 2.0]], dtype=np.float32))
    np.testing.assert_array_equal(got.map_inputs["mask"], np.array([-3, 4]))
    assert got.output_filter == [1, 0] and got.debug_level == 2
    # booleans have no field in the Torch proto: they travel as DT_INT32
    body = eas_proto.encode_torch_response([ARRAYS["f64"], np.array([True, False])], {"named": ARRAYS["i32"]})
    resp = pt.PredictResponse()
    resp.ParseFromString(body)
    assert list(resp.outputs[0].double_val) == ARRAYS["f64"].tolist()
    assert resp.outputs[1].dtype == pt.DT_INT32 and list(resp.outputs[1].int_val) == [1, 0]
    assert list(resp.map_outputs["named"].int_val) == [-1, 2, -2147483648]


def test_client_side_helpers_round_trip() -> None:
    body = eas_proto.encode_tf_request({"x": ARRAYS["f32"]}, "sig", ["y"])
    req = eas_proto.decode_tf_request(body)
    assert req.signature_name == "sig" and req.output_filter == ["y"]
    np.testing.assert_array_equal(req.inputs["x"], ARRAYS["f32"])
    outs = eas_proto.decode_tf_response(eas_proto.encode_tf_response({"y": ARRAYS["i64"]}))
    np.testing.assert_array_equal(outs["y"], ARRAYS["i64"])
    body = eas_proto.encode_torch_request([ARRAYS["u8"]], {"k": ARRAYS["f64"]}, [0])
    treq = eas_proto.decode_torch_request(body)
    np.testing.assert_array_equal(treq.inputs[0], ARRAYS["u8"])
    assert treq.output_filter == [0]
    pos, named = eas_proto.decode_torch_response(
        eas_proto.encode_torch_response([ARRAYS["i32"]], {"k": ARRAYS["u8"]})
    )
    np.testing.assert_array_equal(pos[0], ARRAYS["i32"])
    np.testing.assert_array_equal(named["k"], ARRAYS["u8"])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.int8, np.uint16, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    )
)
def test_any_array_round_trips(arr: np.ndarray) -> None:
    got = eas_proto.decode_tf_response(eas_proto.encode_tf_response({"a": arr}))["a"]
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_decoding_is_strict() -> None:
    with pytest.raises(eas_proto.WireError):
        eas_proto.decode_tf_request(b"\x00\x01garbage")
    with pytest.raises(eas_proto.WireError):
        eas_proto.decode_tf_request(b"\x12\x05\x0a\x01")  # truncated
    tf_body = eas_proto.encode_tf_request({"features": ARRAYS["f32"]}, "serving_default")
    with pytest.raises(eas_proto.WireError):
        eas_proto.decode_torch_request(tf_body)
    torch_body = eas_proto.encode_torch_request([ARRAYS["f32"]])
    with pytest.raises(eas_proto.WireError):
        eas_proto.decode_tf_request(torch_body)
    # an ArrayProto of dtype DT_FLOAT, shape [2, 3], and only 2 float values
    bad = b"\x08\x01" + b"\x12\x04\x0a\x02\x02\x03" + b"\x1a\x08" + np.array([1, 2], "<f4").tobytes()
    with pytest.raises(ValueError, match="needs 6 values but 2 were sent"):
        eas_proto.decode_array(memoryview(bad))
