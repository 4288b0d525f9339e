"""Registry tables. Plain SQLAlchemy Core types so PostgreSQL runs the same schema."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()

# One row per service. `spec` is the validated EAS JSON; `token` is kept beside it because the
# gateway needs the secret itself to check the SDK's HMAC signature.
services = Table(
    "services",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("token", String(256), nullable=False),
    Column("gateway", String(64), nullable=False),
    Column("desired", String(16), nullable=False),  # running | stopped
    Column("status", String(16), nullable=False),  # Running | Waiting | Scaling | Stopped | Failed
    Column("message", Text, nullable=False, default=""),
    Column("revision", Integer, nullable=False),  # bumps on every spec change
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row per instance the reconciler started. Gateways route only to rows with state "ready".
instances = Table(
    "instances",
    metadata,
    Column("id", String(96), primary_key=True),
    Column("service", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("pid", Integer, nullable=True),
    Column("state", String(16), nullable=False),  # starting | ready | unready | failed | stopping
    Column("restarts", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False, default=""),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Gateways (the shared one and dedicated ones). `spec` holds listeners and policies as JSON.
gateways = Table(
    "gateways",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Service groups (metadata.group). Added alongside the other tables: the row carries what the
# group itself owns in EAS (its token, traffic mode and member weights); members are the services
# whose spec names the group. `weights` is a JSON object {service: int -1..1000}.
groups = Table(
    "groups",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("token", String(256), nullable=False),
    Column("traffic_mode", String(16), nullable=False),  # auto | customized
    Column("weights", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Service versions: every create and every modify that changes the spec (other than the instance
# count) keeps the spec it set, for `openeas versions` and rollbacks. Deleted with the service.
service_versions = Table(
    "service_versions",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("spec", Text, nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

# What each change-feed version changed: one row per (version, kind, name), kind "service",
# "gateway" or "group" (an instance row change is recorded as its service's), or "all" for a write
# that names nothing (readers then rebuild whole). Old rows are pruned; a reader that fell behind
# the oldest kept row rebuilds whole too (store/registry.py: changes_since).
changes = Table(
    "changes",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", String(96), primary_key=True),
)

# Gateway replicas: every running replica of a gateway (shared or dedicated), on any machine,
# registers here and heartbeats. `addresses` is a JSON object {"internet": "h:p", "vpc": "h:p"};
# times are the database's clock (replicas on machines with skewed clocks are judged alike).
gateway_replicas = Table(
    "gateway_replicas",
    metadata,
    Column("name", String(96), primary_key=True),
    Column("gateway", String(64), nullable=False, index=True),
    Column("addresses", Text, nullable=False),
    Column("metrics_address", String(255), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

# Change feed: `version` increases with every committed write that a gateway cares about.
meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
