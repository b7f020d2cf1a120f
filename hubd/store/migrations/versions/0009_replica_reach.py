"""Each replica says which channels' brokers it reaches.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A replica cut off from one channel's broker while another replica reaches every channel
gives its organisations to the others (hubd.core.leases.sharing): otherwise nobody reads
their up topics on that channel until its link is back. ``hub_replicas.reach`` is a JSON
object, ``{"configured": [...], "reached": [...]}``: the replica's channels and those
whose brokers it reaches, written with every heartbeat; NULL for a replica that does not
say (it is then compared with no one).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hub_replicas", sa.Column("reach", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("hub_replicas", "reach")
