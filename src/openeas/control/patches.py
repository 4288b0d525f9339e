"""A modify, shared by services and gateways: the patch `{...part to change...}` deep-merged,
then the `["key=value", ...]` assignments (the CLI's -s FILE / -D key=value; control/rest reads
them from a request body)."""

from __future__ import annotations

from typing import Any

from openeas.spec import assignments_to_patch, deep_merge


def apply_modify(current: dict[str, Any], patch: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The spec after a modify: the patch deep-merged, then the assignments."""
    merged = deep_merge(current, patch)
    if assignments:
        merged = deep_merge(merged, assignments_to_patch(assignments))
    return merged
