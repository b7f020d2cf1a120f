"""The hub's tables (SQLAlchemy Core). Schema changes go through Alembic (hubd/store/migrations).

Times are integer milliseconds since the Unix epoch, as on the wire. Labels are stored
by rank (``Classification.rank``) so that SQL can compare them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class Blob(TypeDecorator[bytes]):
    """LargeBinary without a per-value bind conversion: both drivers take bytes as they are
    (SQLAlchemy's would wrap every value, a measurable cost per row in a group commit)."""

    impl = LargeBinary
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:  # noqa: ARG002 - same for every dialect
        return None


ID = String(64)  # org and channel ids (schemas.ids: at most 64 ASCII characters)

messages = Table(
    "messages",
    metadata,
    Column("msg_id", Blob(16), primary_key=True),  # unique forever: replay defence
    Column("sender", ID, nullable=False),
    Column("classification", SmallInteger, nullable=False),
    Column("precedence", SmallInteger, nullable=False),
    Column("doc_type", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("received_at", BigInteger, nullable=False),
    Column("arrival_channel", ID, nullable=False),
    Column("state", String(16), nullable=False),  # ACCEPTED | QUARANTINED
    Column("reason", String(64)),  # why it is quarantined
    Column("frame", Blob),  # the exact signed envelope frame; None once purged
    Column("frame_sha256", Blob(32), nullable=False),  # kept for ever, as the ledger's
    Column("body_size", BigInteger, nullable=False),
    Column("body", Blob),  # small bodies inline ...
    Column("body_path", Text),  # ... large ones in the spool folder
    Column("purged_at", BigInteger),  # when retention removed frame and body (engine.retention)
    # 发文字号 below 秘密 only; NULL for a state secret (hubd/engine/rows.py) or none given
    Column("doc_number", String(64)),
    # a quarantined envelope's recipient slots (schemas.slots): it has no deliveries to keep
    # them, and its frame names nobody; the evidence of whom it was for
    Column("slots", Blob),
    # its terms (schemas.terms, migration 0010): deadlines, a petition's case, a drill
    Column("sign_by", BigInteger),  # 签收时限
    Column("accept_by", BigInteger),  # 受理时限 (a petition)
    Column("done_by", BigInteger),  # 办理时限
    Column("case_no", String(64)),  # 信访件编号
    Column("drill", Boolean, nullable=False, server_default=text("false")),  # 演练
    # a deadline some recipient has yet to meet: the deadline desk reads it (engine.deadlines)
    Column("terms_open", Boolean, nullable=False, server_default=text("false")),
    # Retention's candidates: what is not yet purged, oldest first.
    Index(
        "messages_unpurged",
        "received_at",
        sqlite_where=text("purged_at IS NULL"),
        postgresql_where=text("purged_at IS NULL"),
    ),
    # hubctl find: by number, by sender and time, by time
    Index(
        "messages_by_doc_number",
        "doc_number",
        sqlite_where=text("doc_number IS NOT NULL"),
        postgresql_where=text("doc_number IS NOT NULL"),
    ),
    Index(
        "messages_terms_open",
        "msg_id",
        sqlite_where=text("terms_open"),
        postgresql_where=text("terms_open"),
    ),
    Index(
        "messages_by_case",
        "case_no",
        sqlite_where=text("case_no IS NOT NULL"),
        postgresql_where=text("case_no IS NOT NULL"),
    ),
    Index("messages_by_sender", "sender", "received_at"),
    Index("messages_by_received", "received_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("msg_id", Blob(16), ForeignKey("messages.msg_id"), primary_key=True),
    Column("recipient", ID, primary_key=True),
    Column("channel", ID, nullable=False),
    Column("precedence", SmallInteger, nullable=False),
    Column("state", String(16), nullable=False),  # hubd.core.states.DeliveryState
    Column("attempts", Integer, nullable=False),
    Column("expires_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # a large group's envelope: this recipient's slot with its proof (schemas.slots)
    Column("slot", Blob),
    # its latest report of handling (hubd.core.deadlines.Handling: READ ... DONE) and when
    Column("handling", String(16)),
    Column("handled_at", BigInteger),
    Index("deliveries_by_state", "state", "recipient"),
    Index("deliveries_by_recipient", "recipient", "created_at"),  # hubctl find --to
)

# Reminders (催办) sent per recipient and deadline (hubd.engine.deadlines): how many, the last.
reminders = Table(
    "reminders",
    metadata,
    Column("msg_id", Blob(16), primary_key=True),
    Column("recipient", ID, primary_key=True),
    Column("kind", String(16), primary_key=True),  # sign_by | accept_by | done_by
    Column("count", Integer, nullable=False),
    Column("last_at", BigInteger, nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("msg_id", Blob(16)),  # None when the refused bytes had no readable msg_id
    Column("recipient", ID),
    Column("status", String(16), nullable=False),
    Column("issuer", ID, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("subject", Blob(32), nullable=False),
    Column("batch_sha256", Blob(32), nullable=False),
    Index("receipts_by_msg", "msg_id"),
)

receipt_batches = Table(
    "receipt_batches",
    metadata,
    Column("sha256", Blob(32), primary_key=True),
    Column("issuer", ID, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("frame", Blob, nullable=False),  # the exact signed batch
)

# Receipt batches waiting to reach an organisation, numbered per (destination, channel).
# A spoke's "hello" carries the last number it holds; everything after it is resent.
receipt_outbox = Table(
    "receipt_outbox",
    metadata,
    Column("dest", ID, primary_key=True),
    Column("channel", ID, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("frame", Blob, nullable=False),
)

# Where a numbering must continue when a spoke holds numbers the store never wrote (a store
# restored from a backup): the next number is above both this floor and the outbox's max.
receipt_numbering = Table(
    "receipt_numbering",
    metadata,
    Column("dest", ID, primary_key=True),
    Column("channel", ID, primary_key=True),
    Column("floor", BigInteger, nullable=False),
    Column("set_at", BigInteger, nullable=False),
)

# Hubs under hubs: per neighbour hub and channel, the number up to which every receipt
# batch it numbered for this hub is recorded (hubd.store.hopcursors; migration 0011).
hop_cursors = Table(
    "hop_cursors",
    metadata,
    Column("peer", ID, primary_key=True),
    Column("channel", ID, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("set_at", BigInteger, nullable=False),
)

# Append-only; each row carries the hash of the one before (hubd/store/audit.py).
audit = Table(
    "audit",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", BigInteger, nullable=False),
    Column("event", String(48), nullable=False),
    Column("msg_id", Blob(16)),
    Column("org", ID),
    Column("detail", Text, nullable=False),  # JSON; never a title, never content
    Column("prev_hash", Blob(32), nullable=False),
    Column("hash", Blob(32), nullable=False),
    Index("audit_by_msg", "msg_id"),
)

# The ledger as an RFC 9162 Merkle tree over the audit rows (leaf seq - 1; schemas.ledger):
# the hashes of its perfect subtrees of level >= 1, written in the commit that completes
# them (leaves are recomputed from their audit rows), keyed by hubd.store.ledger.node_key.
ledger_nodes = Table(
    "ledger_nodes",
    metadata,
    Column("pos", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", Blob(32), nullable=False),
)

# Signed checkpoints of that tree, as published (the frame is what spokes hold).
ledger_checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", Blob(32), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("kid", String(16), nullable=False),
    Column("frame", Blob, nullable=False),
)

# Witnesses' countersignatures of checkpoints they verified (schemas.ledger.cosign).
ledger_cosignatures = Table(
    "ledger_cosignatures",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("org", ID, primary_key=True),
    Column("kid", String(16), nullable=False),
    Column("sig", Blob(64), nullable=False),
    Column("at", BigInteger, nullable=False),
)

# Hub replicas on one PostgreSQL store (hubd.store.leases, docs/architecture.md "Replicas and
# leases"). Times here are the database's clock, never a replica's.
hub_replicas = Table(
    "hub_replicas",
    metadata,
    Column("id", ID, primary_key=True),  # one per process run
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),  # its last heartbeat
    Column("expires_at", BigInteger, nullable=False),  # live while this is ahead of now
    # {"configured": [...], "reached": [...]}: its channels and those whose brokers it
    # reaches, JSON (migration 0009; NULL: not said)
    Column("reach", Text),
)

# One row per bucket (hubd.core.leases.bucket_of), written by the first replica to join.
hub_leases = Table(
    "hub_leases",
    metadata,
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("holder", ID),  # a hub_replicas id; NULL once released
    Column("token", BigInteger, nullable=False),  # + 1 on every claim: the fencing token
    Column("acquired_at", BigInteger, nullable=False),  # when the holder claimed it
    Column("renewed_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # a released lease: when released
)

# The shared spool (hubd.store.sharedspool): large bodies kept in the store when hubd runs
# as one of several replicas. A transfer under way, and how many body bytes the store holds
# of it (the compare-and-set every append goes through) ...
spool_transfers = Table(
    "spool_transfers",
    metadata,
    Column("msg_id", Blob(16), primary_key=True),
    Column("channel", ID, nullable=False),
    Column("org", ID, nullable=False),  # the sender
    Column("frame", Blob, nullable=False),  # the verified envelope frame
    Column("slots", Blob),  # a large group's recipient slots (schemas.slots)
    Column("received", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=False),
)

# ... and the body, partial or finished, in pieces of at most transport.CHUNK_BYTES.
spool_pieces = Table(
    "spool_pieces",
    metadata,
    Column("msg_id", Blob(16), primary_key=True),
    Column("offset", BigInteger, primary_key=True, autoincrement=False),
    Column("data", Blob, nullable=False),
)
