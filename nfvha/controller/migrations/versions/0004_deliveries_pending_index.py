"""An index for the lease passes: every controller looks for pending
deliveries (its own, or ones it may claim) five times a second, which
without it scanned every delivery ever made.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ix_deliveries_status_owner"


def upgrade() -> None:
    # a store from before migrations got it from its fix-up (create_all)
    have = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("deliveries")}
    if NAME not in have:
        op.create_index(NAME, "deliveries", ["status", "owner"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="deliveries")
