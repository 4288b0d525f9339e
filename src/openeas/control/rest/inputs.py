"""Reading a REST request: the JSON body and the `{region}/{name}` of a route's path."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from openeas.control.errors import ApiError
from openeas.spec import SpecError

PREFIX = "/api/v2"


class RequestReader:
    def __init__(self, region: str) -> None:
        self.region = region

    def name(self, request: Request, kind: str = "services") -> str:
        """The `{name}` of the path, after checking its `{region}` is this server's."""
        region = str(request.path_params["region"])
        if region != self.region:
            raise ApiError(
                404,
                "RegionNotFound",
                f"this server serves region '{self.region}', not '{region}'; "
                f"use {PREFIX}/{kind}/{self.region}/<name>",
            )
        return str(request.path_params["name"])

    @staticmethod
    async def json(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise ApiError(400, "InvalidJSON", "the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = (
                f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            )
            raise ApiError(400, "InvalidJSON", f"the request body is not valid JSON{where}: {exc}") from None


def read_modify_body(
    body: Any, what: str, example: str, usage: str | None = None, patch_noun: str = "spec"
) -> tuple[dict[str, Any], list[str]]:
    """Validate a modify body `{"spec": {...}}` and/or `{"assignments": ["k=v", ...]}`; `what`
    names the spec ("spec", "gateway spec") and `example` is an assignment, both shown in the
    error (or `usage` replaces that error's text). Returns (patch, assignments)."""
    if not isinstance(body, dict) or not body or set(body) - {"spec", "assignments"}:
        raise ApiError(
            400,
            "InvalidRequest",
            usage
            or f'send {{"spec": {{...part of the {what} to change...}}}} and/or '
            f'{{"assignments": ["{example}", ...]}}',
        )
    patch = body.get("spec", {})
    if not isinstance(patch, dict):
        raise SpecError.one("(top level)", f"the {patch_noun} patch must be a JSON object")
    assignments = body.get("assignments", [])
    if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
        raise ApiError(400, "InvalidRequest", '"assignments" is a list of "key=value" strings')
    return patch, assignments
