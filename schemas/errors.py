"""One error family for the whole exchange, with machine reason codes.

Families (STYLE.md, "Errors"):

- ``PeerError``: bad input from a peer (decode, signature, schema, replay, directory).
  Each carries a :class:`Reason`; the hub copies it into the REJECTED receipt.
- ``UsageError``: our own misuse of an API (a programming error, never a peer's fault).
- ``TransportError``: the broker connection failed; retriable.
- ``StoreError``: the database failed; ``retriable`` says whether trying again can help.
- ``ClosedResourceError``: an adapter was used after it was closed.
- ``ConfigError``: a configuration file is wrong; the message names the file, the key
  path and the problem.

Routing refusals are values (decisions), not exceptions.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Machine reason codes. The value is stable and travels in REJECTED receipts."""

    # decoding, see schemas.codec
    DECODE_TOO_LARGE = "decode.too_large"
    DECODE_MALFORMED = "decode.malformed"
    DECODE_LIMIT = "decode.limit_exceeded"
    DECODE_TOO_DEEP = "decode.too_deep"
    DECODE_NON_CANONICAL = "decode.non_canonical"
    DECODE_FORBIDDEN_TYPE = "decode.forbidden_type"
    DECODE_TRAILING_BYTES = "decode.trailing_bytes"
    # structure of a decoded record
    SCHEMA_INVALID = "schema.invalid"
    SCHEMA_VERSION = "schema.unsupported_version"
    # the outer signature and the key that made it
    SIG_INVALID = "sig.invalid"
    SIG_UNKNOWN_SENDER = "sig.unknown_sender"
    SIG_UNKNOWN_KEY = "sig.unknown_key"
    SIG_KEY_REVOKED = "sig.key_revoked"
    SIG_KEY_NOT_YET_VALID = "sig.key_not_yet_valid"
    SIG_KEY_EXPIRED = "sig.key_expired"
    SIG_SENDER_MISMATCH = "sig.sender_mismatch"
    # the envelope's own consistency
    ENV_NO_RECIPIENT = "envelope.no_recipient"
    ENV_DUPLICATE_RECIPIENT = "envelope.duplicate_recipient"
    ENV_TOO_MANY_RECIPIENTS = "envelope.too_many_recipients"
    ENV_KEYS_MISMATCH = "envelope.recipient_keys_mismatch"
    ENV_NOT_A_RECIPIENT = "envelope.not_a_recipient"
    ENV_UNKNOWN_RECIPIENT = "envelope.unknown_recipient"
    ENV_RECIPIENT_AWAITING_KEYS = "envelope.recipient_awaiting_keys"
    ENV_KEY_UNSEAL_FAILED = "envelope.key_unseal_failed"
    ENV_BAD_LABEL = "envelope.bad_label"
    ENV_BAD_SLOTS = "envelope.bad_slots"  # a large group's recipient slots (schemas.slots)
    ENV_DEADLINE_PAST = "envelope.deadline_past"  # a deadline of its terms already passed
    ENV_CASE_NOT_HELD = "envelope.case_not_held"  # a petition case that never reached it
    ENV_EXTENSION_TOO_LONG = "envelope.extension_too_long"  # a petition's done_by, +30 days
    # the encrypted body
    BODY_SIZE_MISMATCH = "body.size_mismatch"
    BODY_HASH_MISMATCH = "body.hash_mismatch"
    BODY_DECRYPT_FAILED = "body.decrypt_failed"
    BODY_TRUNCATED = "body.truncated"
    BODY_MISSING_FINAL = "body.missing_final_chunk"
    BODY_TRAILING_DATA = "body.trailing_data"
    # the signed inner record
    INNER_MALFORMED = "inner.malformed"
    INNER_BAD_SIGNATURE = "inner.bad_signature"
    INNER_HEADER_MISMATCH = "inner.header_mismatch"
    INNER_FILE_DIGEST = "inner.file_digest_mismatch"
    # replay and time
    REPLAY_DUPLICATE = "replay.duplicate_msg_id"
    REPLAY_CLOCK_SKEW = "replay.clock_skew"
    REPLAY_EXPIRED = "replay.expired"
    # the directory
    DIR_BAD_SIGNATURE = "directory.bad_signature"
    DIR_ROLLBACK = "directory.rollback"
    DIR_EQUIVOCATION = "directory.equivocation"
    DIR_EXPIRED = "directory.expired"
    DIR_NOT_YET_VALID = "directory.not_yet_valid"
    DIR_INCONSISTENT = "directory.inconsistent"
    DIR_BAD_PROOF = "directory.bad_proof"
    # gating (decisions of the hub's router, ARCHITECTURE section 2)
    POLICY_SENDER_NOT_ON_CHANNEL = "policy.sender_not_on_channel"
    POLICY_ARRIVAL_CHANNEL = "policy.arrival_channel_below_label"
    POLICY_SENDER_CLEARANCE = "policy.sender_clearance"
    POLICY_RECIPIENT_CLEARANCE = "policy.recipient_clearance"
    POLICY_NO_CHANNEL = "policy.no_channel"
    # the hub's own state
    HUB_BUSY = "hub.busy"
    HUB_DISK_LOW = "hub.disk_low"  # below the disk watermark: retriable
    # receipts
    RCPT_BAD_SIGNATURE = "receipt.bad_signature"
    RCPT_WRONG_ISSUER = "receipt.wrong_issuer"
    # ledger checkpoints and proofs (schemas.ledger)
    LEDGER_BAD_SIGNATURE = "ledger.bad_signature"
    # flows on a document already sent (recall, return): the hub's REFUSED, the spoke's checks
    FLOW_UNKNOWN_MESSAGE = "flow.unknown_message"  # the hub holds no such document
    FLOW_NOT_SENDER = "flow.not_sender"  # only the sending organisation may recall
    FLOW_NOT_RECIPIENT = "flow.not_a_recipient"  # a statement about a document not addressed to it
    FLOW_NOT_RECEIVED = "flow.not_received"  # returned before it was delivered (or recalled)
    FLOW_NOT_RECALLED = "flow.not_recalled"  # an answer to a recall nobody made
    FLOW_WRONG_SUBJECT = "flow.wrong_subject"  # the statement names another frame of the message
    FLOW_ONE_PER_BATCH = "flow.one_per_batch"  # a flow statement travels alone in its batch
    FLOW_BAD_NOTE = "flow.bad_note"  # a note that does not open under the document's key
    FLOW_NOT_PETITION = "flow.not_a_petition"  # 受理 / 不予受理 of a document not a petition
    # Federation (hubs under hubs): what a hub refuses of what another hub relays
    FED_OUTSIDE_PREFIX = "federation.outside_prefix"  # a hub relays for an org it does not serve
    FED_MEMBERSHIP = "federation.membership_invalid"  # the relaying hub's key is revoked or expired
    FED_WRONG_HOP = "federation.wrong_hop"  # an outside org sending as if it were a spoke here
    FED_LOOP = "federation.loop"  # every recipient is behind the hub it came from


