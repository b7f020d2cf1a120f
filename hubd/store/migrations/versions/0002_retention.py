"""Retention: a message's frame may be removed (nullable), and when it was (purged_at).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

PostgreSQL drops the NOT NULL in place. SQLite cannot: it rebuilds the table. The usual
rebuild (copy, drop the old table, rename the copy) needs foreign keys turned off, which
SQLite only allows outside a transaction, and the hub migrates inside one (with foreign
keys on, from its connect hook). So ``messages`` and the one table that refers to it,
``deliveries``, are rebuilt together in an order that never orphans a row: copies first
(the deliveries' copy referring to the messages' copy), then the originals dropped child
first, then the copies renamed (SQLite rewrites the reference on rename). Everything is one
transaction: a failure leaves the store at 0001, untouched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(64)
UNPURGED = "purged_at IS NULL"


def _messages(*, purgeable: bool) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [
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
        sa.Column("frame", sa.LargeBinary, nullable=purgeable),
        sa.Column("frame_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("body_size", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.Column("body_path", sa.Text),
    ]
    if purgeable:
        columns.append(sa.Column("purged_at", sa.BigInteger))
    return columns


def _deliveries(parent: str) -> list[sa.Column[object]]:
    return [
        sa.Column(
            "msg_id", sa.LargeBinary(16), sa.ForeignKey(f"{parent}.msg_id"), primary_key=True
        ),
        sa.Column("recipient", ID, primary_key=True),
        sa.Column("channel", ID, nullable=False),
        sa.Column("precedence", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    ]


def _rebuild_sqlite(*, purgeable: bool) -> None:
    """messages (and deliveries, which refers to it) with the frame nullable or not."""
    message_columns = [c.name for c in _messages(purgeable=False)]
    delivery_columns = [c.name for c in _deliveries("messages")]
    op.drop_index("deliveries_by_state", table_name="deliveries")
    op.create_table("_messages_new", *_messages(purgeable=purgeable))
    listed = ", ".join(message_columns)
    op.execute(f"INSERT INTO _messages_new ({listed}) SELECT {listed} FROM messages")  # noqa: S608 - fixed names
    op.create_table("_deliveries_new", *_deliveries("_messages_new"))
    listed = ", ".join(delivery_columns)
    op.execute(f"INSERT INTO _deliveries_new ({listed}) SELECT {listed} FROM deliveries")  # noqa: S608 - fixed names
    op.drop_table("deliveries")  # the child first: dropping it orphans nothing
    op.drop_table("messages")  # nothing refers to it now
    op.rename_table("_messages_new", "messages")  # _deliveries_new's reference follows
    op.rename_table("_deliveries_new", "deliveries")
    op.create_index("deliveries_by_state", "deliveries", ["state", "recipient"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(purgeable=True)
    else:
        op.alter_column("messages", "frame", existing_type=sa.LargeBinary, nullable=True)
        op.add_column("messages", sa.Column("purged_at", sa.BigInteger))
    op.create_index(
        "messages_unpurged",
        "messages",
        ["received_at"],
        sqlite_where=sa.text(UNPURGED),
        postgresql_where=sa.text(UNPURGED),
    )


def downgrade() -> None:
    bind = op.get_bind()
    purged = bind.execute(sa.text("SELECT count(*) FROM messages WHERE frame IS NULL")).scalar()
    if purged:
        raise RuntimeError(
            f"cannot go back to revision 0001: {purged} messages have been purged by retention "
            "and 0001 requires every message to keep its frame"
        )
    op.drop_index("messages_unpurged", table_name="messages")
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite(purgeable=False)
    else:
        op.drop_column("messages", "purged_at")
        op.alter_column("messages", "frame", existing_type=sa.LargeBinary, nullable=False)
