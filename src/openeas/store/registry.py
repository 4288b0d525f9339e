"""The registry: services, instances and gateways, with a change feed; gateway replicas.

Every write that a gateway must see bumps `meta.version` in the same transaction and records what
it changed (`changes`: the service, gateway or group names), so a reader asks `changes_since(v)`
and updates only those. On PostgreSQL the same transaction sends NOTIFY on CHANGE_CHANNEL (the
payload is the new version), delivered at commit, so a listener (store/feed.py) wakes at once
instead of polling. The version row is updated last and holds its row lock until commit, so
versions are committed in order: a reader that sees version v sees every change up to v.

Gateway replicas (any number per gateway, on any machine) register and heartbeat here; they are
not part of the change feed (heartbeats would flood it).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from openeas.store import migrate, schema
from openeas.store.records import (
    Changes,
    GatewayRecord,
    GroupRecord,
    InstanceRecord,
    ReplicaRecord,
    ServiceRecord,
    VersionRecord,
)

VERSION_KEY = "version"
IDENTITY_KEY = "identity"  # a random number drawn once per registry (`identity`)
CHANGE_CHANNEL = "openeas_changes"  # PostgreSQL NOTIFY channel; the payload is the new version
CHANGE_KEEP = 10_000  # versions of change history kept; a reader further behind rebuilds whole
REPLICA_HEARTBEAT_S = 5.0  # how often a gateway replica should heartbeat
REPLICA_DOWN_AFTER_S = 15.0  # a replica whose last heartbeat is older is shown down


class NotFound(KeyError):
    pass


class AlreadyExists(ValueError):
    pass


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'registry.db').resolve()}"


def _private_sqlite_file(url: str) -> None:
    """The SQLite file holds service tokens: create it mode 0600, and take group/other access away
    from one made before (SQLite gives its -wal and -shm files the database file's mode)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path.startswith(":memory:") or not Path(path).parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Registry:
    def __init__(self, url: str, change_keep: int = CHANGE_KEEP, wait_s: float | None = None):
        """`wait_s`: on PostgreSQL, give up on a lock or a connection after that many seconds
        (the gateway's reader: a table locked by another session must become a failure it
        reports, not a wait for ever). SQLite always gives up after its busy_timeout (5 s)."""
        self.url = url
        if url.startswith("sqlite"):
            _private_sqlite_file(url)
        self.change_keep = change_keep
        connect_args: dict[str, Any] = {}
        if wait_s is not None and url.startswith("postgresql"):
            millis = int(wait_s * 1000)
            connect_args = {"connect_timeout": max(1, int(wait_s)), "options": f"-c lock_timeout={millis}"}
        self.engine: Engine = create_engine(url, future=True, connect_args=connect_args)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    # -- lifecycle -------------------------------------------------------------------------
    def create_schema(self) -> None:
        """Create or upgrade the schema in place (store/migrate.py; SchemaTooNew when newer)."""
        migrate.upgrade(self.engine)
        with self.engine.begin() as conn:
            row = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == VERSION_KEY)).first()
            if row is None:
                conn.execute(schema.meta.insert().values(key=VERSION_KEY, value=1))

    def identity(self) -> str:
        """A random id drawn once for this registry, the same for every server that opens it.

        Local instances carry it in their environment, so that a server taking the lead finds
        the processes of this registry that another server on the machine started (its
        `work/` folder differs) without ever touching another registry's."""
        with self.engine.begin() as conn:
            insert = pg_insert if self.is_postgres else sqlite_insert
            conn.execute(
                insert(schema.meta)
                .values(key=IDENTITY_KEY, value=secrets.randbits(62))
                .on_conflict_do_nothing(index_elements=["key"])
            )
            value = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == IDENTITY_KEY)
            ).scalar_one()
        return f"{int(value):x}"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self, *changed: tuple[str, str]) -> Iterator[Connection]:
        """A transaction that bumps the version and records `changed` ((kind, name) pairs; none:
        readers rebuild whole) as that version's changes."""
        with self.engine.begin() as conn:
            yield conn
            version = int(
                conn.execute(
                    update(schema.meta)
                    .where(schema.meta.c.key == VERSION_KEY)
                    .values(value=schema.meta.c.value + 1)
                    .returning(schema.meta.c.value)
                ).scalar_one()
            )
            named = sorted(set(changed)) or [("all", "")]
            conn.execute(
                schema.changes.insert(), [{"version": version, "kind": k, "name": n} for k, n in named]
            )
            conn.execute(
                schema.changes.delete().where(schema.changes.c.version <= version - self.change_keep)
            )
            if self.is_postgres:
                conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANGE_CHANNEL, "payload": str(version)},
                )

    @contextmanager
    def _quiet_write(self) -> Iterator[Connection]:
        """A write gateways need not see (no change-feed bump); store/leases.py fences it."""
        with self.engine.begin() as conn:
            yield conn

    def version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == VERSION_KEY)
            ).scalar_one()
            return int(value)

    def changes_since(self, since: int) -> Changes:
        """What changed after version `since` (names per kind), and the version now."""
        table = schema.changes
        with self.engine.connect() as conn:
            version = int(
                conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == VERSION_KEY)).scalar_one()
            )
            if version <= since:
                return Changes(version)
            rows = conn.execute(
                select(table.c.version, table.c.kind, table.c.name).where(
                    table.c.version > since, table.c.version <= version
                )
            ).all()
            oldest = conn.execute(select(func.min(table.c.version))).scalar()
        names: dict[str, set[str]] = {"service": set(), "gateway": set(), "group": set()}
        full = oldest is None or int(oldest) > since + 1  # history before `oldest` is gone
        # a version that recorded nothing (a writer that moved meta.version alone): rebuild whole
        full = full or len({row[0] for row in rows}) < version - since
        for _, kind, name in rows:
            if kind in names:
                names[kind].add(str(name))
            else:
                full = True
        return Changes(
            version,
            services=frozenset(names["service"]),
            gateways=frozenset(names["gateway"]),
            groups=frozenset(names["group"]),
            full=full,
        )

    # -- services --------------------------------------------------------------------------
    def create_service(
        self,
        name: str,
        spec: dict[str, Any],
        token: str,
        gateway: str,
        note: str = "created",
        group: tuple[str, str] | None = None,
    ) -> ServiceRecord:
        """Insert a service and its version 1, in one transaction; `group` (name, token): the
        row of the group the spec names, created in the same transaction if it has none (a
        crash never leaves a member whose group has no token)."""
        now = time.time()
        try:
            with self._write(("service", name), *([("group", group[0])] if group else [])) as conn:
                self._ensure_group_row(conn, group, now)
                _insert_version(conn, name, 1, spec, note, now)
                conn.execute(
                    schema.services.insert().values(
                        name=name,
                        spec=json.dumps(spec),
                        token=token,
                        gateway=gateway,
                        desired="running",
                        status="Waiting",
                        message="",
                        revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(name) from None
        return self.get_service(name)

    def get_service(self, name: str) -> ServiceRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.services).where(schema.services.c.name == name)).first()
        if row is None:
            raise NotFound(name)
        return _service(row._mapping)

    def list_services(self) -> list[ServiceRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.services).order_by(schema.services.c.name)).all()
        return [_service(r._mapping) for r in rows]

    def update_service(
        self,
        name: str,
        *,
        version_note: str | None = None,
        group: tuple[str, str] | None = None,
        **values: Any,
    ) -> ServiceRecord:
        """Update columns of a service. Passing `spec` bumps the revision; with `version_note`
        too, the new spec is also kept as the next version (same transaction); `group` as in
        `create_service`."""
        now = values["updated_at"] = time.time()
        stmt = update(schema.services).where(schema.services.c.name == name)
        spec = values.get("spec")
        if spec is not None:
            values["spec"] = json.dumps(spec)
            stmt = stmt.values(revision=schema.services.c.revision + 1)
        with self._write(("service", name), *([("group", group[0])] if group else [])) as conn:
            self._ensure_group_row(conn, group, now)
            if version_note is not None and spec is not None:
                latest = self._latest_version(conn, name)
                if latest == 0:  # a service from before versions were kept: its spec becomes 1
                    row = conn.execute(
                        select(schema.services.c.spec).where(schema.services.c.name == name)
                    ).first()
                    if row is None:
                        raise NotFound(name)
                    _insert_version(conn, name, 1, json.loads(row[0]), "as found (before versions)", now)
                    latest = 1
                _insert_version(conn, name, latest + 1, spec, version_note, now)
            if conn.execute(stmt.values(**values)).rowcount == 0:
                raise NotFound(name)
        return self.get_service(name)

    def _ensure_group_row(self, conn: Connection, group: tuple[str, str] | None, now: float) -> None:
        """Insert the row of group (name, token) unless it exists (a concurrent insert wins)."""
        if group is None:
            return
        insert = pg_insert if self.is_postgres else sqlite_insert
        conn.execute(
            insert(schema.groups)
            .values(
                name=group[0],
                token=group[1],
                traffic_mode="auto",
                weights="{}",
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )

    # -- versions --------------------------------------------------------------------------
    @staticmethod
    def _latest_version(conn: Connection, name: str) -> int:
        value = conn.execute(
            select(func.max(schema.service_versions.c.version)).where(
                schema.service_versions.c.service == name
            )
        ).scalar()
        return int(value or 0)

    def list_versions(self, name: str) -> list[VersionRecord]:
        """The service's versions, oldest first. A service from before versions were kept gets
        its current spec recorded as version 1 here."""
        table = schema.service_versions
        stmt = select(table).where(table.c.service == name).order_by(table.c.version)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if rows:
            return [_version(r._mapping) for r in rows]
        svc = self.get_service(name)
        try:
            with self.engine.begin() as conn:  # not a routing change: no change-feed bump
                _insert_version(conn, name, 1, svc.spec, "as found (before versions)", time.time())
        except IntegrityError:
            pass  # recorded meanwhile by another writer
        with self.engine.connect() as conn:
            return [_version(r._mapping) for r in conn.execute(stmt).all()]

    def get_version(self, name: str, version: int) -> VersionRecord:
        table = schema.service_versions
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table).where(table.c.service == name, table.c.version == version)
            ).first()
        if row is None:
            raise NotFound(f"{name} version {version}")
        return _version(row._mapping)

    def set_status(self, name: str, status: str, message: str = "") -> None:
        """Status changes do not bump the change feed: gateways do not route on them."""
        with self._quiet_write() as conn:
            conn.execute(
                update(schema.services)
                .where(schema.services.c.name == name)
                .values(status=status, message=message, updated_at=time.time())
            )

    def delete_service(self, name: str) -> None:
        with self._write(("service", name)) as conn:
            if conn.execute(schema.services.delete().where(schema.services.c.name == name)).rowcount == 0:
                raise NotFound(name)
            conn.execute(schema.instances.delete().where(schema.instances.c.service == name))
            conn.execute(schema.service_versions.delete().where(schema.service_versions.c.service == name))

    # -- instances -------------------------------------------------------------------------
    def put_instance(self, inst: InstanceRecord) -> None:
        values = {
            "id": inst.id,
            "service": inst.service,
            "revision": inst.revision,
            "host": inst.host,
            "port": inst.port,
            "pid": inst.pid,
            "state": inst.state,
            "restarts": inst.restarts,
            "message": inst.message,
            "started_at": inst.started_at,
            "updated_at": time.time(),
        }
        with self._write(("service", inst.service)) as conn:
            changed = conn.execute(
                update(schema.instances).where(schema.instances.c.id == inst.id).values(**values)
            ).rowcount
            if changed == 0:
                conn.execute(schema.instances.insert().values(**values))

    def delete_instance(self, instance_id: str) -> None:
        with self.engine.connect() as conn:
            service = conn.execute(
                select(schema.instances.c.service).where(schema.instances.c.id == instance_id)
            ).scalar()
        with self._write(*([("service", str(service))] if service is not None else [])) as conn:
            conn.execute(schema.instances.delete().where(schema.instances.c.id == instance_id))

    def list_instances(self, service: str | None = None) -> list[InstanceRecord]:
        stmt = select(schema.instances).order_by(schema.instances.c.service, schema.instances.c.id)
        if service is not None:
            stmt = stmt.where(schema.instances.c.service == service)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_instance(r._mapping) for r in rows]

    # -- gateways --------------------------------------------------------------------------
    def put_gateway(self, name: str, spec: dict[str, Any], status: str = "Running") -> GatewayRecord:
        now = time.time()
        with self._write(("gateway", name)) as conn:
            changed = conn.execute(
                update(schema.gateways)
                .where(schema.gateways.c.name == name)
                .values(spec=json.dumps(spec), status=status, updated_at=now)
            ).rowcount
            if changed == 0:
                conn.execute(
                    schema.gateways.insert().values(
                        name=name, spec=json.dumps(spec), status=status, created_at=now, updated_at=now
                    )
                )
        return self.get_gateway(name)

    def get_gateway(self, name: str) -> GatewayRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.gateways).where(schema.gateways.c.name == name)).first()
        if row is None:
            raise NotFound(name)
        return _gateway(row._mapping)

    def list_gateways(self) -> list[GatewayRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.gateways).order_by(schema.gateways.c.name)).all()
        return [_gateway(r._mapping) for r in rows]

    def delete_gateway(self, name: str) -> None:
        with self._write(("gateway", name)) as conn:
            if conn.execute(schema.gateways.delete().where(schema.gateways.c.name == name)).rowcount == 0:
                raise NotFound(name)

    def create_gateway(self, name: str, spec: dict[str, Any], status: str = "Creating") -> GatewayRecord:
        """Insert a new gateway record; AlreadyExists if the name is taken."""
        now = time.time()
        try:
            with self._write(("gateway", name)) as conn:
                conn.execute(
                    schema.gateways.insert().values(
                        name=name, spec=json.dumps(spec), status=status, created_at=now, updated_at=now
                    )
                )
        except IntegrityError:
            raise AlreadyExists(name) from None
        return self.get_gateway(name)

    def update_gateway(self, name: str, spec: dict[str, Any]) -> GatewayRecord:
        """Replace the spec of an existing gateway (the gateway sees it on its next poll)."""
        with self._write(("gateway", name)) as conn:
            stmt = (
                update(schema.gateways)
                .where(schema.gateways.c.name == name)
                .values(spec=json.dumps(spec), updated_at=time.time())
            )
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(name)
        return self.get_gateway(name)

    def set_gateway_status(self, name: str, status: str) -> None:
        """Status changes do not bump the change feed: gateways do not serve on them."""
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.gateways)
                .where(schema.gateways.c.name == name)
                .values(status=status, updated_at=time.time())
            )

    def delete_unused_gateway(self, name: str) -> list[str]:
        """Delete a gateway no service is bound to, in one transaction.

        Returns the names of the services bound to it (and deletes nothing) when there are any.
        """
        with self._write(("gateway", name)) as conn:
            bound = [
                str(r[0])
                for r in conn.execute(
                    select(schema.services.c.name)
                    .where(schema.services.c.gateway == name)
                    .order_by(schema.services.c.name)
                ).all()
            ]
            if bound:
                return bound
            if conn.execute(schema.gateways.delete().where(schema.gateways.c.name == name)).rowcount == 0:
                raise NotFound(name)
        return []

    # -- gateway replicas ------------------------------------------------------------------
    def _db_now(self, conn: Connection) -> float:
        """The database's clock on PostgreSQL (shared by every machine), else this machine's."""
        if self.is_postgres:
            return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def register_replica(
        self, name: str, gateway: str, addresses: dict[str, str], metrics_address: str
    ) -> ReplicaRecord:
        """Register (or re-register, after a restart) replica `name` of `gateway`; starts its
        clock and counts as its first heartbeat."""
        table = schema.gateway_replicas
        with self.engine.begin() as conn:
            now = self._db_now(conn)
            values = {
                "gateway": gateway,
                "addresses": json.dumps(addresses, sort_keys=True),
                "metrics_address": metrics_address,
                "started_at": now,
                "heartbeat_at": now,
            }
            if conn.execute(update(table).where(table.c.name == name).values(**values)).rowcount == 0:
                conn.execute(table.insert().values(name=name, **values))
        return self.get_replica(name)

    def heartbeat_replica(self, name: str) -> bool:
        """Record that replica `name` is alive. False when it is not registered (it was removed
        meanwhile): the replica should register again."""
        table = schema.gateway_replicas
        with self.engine.begin() as conn:
            now = self._db_now(conn)
            return bool(
                conn.execute(update(table).where(table.c.name == name).values(heartbeat_at=now)).rowcount
            )

    def list_replicas(
        self, gateway: str | None = None, down_after_s: float = REPLICA_DOWN_AFTER_S
    ) -> list[ReplicaRecord]:
        """Registered replicas (of `gateway`, or all), `up` when their last heartbeat is at most
        `down_after_s` old."""
        table = schema.gateway_replicas
        stmt = select(table).order_by(table.c.gateway, table.c.name)
        if gateway is not None:
            stmt = stmt.where(table.c.gateway == gateway)
        with self.engine.connect() as conn:
            now = self._db_now(conn)
            rows = conn.execute(stmt).all()
        return [_replica(r._mapping, now, down_after_s) for r in rows]

    def get_replica(self, name: str, down_after_s: float = REPLICA_DOWN_AFTER_S) -> ReplicaRecord:
        table = schema.gateway_replicas
        with self.engine.connect() as conn:
            now = self._db_now(conn)
            row = conn.execute(select(table).where(table.c.name == name)).first()
        if row is None:
            raise NotFound(name)
        return _replica(row._mapping, now, down_after_s)

    def delete_replica(self, name: str) -> None:
        """Remove a replica's registration (it stopped cleanly, or an operator removes a dead one)."""
        table = schema.gateway_replicas
        with self.engine.begin() as conn:
            if conn.execute(table.delete().where(table.c.name == name)).rowcount == 0:
                raise NotFound(name)

    # -- token rotation --------------------------------------------------------------------
    def rotate_token(self, kind: str, name: str, new_token: str) -> str:
        """Make `new_token` the token of service or group `name`, keeping the current one as
        `old_token` (both accepted until `revoke_old_token`). Returns the new token.

        AlreadyExists when an old token is still held: revoke it first, so at most two exist."""
        table = _token_table(kind)
        with self._write((kind, name)) as conn:
            row = conn.execute(
                select(table.c.token, table.c.old_token).where(table.c.name == name).with_for_update()
            ).first()
            if row is None:
                raise NotFound(name)
            if row.old_token:
                raise AlreadyExists(f"{kind} {name} already holds an old token")
            conn.execute(
                update(table)
                .where(table.c.name == name)
                .values(token=new_token, old_token=row.token, updated_at=time.time())
            )
        return new_token

    def revoke_old_token(self, kind: str, name: str) -> bool:
        """Forget the old token of service or group `name`; False when it held none."""
        table = _token_table(kind)
        with self._write((kind, name)) as conn:
            row = conn.execute(select(table.c.old_token).where(table.c.name == name)).first()
            if row is None:
                raise NotFound(name)
            if not row.old_token:
                return False
            conn.execute(
                update(table).where(table.c.name == name).values(old_token="", updated_at=time.time())
            )
        return True

    # -- service groups --------------------------------------------------------------------
    def ensure_group(self, name: str, token: str) -> GroupRecord:
        """The group `name`, created (traffic mode auto, no weights, `token`) if it is absent."""
        try:
            return self.get_group(name)
        except NotFound:
            pass
        now = time.time()
        try:
            with self._write(("group", name)) as conn:
                conn.execute(
                    schema.groups.insert().values(
                        name=name,
                        token=token,
                        traffic_mode="auto",
                        weights="{}",
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            pass  # created meanwhile by another writer
        return self.get_group(name)

    def update_group(self, name: str, **values: Any) -> GroupRecord:
        """Update `token`, `traffic_mode` and/or `weights` ({service: int}) of a group."""
        values["updated_at"] = time.time()
        if "weights" in values:
            values["weights"] = json.dumps(values["weights"], sort_keys=True)
        with self._write(("group", name)) as conn:
            stmt = update(schema.groups).where(schema.groups.c.name == name).values(**values)
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(name)
        return self.get_group(name)

    def get_group(self, name: str) -> GroupRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.groups).where(schema.groups.c.name == name)).first()
        if row is None:
            raise NotFound(name)
        return _group(row._mapping)

    def list_groups(self) -> list[GroupRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.groups).order_by(schema.groups.c.name)).all()
        return [_group(r._mapping) for r in rows]

    def delete_group(self, name: str) -> None:
        with self._write(("group", name)) as conn:
            if conn.execute(schema.groups.delete().where(schema.groups.c.name == name)).rowcount == 0:
                raise NotFound(name)


