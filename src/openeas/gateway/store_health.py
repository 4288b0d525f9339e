"""Whether the gateway can read its store, told in its log and on /metrics.

The gateway serves from its last routing snapshot whatever happens to the store (the watcher,
gateway/watcher.py, keeps it when a read fails). This object is what it knows about the store:
up or not, failed reads and outages counted (`openeas_gateway_store_up`,
`openeas_gateway_store_failures_total`, `openeas_gateway_store_outages_total`,
`openeas_gateway_store_last_ok_seconds`), one log line when an outage starts (with the reason)
and one when it ends.

A SQLite store needs a check of its own before each read: an open SQLite connection keeps
reading the file it opened, from its cache or from a removed inode, so a registry file that was
removed, replaced or overwritten with garbage would go unnoticed. `check_file` looks at the path
each time (one stat and a 16-byte read): missing or not starting with SQLite's header is a
failure; a different file at the path (restored from a backup) closes the pooled connections so
the next read opens it.
"""

from __future__ import annotations

import logging
import os
import time

from openeas.store import Registry

log = logging.getLogger("openeas.gateway")

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreFileError(RuntimeError):
    """The SQLite registry file is missing or is not a SQLite database."""


def sqlite_path(url: str) -> str | None:
    """The file of a `sqlite:///PATH` URL; None for other stores and in-memory SQLite."""
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return path if path and not path.startswith(":memory:") else None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def describe_error(exc: BaseException) -> str:
    """A short reason for the log: the driver's first line (no SQL, no parameters, no URL)."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's exception
    inner = orig if isinstance(orig, BaseException) else exc
    text = str(inner).strip().splitlines()[0][:200] if str(inner).strip() else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


class StoreHealth:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.up = True
        self.failures = 0  # reads that failed
        self.outages = 0  # times the store went from readable to not
        self.last_ok = time.time()  # wall clock of the last good read
        self.reason = ""  # why the current outage (empty while up)
        self._outage_started = 0.0
        self._failures_at_start = 0
        self._path = sqlite_path(registry.url)
        self._identity = _identity(self._path) if self._path else None

    def check_file(self) -> None:
        """Before a read of a SQLite store: raise StoreFileError when its file is missing or not
        a database; reopen when another file stands at its path."""
        if self._path is None:
            return
        identity = _identity(self._path)
        if identity is None:
            raise StoreFileError(f"the registry file {self._path} is missing")
        try:
            with open(self._path, "rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StoreFileError(f"cannot read the registry file {self._path}: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise StoreFileError(f"the registry file {self._path} is not a SQLite database (corrupt?)")
        if identity != self._identity:
            self.registry.engine.dispose()  # pooled connections hold the old file open
            self._identity = identity

    def failed(self, exc: BaseException, serving_version: int) -> None:
        self.failures += 1
        # the next read opens new connections: one that failed may keep a stale view (SQLite's
        # cache of a file that changed under it) or be broken (a PostgreSQL that restarted)
        self.registry.engine.dispose()
        if self.up:
            self.up = False
            self.outages += 1
            self._outage_started = time.monotonic()
            self._failures_at_start = self.failures - 1
            self.reason = describe_error(exc)
            log.warning(
                "cannot read the store (%s); serving the last routing snapshot (version %d) until it can",
                self.reason,
                serving_version,
            )

    def ok(self) -> None:
        self.last_ok = time.time()
        if not self.up:
            log.warning(
                "the store is readable again after %.1f s (%d failed reads; it was: %s)",
                time.monotonic() - self._outage_started,
                self.failures - self._failures_at_start,
                self.reason,
            )
            self.reason = ""
            self.up = True  # after the log line: whoever sees "up" on /metrics finds the line too

    def metrics(self) -> dict[str, float]:
        """For the gateway's metrics snapshot (gateway/metrics.py `Snapshot.store`)."""
        return {
            "up": int(self.up),
            "failures": self.failures,
            "outages": self.outages,
            "last_ok": self.last_ok,
        }
