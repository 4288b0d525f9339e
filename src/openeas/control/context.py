"""What the control plane's service layer and API surfaces share: one object, passed in.

`openeas server` (control/server.py) builds it once; the service layer (control/ops) reads the
store, wakes the reconciler and asks the gateway supervisors through it; the API surfaces
(control/rest, and any other surface) get it only to build their `ControlOps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from openeas.config import ServerConfig
from openeas.control.autoscaler import Autoscaler
from openeas.control.gateways import GatewayManager
from openeas.control.leadership import Leadership
from openeas.control.reconciler import Reconciler
from openeas.control.telemetry import Telemetry
from openeas.runtime.base import Runtime
from openeas.store import Registry


@dataclass
class ControlContext:
    config: ServerConfig
    registry: Registry
    reconciler: Reconciler
    runtime: Runtime
    admin_token: str
    gateways: GatewayManager
    telemetry: Telemetry | None = None  # the gateways' request telemetry (control/telemetry.py)
    autoscaler: Autoscaler | None = None  # control/autoscaler.py: its last target shows in `desc`
    leadership: Leadership | None = None  # control/leadership.py: who leads (`openeas status`)
