"""The OpenAPI 3.1 document of the management API, generated from the operations table.

Served at `GET /api/v2/openapi.json`. Every path, parameter, request body and response schema
comes from the code: the `Operation` entries (operations.py) and their pydantic models
(models.py, via `model_json_schema`); service specs are the `ServiceSpec` model of
`openeas.spec`. Nothing is written by hand, so the document changes when the code does.

Each operation documents `x-acs-action` (the header that selects EAS's shapes) and both ways
in: an AccessKey signature (ACS3-HMAC-SHA256, as the SDK signs) or the admin token as Bearer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import openeas
from openeas.control.eas_api.models import ErrorBody
from openeas.control.eas_api.operations import Operation
from openeas.spec.service import ServiceSpec

REF = "#/components/schemas/"
ERROR_STATUSES = {
    "400": "Bad request: invalid parameter, spec or signature",
    "401": "No credential",
    "403": "A read-only AccessKey called a write operation",
    "404": "No such service, gateway, group, region or AccessKey",
    "405": "Method not allowed on this path",
    "409": "Conflict (exists already, in use)",
}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A $ref to `model`, its schema (and those it uses) added to `schemas`."""
    doc = model.model_json_schema(ref_template=REF + "{model}", by_alias=True)
    for name, sub in doc.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault(model.__name__, doc)
    return {"$ref": REF + model.__name__}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    doc = model.model_json_schema(by_alias=True)
    required = set(doc.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in doc.get("properties", {}).items()
    ]


def openapi_document(ops: list[Operation], region: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    error_ref = _schema(ErrorBody, schemas)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for p in op.path_params
        ]
        params.append(
            {
                "name": "x-acs-action",
                "in": "header",
                "required": True,
                "description": "EAS's operation name (the SDK sends it): selects EAS's shapes on paths "
                "openeas also serves in its own shape",
                "schema": {"type": "string", "enum": [op.name]},
            }
        )
        if op.query is not None:
            params += _query_parameters(op.query)
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": ["read" if op.read_only else "write"],
            "parameters": params,
            "responses": {
                str(op.status): {
                    "description": "OK",
                    "content": {"application/json": {"schema": _schema(op.response, schemas)}},
                },
                **{
                    code: {"description": text, "content": {"application/json": {"schema": error_ref}}}
                    for code, text in ERROR_STATUSES.items()
                },
            },
        }
        if op.spec_body:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(ServiceSpec, schemas)}},
            }
        elif op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(op.body, schemas)}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "openeas management API (EAS 2021-07-01)",
            "version": openeas.__version__,
            "description": "EAS's management operations as the official alibabacloud-eas20210701 SDK "
            f"calls them. ClusterId is the server's region ('{region}'). See docs/management-api.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"AccessKeySignature": []}, {"AdminToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "AccessKeySignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=...,Signature=... "
                    "(or ROA `acs <id>:<signature>`), as the alibabacloud SDKs sign",
                },
                "AdminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
