"""Which runtime a server uses is configuration: `--runtime local` (the embedded default) or
`--runtime ray --ray-address HOST:PORT`. This builds the chosen one, with errors that say what to
do, so the control plane never imports a particular runtime itself."""

from __future__ import annotations

from pathlib import Path

from openeas.runtime.base import Runtime

RUNTIMES = ("local", "ray")


def check_address(address: str) -> str:
    """`address` as HOST:PORT, or a ValueError saying what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--ray-address must be HOST:PORT of the Ray head (its GCS, e.g. 10.0.0.1:6379), got {address!r}"
        )
    return address


def make_runtime(
    kind: str,
    data_dir: Path,
    ray_address: str | None = None,
    node_address: str | None = None,
) -> Runtime:
    """The runtime `kind` names. For "ray": `ray_address` is the head's HOST:PORT, `node_address`
    this machine's address in the cluster when Ray would guess another one."""
    if kind == "local":
        if ray_address:
            raise ValueError("--ray-address is for --runtime ray; the local runtime needs none")
        from openeas.runtime.local import LocalRuntime

        return LocalRuntime(data_dir)
    if kind == "ray":
        if not ray_address:
            raise ValueError(
                "--runtime ray needs --ray-address HOST:PORT (the Ray head's GCS, e.g. 10.0.0.1:6379)"
            )
        check_address(ray_address)
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--runtime ray needs Ray on this machine: pip install 'openeas[ray]'") from None
        from openeas.runtime.ray import RayRuntime

        return RayRuntime(ray_address, node_address=node_address)
    raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {kind!r}")
