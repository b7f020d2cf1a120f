"""Envelopes to large groups: each delivery keeps its recipient's slot with its proof.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

An envelope to more than 16 recipients names them in slots under a signed root
(schemas.slots; docs/wire-format.md, section 4a). The hub checks every slot when it admits
the envelope and sends each recipient only its own slot and inclusion proof, kept here
beside the delivery. A quarantined envelope has no deliveries: its message row keeps all
its slots instead (its frame names nobody). Messages stored before this revision name their
recipients in the header: both columns stay NULL for them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("slot", sa.LargeBinary()))
    op.add_column("messages", sa.Column("slots", sa.LargeBinary()))


def downgrade() -> None:
    op.drop_column("messages", "slots")
    op.drop_column("deliveries", "slot")
