"""Hubs under hubs: where this hub stands in each neighbour hub's numbered receipts (issue 17).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

A hub numbers the receipt batches it sends an organisation on a channel (receipt_outbox);
a neighbour hub (a member, or the upstream) is sent them the same way, and must say which
it holds, as a spoke's hello does. ``hop_cursors`` keeps, per neighbour and channel, the
highest number up to which this hub has recorded every batch: what it says in its hello
after a restart, so the neighbour sends again only what follows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hop_cursors",
        sa.Column("peer", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("set_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hop_cursors")
