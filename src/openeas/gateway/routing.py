"""Route: split a request target into the service name and the path forwarded upstream (no I/O).

`/api/predict/<service>[/<sub-path>][?query]` -> (`<service>`, `/<sub-path>[?query]`); an empty
sub-path becomes `/`. Anything else is not routable (the caller answers 404).
"""

from __future__ import annotations

PREFIX = b"/api/predict/"
_PREFIX_LEN = len(PREFIX)


def split_target(url: bytes) -> tuple[bytes, bytes] | None:
    """Return (service, forwarded target) or None when `url` is not under /api/predict/."""
    if not url.startswith(PREFIX):
        if url[:1] == b"/" or b"://" not in url:
            return None
        # absolute-form (`GET http://host/api/predict/...`): drop scheme and authority
        slash = url.find(b"/", url.find(b"://") + 3)
        if slash < 0:
            return None
        return split_target(url[slash:])
    rest = url[_PREFIX_LEN:]
    q = rest.find(b"?")
    path = rest if q < 0 else rest[:q]
    s = path.find(b"/")
    if s < 0:
        service, sub = path, b"/"
    else:
        service, sub = path[:s], path[s:]
    if q >= 0:
        sub += rest[q:]
    return service, sub


def path_of(url: bytes) -> bytes:
    """The path part of a request target (no query)."""
    q = url.find(b"?")
    return url if q < 0 else url[:q]
