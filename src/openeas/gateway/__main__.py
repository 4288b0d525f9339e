"""`python -m openeas.gateway --name NAME` (store URL in $OPENEAS_STORE_URL or --store-url): run one gateway.

Both URLs that can hold a password (the store's, and Redis' for shared limits) are read from the
environment ($OPENEAS_STORE_URL, $OPENEAS_REDIS_URL) when their flag is not given: the control
plane passes them so, keeping them off the command line that every local user can read.

Reads the gateway record NAME, binds its listeners (exit 2 with a message when one cannot be
bound), serves the routing snapshot and follows the change feed, and prints

    openeas-gateway NAME ready internet=host:port intranet=host:port metrics=host:port

on stdout once listening (`metrics=h:p,h:p,...`: one metrics listener per worker).
SIGTERM (or SIGINT): stop accepting, let requests in flight finish
(up to --grace seconds), exit 0. `--workers N` runs N processes on the same ports
(SO_REUSEPORT) under one parent that forwards signals and restarts a worker that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import uvloop

from openeas.gateway import REDIS_URL_ENV, STORE_URL_ENV
from openeas.gateway.accesslog import AccessLog
from openeas.gateway.gateway import BindError, Gateway, TlsError, bind_socket, hostport, ready_line
from openeas.gateway.replica import ReplicaRegistration
from openeas.gateway.shared_limits import SharedLimiter
from openeas.gateway.snapshot import (
    GatewaySettings,
    Listener,
    RoutingSnapshot,
    build_snapshot,
    gateway_settings,
    split_hostport,
)
from openeas.gateway.store_health import StoreHealth
from openeas.gateway.tls import server_context
from openeas.gateway.watcher import SnapshotWatcher
from openeas.spec import SpecError
from openeas.store import NotFound, Registry

log = logging.getLogger("openeas.gateway")

EXIT_USAGE = 2
STORE_WAIT_S = 5.0  # a locked or unreachable PostgreSQL store: a reported failure after this long


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m openeas.gateway", description=__doc__.split("\n")[0])
    p.add_argument(
        "--store-url",
        default=None,
        help=f"registry URL (sqlite:///... or postgresql+psycopg://...); default: ${STORE_URL_ENV}, which "
        "keeps a database password off the command line (visible to every local user in ps)",
    )
    p.add_argument("--name", required=True, help="the gateway record to serve (the shared one is 'shared')")
    p.add_argument(
        "--access-log", default=None, help="write one JSON line per request to this file ('-': stderr)"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports (SO_REUSEPORT)")
    p.add_argument(
        "--redis-url",
        default=None,
        help="count service and group QPS limits in Redis, shared by every gateway process and "
        f"replica (redis://HOST:PORT/DB; needs openeas[redis]); default: ${REDIS_URL_ENV} (keeps a "
        "Redis password off the command line); without either each process counts its own",
    )
    p.add_argument("--grace", type=float, default=10.0, help="seconds requests in flight get on SIGTERM")
    p.add_argument(
        "--replica",
        default=None,
        metavar="NAME",
        help="register in the store as replica NAME of the gateway and heartbeat (openeas gateway run)",
    )
    for kind, flag in (("internet", "internet"), ("intranet", "vpc")):
        p.add_argument(
            f"--{flag}-bind",
            default=None,
            metavar="HOST:PORT",
            help=f"bind the {flag} listener here instead of the record's listen.{kind} (port 0: any free)",
        )
        p.add_argument(
            f"--advertise-{flag}",
            default=None,
            metavar="URL",
            help=f"the {flag} address this replica registers (behind NAT or a load balancer); "
            "default: the bound one",
        )
    p.add_argument(
        "--metrics-bind",
        default=None,
        metavar="HOST:PORT",
        help="bind the metrics listener here (the control plane's telemetry must reach it)",
    )
    p.add_argument("--log-level", default="INFO", help="log level of the gateway's own messages (stderr)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.store_url is None:
        args.store_url = os.environ.get(STORE_URL_ENV)
        if not args.store_url:
            p.error(f"give the registry URL in ${STORE_URL_ENV} (or --store-url)")
    if args.redis_url is None:
        args.redis_url = os.environ.get(REDIS_URL_ENV) or None
    for flag in ("internet_bind", "vpc_bind", "metrics_bind"):
        value = getattr(args, flag)
        if value is not None and not _hostport_ok(value):
            p.error(f"--{flag.replace('_', '-')} must be HOST:PORT (e.g. 10.0.0.5:9000), not {value!r}")
    return args


def _hostport_ok(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) < 65536)


def with_binds(settings: GatewaySettings, args: argparse.Namespace) -> GatewaySettings:
    """`settings` with the listeners given by --internet-bind / --vpc-bind / --metrics-bind
    (a replica binds its own machine's addresses, not the record's)."""
    listeners = {lst.kind: lst for lst in settings.listeners}
    for kind, value in (("internet", args.internet_bind), ("intranet", args.vpc_bind)):
        if value is not None:
            listeners[kind] = Listener(kind, *split_hostport(value))
    metrics = settings.metrics
    if args.metrics_bind is not None:
        metrics = Listener("metrics", *split_hostport(args.metrics_bind))
    ordered = tuple(listeners[k] for k in ("internet", "intranet") if k in listeners)
    return replace(settings, listeners=ordered, metrics=metrics)


def _fail(message: str) -> int:
    print(f"openeas-gateway: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one and return it.

    Each proxied request holds two descriptors (client and instance), and the usual soft limit
    of 1024 would cap a gateway at ~500 connections in flight; the hard limit is what the
    administrator allows (raising that needs privileges, like nginx's worker_rlimit_nofile)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)  # the kernel's nr_open default
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s openeas-gateway %(levelname)s %(message)s",
    )
    open_files = raise_open_files_limit()  # workers inherit it
    if open_files < 4096:
        log.warning(
            "open files limit is %d: about %d connections in flight at most; raise it (ulimit -Hn)",
            open_files,
            open_files // 2,
        )
    try:
        registry = Registry(args.store_url, wait_s=STORE_WAIT_S)
        record = registry.get_gateway(args.name)
    except NotFound:
        return _fail(f"there is no gateway named '{args.name}' in the store")
    except Exception as exc:
        return _fail(f"cannot read the store ({type(exc).__name__}); is --store-url right?")
    try:
        settings = with_binds(gateway_settings(record), args)
    except SpecError as exc:
        registry.close()
        return _fail(f"the record of gateway '{args.name}' is not valid: {exc}")
    if not settings.listeners:
        registry.close()
        return _fail(f"gateway '{args.name}' has no enabled listener (listen.internet / listen.intranet)")
    if settings.tls is not None:
        try:
            server_context(settings.tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            registry.close()
            tls = settings.tls
            return _fail(f"cannot load the TLS certificate {tls.cert} / key {tls.key}: {exc}")
    if args.workers > 1:
        registry.close()
        return _run_workers(args, settings)

    def announce(line: str) -> None:
        print(line, flush=True)

    return uvloop.run(serve(args, settings, registry, reuse_port=False, announce=announce))


async def serve(
    args: argparse.Namespace,
    settings: GatewaySettings,
    registry: Registry,
    *,
    reuse_port: bool,
    announce: Callable[[str], None],
) -> int:
    loop = asyncio.get_running_loop()
    try:
        snapshot = await loop.run_in_executor(None, build_snapshot, registry, args.name)
    except Exception as exc:
        log.warning("cannot read the routes (%s); starting with none", type(exc).__name__)
        snapshot = RoutingSnapshot(version=-1)
    access_log = AccessLog(args.access_log) if args.access_log else None
    shared = SharedLimiter(args.redis_url, workers=args.workers) if args.redis_url else None
    gateway = Gateway(settings, snapshot, access_log=access_log, reuse_port=reuse_port, shared_limits=shared)
    try:
        await gateway.start()
    except (BindError, TlsError) as exc:
        registry.close()
        return _fail(str(exc))
    gateway.store_health = health = StoreHealth(registry)
    watcher = SnapshotWatcher(
        registry, args.name, gateway.set_snapshot, loop, snapshot=snapshot, health=health
    )
    watcher.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    replica = None
    if args.replica and args.workers == 1:  # with several workers the parent registers
        metrics = [gateway.metrics_bound] if gateway.metrics_bound is not None else []
        replica = replica_registration(args, registry, gateway.bound, metrics)
        try:
            await loop.run_in_executor(None, replica.start)
        except Exception as exc:
            await gateway.stop(0)
            await loop.run_in_executor(None, watcher.stop)
            registry.close()
            why = type(exc).__name__
            return _fail(f"cannot register replica {args.replica} in the store ({why})")
    announce(gateway.ready_line())
    await stop.wait()
    log.info("stopping: letting requests in flight finish (up to %.0f s)", args.grace)
    if replica is not None:
        await loop.run_in_executor(None, replica.stop)  # first: callers' balancers stop sending here
    await gateway.stop(args.grace)
    await loop.run_in_executor(None, watcher.stop)
    if access_log is not None:
        access_log.close()
    registry.close()
    return 0


def replica_registration(
    args: argparse.Namespace, registry: Registry, bound: Sequence[Listener], metrics: Sequence[Listener]
) -> ReplicaRegistration:
    """The registration of this replica: its listeners by kind ("internet", "vpc") as callers
    reach them (--advertise-* when given), and its metrics listeners."""
    advertised = {"internet": args.advertise_internet, "intranet": args.advertise_vpc}
    addresses = {}
    for lst in bound:
        kind = "vpc" if lst.kind == "intranet" else lst.kind
        addresses[kind] = advertised.get(lst.kind) or hostport(lst)
    return ReplicaRegistration(
        registry, args.replica, args.name, addresses, ",".join(hostport(m) for m in metrics)
    )


# -- several worker processes --------------------------------------------------------------


def _run_workers(args: argparse.Namespace, settings: GatewaySettings) -> int:
    # The parent binds every port first (without listening) so a taken port fails here, port 0
    # resolves once, and every worker binds the same ports with SO_REUSEPORT.
    reserved = []
    listeners = []
    for listener in settings.listeners:
        try:
            sock = bind_socket(listener.host, listener.port, reuse_port=True)
        except OSError as exc:
            return _fail(str(BindError(listener, exc)))
        reserved.append(sock)
        listeners.append(replace(listener, port=sock.getsockname()[1]))
    settings = replace(settings, listeners=tuple(listeners))
    # Each worker has its own metrics listener (its own counters): port p -> p + i, port 0 -> a
    # free port per worker, reserved here so a restarted worker i gets the same one again.
    base = settings.metrics
    metrics = []
    for i in range(args.workers):
        wanted = replace(base, port=base.port + i if base.port else 0)
        try:
            sock = bind_socket(wanted.host, wanted.port, reuse_port=True)
        except OSError as exc:
            for s in reserved:
                s.close()
            return _fail(str(BindError(wanted, exc)))
        reserved.append(sock)
        metrics.append(replace(wanted, port=sock.getsockname()[1]))
    ready_r, ready_w = os.pipe()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def spawn(index: int) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(ready_r)
            for s in reserved:
                s.close()
            registry = Registry(args.store_url, wait_s=STORE_WAIT_S)

            def announce(_line: str) -> None:
                os.write(ready_w, b"r")

            mine = replace(settings, metrics=metrics[index])
            code = uvloop.run(serve(args, mine, registry, reuse_port=True, announce=announce))
        finally:
            os._exit(code)

    children = {spawn(i): i for i in range(args.workers)}
    replica: ReplicaRegistration | None = None
    ready = 0
    announced = False
    while children:
        if stopping:
            break
        readable, _, _ = select.select([ready_r], [], [], 0.2)
        if readable:
            ready += len(os.read(ready_r, 64))
        if not announced and ready >= args.workers:
            announced = True
            if args.replica:
                replica = replica_registration(args, Registry(args.store_url), settings.listeners, metrics)
                try:
                    replica.start()
                except Exception as exc:
                    _stop_children(set(children))
                    return _fail(
                        f"cannot register replica {args.replica} in the store ({type(exc).__name__})"
                    )
            print(ready_line(settings.name, settings.listeners, metrics), flush=True)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid and pid in children:
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if not announced:
                _stop_children(set(children))
                return code if code > 0 else 1
            if not stopping:
                log.warning("worker %d exited (%d); starting another", pid, code)
                time.sleep(0.5)
                children[spawn(index)] = index
    if replica is not None:
        replica.stop()
        replica.registry.close()
    _stop_children(set(children), grace=args.grace + 5)
    return 0


def _stop_children(children: set[int], grace: float = 5.0) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.discard(pid)
        else:
            time.sleep(0.05)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


if __name__ == "__main__":
    sys.exit(main())
