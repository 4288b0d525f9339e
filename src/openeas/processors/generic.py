"""EAS generic processor behaviour shared by onnx, sklearn, pmml and torchscript.

- `GET /` answers the model signature as JSON; `POST /` predicts. The same routes are served
  under `/api/predict/<service>`, the path the eas-prediction SDK uses when it talks to an
  instance directly.
- Bodies: JSON (named tensors, a single tensor, rows, or records) or the SDK's protobuf
  (TFRequest / TorchRequest). JSON in -> JSON out; protobuf in -> the matching PredictResponse.
- `--workers` threads run the model; `--batching` stacks compatible requests along the first
  dimension when every input of the model has a free first dimension.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openeas.processors import eas_proto
from openeas.processors._np import np
from openeas.processors.serving import (
    Batcher,
    ProcessorError,
    ProcessorOptions,
    WorkerPool,
    bad_request,
    json_response,
    make_app,
    parse_json_body,
    run_processor,
)
from openeas.processors.tensors import TensorSpec, conform, from_json_value, to_array, to_jsonable

log = logging.getLogger("openeas.processors")

PROTOBUF = "application/octet-stream"
Wire = Literal["json", "records", "tf", "torch"]
_TF_SIGNATURES = ("", "serving_default", "predict")


class TensorModel(Protocol):
    """What a generic processor loads: declared inputs/outputs and a thread-safe predict."""

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    @property
    def batchable(self) -> bool: ...

    @property
    def default_float(self) -> np.dtype[Any]: ...

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]: ...


@dataclass
class Call:
    """One decoded prediction request."""

    inputs: dict[str, np.ndarray]
    wire: Wire
    output_filter: list[str] | None = None
    torch_filter: list[int] = field(default_factory=list)
    torch_map: bool = False
    rows: int | None = None  # number of records, for `records` answers


@dataclass(frozen=True)
class GenericConfig:
    processor: str
    signature_name: str = "serving_default"
    prefer_torch: bool = False  # TorchRequest is tried before TFRequest for protobuf bodies


class GenericService:
    """Decoding, validation, execution and encoding for one loaded TensorModel."""

    def __init__(self, model: TensorModel, config: GenericConfig, options: ProcessorOptions) -> None:
        self.model = model
        self.config = config
        self.options = options
        self.pool = WorkerPool(options.workers, options.max_queue_size)
        self.batching = options.batching and model.batchable
        self.batcher: Batcher[dict[str, np.ndarray], dict[str, Any]] | None = None
        if self.batching:
            self.batcher = Batcher(
                self._run_batch, self.pool, options.max_batch_size, options.max_batch_timeout_ms / 1000
            )
        self._names = [s.name for s in model.inputs]

    # ------------------------------------------------------------ signature

    def signature(self) -> dict[str, Any]:
        return {
            "signature_name": self.config.signature_name,
            "processor": self.config.processor,
            "model": Path(self.options.model_path).name,
            "inputs": [s.to_json() for s in self.model.inputs],
            "outputs": [s.to_json() for s in self.model.outputs],
            "batching": self.batching,
            "request_formats": ["json", "tf_protobuf", "torch_protobuf"],
        }

    # ------------------------------------------------------------ decoding

    def decode(self, body: bytes, content_type: str) -> Call:
        head = body.lstrip()[:1]
        if "json" in content_type or head in (b"{", b"["):
            return self._from_json(parse_json_body(body))
        if not body:
            raise bad_request("the request body is empty; send JSON or an EAS TFRequest/TorchRequest")
        decoders: list[Callable[[bytes], Call]] = [self._from_tf, self._from_torch]
        if self.config.prefer_torch:
            decoders.reverse()
        for decode in decoders:
            try:
                return decode(body)
            except eas_proto.WireError:
                continue
            except ValueError as exc:  # the message parsed, its content is wrong
                raise bad_request(str(exc)) from None
        raise bad_request(
            "the body is neither JSON nor an EAS TFRequest/TorchRequest protobuf; send JSON with "
            'Content-Type: application/json, e.g. {"inputs": {"<name>": [[...]]}}'
        )

    def _from_tf(self, body: bytes) -> Call:
        req = eas_proto.decode_tf_request(body)
        allowed = {*_TF_SIGNATURES, self.config.signature_name}
        if req.signature_name not in allowed:
            if not req.inputs or any(not k.isprintable() for k in req.inputs):
                raise eas_proto.WireError("not a TF request")
            raise bad_request(
                f"unknown signature_name {req.signature_name!r}; this model serves "
                f"{self.config.signature_name!r}"
            )
        if not req.inputs:
            raise eas_proto.WireError("a TF request without inputs")
        unknown = [k for k in req.inputs if k not in self._names]
        if unknown and len(self._names) == 1 and len(req.inputs) == 1:
            # one input: accept it under whatever name the caller used
            req.inputs = {self._names[0]: next(iter(req.inputs.values()))}
        return Call(inputs=req.inputs, wire="tf", output_filter=req.output_filter or None)

    def _from_torch(self, body: bytes) -> Call:
        req = eas_proto.decode_torch_request(body)
        if len(req.inputs) > len(self._names):
            raise bad_request(
                f"{len(req.inputs)} positional inputs sent; the model takes {len(self._names)} "
                f"({', '.join(self._names)})"
            )
        inputs = dict(zip(self._names, req.inputs, strict=False))
        inputs.update(req.map_inputs)
        return Call(
            inputs=inputs, wire="torch", torch_filter=req.output_filter, torch_map=bool(req.map_inputs)
        )

    def _from_json(self, data: Any) -> Call:
        output_filter: list[str] | None = None
        if isinstance(data, dict):
            of = data.get("output_filter")
            if of is not None:
                if not isinstance(of, list) or not all(isinstance(x, str) for x in of):
                    raise bad_request('"output_filter" must be a list of output names')
                output_filter = of
            if "inputs" in data:
                value = data["inputs"]
                if isinstance(value, dict):
                    return self._named(value, output_filter)
                return self._single(value, output_filter)
            if "instances" in data:
                value = data["instances"]
                if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                    return self._records(value, output_filter)
                return self._single(value, output_filter)
            if data and set(data) <= set(self._names):
                if all(not isinstance(v, list | dict) for v in data.values()):
                    return self._records([data], output_filter)
                return self._named(data, output_filter)
            raise bad_request(
                'expected {"inputs": {"<name>": [[...]]}}, {"inputs": [[...]]}, a list of rows, '
                f"or a list of records; the model's inputs are {self._names} (GET / shows the signature)"
            )
        if isinstance(data, list):
            if data and all(isinstance(r, dict) for r in data):
                return self._records(data, None)
            return self._single(data, None)
        raise bad_request("expected a JSON object or list; GET / shows the model signature")

    def _named(self, value: dict[str, Any], output_filter: list[str] | None) -> Call:
        unknown = sorted(set(value) - set(self._names))
        if unknown:
            raise bad_request(f"unknown input(s) {unknown}; the model's inputs are {self._names}")
        return Call({k: from_json_value(k, v) for k, v in value.items()}, "json", output_filter)

    def _single(self, value: Any, output_filter: list[str] | None) -> Call:
        if len(self._names) != 1:
            example = ", ".join(f'"{n}": ...' for n in self._names)
            raise bad_request(
                f'this model has {len(self._names)} inputs; send them by name: {{"inputs": {{{example}}}}}'
            )
        name = self._names[0]
        return Call({name: from_json_value(name, value)}, "json", output_filter)

    def _records(self, records: list[dict[str, Any]], output_filter: list[str] | None) -> Call:
        columns: dict[str, np.ndarray] = {}
        for name in self._names:
            missing = [i for i, r in enumerate(records) if name not in r]
            if missing:
                raise bad_request(
                    f"record {missing[0]} has no field {name!r}; every record needs {self._names}"
                )
            columns[name] = from_json_value(name, [r[name] for r in records])
        return Call(columns, "records", output_filter, rows=len(records))

    # ------------------------------------------------------------ validation and execution

    def conform(self, call: Call) -> dict[str, np.ndarray]:
        missing = [n for n in self._names if n not in call.inputs]
        if missing:
            raise bad_request(
                f"missing input(s) {missing}; the model's inputs are {self._names} "
                "(GET / shows the signature)"
            )
        out = {}
        for spec in self.model.inputs:
            out[spec.name] = conform(spec, call.inputs[spec.name], default_float=self.model.default_float)
        if self.batching:
            rows = {a.shape[0] for a in out.values() if a.ndim}
            if len(rows) > 1:
                raise bad_request(f"inputs have different numbers of rows {sorted(rows)}")
        return out

    def predict_one(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        try:
            return self.model.predict(inputs)
        except ProcessorError:
            raise
        except Exception as exc:  # EAS: an exception in the processor answers 400
            raise bad_request(f"the model could not run on this input: {type(exc).__name__}: {exc}") from None

    def _run_batch(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, Any] | Exception]:
        results: list[dict[str, Any] | Exception | None] = [None] * len(items)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, item in enumerate(items):
            key = tuple((k, a.dtype.str, a.shape[1:]) for k, a in sorted(item.items()))
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            merged = self._run_merged([items[i] for i in members]) if len(members) > 1 else None
            for j, i in enumerate(members):
                if merged is not None:
                    results[i] = merged[j]
                    continue
                try:
                    results[i] = self.predict_one(items[i])
                except Exception as exc:
                    results[i] = exc
        return [r if r is not None else RuntimeError("not run") for r in results]

    def _run_merged(self, items: list[dict[str, np.ndarray]]) -> list[dict[str, Any]] | None:
        """Run stacked requests once; None when the outputs cannot be split back by rows."""
        sizes = [next(iter(item.values())).shape[0] for item in items]
        total = sum(sizes)
        stacked = {k: np.concatenate([item[k] for item in items]) for k in items[0]}
        try:
            outputs = self.model.predict(stacked)
        except Exception:
            return None  # someone's input is bad: run them one by one to tell whose
        bounds = np.cumsum([0, *sizes])
        split: list[dict[str, Any]] = [{} for _ in items]
        for name, value in outputs.items():
            if not hasattr(value, "__len__") or np.ndim(value) == 0 or len(value) != total:
                return None
            for j in range(len(items)):
                split[j][name] = value[bounds[j] : bounds[j + 1]]
        return split

    async def run(self, call: Call) -> dict[str, Any]:
        inputs = self.conform(call)
        with self.pool.admit():
            if self.batcher is not None:
                return await self.batcher.submit(inputs)
            return await self.pool.run(self.predict_one, inputs)

    # ------------------------------------------------------------ encoding

    def encode(self, call: Call, outputs: dict[str, Any]) -> Response:
        if call.wire == "torch":
            ordered = list(outputs.items())
            if call.torch_filter:
                bad = [i for i in call.torch_filter if not 0 <= i < len(ordered)]
                if bad:
                    raise bad_request(
                        f"output_filter index {bad[0]} out of range; the model has {len(ordered)} outputs"
                    )
                ordered = [ordered[i] for i in call.torch_filter]
            arrays = [(n, to_array(n, v)) for n, v in ordered]
            body = eas_proto.encode_torch_response(
                [a for _, a in arrays], dict(arrays) if call.torch_map else None
            )
            return Response(body, media_type=PROTOBUF)
        if call.output_filter:
            unknown = [n for n in call.output_filter if n not in outputs]
            if unknown:
                raise bad_request(f"unknown output(s) {unknown}; the model's outputs are {list(outputs)}")
            outputs = {n: outputs[n] for n in call.output_filter}
        if call.wire == "tf":
            return Response(
                eas_proto.encode_tf_response({n: to_array(n, v) for n, v in outputs.items()}),
                media_type=PROTOBUF,
            )
        if call.wire == "records" and call.rows is not None:
            rows = call.rows
            if all(len(v) == rows for v in outputs.values()):
                cols = {n: to_jsonable(v) for n, v in outputs.items()}
                return json_response([{n: cols[n][i] for n in cols} for i in range(rows)])
        return json_response({"outputs": {n: to_jsonable(v) for n, v in outputs.items()}})

    # ------------------------------------------------------------ HTTP

    async def handle_get(self, _: Request) -> Response:
        return json_response(self.signature())

    async def handle_post(self, request: Request) -> Response:
        body = await request.body()
        call = self.decode(body, request.headers.get("content-type", "").lower())
        outputs = await self.run(call)
        return self.encode(call, outputs)

    def app(self) -> Starlette:
        routes = []
        for path in ("/", "/api/predict/{service}"):
            routes.append(Route(path, self.handle_get, methods=["GET"]))
            routes.append(Route(path, self.handle_post, methods=["POST"]))
        return make_app(routes, on_shutdown=self.pool.shutdown)


def run_generic(
    processor: str,
    load: Callable[[ProcessorOptions], TensorModel],
    argv: Sequence[str] | None = None,
    *,
    prefer_torch: bool = False,
) -> None:
    """Entry point of a generic (tensor) processor: serving.run_processor with GenericService."""

    def build_app(model: TensorModel, options: ProcessorOptions) -> Starlette:
        config = GenericConfig(
            processor=processor,
            signature_name=str(options.model_config.get("signature_name", "serving_default")),
            prefer_torch=prefer_torch,
        )
        return GenericService(model, config, options).app()

    run_processor(processor, load, build_app, argv)


def declared_specs(config: Mapping[str, Any], key: str) -> list[TensorSpec] | None:
    """Inputs/outputs declared in model_config (`{"inputs": [{"name", "dtype", "shape"}]}`)."""
    from openeas.processors.tensors import spec_from_json

    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) and "name" in v for v in value):
        raise SystemExit(f'error: model_config.{key} must be a list of {{"name", "dtype", "shape"}} objects')
    return [spec_from_json(v) for v in value]
