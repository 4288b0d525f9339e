"""Tables added beside the registry by the EAS management API and the Async queues: AccessKeys
(store/access_keys.py), queue servers (queue/registration.py) and the SQL queue backend's items
(queue/sql_backend.py, which keeps them in the registry's database).

Their modules also create them (`create_all`) when they first run, so this revision creates only
what is absent: a registry that served a build of those features before this revision existed
upgrades without error.

Revision ID: 0004_access_keys_and_queues
Revises: 0003_leadership
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_access_keys_and_queues"
down_revision = "0003_leadership"
branch_labels = None
depends_on = None

TABLES = ("access_keys", "access_key_nonces", "queue_servers", "queue_items", "queue_seqs")


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "access_keys" not in present:
        op.create_table(
            "access_keys",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("secret", sa.Text, nullable=False),
            sa.Column("read_only", sa.Boolean, nullable=False),
            sa.Column("description", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
    if "access_key_nonces" not in present:
        op.create_table(
            "access_key_nonces",
            sa.Column("key_id", sa.String(64), primary_key=True),
            sa.Column("nonce", sa.String(128), primary_key=True),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
        op.create_index("ix_access_key_nonces_expires_at", "access_key_nonces", ["expires_at"])
    if "queue_servers" not in present:
        op.create_table(
            "queue_servers",
            sa.Column("service", sa.String(64), primary_key=True),
            sa.Column("url", sa.String(255), nullable=False),
            sa.Column("admin_url", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("heartbeat", sa.Float, nullable=False),
        )
    if "queue_items" not in present:
        op.create_table(
            "queue_items",
            sa.Column("service", sa.String(64), primary_key=True),
            sa.Column("queue", sa.String(16), primary_key=True),
            sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("request_id", sa.String(64), nullable=False),
            sa.Column("priority", sa.Integer, nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
            sa.Column("tags", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("state", sa.String(8), nullable=False),
            sa.Column("consumer", sa.String(128), nullable=False),
            sa.Column("claim", sa.String(40), nullable=False),
            sa.Column("lease_until", sa.Float, nullable=False),
            sa.Column("deliveries", sa.Integer, nullable=False),
        )
        op.create_index("ix_queue_items_request_id", "queue_items", ["request_id"])
    if "queue_seqs" not in present:
        op.create_table(
            "queue_seqs",
            sa.Column("service", sa.String(64), primary_key=True),
            sa.Column("queue", sa.String(16), primary_key=True),
            sa.Column("last", sa.BigInteger, nullable=False),
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
