"""The first tables: messages, deliveries, receipts, receipt outbox, audit ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("msg_id", sa.LargeBinary(16), primary_key=True),
        sa.Column("sender", ID, nullable=False),
        sa.Column("classification", sa.SmallInteger, nullable=False),
        sa.Column("precedence", sa.SmallInteger, nullable=False),
        sa.Column("doc_type", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("arrival_channel", ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("frame", sa.LargeBinary, nullable=False),
        sa.Column("frame_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("body_size", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.Column("body_path", sa.Text),
    )
    op.create_table(
        "deliveries",
        sa.Column("msg_id", sa.LargeBinary(16), sa.ForeignKey("messages.msg_id"), primary_key=True),
        sa.Column("recipient", ID, primary_key=True),
        sa.Column("channel", ID, nullable=False),
        sa.Column("precedence", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("deliveries_by_state", "deliveries", ["state", "recipient"])
    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("msg_id", sa.LargeBinary(16)),
        sa.Column("recipient", ID),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issuer", ID, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.LargeBinary(32), nullable=False),
        sa.Column("batch_sha256", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("receipts_by_msg", "receipts", ["msg_id"])
    op.create_table(
        "receipt_batches",
        sa.Column("sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column("issuer", ID, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("frame", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "receipt_outbox",
        sa.Column("dest", ID, primary_key=True),
        sa.Column("channel", ID, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("frame", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(48), nullable=False),
        sa.Column("msg_id", sa.LargeBinary(16)),
        sa.Column("org", ID),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("audit_by_msg", "audit", ["msg_id"])


def downgrade() -> None:
    for index, table in (("audit_by_msg", "audit"), ("receipts_by_msg", "receipts"),
                         ("deliveries_by_state", "deliveries")):  # fmt: skip
        op.drop_index(index, table_name=table)
    for table in ("audit", "receipt_outbox", "receipt_batches", "receipts", "deliveries",
                  "messages"):  # fmt: skip
        op.drop_table(table)
