"""The envelope header and its verification (ARCHITECTURE section 4; docs/wire-format.md).

Byte layout::

    frame = canon{"v": 1, "from": sender, "kid": sender_kid, "hdr": bin, "sig": bin64}
    hdr   = canon{"core": bin, "body": {"size", "chunk", "sha256"}}
    core  = canon(Header)                 # routing metadata and the sealed file keys
    sig   = Ed25519(sender, "xchg/v1/hdr\\0" || hdr)

A header of ``v`` 2 (more than 16 recipients) names none of them: ``to``, ``cc``, ``keys``
and ``copy_numbers`` are empty and ``recipients = {root, count}`` signs the tree of their
slots (schemas.slots). The hub receives every slot beside the frame, a recipient only its
own with its proof; :func:`verify_envelope` checks them and returns the header as that
reader sees it: every recipient (the hub), or the one reading (a recipient).

``from`` and ``kid`` only select the verifying key; once the signature verifies they must
equal ``core.sender`` and ``core.sender_kid``. The body ciphertext is bound to ``core``
(its AEAD associated data is ``SHA-256("xchg/v1/body\\0" || core)``) and ``hdr`` binds the
ciphertext by size and SHA-256, so the hub can authenticate everything it routes without
any decryption key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from schemas import codec
from schemas.clock import ms_to_text
from schemas.directory import Directory, Millis, awaiting_keys_sentence
from schemas.errors import EnvelopeError, Reason, ReplayError, SchemaError, SignatureError
from schemas.ids import KeyId, MsgIdBytes, OrgId, check_key_id, check_org_id, msg_id_text
from schemas.keys import DOMAIN_BODY_AAD, DOMAIN_HEADER, verify_signature
from schemas.labels import SecrecyPeriod
from schemas.model import (
    MAX_WIRE_INT,
    HeaderVersion,
    WireClassification,
    WireDocType,
    WireModel,
    WirePrecedence,
)
from schemas.slots import MAX_SLOTS, Recipients, Slot, SlotsRef, read_part
from schemas.terms import Terms, terms_problem

CHUNK_PLAIN: Final = 65536  # plaintext bytes per AEAD chunk (all but the last)
STREAM_HEADER_BYTES = 24  # libsodium secretstream header
CHUNK_OVERHEAD = 17  # secretstream tag + MAC per chunk
MAX_RECIPIENTS = 1000
SEALED_KEY_BYTES = 80  # 32-byte file key in an X25519 sealed box
COPY_NUMBER_PATTERN = r"^[0-9]{6}$"  # 份号: six digits, one per recipient

Label = Annotated[str, Field(min_length=1, max_length=64)]


class RecipientKey(WireModel):
    """The file key sealed to one recipient's encryption key ``kid``."""

    kid: KeyId
    box: Annotated[bytes, Field(min_length=SEALED_KEY_BYTES, max_length=SEALED_KEY_BYTES)]


class Header(WireModel):
    """Routing metadata the hub may see. Never a title, never content."""

    v: HeaderVersion
    msg_id: MsgIdBytes
    sender: OrgId
    sender_kid: KeyId
    to: Annotated[tuple[OrgId, ...], Field(max_length=MAX_RECIPIENTS)]
    cc: Annotated[tuple[OrgId, ...], Field(max_length=MAX_RECIPIENTS)]
    classification: WireClassification
    precedence: WirePrecedence
    doc_type: WireDocType
    created_at: Millis
    expires_at: Millis | None
    in_reply_to: MsgIdBytes | None
    dir_version: Annotated[int, Field(ge=1, le=MAX_WIRE_INT)]
    doc_number: Label | None  # 发文字号, printed on the envelope by GB/T 9704
    signatory: Label | None  # 签发人, required on upward documents
    secrecy_period: Label | None  # 保密期限 in wire form: 1y, 6m, 30d, long
    copy_numbers: dict[OrgId, Annotated[str, Field(pattern=COPY_NUMBER_PATTERN)]]
    directive: bool  # a directive (指令性) document, for the document rules
    keys: dict[OrgId, RecipientKey]
    slots: SlotsRef | None = None  # v2 only: the root and count of the recipients' slots
    terms: Terms | None = None  # only when the sender set deadlines or marks (schemas.terms)

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, what: str) -> Header:
        if "terms" in data and data["terms"] is None:
            raise SchemaError(
                Reason.SCHEMA_INVALID,
                f"{what}: terms: a header without terms leaves the key out (not nil)",
            )
        return super().from_wire(data, what=what)

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.slots is None:
            del wire["slots"]  # a v1 header is exactly what it was before slots existed
        if self.terms is None:
            del wire["terms"]  # and one without terms what it was before terms existed
        return wire

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc

    @property
    def recipient_count(self) -> int:
        """How many recipients the sender addressed (a v2 reader may see only itself)."""
        return len(self.recipients) if self.slots is None else self.slots.count

    @property
    def msg_id_text(self) -> str:
        return msg_id_text(self.msg_id)


