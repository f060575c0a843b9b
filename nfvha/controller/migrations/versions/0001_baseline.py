"""Baseline: the store as nfvha 0.1 made it (instances, events, deliveries,
server_groups).

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# MariaDB's DATETIME drops microseconds unless fsp=6 is asked for.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("health", sa.String(16)),
        sa.Column("interval_ms", sa.Integer),
        sa.Column("corrective_action", sa.String(32)),
        sa.Column("facts", sa.JSON),
        sa.Column("state_at", Timestamp),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("instance_uuid", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("corrective_action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("detected_at", Timestamp, nullable=False),
        sa.Column("detected_mono", sa.Float),
        sa.Column("received_at", Timestamp, nullable=False),
    )
    op.create_index("ix_events_instance_uuid", "events", ["instance_uuid"])
    op.create_index("ix_events_received_at", "events", ["received_at"])
    op.create_table(
        "deliveries",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("sink", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("delivered_at", Timestamp),
        sa.Column("owner", sa.String(128)),
        sa.Column("lease_until", Timestamp),
    )
    op.create_table(
        "server_groups",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("members", sa.JSON, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    for table in ("server_groups", "deliveries", "events", "instances"):
        op.drop_table(table)
