from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openeas.spec import SpecError, assignments_to_patch, deep_merge, new_token, parse_service_spec


def _spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"metadata": {"name": "svc"}, "containers": [{"command": "run --port $PORT"}]}
    return deep_merge(base, over)


def _fields(exc: SpecError) -> list[str]:
    return [p.field for p in exc.problems]


def test_defaults_follow_eas() -> None:
    spec = parse_service_spec(_spec())
    rpc = spec.metadata.rpc
    assert (rpc.keepalive, rpc.max_queue_size, rpc.worker_threads) == (5000, 64, 5)
    assert spec.metadata.instance == 1
    assert spec.gateway_name == "shared"


def test_unknown_fields_are_named() -> None:
    with pytest.raises(SpecError) as err:
        parse_service_spec(_spec(metadata={"instanc": 2}, bogus=1))
    assert set(_fields(err.value)) == {"metadata.instanc", "bogus"}
    assert all("unknown field" in p.problem for p in err.value.problems)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"metadata": {"name": "Has-Caps"}}, "metadata.name"),
        ({"metadata": {"instance": -1}}, "metadata.instance"),
        ({"metadata": {"rpc": {"keepalive": 0}}}, "metadata.rpc.keepalive"),
        ({"metadata": {"rpc": {"max_queue_size": "lots"}}}, "metadata.rpc.max_queue_size"),
        ({"containers": [{"command": "x", "port": 9090}]}, "containers[0].port"),
        (
            {"containers": [{"command": "x", "env": [{"name": "PORT", "value": "1"}]}]},
            "containers[0].env[0].name",
        ),
        ({"token": "short"}, "token"),
    ],
)
def test_bad_values_name_their_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_service_spec(_spec(**patch))
    assert field in _fields(err.value), err.value


def test_nothing_to_run_and_unknown_processor() -> None:
    with pytest.raises(SpecError, match="nothing to run"):
        parse_service_spec({"metadata": {"name": "svc"}})
    with pytest.raises(SpecError) as err:
        parse_service_spec({"metadata": {"name": "svc"}, "processor": "nope", "model_path": "/m"})
    assert _fields(err.value) == ["processor"] and "unknown processor" in str(err.value)


def test_missing_name_and_non_object() -> None:
    with pytest.raises(SpecError) as err:
        parse_service_spec({"containers": [{"command": "x"}]})
    assert "metadata" in _fields(err.value)
    with pytest.raises(SpecError, match="JSON object"):
        parse_service_spec([1, 2])


def test_local_meaningless_fields_are_warnings() -> None:
    spec = parse_service_spec(_spec(cloud={"computing": {"instance_type": "ecs.c6.large"}}))
    assert any(w.startswith("cloud") for w in spec.warnings())


def test_token_generation_is_long_and_unique() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 40 for t in tokens)
    parse_service_spec(_spec(token=new_token()))  # a generated token is a valid spec token


def test_assignments() -> None:
    patch = assignments_to_patch(["metadata.instance=3", "metadata.rpc.keepalive=10000", "token=abc"])
    assert patch == {"metadata": {"instance": 3, "rpc": {"keepalive": 10000}}, "token": "abc"}
    with pytest.raises(SpecError):
        assignments_to_patch(["novalue"])
    with pytest.raises(SpecError):
        assignments_to_patch(["a..b=1"])


def test_deep_merge_keeps_base() -> None:
    base = {"metadata": {"name": "a", "rpc": {"keepalive": 1}}}
    out = deep_merge(base, {"metadata": {"rpc": {"keepalive": 2}}})
    assert out["metadata"] == {"name": "a", "rpc": {"keepalive": 2}}
    assert base["metadata"]["rpc"]["keepalive"] == 1


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=5), max_size=5))
def test_arbitrary_top_level_never_crashes(junk: dict[str, Any]) -> None:
    try:
        parse_service_spec(junk)
    except SpecError as exc:
        assert exc.problems


