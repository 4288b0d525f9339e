"""Token rotation: a service and a group may hold the previous token beside the current one.

`old_token` is "" when there is none; both are accepted by the gateways until it is revoked.

Revision ID: 0002_second_token
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_second_token"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("services", "groups"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("old_token", sa.String(256), nullable=False, server_default=""))


def downgrade() -> None:
    for table in ("services", "groups"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("old_token")
