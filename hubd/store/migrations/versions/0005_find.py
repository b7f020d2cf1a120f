"""Finding messages without a msg_id: the 发文字号 as a column, and indexes for look-ups by
sender, recipient, document number and time (``hubctl find``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

``doc_number`` is the header's 发文字号 of a document below 秘密 (CONFIDENTIAL); for a
state secret it stays NULL (hubd/engine/rows.py says why). Messages stored before this
revision have no number here: their frames are not decoded to fill it (a purged message has
no frame left, and a migration does not verify envelopes); they are found by sender,
recipient and time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NUMBERED = "doc_number IS NOT NULL"


def upgrade() -> None:
    op.add_column("messages", sa.Column("doc_number", sa.String(64)))
    op.create_index(
        "messages_by_doc_number",
        "messages",
        ["doc_number"],
        sqlite_where=sa.text(NUMBERED),
        postgresql_where=sa.text(NUMBERED),
    )
    op.create_index("messages_by_sender", "messages", ["sender", "received_at"])
    op.create_index("messages_by_received", "messages", ["received_at"])
    op.create_index("deliveries_by_recipient", "deliveries", ["recipient", "created_at"])


def downgrade() -> None:
    op.drop_index("deliveries_by_recipient", table_name="deliveries")
    op.drop_index("messages_by_received", table_name="messages")
    op.drop_index("messages_by_sender", table_name="messages")
    op.drop_index("messages_by_doc_number", table_name="messages")
    op.drop_column("messages", "doc_number")
