"""Errors with a stable JSON shape, and logging that never prints secrets.

Two kinds:
- `ControlError` and its subclasses are the service layer's domain errors (control/ops): a
  stable code, a message saying what is wrong and what to do, extra JSON fields, and no HTTP
  status. Each API surface maps the class to its own answer (control/rest/app.py: NotFound ->
  404, Conflict -> 409, InvalidRequest -> 400), so a second surface (the EAS management API)
  raises and maps the same errors.
- `ApiError` is an HTTP-level error of one surface (401, a bad JSON body, a wrong region).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError


class ControlError(Exception):
    """A domain error of the service layer: `{"code": ..., "message": ..., **extra}`."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class NotFoundError(ControlError):
    """What the operation names does not exist (a service, gateway, group, version, instance)."""


class ConflictError(ControlError):
    """The operation clashes with the current state (exists already, in use, read-only)."""


class InvalidRequestError(ControlError):
    """The operation's arguments are wrong in a way a spec field cannot name."""


class ApiError(Exception):
    """An error answered as `{"code": ..., "message": ..., **extra}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected exception. Store errors are logged by class only: SQLAlchemy puts the
    statement's parameters (service tokens among them) into its messages."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        detail = f"{type(exc).__name__}" + (f" ({type(orig).__name__})" if orig is not None else "")
        logger.error("%s: store error %s", what, detail)
    else:
        logger.error("%s: %s", what, type(exc).__name__, exc_info=exc)
