"""Control-plane leadership: the leader lease (with its fencing token) and the server roster.

Revision ID: 0003_leadership
Revises: 0002_second_token
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_leadership"
down_revision = "0002_second_token"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("fencing", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_table(
        "control_servers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("api", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("control_servers")
    op.drop_table("leader_lease")
