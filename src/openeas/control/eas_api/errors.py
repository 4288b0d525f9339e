"""EAS's error shape: HTTP status + `{"Code", "Message", "RequestId"}`.

The SDK raises `ClientException` (4xx) / `ServerException` (5xx) from exactly these three fields
(`alibabacloud_tea_openapi` reads `Code`, `Message`, `RequestId`), so a script that catches EAS's
errors by code catches openeas's.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from openeas.control.eas_api.models import ErrorBody


class EasError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_native(cls, status: int, payload: Any) -> EasError:
        """An error of openeas's own API (`{"code", "message", "problems"?}`), in EAS's shape."""
        if not isinstance(payload, dict):
            return cls(status, "InternalError", f"the control API answered {status}")
        message = str(payload.get("message") or "")
        problems = payload.get("problems")
        if isinstance(problems, list) and problems:
            details = "; ".join(
                f"{p.get('field')}: {p.get('problem')}" for p in problems if isinstance(p, dict)
            )
            if details not in message:  # openeas's InvalidSpec message names them already
                message = f"{message} ({details})" if message else details
        return cls(status, str(payload.get("code") or "InternalError"), message)

    def response(self, request_id: str) -> JSONResponse:
        body = ErrorBody(Code=self.code, Message=self.message, RequestId=request_id)
        return JSONResponse(
            body.model_dump(), status_code=self.status, headers={"x-acs-request-id": request_id}
        )
