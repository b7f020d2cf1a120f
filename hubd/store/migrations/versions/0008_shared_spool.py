"""The shared spool: large bodies kept in the store, so every replica can read them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

With several hubd replicas on one PostgreSQL store (issue 15), a transfer begun on one
replica may be continued on another (the first died; the sender's organisation moved), and
a finished body may be delivered by any replica. ``spool_transfers`` holds a transfer under
way (the verified frame, a large group's slots, where it came from, and how many body
bytes the store holds: the compare-and-set that keeps two replicas from appending the same
bytes twice); ``spool_pieces`` holds the body in pieces of at most transport.CHUNK_BYTES,
keyed by (msg_id, offset), partial or finished. A single hub (SQLite, or one PostgreSQL
hub) keeps its spool folder and leaves these tables empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spool_transfers",
        sa.Column("msg_id", sa.LargeBinary(16), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("frame", sa.LargeBinary(), nullable=False),
        sa.Column("slots", sa.LargeBinary()),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "spool_pieces",
        sa.Column("msg_id", sa.LargeBinary(16), primary_key=True),
        sa.Column("offset", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spool_pieces")
    op.drop_table("spool_transfers")
