"""API errors with a stable JSON shape, and logging that never prints secrets."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError


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