def _token_table(kind: str) -> Table:
    if kind == "service":
        return schema.services
    if kind == "group":
        return schema.groups
    raise ValueError(f"tokens belong to a service or a group, not {kind!r}")


def _insert_version(
    conn: Connection, name: str, version: int, spec: dict[str, Any], note: str, now: float
) -> None:
    conn.execute(
        schema.service_versions.insert().values(
            service=name, version=version, spec=json.dumps(spec), note=note, created_at=now
        )
    )


def _version(m: Any) -> VersionRecord:
    return VersionRecord(
        service=m["service"],
        version=m["version"],
        spec=json.loads(m["spec"]),
        note=m["note"] or "",
        created_at=m["created_at"],
    )


def _group(m: Any) -> GroupRecord:
    weights = json.loads(m["weights"] or "{}")
    return GroupRecord(
        name=m["name"],
        token=m["token"],
        traffic_mode=m["traffic_mode"],
        weights={str(k): int(v) for k, v in weights.items()} if isinstance(weights, dict) else {},
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        old_token=m.get("old_token") or "",
    )


def _service(m: Any) -> ServiceRecord:
    return ServiceRecord(
        name=m["name"],
        spec=json.loads(m["spec"]),
        token=m["token"],
        gateway=m["gateway"],
        desired=m["desired"],
        status=m["status"],
        message=m["message"] or "",
        revision=m["revision"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        old_token=m.get("old_token") or "",
    )


def _instance(m: Any) -> InstanceRecord:
    return InstanceRecord(
        id=m["id"],
        service=m["service"],
        revision=m["revision"],
        host=m["host"],
        port=m["port"],
        pid=m["pid"],
        state=m["state"],
        restarts=m["restarts"],
        message=m["message"] or "",
        started_at=m["started_at"],
        updated_at=m["updated_at"],
    )


def _replica(m: Any, now: float, down_after_s: float) -> ReplicaRecord:
    addresses = json.loads(m["addresses"] or "{}")
    return ReplicaRecord(
        name=m["name"],
        gateway=m["gateway"],
        addresses={str(k): str(v) for k, v in addresses.items()} if isinstance(addresses, dict) else {},
        metrics_address=m["metrics_address"],
        started_at=m["started_at"],
        heartbeat_at=m["heartbeat_at"],
        up=now - m["heartbeat_at"] <= down_after_s,
    )


def _gateway(m: Any) -> GatewayRecord:
    return GatewayRecord(
        name=m["name"],
        spec=json.loads(m["spec"]),
        status=m["status"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )
