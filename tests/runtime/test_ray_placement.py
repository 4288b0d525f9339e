"""Placement rules of the Ray runtime without a cluster: what a spec asks of a node, and the
Waiting message when no node's totals cover it (the cluster test checks the same against Ray)."""

from __future__ import annotations

from typing import Any

from openeas.runtime.ray.placement import CUSTOM_SHARE, DEFAULT_CPU, MB, needs_of, unplaceable_reason
from openeas.spec import parse_service_spec

CPU_NODE = {"CPU": 4.0, "memory": 8000.0 * MB}
GPU_NODE = {"CPU": 2.0, "GPU": 1.0, "memory": 2000.0 * MB, "pool-x": 1.0}


def needs(**metadata: Any) -> Any:
    spec = parse_service_spec(
        {
            "metadata": {"name": "svc", "instance": 1, **metadata},
            "containers": [{"command": "true", "port": 8000}],
        }
    )
    return needs_of(spec)


def test_metadata_maps_to_ray_options() -> None:
    assert needs(cpu=2, memory=1024, gpu=1, resource="pool-x").ray_options() == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 1024 * MB,
        "resources": {"pool-x": CUSTOM_SHARE},
    }
    # no cpu asked: a little, so a head node with --num-cpus 0 never gets instances
    assert needs().ray_options() == {"num_cpus": DEFAULT_CPU, "num_gpus": 0.0}


def test_messages_name_what_is_missing() -> None:
    nodes = [CPU_NODE, GPU_NODE]
    assert unplaceable_reason(needs(cpu=1), nodes) is None
    assert unplaceable_reason(needs(gpu=1, resource="pool-x"), nodes) is None
    assert unplaceable_reason(needs(gpu=2), nodes) == "needs gpu: 2; no node has it"
    assert unplaceable_reason(needs(cpu=0.5, gpu=2, resource="pool-z"), nodes) == (
        "needs gpu: 2, resource: pool-z; no node has them"
    )
    assert unplaceable_reason(needs(memory=9000), nodes) == "needs memory: 9000 MB; no node has it"
    # every part exists, never on one node
    assert unplaceable_reason(needs(cpu=4, gpu=1), nodes) == (
        "needs cpu: 4, gpu: 1 on one node; no node has all of them"
    )
    assert unplaceable_reason(needs(), []) == "needs a Ray node to run on; no node has joined the cluster"