def test_traffic_fields_defaults_and_resolution() -> None:
    spec = parse_service_spec(_spec(metadata={"instance": 10}))
    rs = spec.metadata.rolling_strategy
    assert (rs.surge_for(10), rs.unavailable_for(10)) == (1, 0)  # EAS: 2%, at least 1
    assert spec.metadata.eas.termination_grace_period == 30
    custom = parse_service_spec(
        _spec(metadata={"rolling_strategy": {"max_surge": "50%", "max_unavailable": "25%"}})
    )
    assert (
        custom.metadata.rolling_strategy.surge_for(3),
        custom.metadata.rolling_strategy.unavailable_for(3),
    ) == (2, 0)
    scaler = parse_service_spec(
        _spec(autoscaler={"min": 0, "max": 4, "scaleStrategies": [{"metricName": "qps", "threshold": 10}]})
    ).autoscaler
    assert scaler is not None
    assert (
        scaler.behavior.scale_up.stabilization_window_seconds,
        scaler.behavior.scale_down.stabilization_window_seconds,
    ) == (0, 300)
    assert scaler.behavior.on_zero.scale_down_grace_period_seconds == 600
    mirror = parse_service_spec(_spec(mirror={"target": "other", "ratio": 25})).mirror
    assert mirror is not None and mirror.target == ["other"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {"metadata": {"rolling_strategy": {"max_surge": 0, "max_unavailable": 0}}},
            "metadata.rolling_strategy",
        ),
        ({"metadata": {"rolling_strategy": {"max_surge": "x%"}}}, "metadata.rolling_strategy.max_surge"),
        ({"metadata": {"eas": {"termination_grace_period": -1}}}, "metadata.eas.termination_grace_period"),
        (
            {"autoscaler": {"min": 3, "max": 2, "scaleStrategies": [{"metricName": "qps", "threshold": 1}]}},
            "autoscaler",
        ),
        (
            {"autoscaler": {"max": 2, "scaleStrategies": [{"metricName": "gpu", "threshold": 1}]}},
            "autoscaler.scaleStrategies.0.metricName",
        ),
        ({"autoscaler": {"max": 2, "scaleStrategies": []}}, "autoscaler.scaleStrategies"),
        (
            {
                "autoscaler": {
                    "min": 0,
                    "max": 2,
                    "scaleStrategies": [{"metricName": "qps", "threshold": 1}],
                },
                "networking": {"gateway": "gw1"},
            },
            "autoscaler.min",
        ),
        ({"mirror": {"target": "svc", "ratio": 10}}, "mirror.target"),
        ({"mirror": {"target": "other", "ratio": 101}}, "mirror.ratio"),
    ],
)
def test_traffic_fields_errors_name_their_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_service_spec(_spec(**patch))
    assert field in [f.replace("[", ".").replace("]", "") for f in _fields(err.value)], str(err.value)


def test_llm_instance_concurrency_follows_n_parallel_unless_worker_threads_is_set() -> None:
    """The gateway's requests in flight per llm instance: model_config.n_parallel (4 unset) when
    the spec names no rpc.worker_threads, kept unset in the store so a modify of n_parallel moves
    it; an explicit worker_threads (even EAS's default 5) wins; other services keep 5."""
    from openeas.control.patches import apply_modify
    from openeas.gateway.snapshot import service_route

    def route(data: dict[str, Any]) -> int:
        stored = parse_service_spec(data).to_json()
        return service_route("svc", "t" * 20, stored, (), "Running").worker_threads

    llm = {"metadata": {"name": "svc"}, "processor": "llm", "model_path": "/m.gguf"}
    assert route({**llm, "model_config": {"n_parallel": 8}}) == 8
    assert route(llm) == 4
    assert route({**llm, "model_config": '{"n_parallel": 16}'}) == 16
    explicit = {"metadata": {"rpc": {"worker_threads": 5}}, "model_config": {"n_parallel": 8}}
    assert route(deep_merge(llm, explicit)) == 5
    assert route(_spec()) == 5
    stored = parse_service_spec({**llm, "model_config": {"n_parallel": 8}}).to_json()
    assert "worker_threads" not in stored["metadata"]["rpc"]
    assert route(apply_modify(stored, {"model_config": {"n_parallel": 12}}, [])) == 12
