"""The EAS-compatible service spec (the JSON given to `eascmd create` / `openeas create`).

Field names and defaults follow eas-reference section 5. Unknown fields are refused with an
error that names them; fields EAS has but that mean nothing on a local machine (`cloud`,
`metadata.resource`, `containers[].image`) are accepted and reported back as warnings.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from openeas.spec.errors import SpecError, from_validation_error
from openeas.spec.queue import ASYNC_TYPE, QueueSpec

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")
RESERVED_PORTS = (8080, 9090)  # reserved for the EAS engine inside a container
MAX_KEEPALIVE_MS = 600_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RpcSpec(_Strict):
    keepalive: Annotated[int, Field(ge=1, le=MAX_KEEPALIVE_MS)] = 5000
    io_threads: Annotated[int, Field(ge=1, le=256)] = 4
    worker_threads: Annotated[int, Field(ge=1, le=1024)] = 5
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 64
    rate_limit: Annotated[int, Field(ge=0)] = 0
    batching: bool = False
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    max_batch_timeout: Annotated[int, Field(ge=1, le=60_000)] = 50
    enable_sigterm: bool = False


SURGE_RE = re.compile(r"^(100|[1-9]?[0-9])%$")


def _count_or_percent(v: int | str, field: str) -> int | str:
    if isinstance(v, str) and not SURGE_RE.match(v):
        raise ValueError(f"{field} is a whole number of instances (like 2) or a percentage (like \"25%\")")
    return v


class RollingStrategySpec(_Strict):
    """How `modify` replaces instances: at most `max_surge` extra ones, at most `max_unavailable`
    of the desired count not ready. Numbers or percentages of `metadata.instance`."""

    max_surge: Annotated[int, Field(ge=0, le=1000)] | str = "2%"  # EAS: 2%, at least 1
    max_unavailable: Annotated[int, Field(ge=0, le=1000)] | str = 0  # our choice: never below desired

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _amount(cls, v: int | str) -> int | str:
        return _count_or_percent(v, "the value")

    def surge_for(self, desired: int) -> int:
        """Extra instances allowed, rounded up like EAS (2% of 10 -> 1)."""
        return _resolve(self.max_surge, desired, round_up=True)

    def unavailable_for(self, desired: int) -> int:
        """Instances allowed below `desired` while updating, rounded down (k8s rounds it down)."""
        return _resolve(self.max_unavailable, desired, round_up=False)


def _resolve(amount: int | str, desired: int, *, round_up: bool) -> int:
    if isinstance(amount, int):
        return amount
    percent = int(amount[:-1])
    scaled = desired * percent
    return -(-scaled // 100) if round_up else scaled // 100


class EasSpec(_Strict):
    """`metadata.eas`: EAS's engine settings that mean something locally."""

    # seconds an instance being removed gets to finish requests after SIGTERM, before SIGKILL
    termination_grace_period: Annotated[int, Field(ge=0, le=3600)] = 30


class MetadataSpec(_Strict):
    name: str
    instance: Annotated[int, Field(ge=0, le=1000)] = 1
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory: Annotated[int, Field(gt=0)] | None = None  # MB
    gpu: Annotated[int, Field(ge=0)] | None = None
    gpu_memory: Annotated[int, Field(ge=0)] | None = None
    resource: str | None = None
    group: str | None = None
    type: str | None = None
    enable_grpc: bool = False
    enable_webservice: bool = False
    rpc: RpcSpec = Field(default_factory=RpcSpec)
    rolling_strategy: RollingStrategySpec = Field(default_factory=RollingStrategySpec)
    eas: EasSpec = Field(default_factory=EasSpec)
    # openeas: "prefix" routes a request to the instance that served its prompt prefix last,
    # bounded by load (gateway/pickers.py PrefixAffinity, docs/traffic.md "LLM-aware routing")
    llm_routing: Literal["prefix"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must start with a lowercase letter and contain only lowercase letters, digits "
                "and underscores, at most 63 characters"
            )
        return v

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError("a group name follows the same rules as a service name")
        return v


class EnvVar(_Strict):
    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError("an environment variable name has letters, digits and underscores")
        if v == "PORT":
            raise ValueError("PORT is set by openeas to the port the instance must listen on")
        return v


class HttpGetProbe(_Strict):
    path: str = "/"
    port: int | None = None


class TcpSocketProbe(_Strict):
    port: int | None = None


