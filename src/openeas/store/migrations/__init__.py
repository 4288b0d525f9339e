"""Alembic migrations of the registry schema (run by `store.migrate.upgrade` at server start)."""
