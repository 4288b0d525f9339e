"""The web console, served by the control plane (docs/console.md).

Static pages under `/console` (plain HTML, CSS and JS modules: no build step, no CDN) that call
the `/api/v2` JSON API with the admin token the user typed into the login form (kept in the
browser's sessionStorage, never in a URL), plus the one route the console adds to the API:
`POST /api/v2/services/{region}/{name}/debug` (online debug, `debug.py`).
"""

from openeas.control.console.routes import STATIC_DIR, console_pages, debug_endpoints

__all__ = ["STATIC_DIR", "console_pages", "debug_endpoints"]
