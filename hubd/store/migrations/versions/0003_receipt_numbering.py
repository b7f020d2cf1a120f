"""Receipt numbering floors: where a (destination, channel) numbering must continue.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

A spoke keeps the highest receipt-batch number it holds and ignores numbers at or below
it. A store restored from a backup (or one that lost its tail) would number new batches
again from where the backup stood, and the spoke would take them for repeats. When a
spoke's hello names a number above the store's own, the hub records it here and numbers
after it, across restarts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_numbering",
        sa.Column("dest", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("floor", sa.BigInteger, nullable=False),
        sa.Column("set_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("receipt_numbering")
