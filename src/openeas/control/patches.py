"""The body of a modify request, shared by services and gateways:
`{"spec": {...part to change...}}` and/or `{"assignments": ["key=value", ...]}`."""

from __future__ import annotations

from typing import Any

from openeas.control.errors import ApiError
from openeas.spec import SpecError, assignments_to_patch, deep_merge


def read_modify_body(body: Any, what: str, example: str) -> tuple[dict[str, Any], list[str]]:
    """Validate a modify body; `what` names the spec ("spec", "gateway spec"), `example` is an
    assignment shown in the error. Returns (patch, assignments)."""
    if not isinstance(body, dict) or not body or set(body) - {"spec", "assignments"}:
        raise ApiError(
            400,
            "InvalidRequest",
            f'send {{"spec": {{...part of the {what} to change...}}}} and/or '
            f'{{"assignments": ["{example}", ...]}}',
        )
    patch = body.get("spec", {})
    if not isinstance(patch, dict):
        raise SpecError.one("(top level)", "the spec patch must be a JSON object")
    assignments = body.get("assignments", [])
    if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
        raise ApiError(400, "InvalidRequest", '"assignments" is a list of "key=value" strings')
    return patch, assignments


def apply_modify(current: dict[str, Any], patch: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """The spec after a modify: the patch deep-merged, then the assignments."""
    merged = deep_merge(current, patch)
    if assignments:
        merged = deep_merge(merged, assignments_to_patch(assignments))
    return merged
