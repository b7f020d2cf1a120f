"""Hub replicas and their leases: who reads which organisations' up topics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Several hubd processes may share one PostgreSQL store (issue 15). Organisations are
hashed into 256 buckets (hubd.core.leases.bucket_of); each bucket has one lease row with
its holder, a fencing token and its expiry by the database's clock. The first replica to
join writes the rows (INSERT ... ON CONFLICT DO NOTHING, so replicas joining at once
agree); from then on claiming is always an UPDATE of an existing row. ``hub_replicas``
lists the running replicas and their heartbeats. On SQLite the one hub of the state
folder holds every bucket (hubd.store.leases).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_replicas",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "hub_leases",
        sa.Column("bucket", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hub_leases")
    op.drop_table("hub_replicas")
