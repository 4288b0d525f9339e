"""The data plane: listeners, routing, auth, limits, balancing and proxying (no web framework).

Hot path, one module per step: server (accept, parse) -> routing -> auth -> limits (proxy) ->
balancer (pick instance) -> upstream / proxy (stream both ways) -> accesslog. `app.Gateway` ties
them together; `python -m openeas.gateway` runs one from the store.
"""

from openeas.gateway.app import BindError, Gateway

__all__ = ["BindError", "Gateway"]
