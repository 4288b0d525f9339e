"""The change feed's per-version change list (`changes`) and gateway replica registrations
(`gateway_replicas`), added to store/schema.py with the Ray runtime and gateway replicas.

Created only when absent: a registry that ran a build of those features before this revision
existed (where `Registry.create_schema` created them) upgrades without error.

Revision ID: 0005_changes_and_replicas
Revises: 0004_access_keys_and_queues
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_changes_and_replicas"
down_revision = "0004_access_keys_and_queues"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "changes" not in present:
        op.create_table(
            "changes",
            sa.Column("version", sa.BigInteger, primary_key=True),
            sa.Column("kind", sa.String(16), primary_key=True),
            sa.Column("name", sa.String(96), primary_key=True),
        )
    if "gateway_replicas" not in present:
        op.create_table(
            "gateway_replicas",
            sa.Column("name", sa.String(96), primary_key=True),
            sa.Column("gateway", sa.String(64), nullable=False),
            sa.Column("addresses", sa.Text, nullable=False),
            sa.Column("metrics_address", sa.String(255), nullable=False),
            sa.Column("started_at", sa.Float, nullable=False),
            sa.Column("heartbeat_at", sa.Float, nullable=False),
        )
        op.create_index("ix_gateway_replicas_gateway", "gateway_replicas", ["gateway"])


def downgrade() -> None:
    op.drop_table("gateway_replicas")
    op.drop_table("changes")