class BodyDescriptor(WireModel):
    """Size and SHA-256 of the body ciphertext, and the plaintext chunk size."""

    size: Annotated[int, Field(ge=STREAM_HEADER_BYTES + CHUNK_OVERHEAD + 1, le=MAX_WIRE_INT)]
    chunk: Literal[65536]
    sha256: Annotated[bytes, Field(min_length=32, max_length=32)]

    @property
    def chunk_count(self) -> int:
        stream = self.size - STREAM_HEADER_BYTES
        return -(-stream // (self.chunk + CHUNK_OVERHEAD))

    @property
    def plaintext_size(self) -> int:
        return self.size - STREAM_HEADER_BYTES - CHUNK_OVERHEAD * self.chunk_count


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """An envelope whose outer signature verified and whose header is consistent."""

    frame: bytes  # the exact bytes received
    hdr: bytes
    core: bytes
    header: Header
    body: BodyDescriptor
    sender_public: bytes
    digest: bytes  # SHA-256 of ``frame``: what receipts speak of
    # v2 only: every slot, checked (the hub's view) ...
    slots: Recipients | None = None
    # ... or the reading recipient's own slot with its proof, as delivered
    part: bytes | None = None

    parts: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def part_for(self, org: str) -> bytes | None:
        """What recipient ``org`` receives beside the frame (None: a v1 envelope); each
        computed once (the store's row and the dispatcher's job take the same bytes)."""
        if self.slots is None:
            return None
        part = self.parts.get(org)
        if part is None:
            part = self.parts[org] = self.slots.part(org)
        return part

    def part_on_way(self, org: str, via: str | None) -> bytes | None:
        """What goes beside the frame towards ``org``: its own part, or, when it goes on
        through another hub (``via``), every slot (that hub checks them all against the
        signed root, as this one did, and delivers the parts of its own recipients)."""
        if via is None or self.slots is None:
            return self.part_for(org)
        blob = self.parts.get("")  # no organisation has an empty id
        if blob is None:
            blob = self.parts[""] = self.slots.blob()
        return blob

    @property
    def aad(self) -> bytes:
        return body_aad(self.core)


def body_aad(core: bytes) -> bytes:
    """Associated data of every body chunk: binds the ciphertext to this header core."""
    return hashlib.sha256(DOMAIN_BODY_AAD + core).digest()


def encode_frame(sender: str, kid: str, hdr: bytes, sig: bytes) -> bytes:
    return codec.encode({"v": 1, "from": sender, "kid": kid, "hdr": hdr, "sig": sig})


def read_frame_sender(frame: bytes) -> tuple[str, str, bytes, bytes]:
    """Decode the outer frame only: (from, kid, hdr, sig). Nothing inside is trusted yet."""
    outer = codec.decode_frame(
        frame, codec.FRAME_LIMITS, {"from": str, "kid": str, "hdr": bytes, "sig": bytes}
    )
    sender, kid, hdr, sig = outer["from"], outer["kid"], outer["hdr"], outer["sig"]
    try:
        check_org_id(sender, what="envelope 'from'")
        check_key_id(kid)
    except ValueError as exc:
        raise SchemaError(Reason.SCHEMA_INVALID, str(exc)) from exc
    return sender, kid, hdr, sig


def verify_envelope(
    frame: bytes,
    directory: Directory,
    *,
    expected_sender: str | None = None,
    recipient: str | None = None,
    slots: bytes | None = None,
    relayed_by: str | None = None,
) -> VerifiedEnvelope:
    """Authenticate an envelope with no decryption key (the hub's view; with
    ``recipient``, that recipient's: the sealed keys of the others are the hub's to check,
    and a recipient need not hold their directory entries).

    Order: size and outer decode -> the key of ``from``/``kid`` from the directory ->
    Ed25519 over the exact ``hdr`` bytes -> only then decode ``hdr`` and ``core`` ->
    ``from``, ``kid`` and ``expected_sender`` (the MQTT topic's owner) equal the signed
    sender -> the key was valid at the signed ``created_at`` -> a v2 header's ``slots``
    (every slot for the hub, the recipient's own part for ``recipient``) against the
    signed root -> header consistency.
    """
    sender, kid, hdr, sig = read_frame_sender(frame)
    if expected_sender is not None and sender != expected_sender:
        raise SignatureError(
            Reason.SIG_SENDER_MISMATCH,
            f"envelope claims sender {sender} but arrived on the topic of {expected_sender}; "
            f"if {expected_sender} did not send it, someone is publishing with its broker "
            "credentials: tell the hub operator",
        )
    if directory.is_hub(sender):
        raise SignatureError(
            Reason.SIG_UNKNOWN_SENDER,
            f"{sender} is a hub; hubs sign receipts and directories, never envelopes",
        )
    key = directory.signing_key_entry(sender, kid)
    if not verify_signature(key.public, DOMAIN_HEADER, hdr, sig):
        raise SignatureError(
            Reason.SIG_INVALID,
            f"header signature does not verify with key {kid} of {sender}; "
            "the envelope was altered or not signed by its sender",
        )
    outer_hdr = codec.decode_map(hdr, codec.HDR_LIMITS)
    if set(outer_hdr) != {"core", "body"} or type(outer_hdr["core"]) is not bytes:
        raise SchemaError(Reason.SCHEMA_INVALID, "hdr must be {core: bin, body: map}")
    core = outer_hdr["core"]
    header = Header.from_wire(codec.decode_map(core, codec.HEADER_LIMITS), what="header")
    body = BodyDescriptor.from_wire(_as_map(outer_hdr["body"]), what="body descriptor")
    if header.sender != sender or header.sender_kid != kid:
        raise SignatureError(
            Reason.SIG_SENDER_MISMATCH,
            f"signed sender {header.sender}/{header.sender_kid} differs from the frame's "
            f"{sender}/{kid}",
        )
    directory.check_key_window(key, sender, header.created_at)
    check_form(header, slots)
    everyone: Recipients | None = None
    part: bytes | None = None
    ref = header.slots
    if ref is not None and slots is not None:
        if recipient is None:
            everyone = Recipients.read(slots, ref)
            header = with_slots(header, everyone.slots)
        else:
            part = slots
            header = with_slots(header, (read_part(part, ref, recipient),))
    check_header(header, body, whole=part is None)
    check_recipient_keys(header, directory, only=recipient, relayed_by=relayed_by)
    return VerifiedEnvelope(
        frame=frame,
        hdr=hdr,
        core=core,
        header=header,
        body=body,
        sender_public=key.public,
        digest=hashlib.sha256(frame).digest(),
        slots=everyone,
        part=part,
    )


def check_form(header: Header, slots: bytes | None) -> None:
    """A v1 header names its recipients; a v2 header names none and signs their slots,
    which travel beside the frame (the whole set to the hub, one part to a recipient)."""
    if header.v == 1:
        if header.slots is not None:
            raise EnvelopeError(Reason.ENV_BAD_SLOTS, "a v1 header carries no slots")
        if slots is not None:
            raise EnvelopeError(
                Reason.ENV_BAD_SLOTS, "recipient slots came beside a v1 header, which has none"
            )
        return
    if header.slots is None:
        raise EnvelopeError(Reason.ENV_BAD_SLOTS, "a v2 header must sign its slots' root")
    if header.to or header.cc or header.keys or header.copy_numbers:
        raise EnvelopeError(
            Reason.ENV_BAD_SLOTS,
            "a v2 header names no recipient: to, cc, keys and copy_numbers are in its slots",
        )
    if slots is None:
        raise EnvelopeError(
            Reason.ENV_BAD_SLOTS,
            f"the envelope has {header.slots.count} recipients in slots, and none came with it",
        )


def with_slots(header: Header, slots: tuple[Slot, ...]) -> Header:
    """The v2 header as a reader of these slots sees it: to, cc, keys and copy numbers
    filled from them (not re-validated: each slot was). Never encoded again: the signed
    bytes are :attr:`VerifiedEnvelope.core`."""
    return header.model_copy(
        update={
            "to": tuple(s.org for s in slots if s.role == "to"),
            "cc": tuple(s.org for s in slots if s.role == "cc"),
            "keys": {s.org: RecipientKey.model_construct(kid=s.kid, box=s.box) for s in slots},
            "copy_numbers": {s.org: s.copy_no for s in slots if s.copy_no is not None},
        }
    )


def _as_map(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise SchemaError(Reason.SCHEMA_INVALID, "hdr.body must be a map")
    return value


def check_header(header: Header, body: BodyDescriptor, *, whole: bool = True) -> None:
    """Consistency a valid signature does not imply (a sender's bug or a hostile sender).

    ``whole``: the header names every recipient (v1, or v2 with all its slots); a v2
    recipient sees only its own slot, and need not be a primary one."""
    if whole and not header.to:
        raise EnvelopeError(Reason.ENV_NO_RECIPIENT, "the envelope has no primary recipient (to)")
    recipients = header.recipients
    limit = MAX_RECIPIENTS if header.slots is None else MAX_SLOTS
    if len(recipients) > limit:
        raise EnvelopeError(
            Reason.ENV_TOO_MANY_RECIPIENTS,
            f"{len(recipients)} recipients; the limit is {limit} across to and cc",
        )
    if len(set(recipients)) != len(recipients):
        twice = sorted(r for r, n in Counter(recipients).items() if n > 1)
        raise EnvelopeError(
            Reason.ENV_DUPLICATE_RECIPIENT,
            f"recipients named more than once across to and cc: {', '.join(twice)}",
        )
    if header.sender in recipients:
        raise EnvelopeError(
            Reason.ENV_DUPLICATE_RECIPIENT,
            f"the sender {header.sender} is also a recipient; an organisation does not send "
            "to itself",
        )
    if set(header.keys) != set(recipients):
        missing = sorted(set(recipients) - set(header.keys))
        extra = sorted(set(header.keys) - set(recipients))
        raise EnvelopeError(
            Reason.ENV_KEYS_MISMATCH,
            f"sealed file keys do not match the recipients (missing: {missing}, extra: {extra})",
        )
    if header.secrecy_period is not None:
        if not header.classification.is_state_secret:
            raise EnvelopeError(
                Reason.ENV_BAD_LABEL,
                f"{header.classification} carries no secrecy period, but one is given",
            )
        try:
            SecrecyPeriod.from_wire(header.secrecy_period)
        except ValueError as exc:
            raise EnvelopeError(Reason.ENV_BAD_LABEL, str(exc)) from exc
    if header.copy_numbers:
        if not set(header.copy_numbers) <= set(recipients):
            raise EnvelopeError(
                Reason.ENV_BAD_LABEL, "copy numbers are assigned to organisations not addressed"
            )
        if len(set(header.copy_numbers.values())) != len(header.copy_numbers):
            raise EnvelopeError(Reason.ENV_BAD_LABEL, "two recipients share a copy number")
    if header.expires_at is not None and header.expires_at <= header.created_at:
        raise EnvelopeError(Reason.ENV_BAD_LABEL, "expires_at is not after created_at")
    if header.terms is not None:
        problem = terms_problem(header.terms, header.doc_type, header.created_at)
        if problem is not None:
            raise EnvelopeError(Reason.ENV_BAD_LABEL, problem)
    last = (body.size - STREAM_HEADER_BYTES) - (body.chunk_count - 1) * (
        body.chunk + CHUNK_OVERHEAD
    )
    if last <= CHUNK_OVERHEAD:
        raise EnvelopeError(
            Reason.BODY_SIZE_MISMATCH,
            f"body size {body.size} cannot be a chunk stream of {body.chunk}-byte chunks",
        )


def check_recipient_keys(
    header: Header,
    directory: Directory,
    *,
    only: str | None = None,
    relayed_by: str | None = None,
) -> None:
    """Every recipient (or ``only`` that one, if it is one) is in the directory and its
    file key is sealed to one of its own encryption keys, unrevoked and valid at
    created_at (the hub cannot open the box, but it can refuse to carry one no recipient
    could open). An envelope another hub relays (``relayed_by``): only the recipients this
    hop carries, those not behind that hub (its directory, not this one's, knows them)."""
    for org, sealed in header.keys.items():
        if only is not None and org != only:
            continue
        if not directory.carries(org, relayed_by):
            continue
        entry = directory.org(org)
        if entry is None:
            raise EnvelopeError(
                Reason.ENV_UNKNOWN_RECIPIENT,
                f"recipient {org} is not in directory version {directory.version}; check the "
                "address, or ask the hub operator to add it",
            )
        if not entry.enc_keys and not entry.sign_keys:
            raise EnvelopeError(
                Reason.ENV_RECIPIENT_AWAITING_KEYS,
                awaiting_keys_sentence(entry, directory.version),
            )
        key = next((k for k in entry.enc_keys if k.kid == sealed.kid), None)
        if (
            key is None
            or directory.is_revoked(sealed.kid)
            or not key.not_before <= header.created_at < key.not_after
        ):
            raise EnvelopeError(
                Reason.ENV_KEYS_MISMATCH,
                f"the file key for {org} is sealed to key {sealed.kid}, which is not a valid, "
                f"unrevoked encryption key of {org} at created_at in directory version "
                f"{directory.version}; seal again with the current directory",
            )


def check_freshness(header: Header, *, now: int, max_skew_ms: int, relayed: bool = False) -> None:
    """Replay window: created_at within ``max_skew_ms`` of now, not yet expired, and no
    deadline of its terms already past. An envelope another hub relays (``relayed``) was
    judged so by the first hub, when its sender sent it: here only its expiry counts (it
    may have waited at that hub for a link that was down)."""
    if relayed:
        if header.expires_at is not None and now >= header.expires_at:
            raise ReplayError(
                Reason.REPLAY_EXPIRED,
                f"the message expired at {ms_to_text(header.expires_at)}, before it was "
                f"relayed here ({ms_to_text(now)})",
            )
        return
    if abs(now - header.created_at) > max_skew_ms:
        raise ReplayError(
            Reason.REPLAY_CLOCK_SKEW,
            f"created_at {ms_to_text(header.created_at)} is "
            f"{abs(now - header.created_at) / 1000:g} s from the hub's clock "
            f"({ms_to_text(now)}); the limit is {max_skew_ms / 1000:g} s. Set the sending "
            "server's clock right (NTP) and send the document again",
        )
    if header.expires_at is not None and now >= header.expires_at:
        raise ReplayError(
            Reason.REPLAY_EXPIRED,
            f"the message expired at {ms_to_text(header.expires_at)}, before it reached the hub "
            f"({ms_to_text(now)}); if it still matters, send it again with a later expiry",
        )
    if header.terms is not None:
        for name, at in header.terms.deadlines.items():
            if now >= at:
                raise EnvelopeError(
                    Reason.ENV_DEADLINE_PAST,
                    f"its terms.{name} ({ms_to_text(at)}) had passed when it reached the hub "
                    f"({ms_to_text(now)}): a deadline in the past cannot be met; send it again "
                    "with a later one, or none",
                )
