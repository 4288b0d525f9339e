"""Schema migrations: a registry made by the release before migrations upgrades in place.

The fixture (`fixtures/registry_v0.db`) was written by main at da70b3b with
`fixtures/make_registry_v0.py`. On SQLite the file itself is upgraded; on PostgreSQL the same
registry is rebuilt with that release's tables (`fixtures/schema_v0.py`) and the file's rows.
Every row of every old table must come through unchanged, and the new code must read it.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert, select, text

from openeas.queue import registration, sql_backend
from openeas.store import Registry, access_keys, schema
from openeas.store.migrate import SchemaTooNew, alembic_config, current_revision, head_revision
from tests.store.fixtures import schema_v0
from tests.store.postgres_cluster import postgres_cluster

FIXTURE = Path(__file__).with_name("fixtures") / "registry_v0.db"
OLD_TABLES = ("services", "instances", "gateways", "groups", "service_versions", "meta")

Rows = dict[str, list[dict[str, Any]]]


def fixture_rows(copy: Path) -> Rows:
    """The fixture's rows, read from `copy` (a WAL database writes beside itself even to read)."""
    shutil.copy(FIXTURE, copy)
    conn = sqlite3.connect(copy)
    conn.row_factory = sqlite3.Row
    try:
        return {
            t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in OLD_TABLES
        }
    finally:
        conn.close()


def rows_after(reg: Registry, old: Rows) -> Rows:
    """The old tables' old columns, read back from the upgraded registry, in the same order."""
    out: Rows = {}
    with reg.engine.connect() as conn:
        for name, rows in old.items():
            table = schema.metadata.tables[name]
            cols = [table.c[c] for c in rows[0]]
            got = conn.execute(select(*cols).order_by(cols[0], cols[1])).all()
            out[name] = [dict(r._mapping) for r in got]
    return out


def check_upgraded(reg: Registry, old: Rows) -> None:
    assert all(old[t] for t in OLD_TABLES), "the fixture has rows in every table"
    reg.create_schema()
    assert rows_after(reg, old) == old
    with reg.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    # and the new code reads every record
    services = {s.name: s for s in reg.list_services()}
    assert set(services) == {"chat-blue", "chat-green", "echo", "stopped-one"}
    assert services["echo"].token == "tok-echo-1111" and services["echo"].old_token == ""
    assert services["stopped-one"].desired == "stopped"
    assert [v.version for v in reg.list_versions("echo")] == [1, 2]
    assert reg.list_versions("echo")[1].spec["metadata"]["rpc"] == {"keepalive": 5000}
    (group,) = reg.list_groups()
    assert (group.token, group.traffic_mode, group.weights) == (
        "tok-group-chat-3333", "customized", {"chat-blue": 80, "chat-green": 20},
    )
    assert group.old_token == ""
    gws = {g.name: g for g in reg.list_gateways()}
    assert gws["gw-dedicated"].spec["max_body_bytes"] == 2097152 and "shared" in gws
    assert [i.id for i in reg.list_instances("echo")] == ["echo-1-aaaa"]
    assert reg.version() == old["meta"][0]["value"]
    reg.create_schema()  # a second start changes nothing
    assert rows_after(reg, old) == old


def test_sqlite_registry_from_before_migrations_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    old = fixture_rows(path)
    reg = Registry(f"sqlite:///{path}")
    try:
        check_upgraded(reg, old)
    finally:
        reg.close()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


def _pg_database(server_url: str, name: str) -> str:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def test_postgres_registry_from_before_migrations_upgrades_in_place(pg_server: str, tmp_path: Path) -> None:
    url = _pg_database(pg_server, "fixture_v0")
    old = fixture_rows(tmp_path / "v0.db")
    engine = create_engine(url)
    schema_v0.metadata.create_all(engine)
    with engine.begin() as conn:
        for name in OLD_TABLES:
            conn.execute(insert(schema_v0.metadata.tables[name]), old[name])
    engine.dispose()
    reg = Registry(url)
    try:
        check_upgraded(reg, old)
    finally:
        reg.close()


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_registry_from_a_newer_release_is_refused(engine_kind: str, tmp_path: Path, pg_server: str) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}" if engine_kind == "sqlite" else _pg_database(pg_server, "newer")
    reg = Registry(url)
    reg.create_schema()
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(SchemaTooNew) as err:
        reg.create_schema()
    message = str(err.value)
    assert "0099_from_the_future" in message and "newer" in message and "run that release" in message
    with reg.engine.connect() as conn:  # nothing was touched
        assert current_revision(conn) == "0099_from_the_future"
    reg.close()


def registry_metadata() -> MetaData:
    """Every table kept in the registry's database: store/schema.py and the modules that add
    their own tables beside it (AccessKeys, queue servers, the SQL queue backend)."""
    merged = MetaData()
    for source in (schema.metadata, access_keys.metadata, registration.metadata, sql_backend.metadata):
        for table in source.tables.values():
            table.to_metadata(merged)
    return merged


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_the_migrations_build_exactly_the_tables_the_code_declares(
    engine_kind: str, tmp_path: Path, pg_server: str
) -> None:
    """A table or column added to the registry without a revision fails here."""
    url = f"sqlite:///{tmp_path / 'm.db'}" if engine_kind == "sqlite" else _pg_database(pg_server, "drift")
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")  # the revisions alone, no create_all
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), registry_metadata())
    engine.dispose()
    assert diff == [], f"the registry's tables and store/migrations/versions differ: {diff}"


def test_rotation_columns_default_to_no_second_token(tmp_path: Path) -> None:
    """Rows written by code that does not know `old_token` (an older server mid-upgrade) read as none."""
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    reg.create_schema()
    with reg.engine.begin() as conn:
        conn.execute(text("INSERT INTO groups (name, token, traffic_mode, weights, created_at, updated_at) "
                          "VALUES ('g', 't', 'auto', '{}', 0, 0)"))
    assert reg.get_group("g").old_token == ""
    reg.close()


def test_server_refuses_to_start_on_a_newer_schema(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    reg.create_schema()
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    reg.close()
    ports = ["--api-port", "0", "--gateway-port", "0", "--vpc-port", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "openeas.cli.main", "server", "--data-dir", str(tmp_path), *ports],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "0099_from_the_future" in proc.stderr and "run that release" in proc.stderr, proc.stderr
