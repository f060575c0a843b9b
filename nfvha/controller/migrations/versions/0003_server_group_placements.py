"""Server groups shared by controllers (issue 10): ``server_group_placements``,
where each instance's messaging channel is, so a controller that starts
late or restarts routes at once.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # a store from before migrations got every table of store.py from its
    # fix-up (create_all), this one too: only make it if missing
    if "server_group_placements" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "server_group_placements",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("uuid", sa.String(64)),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_server_group_placements_host", "server_group_placements", ["host"])


def downgrade() -> None:
    op.drop_table("server_group_placements")
