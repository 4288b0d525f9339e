"""The Ray runtime (extra `openeas[ray]`): one Ray actor per instance, on any node of a cluster.

Importing this package does not import Ray; connecting a `RayRuntime` does."""

from openeas.runtime.ray.runtime import NAMESPACE, RayHandle, RayRuntime, actor_name

__all__ = ["NAMESPACE", "RayHandle", "RayRuntime", "actor_name"]