class ProbeSpec(_Strict):
    http_get: HttpGetProbe | None = None
    tcp_socket: TcpSocketProbe | None = None
    initial_delay_seconds: Annotated[float, Field(ge=0)] = 0
    period_seconds: Annotated[float, Field(gt=0)] = 1
    timeout_seconds: Annotated[float, Field(gt=0)] = 1
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    success_threshold: Annotated[int, Field(ge=1)] = 1


class ContainerSpec(_Strict):
    image: str | None = None
    command: str | None = None
    script: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    env: list[EnvVar] = Field(default_factory=list)
    startup_check: ProbeSpec | None = None
    health_check: ProbeSpec | None = None  # readiness
    liveness_check: ProbeSpec | None = None
    prepare: dict[str, Any] | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v in RESERVED_PORTS:
            raise ValueError(f"ports {RESERVED_PORTS} are reserved for the EAS engine; pick another")
        return v

    @model_validator(mode="after")
    def _one_entry(self) -> ContainerSpec:
        if not (self.command or self.script):
            raise ValueError("a container needs `command` (or `script`): the command line that starts it")
        if self.command and self.script:
            raise ValueError("give either `command` or `script`, not both")
        return self

    @property
    def entry(self) -> str:
        return self.command or self.script or ""


class RateLimitPolicy(_Strict):
    enable: bool = False
    limit: Annotated[int, Field(ge=1)] = 1000


class GatewayPolicy(_Strict):
    rate_limit: RateLimitPolicy | None = None
    concurrency_limit: RateLimitPolicy | None = None
    # openeas: tokens per minute (prompt + completion, from the responses' `usage`), docs/traffic.md
    token_rate_limit: RateLimitPolicy | None = None


class NetworkingSpec(_Strict):
    gateway: str | None = None  # None or "shared" -> the shared gateway
    gateway_policy: GatewayPolicy | None = None


METRICS = ("qps", "concurrency", "cpu", "queue")


class ScaleStrategy(_Strict):
    """One metric the autoscaler follows: scale so each instance stays near `threshold`.

    qps: requests per second per instance (at the gateways); concurrency: requests in flight per
    instance; cpu: percent of one core per instance (100 = one busy core); queue (Async services):
    requests waiting or in flight in the input queue per instance."""

    metric_name: Literal["qps", "concurrency", "cpu", "queue"] = Field(alias="metricName")
    threshold: Annotated[float, Field(gt=0, le=1_000_000)]


class StabilizationWindow(_Strict):
    stabilization_window_seconds: Annotated[float, Field(ge=0, le=3600, alias="stabilizationWindowSeconds")]


class OnZero(_Strict):
    # no request for this long with `min: 0` -> the last instance is stopped (EAS: 600 s)
    scale_down_grace_period_seconds: Annotated[
        float, Field(ge=0, le=86_400, alias="scaleDownGracePeriodSeconds")
    ] = 600


def _window(seconds: float) -> StabilizationWindow:
    return StabilizationWindow.model_validate({"stabilizationWindowSeconds": seconds})


class AutoscalerBehavior(_Strict):
    scale_up: StabilizationWindow = Field(default_factory=lambda: _window(0), alias="scaleUp")
    scale_down: StabilizationWindow = Field(default_factory=lambda: _window(300), alias="scaleDown")
    on_zero: OnZero = Field(default_factory=OnZero, alias="onZero")


class AutoscalerSpec(_Strict):
    """`autoscaler`: keep between `min` and `max` instances by the strategies' metrics."""

    min: Annotated[int, Field(ge=0, le=1000)] = 1
    max: Annotated[int, Field(ge=1, le=1000)]
    scale_strategies: list[ScaleStrategy] = Field(alias="scaleStrategies", min_length=1)
    behavior: AutoscalerBehavior = Field(default_factory=AutoscalerBehavior)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalerSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        names = [s.metric_name for s in self.scale_strategies]
        if len(set(names)) != len(names):
            raise ValueError("each metricName may appear once in scaleStrategies")
        return self


