"""The control plane: the /api/v2 REST API, the reconciler, and `openeas server`."""

from openeas.control.api import ControlContext, create_app
from openeas.control.errors import ApiError
from openeas.control.reconciler import Reconciler, ReconcilerSettings
from openeas.control.server import ServerError, ServerInfo, run_server

__all__ = [
    "ApiError",
    "ControlContext",
    "Reconciler",
    "ReconcilerSettings",
    "ServerError",
    "ServerInfo",
    "create_app",
    "run_server",
]
