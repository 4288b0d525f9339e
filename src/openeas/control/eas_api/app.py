"""The EAS management API in front of openeas's control API (an ASGI wrapper).

Which requests are EAS's: those signed by an AccessKey (`Authorization: ACS3-HMAC-SHA256 ...`
or `acs <id>:<sig>`) and those that carry `x-acs-action` (the official SDK always sends it; the
openeas CLI and console never do). They get EAS's paths, shapes and errors (operations.py);
the same paths without either keep openeas's own shapes, so the CLI and console are unchanged.
An EAS request authenticates with an AccessKey signature (signing.py) or with the admin token
(`Authorization: Bearer`), which keeps working everywhere.

Also served here, for the admin token only:

    POST   /api/v2/accesskeys            {"read_only": bool, "description": str}
                                          -> 201 {"id", "secret", "read_only", "description", "created_at"}
    GET    /api/v2/accesskeys            -> {"access_keys": [{"id", "read_only", "description",
                                                              "created_at"}]}
    DELETE /api/v2/accesskeys/{id}       -> {"id", "revoked": true}

and, without authentication, `GET /api/v2/openapi.json` (openapi.py).

What is logged: the operation, the AccessKey id and the outcome code; never a secret, a
signature or an Authorization header.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openeas.control.eas_api.errors import EasError
from openeas.control.eas_api.native import NativeApi
from openeas.control.eas_api.openapi import openapi_document
from openeas.control.eas_api.operations import Call, EasOperations, GatewayHosts, Operation, operations
from openeas.control.eas_api.signing import (
    WINDOW_S,
    ReceivedRequest,
    SignatureError,
    check_fresh,
    check_signature,
    looks_signed,
    parse_authorization,
)
from openeas.control.errors import log_failure
from openeas.store.access_keys import AccessKeyNotFound, AccessKeyStore

log = logging.getLogger("openeas.control.eas")

OPENAPI_PATH = "/api/v2/openapi.json"
KEYS_PATH = "/api/v2/accesskeys"
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Caller:
    key_id: str | None  # None: the admin token
    read_only: bool


def _native_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class EasApi:
    def __init__(
        self,
        inner: ASGIApp,
        *,
        keys: AccessKeyStore,
        admin_token: str,
        region: str,
        hosts: GatewayHosts,
        window_s: float = WINDOW_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.inner = inner
        self.keys = keys
        self.region = region
        self.window_s = window_s
        self.clock = clock
        self._admin = admin_token.encode()
        self.native = NativeApi(inner, admin_token, region)
        self.impl = EasOperations(self.native, hosts)
        self.ops = operations(self.impl)
        self._openapi: bytes | None = None

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        if path == OPENAPI_PATH and scope["method"] in ("GET", "HEAD"):
            if self._openapi is None:
                self._openapi = json.dumps(openapi_document(self.ops, self.region)).encode()
            response: Response = Response(self._openapi, media_type="application/json")
        elif path == KEYS_PATH or path.startswith(KEYS_PATH + "/"):
            response = await self.manage_keys(Request(scope, receive), headers)
        elif looks_signed(headers.get("authorization", "")) or "x-acs-action" in headers:
            response = await self.eas(Request(scope, receive), headers)
        else:
            await self.inner(scope, receive, send)
            return
        await response(scope, receive, send)

    # -- EAS requests ----------------------------------------------------------------------
    async def eas(self, request: Request, headers: Headers) -> Response:
        request_id = str(uuid.uuid4()).upper()
        action = headers.get("x-acs-action", "")[:64]
        try:
            body = await self.read_body(request, headers)
            caller = await self.authenticate(request, headers, body)
            op, params = self.route(request)
            if caller.read_only and not op.read_only:
                raise EasError(
                    403,
                    "NoPermission",
                    f"AccessKey {caller.key_id} is read-only: it may call the Describe*/List* operations, "
                    f"not {op.name}; use a key made by `openeas keys create` without --read-only",
                )
            call = Call(params, self.parse_query(op, request), self.parse_body(op, body), request_id)
            result = await op.handler(call)
            if "RequestId" in type(result).model_fields:
                result = result.model_copy(update={"RequestId": request_id})
            log.info("EAS %s by %s: ok", op.name, caller.key_id or "admin token")
            return JSONResponse(
                result.model_dump(mode="json"),
                status_code=op.status,
                headers={"x-acs-request-id": request_id},
            )
        except SignatureError as exc:
            log.info("EAS %s refused: %s", action or request.url.path, exc.code)
            return EasError(exc.status, exc.code, exc.message).response(request_id)
        except EasError as exc:
            log.info("EAS %s: %s %s", action or request.url.path, exc.status, exc.code)
            return exc.response(request_id)
        except Exception as exc:
            log_failure(log, f"EAS {action or request.url.path} failed", exc)
            return EasError(
                500, "InternalError", f"the server failed on this request ({type(exc).__name__}); see its log"
            ).response(request_id)

    @staticmethod
    async def read_body(request: Request, headers: Headers) -> bytes:
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise EasError(413, "RequestEntityTooLarge", f"the body is over {MAX_BODY_BYTES} bytes")
        return await request.body()

    async def authenticate(self, request: Request, headers: Headers, body: bytes) -> Caller:
        header = headers.get("authorization", "")
        if looks_signed(header):
            auth = parse_authorization(header)
            try:
                key, secret = await asyncio.to_thread(self.keys.lookup, auth.key_id)
            except AccessKeyNotFound:
                raise SignatureError(
                    404,
                    "InvalidAccessKeyId.NotFound",
                    f"AccessKey {auth.key_id[:64]} does not exist (or was revoked); `openeas keys list` "
                    "shows the keys",
                ) from None
            received = ReceivedRequest(
                method=request.method,
                raw_path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
                query=parse_qsl(request.url.query, keep_blank_values=True),
                headers=[
                    (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.scope["headers"]
                ],
                body=body,
            )
            nonce = check_fresh(auth, received, self.clock(), self.window_s)
            check_signature(auth, received, secret)
            # the nonce is recorded only for a good signature: a forger cannot burn nonces
            if not await asyncio.to_thread(self.keys.use_nonce, key.id, nonce, 2 * self.window_s):
                raise SignatureError(
                    400,
                    "SignatureNonceUsed",
                    "this x-acs-signature-nonce was used already: a request is accepted once; send a new "
                    "nonce with each request (the SDK does)",
                )
            return Caller(key.id, key.read_only)
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._admin):
            return Caller(None, False)
        raise EasError(
            401,
            "InvalidAuthorization",
            "sign the request with an AccessKey (the alibabacloud SDKs do; `openeas keys create` makes "
            "one) or send the admin token as `Authorization: Bearer <token>`",
        )

    def route(self, request: Request) -> tuple[Operation, dict[str, str]]:
        path, method = request.url.path, request.method
        allowed = []
        for op in self.ops:
            found = op.regex.match(path)
            if found is None:
                continue
            if op.method == method:
                return op, found.groupdict()
            allowed.append(op.method)
        if allowed:
            raise EasError(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed on {path}; allowed: {', '.join(sorted(allowed))}",
            )
        raise EasError(
            404,
            "InvalidAction.NotFound",
            f"no EAS operation at {method} {path}; {OPENAPI_PATH} lists the operations openeas serves",
        )

    @staticmethod
    def parse_query(op: Operation, request: Request) -> Any:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if op.query is None:
            if pairs:
                names = ", ".join(sorted({k for k, _ in pairs}))
                raise EasError(400, "InvalidParameter", f"{op.name} takes no query parameters (got {names})")
            return None
        return _validate(op.query, dict(pairs), "query parameter")

    @staticmethod
    def parse_body(op: Operation, raw: bytes) -> Any:
        if not op.spec_body and op.body is None:
            return None
        if not raw.strip():
            if op.spec_body:
                raise EasError(
                    400, "InvalidParameter", f"{op.name} needs the service's JSON spec as the body"
                )
            data: Any = {}
        else:
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise EasError(400, "InvalidParameter", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise EasError(400, "InvalidParameter", "the body must be a JSON object")
        if op.spec_body:
            return data
        assert op.body is not None
        return _validate(op.body, data, "body field")

    # -- AccessKey management (admin token only) -------------------------------------------
    async def manage_keys(self, request: Request, headers: Headers) -> Response:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._admin)):
            return _native_error(
                401,
                "Unauthorized",
                "AccessKeys are managed with the admin token only (`openeas keys ...` reads it from the "
                "data dir): send `Authorization: Bearer <token>`",
            )
        rest = request.url.path[len(KEYS_PATH) :].strip("/")
        if not rest and request.method == "GET":
            keys = await asyncio.to_thread(self.keys.list)
            return JSONResponse({"access_keys": [_key_view(k) for k in keys]})
        if not rest and request.method == "POST":
            raw = await request.body()
            try:
                data = json.loads(raw) if raw.strip() else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
            read_only, description = (data or {}).get("read_only", False), (data or {}).get("description", "")
            if (
                not isinstance(data, dict)
                or not isinstance(read_only, bool)
                or not isinstance(description, str)
            ):
                return _native_error(
                    400,
                    "InvalidRequest",
                    'send {"read_only": true|false, "description": "..."} (both optional)',
                )
            new = await asyncio.to_thread(self.keys.create, read_only, description[:200])
            log.info("AccessKey %s created (%s)", new.key.id, "read-only" if read_only else "full")
            return JSONResponse({**_key_view(new.key), "secret": new.secret}, status_code=201)
        if rest and "/" not in rest and request.method == "DELETE":
            try:
                await asyncio.to_thread(self.keys.revoke, rest)
            except AccessKeyNotFound:
                return _native_error(
                    404,
                    "AccessKeyNotFound",
                    f"there is no AccessKey {rest[:64]}; `openeas keys list` shows them",
                )
            log.info("AccessKey %s revoked", rest)
            return JSONResponse({"id": rest, "revoked": True})
        return _native_error(
            405 if not rest or "/" not in rest else 404,
            "MethodNotAllowed" if not rest or "/" not in rest else "NotFound",
            f"{request.method} {request.url.path}: use GET or POST {KEYS_PATH}, DELETE {KEYS_PATH}/<id>",
        )


def _validate(model: type[BaseModel], data: dict[str, Any], what: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "(all)"
            problems.append(f"{what} {where}: {err.get('msg')}")
        raise EasError(400, "InvalidParameter", "; ".join(problems)) from None


def _key_view(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "read_only": key.read_only,
        "description": key.description,
        "created_at": key.created_at,
    }
