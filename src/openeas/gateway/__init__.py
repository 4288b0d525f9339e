"""The data plane: listeners, routing, auth, limits, balancing and proxying (no web framework).

The request path: accept -> parse (client_connection.py) -> admit (admission.py: ACL, route,
auth, body size, limits) -> pick (pickers.py behind admission.pick_instance) -> proxy
(exchange.py, upstream.py, headers.py) -> finish (Gateway.log_exchange: metrics.py, accesslog.py).
`gateway.Gateway` ties them together; `python -m openeas.gateway` runs one from the store.
"""

from openeas.config import REDIS_URL_ENV, STORE_URL_ENV
from openeas.gateway.gateway import BindError, Gateway

# how the control plane hands the store and Redis URLs to a gateway process: the environment, not
# argv (both can hold a password, and every local user sees command lines in ps)
__all__ = ["REDIS_URL_ENV", "STORE_URL_ENV", "BindError", "Gateway"]
