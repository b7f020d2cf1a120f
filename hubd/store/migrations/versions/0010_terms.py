"""A document's terms: deadlines, reminders, handling reports (issue 16).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

A sender may set in its signed header when its recipients must sign for a document, decide
on a petition and handle it (schemas.terms). The hub keeps them on the message, with the
petition's case number and the drill mark, and ``terms_open`` while some recipient has yet
to meet one (the deadline desk reads only those: hubd.engine.deadlines). Each delivery keeps
its recipient's latest report of handling (已阅 READ, 办理中 HANDLING, 受理 CASE_ACCEPTED,
不予受理 CASE_DECLINED, 办结 DONE); ``reminders`` counts the reminders (催办) sent per
recipient and deadline. Messages stored before this revision have no terms.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OPEN = "terms_open"
CASED = "case_no IS NOT NULL"


def upgrade() -> None:
    for name in ("sign_by", "accept_by", "done_by"):
        op.add_column("messages", sa.Column(name, sa.BigInteger()))
    op.add_column("messages", sa.Column("case_no", sa.String(64)))
    for name in ("drill", "terms_open"):
        op.add_column(
            "messages",
            sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.text("false")),
        )
    op.create_index(
        "messages_terms_open",
        "messages",
        ["msg_id"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        "messages_by_case",
        "messages",
        ["case_no"],
        sqlite_where=sa.text(CASED),
        postgresql_where=sa.text(CASED),
    )
    op.add_column("deliveries", sa.Column("handling", sa.String(16)))
    op.add_column("deliveries", sa.Column("handled_at", sa.BigInteger()))
    op.create_table(
        "reminders",
        sa.Column("msg_id", sa.LargeBinary(16), primary_key=True),
        sa.Column("recipient", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reminders")
    op.drop_column("deliveries", "handled_at")
    op.drop_column("deliveries", "handling")
    op.drop_index("messages_by_case", table_name="messages")
    op.drop_index("messages_terms_open", table_name="messages")
    for name in ("terms_open", "drill", "case_no", "done_by", "accept_by", "sign_by"):
        op.drop_column("messages", name)
