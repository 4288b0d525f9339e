"""Spec edits for `modify`: deep-merge a JSON patch, or apply `-D key=value` assignments."""

from __future__ import annotations

import copy
import json
from typing import Any

from openeas.spec.errors import SpecError


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Return base updated by patch: objects merge key by key, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Parse `metadata.instance=2` into (["metadata", "instance"], 2).

    The value is read as JSON when it parses (numbers, true/false, objects), else as a string.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError.one(text, "expected key=value, for example metadata.instance=2")
    path = [p for p in key.strip().split(".")]
    if any(not p for p in path):
        raise SpecError.one(key, "a key is dotted names, for example metadata.rpc.keepalive")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def assignments_to_patch(assignments: list[str]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for text in assignments:
        path, value = parse_assignment(text)
        node = patch
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError.one(".".join(path), "conflicts with another assignment")
        node[path[-1]] = value
    return patch
