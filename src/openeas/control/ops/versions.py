"""Service versions and rollback (EAS: /version(s) of a service): the pure part.

A version is the spec a create or a modify set. Changes of `metadata.instance` alone (scale,
the autoscaler) and start/stop make no version: they are about how many instances run, not
what they run. A rollback applies version N's spec as a new modify, through the same rolling
update, keeping the service's current token and instance count (a rollback that silently
scaled a service, or changed the secret callers hold, would surprise). It records a new version
("rollback to N"), so history only grows.

The operations (list, rollback) are in control/ops/services.py; the routes
(`GET .../versions`, `PUT .../version`) in control/rest/services.py.
"""

from __future__ import annotations

import copy
from typing import Any

from openeas.store import VersionRecord

MAX_FIELDS_IN_NOTE = 4


def versioned_part(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as a version sees it: without the instance count."""
    data = copy.deepcopy(spec)
    meta = data.get("metadata")
    if isinstance(meta, dict):
        meta.pop("instance", None)
    return data


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths (`containers[0].env`) where `new` differs from `old`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out += changed_fields(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += changed_fields(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [path or "(spec)"]


def version_note(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What a modify from `old` to `new` changed, or None when it makes no version."""
    fields = changed_fields(versioned_part(old), versioned_part(new))
    if not fields:
        return None
    shown = ", ".join(fields[:MAX_FIELDS_IN_NOTE])
    more = len(fields) - MAX_FIELDS_IN_NOTE
    return f"changed {shown}" + (f" and {more} more" if more > 0 else "")


def current_version(versions: list[VersionRecord], spec: dict[str, Any]) -> int:
    """The newest version whose spec the service runs now (0: none does)."""
    now = versioned_part(spec)
    for v in reversed(versions):
        if versioned_part(v.spec) == now:
            return v.version
    return 0


def rollback_spec(target: VersionRecord, current: dict[str, Any], token: str) -> dict[str, Any]:
    """Version `target`'s spec with the service's current instance count and token."""
    spec = copy.deepcopy(target.spec)
    meta = spec.setdefault("metadata", {})
    meta["instance"] = current.get("metadata", {}).get("instance", 1)  # keep the current count
    spec["token"] = token  # keep the current token
    return spec
