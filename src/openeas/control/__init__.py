"""The control plane: the REST API (rest/) over the service layer (ops/), the reconciler, the
autoscaler and telemetry loops, and `openeas server`."""

from openeas.control.context import ControlContext
from openeas.control.errors import ApiError
from openeas.control.reconciler import Reconciler, ReconcilerSettings
from openeas.control.rest.app import create_app
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
