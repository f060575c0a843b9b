"""Recovery (issue 8): ``recovery``, one loop-protection row per instance,
and ``actions``, one record per fault the recovery sink handled.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # A store from before migrations had every table of store.py made by
    # its fix-up (create_all), these too: only make what is missing.
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "recovery" not in have:
        op.create_table(
            "recovery",
            sa.Column("instance_uuid", sa.String(64), primary_key=True),
            sa.Column("action_times", sa.JSON, nullable=False),
            sa.Column("paused", sa.Boolean, nullable=False),
            sa.Column("paused_reason", sa.Text),
            sa.Column("exhausted", sa.Boolean, nullable=False),
            sa.Column("exhausted_at", Timestamp),
            sa.Column("updated_at", Timestamp, nullable=False),
        )
    if "actions" not in have:
        op.create_table(
            "actions",
            sa.Column("event_id", sa.String(64), primary_key=True),
            sa.Column("instance_uuid", sa.String(64), nullable=False),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("action", sa.String(16)),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("issued_at", Timestamp),
            sa.Column("done_at", Timestamp),
            sa.Column("recovered_at", Timestamp),
            sa.Column("recovery_ms", sa.Integer),
        )
        op.create_index("ix_actions_instance_uuid", "actions", ["instance_uuid"])
        op.create_index("ix_actions_status", "actions", ["status"])


def downgrade() -> None:
    op.drop_table("actions")
    op.drop_table("recovery")
