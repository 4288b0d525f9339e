"""Alembic environment: runs on the connection `store.migrate` hands over in `config.attributes`.

The registry never runs Alembic from a command line with its own engine: the server (and
`Registry.create_schema`) opens the store and passes one connection, so SQLite and PostgreSQL run
the same revisions inside the caller's transaction.
"""

from __future__ import annotations

from alembic import context

from openeas.store import schema

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the registry migrations through openeas.store.migrate.upgrade(engine)")
# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table there.
context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    render_as_batch=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