class XchgError(Exception):
    """Base of every error this project raises on purpose."""


class PeerError(XchgError):
    """A peer sent something we refuse. ``reason`` is the machine code for receipts."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"[{self.reason.value}] {self.message}"


class DecodeError(PeerError):
    """Bytes that are not a canonical, size-limited msgpack record of the expected shape."""


class SchemaError(PeerError):
    """A decoded record whose fields are wrong (type, range, missing, extra)."""


class SignatureError(PeerError):
    """A signature that does not verify, or a key that may not sign now."""


class EnvelopeError(PeerError):
    """An envelope that is inconsistent, cannot be opened, or whose body is damaged."""


class ReplayError(PeerError):
    """A message seen before, or outside the accepted time window."""


class DirectoryError(PeerError):
    """A directory that is forged, older than one already seen, or expired."""


class UsageError(XchgError):
    """We called our own API wrongly: a bug, never a peer's fault."""


class TransportError(XchgError):
    """The broker connection failed. Retriable."""


class StoreError(XchgError):
    """The store failed."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class ClosedResourceError(XchgError):
    """An adapter was used after it was closed."""


class ConfigError(XchgError):
    """A configuration file is wrong. Each problem names the file, the key path and what."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        lines = [
            f"{source}: {path}: {problem}" if path else f"{source}: {problem}"
            for path, problem in problems
        ]
        super().__init__("\n".join(lines))
        self.source = source
        self.problems = problems