class MirrorSpec(_Strict):
    """`mirror`: copy `ratio` percent of this service's requests to the `target` services; the
    copies' responses are dropped and never slow the caller's request."""

    target: list[str] = Field(min_length=1, max_length=5)
    ratio: Annotated[int, Field(ge=0, le=100)]

    @field_validator("target", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("target")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a service name")
        return v


class ServiceSpec(_Strict):
    metadata: MetadataSpec
    containers: list[ContainerSpec] = Field(default_factory=list)
    networking: NetworkingSpec = Field(default_factory=NetworkingSpec)
    token: str | None = None
    processor: str | None = None
    processor_path: str | None = None
    processor_entry: str | None = None
    processor_mainclass: str | None = None
    processor_type: str | None = None
    model_path: str | None = None
    model_entry: str | None = None
    model_config_: dict[str, Any] | str | None = Field(default=None, alias="model_config")
    labels: dict[str, str] = Field(default_factory=dict)
    autoscaler: AutoscalerSpec | None = None
    mirror: MirrorSpec | None = None
    queue: QueueSpec | None = None  # async queue hook: only with metadata.type "Async" (spec/queue.py)
    cloud: dict[str, Any] | None = None

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and not TOKEN_RE.match(v):
            raise ValueError(
                "a token is 16-256 characters of letters, digits and ._~+/=- ; "
                "leave it out to have one generated"
            )
        return v

    @model_validator(mode="after")
    def _runnable(self) -> ServiceSpec:
        if not self.containers and not self.processor:
            raise ValueError(
                "nothing to run: give `containers` with a `command`, or a built-in `processor` "
                "with `model_path`"
            )
        if self.containers and self.processor:
            raise ValueError("give either `containers` or `processor`, not both")
        if len(self.containers) > 1:
            raise ValueError("openeas runs one container per instance; sidecars are not supported")
        # async queue hook: the queue block belongs to Async services, which always get one
        if self.queue is not None and self.metadata.type != ASYNC_TYPE:
            raise ValueError('`queue` is for asynchronous services: set metadata.type to "Async"')
        if self.metadata.type == ASYNC_TYPE and self.queue is None:
            self.queue = QueueSpec()
        strategies = self.autoscaler.scale_strategies if self.autoscaler else []
        if any(s.metric_name == "queue" for s in strategies) and self.metadata.type != ASYNC_TYPE:
            raise ValueError('the autoscaler metric "queue" is for Async services (metadata.type "Async")')
        return self

    @property
    def is_async(self) -> bool:
        return self.metadata.type == ASYNC_TYPE

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def gateway_name(self) -> str:
        return self.networking.gateway or "shared"

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.processor == "llm" and "worker_threads" not in self.metadata.rpc.model_fields_set:
            # unset stays unset in the store: the gateway then follows model_config.n_parallel
            # (also after a modify that changes n_parallel); see gateway/snapshot.py
            data["metadata"]["rpc"].pop("worker_threads", None)
        return data

    def warnings(self) -> list[str]:
        out = []
        if self.cloud is not None:
            out.append("cloud: accepted and ignored; instances run on this machine's runtime")
        if self.metadata.resource:
            out.append("metadata.resource: accepted and ignored; there are no resource groups locally")
        for i, c in enumerate(self.containers):
            if c.image:
                out.append(
                    f"containers[{i}].image: the local runtime runs `command` on the host, not in the image"
                )
        if self.queue is not None:
            out.extend(self.queue.warnings())
        return out


def new_token() -> str:
    """A fresh service token: 240 random bits, URL-safe, like EAS's 40-character tokens."""
    return secrets.token_urlsafe(30)


def parse_service_spec(data: Any) -> ServiceSpec:
    """Validate JSON data into a ServiceSpec, raising SpecError that names each bad field."""
    if not isinstance(data, dict):
        raise SpecError.one("(top level)", "a service spec is a JSON object")
    try:
        spec = ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    _check_processor(spec)
    _check_traffic(spec)
    return spec


def _check_traffic(spec: ServiceSpec) -> None:
    """Rules that join fields from different parts of the spec."""
    rs = spec.metadata.rolling_strategy
    desired = max(spec.metadata.instance, 1)
    if rs.surge_for(desired) == 0 and rs.unavailable_for(desired) == 0:
        raise SpecError.one(
            "metadata.rolling_strategy",
            "max_surge and max_unavailable are both 0 for this instance count, so an update could "
            "never replace an instance; allow at least one of them",
        )
    if spec.autoscaler is not None and spec.autoscaler.min == 0 and spec.gateway_name != "shared":
        raise SpecError.one(
            "autoscaler.min",
            "0 (scale to zero) works only on the shared gateway, like EAS; set min to 1 or more "
            "for a service on a dedicated gateway",
        )
    if spec.mirror is not None and spec.name in spec.mirror.target:
        raise SpecError.one("mirror.target", "a service cannot mirror its requests to itself")


def _check_processor(spec: ServiceSpec) -> None:
    if spec.processor is None:
        return
    from openeas.processors import known_processors

    known = known_processors()
    if spec.processor not in known:
        names = ", ".join(sorted(known)) or "none yet"
        raise SpecError.one("processor", f"unknown processor {spec.processor!r}; known processors: {names}")
    if not spec.model_path:
        raise SpecError.one("model_path", f"processor {spec.processor!r} needs `model_path`")
