"""The ledger as a Merkle tree: perfect-subtree hashes, signed checkpoints, cosignatures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

The audit rows stay as they are (and keep their hash chain); the tree is built over them
(leaf ``seq - 1`` is ``canon[seq, at, event, msg_id, org, detail]``, schemas.ledger). A
store that already holds audit rows gets its tree's nodes here, in one pass.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_nodes",
        sa.Column("pos", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("frame", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_cosignatures",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("org", sa.String(64), primary_key=True),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("sig", sa.LargeBinary, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    from hubd.store.ledger import build_nodes  # noqa: PLC0415 - the tree's own code, once

    build_nodes(op.get_bind())


def downgrade() -> None:
    op.drop_table("ledger_cosignatures")
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_nodes")
