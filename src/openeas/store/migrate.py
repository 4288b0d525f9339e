"""Registry schema migrations: bring a store to the schema this release knows, in place.

`upgrade(engine)` runs the Alembic revisions under `store/migrations/versions` on SQLite and
PostgreSQL alike. A registry from the releases before migrations (its tables, no
`alembic_version`) is stamped with the baseline revision first. A registry whose revision this
release does not know was written by a newer release: refused with `SchemaTooNew`, whose message
names the release to run. On PostgreSQL an advisory lock makes concurrent servers migrate one at
a time.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from openeas.store import schema

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001_baseline"
# Any number: the key of the advisory lock that serialises migrations between servers.
_LOCK_KEY = 0x0E45_3167


class SchemaTooNew(RuntimeError):
    """The registry was migrated by a newer release than this one."""


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships its revisions
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the registry at `engine` to this release's schema (or refuse a newer one)."""
    script = ScriptDirectory.from_config(alembic_config())
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        current = current_revision(conn)
        if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
            raise SchemaTooNew(
                f"the registry's schema is at revision {current!r}, newer than this release knows "
                f"(newest here: {script.get_current_head()!r}); it was upgraded by a newer openeas: "
                "run that release (or newer) on this registry, or restore a backup made before the upgrade"
            )
        cfg = alembic_config(conn)
        if current is None and inspect(conn).has_table("services"):
            command.stamp(cfg, BASELINE)  # made before migrations existed: its schema is the baseline
        command.upgrade(cfg, "head")
        # Tables whose revision is not written yet (a merge in progress) still get created;
        # tests/store/test_migrations.py fails until each has its revision.
        schema.metadata.create_all(conn, checkfirst=True)
