"""Runtimes start, probe and stop instances; `local` runs them as subprocesses on this machine."""

from openeas.runtime.base import DEFAULT_GRACE_S, InstanceHandle, ProbeResult, Runtime
from openeas.runtime.local import LocalHandle, LocalRuntime, instance_command

__all__ = [
    "DEFAULT_GRACE_S",
    "InstanceHandle",
    "LocalHandle",
    "LocalRuntime",
    "ProbeResult",
    "Runtime",
    "instance_command",
]
