"""Sealing and opening a document: one ciphertext for all recipients, in bounded memory.

Sans-I/O: :class:`Sealer` and :class:`Opener` take and return bytes; the caller moves
them between files, queues and sockets. The helpers at the bottom drive them over
binary streams the caller has opened.

Plaintext stream (encrypted as one libsodium secretstream, XChaCha20-Poly1305, in
64 KiB chunks, the last one tagged FINAL)::

    u32be(len(inner)) || inner || isig(64) || file_0 || file_1 || ...
    inner = canon(Inner)              # title, doc number, files [{name, type, size, sha256}]
    isig  = Ed25519(sender, "xchg/v1/inner\\0" || inner)

The inner record repeats msg_id, sender, to, cc and classification; a recipient checks
they equal the header, so a recipient who re-seals the plaintext to others under its own
name cannot make it look like the original sender's message to them (surreptitious
forwarding). An envelope with slots (schemas.slots; header v2) names no recipient in its
inner record either: ``to`` and ``cc`` are empty and ``slots`` is the signed root of the
recipients' slots, which a recipient checks against the header's.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
from pydantic import Field, field_validator

from schemas import codec
from schemas.directory import Directory
from schemas.envelope import (
    CHUNK_OVERHEAD,
    CHUNK_PLAIN,
    STREAM_HEADER_BYTES,
    BodyDescriptor,
    Header,
    RecipientKey,
    VerifiedEnvelope,
    body_aad,
    check_header,
    encode_frame,
    with_slots,
)
from schemas.errors import EnvelopeError, Reason, UsageError, XchgError
from schemas.ids import MsgIdBytes, OrgId, new_msg_id
from schemas.keys import DOMAIN_HEADER, DOMAIN_INNER, EncryptionKey, SigningKey, seal_to
from schemas.keys import verify_signature as _verify
from schemas.labels import Classification, DocType, Precedence, SecrecyPeriod
from schemas.model import Version1, WireClassification, WireModel
from schemas.notes import note_key
from schemas.slots import INLINE_MAX, Recipients, Slot
from schemas.terms import Terms

_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_CT_CHUNK = CHUNK_PLAIN + CHUNK_OVERHEAD
MAX_FILES = 1000
MAX_FILE_NAME_BYTES = 255


class SourceChangedError(XchgError):
    """A file's bytes differ from the digest taken before sealing: it changed meanwhile."""


def check_file_name(name: str) -> str:
    """A file name inside a document: one path component, printable, at most 255 bytes."""
    if not name or name in {".", ".."}:
        raise ValueError(f"file name {name!r} is empty or a dot name")
    if "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"file name {name!r:.80} contains a path separator or NUL")
    if any(not c.isprintable() for c in name):
        raise ValueError(f"file name {name!r:.80} contains a control character")
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise ValueError(f"file name {name[:40]!r}... is over {MAX_FILE_NAME_BYTES} bytes")
    return name


class FileEntry(WireModel):
    name: str
    type: Annotated[str, Field(min_length=1, max_length=127)]
    size: Annotated[int, Field(ge=0, le=2**53)]
    sha256: Annotated[bytes, Field(min_length=32, max_length=32)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_file_name(value)


class Inner(WireModel):
    """The signed, encrypted record at the head of the plaintext. Content lives here."""

    v: Version1
    msg_id: MsgIdBytes
    sender: OrgId
    to: tuple[OrgId, ...]
    cc: tuple[OrgId, ...]
    classification: WireClassification
    title: Annotated[str, Field(min_length=1, max_length=1000)]
    date: Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")] | None  # 成文日期
    files: Annotated[tuple[FileEntry, ...], Field(min_length=1, max_length=MAX_FILES)]
    # an envelope with slots: their root, as the header signs it (to and cc are then empty)
    slots: Annotated[bytes, Field(min_length=32, max_length=32)] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.slots is None:
            del wire["slots"]  # an inner record without slots is exactly what it was
        return wire

    @field_validator("files")
    @classmethod
    def _unique_names(cls, files: tuple[FileEntry, ...]) -> tuple[FileEntry, ...]:
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"file names must be unique within a document: {twice}")
        return files


@dataclass(frozen=True, slots=True)
class Draft:
    """What a sender decides before sealing. Recipients are already expanded from groups."""

    sender: str
    to: Sequence[str]
    classification: Classification
    precedence: Precedence
    doc_type: DocType
    title: str
    created_at: int
    files: Sequence[FileEntry]
    cc: Sequence[str] = ()
    msg_id: bytes = field(default_factory=new_msg_id)
    expires_at: int | None = None
    in_reply_to: bytes | None = None
    doc_number: str | None = None
    signatory: str | None = None
    secrecy_period: SecrecyPeriod | None = None
    copy_numbers: Mapping[str, str] = field(default_factory=dict)
    directive: bool = False
    date: str | None = None
    terms: Terms | None = None  # deadlines and marks (schemas.terms), signed in the header


@dataclass(frozen=True, slots=True)
class Sealed:
    """A finished seal: the signed frame (send it first) and the body's descriptor; with
    more than :data:`~schemas.slots.INLINE_MAX` recipients, their slots for the hub.
    ``header`` names every recipient (for a v2 header, as the hub will read it)."""

    frame: bytes
    header: Header
    body: BodyDescriptor
    slots: bytes | None = None
    note_key: bytes = b""  # schemas.notes: what the sender keeps to read and write notes


class Sealer:
    """Seal one document. Feed the files' bytes in order with :meth:`push`, then :meth:`finish`.

    Memory stays bounded by one chunk plus what one ``push`` hands over.
    """

    def __init__(self, draft: Draft, signing_key: SigningKey, directory: Directory) -> None:
        if directory.org(draft.sender) is None:
            raise UsageError(f"sender {draft.sender} is not in the directory")
        named = (*draft.to, *draft.cc)
        if len(set(named)) != len(named):  # before the keys' map would fold them into one
            twice = sorted(o for o, n in Counter(named).items() if n > 1)
            raise EnvelopeError(
                Reason.ENV_DUPLICATE_RECIPIENT,
                f"recipients named more than once across to and cc: {', '.join(twice)}",
            )
        file_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
        self._note_key = note_key(file_key)
        keys = {}
        for org in (*draft.to, *draft.cc):
            entry = directory.encryption_key(org, draft.created_at)
            keys[org] = RecipientKey(kid=entry.kid, box=seal_to(entry.public, file_key))
        self._slots: Recipients | None = None
        if len(keys) > INLINE_MAX:
            cc = set(draft.cc)
            self._slots = Recipients.seal(
                Slot(
                    org=org,
                    role="cc" if org in cc else "to",
                    copy_no=draft.copy_numbers.get(org),
                    kid=sealed.kid,
                    box=sealed.box,
                )
                for org, sealed in keys.items()
            )
        slots = self._slots
        header = Header(
            v=1 if slots is None else 2,
            msg_id=draft.msg_id,
            sender=draft.sender,
            sender_kid=signing_key.kid,
            to=tuple(draft.to) if slots is None else (),
            cc=tuple(draft.cc) if slots is None else (),
            classification=draft.classification,
            precedence=draft.precedence,
            doc_type=draft.doc_type,
            created_at=draft.created_at,
            expires_at=draft.expires_at,
            in_reply_to=draft.in_reply_to,
            dir_version=directory.version,
            doc_number=draft.doc_number,
            signatory=draft.signatory,
            secrecy_period=None if draft.secrecy_period is None else draft.secrecy_period.wire,
            copy_numbers=dict(draft.copy_numbers) if slots is None else {},
            directive=draft.directive,
            keys=keys if slots is None else {},
            slots=None if slots is None else slots.ref,
            terms=draft.terms,
        )
        inner = Inner(
            v=1,
            msg_id=draft.msg_id,
            sender=draft.sender,
            to=tuple(draft.to) if slots is None else (),
            cc=tuple(draft.cc) if slots is None else (),
            classification=draft.classification,
            title=draft.title,
            date=draft.date,
            files=tuple(draft.files),
            slots=None if slots is None else slots.ref.root,
        )
        self._core = codec.encode(header.to_wire())
        self._header = header if slots is None else with_slots(header, slots.slots)
        self._aad = body_aad(self._core)
        self._key = signing_key
        self._files = list(draft.files)
        inner_bytes = codec.encode(inner.to_wire())
        isig = signing_key.sign(DOMAIN_INNER, inner_bytes)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, file_key
        )
        self._hash = hashlib.sha256(stream_header)
        self._size = len(stream_header)
        self._pending: list[bytes] = [stream_header]
        self._plain = bytearray(struct.pack(">I", len(inner_bytes)) + inner_bytes + isig)
        self._file_index = 0
        self._file_left = self._files[0].size if self._files else 0
        self._file_hash = hashlib.sha256()
        self._finished = False
        self._skip_empty_files()

    def _skip_empty_files(self) -> None:
        while self._file_index < len(self._files) and self._file_left == 0:
            self._close_file()

    def _close_file(self) -> None:
        entry = self._files[self._file_index]
        if self._file_hash.digest() != entry.sha256:
            raise SourceChangedError(
                f"file {entry.name!r} changed between hashing and sealing; "
                "wait until it is complete and try again"
            )
        self._file_index += 1
        self._file_hash = hashlib.sha256()
        if self._file_index < len(self._files):
            self._file_left = self._files[self._file_index].size

    def push(self, data: bytes) -> bytes:
        """Feed the next bytes of the files (in order); returns the ciphertext ready so far."""
        if self._finished:
            raise UsageError("push() after finish()")
        view = memoryview(data)
        while view:
            if self._file_index >= len(self._files):
                raise SourceChangedError("more file bytes than the declared sizes; a file grew")
            take = min(len(view), self._file_left)
            self._file_hash.update(view[:take])
            self._plain += view[:take]
            self._file_left -= take
            view = view[take:]
            if self._file_left == 0:
                self._close_file()
                self._skip_empty_files()
            self._encrypt_full_chunks()
        return self._drain()

    def _encrypt_full_chunks(self) -> None:
        # Keep the last (possibly full) chunk back: only finish() knows it is FINAL.
        offset = 0
        while len(self._plain) - offset > CHUNK_PLAIN:
            piece = bytes(self._plain[offset : offset + CHUNK_PLAIN])
            self._emit(piece, _TAG_MESSAGE)
            offset += CHUNK_PLAIN
        if offset:
            del self._plain[:offset]

    def _emit(self, piece: bytes, tag: int) -> None:
        ct = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, piece, self._aad, tag)
        self._hash.update(ct)
        self._size += len(ct)
        self._pending.append(ct)

    def _drain(self) -> bytes:
        out = b"".join(self._pending)
        self._pending.clear()
        return out

    def finish(self) -> tuple[bytes, Sealed]:
        """The last ciphertext bytes and the signed frame. Refuses if a file came up short."""
        if self._finished:
            raise UsageError("finish() called twice")
        self._skip_empty_files()
        if self._file_index < len(self._files):
            raise SourceChangedError(
                f"file {self._files[self._file_index].name!r} ended "
                f"{self._file_left} bytes short of its declared size; it shrank"
            )
        self._encrypt_full_chunks()
        self._emit(bytes(self._plain), _TAG_FINAL)
        self._plain.clear()
        self._finished = True
        body = BodyDescriptor(size=self._size, chunk=CHUNK_PLAIN, sha256=self._hash.digest())
        check_header(self._header, body)
        hdr = codec.encode({"core": self._core, "body": body.to_wire()})
        sig = self._key.sign(DOMAIN_HEADER, hdr)
        frame = encode_frame(self._header.sender, self._key.kid, hdr, sig)
        slots = None if self._slots is None else self._slots.blob()
        return self._drain(), Sealed(
            frame=frame, header=self._header, body=body, slots=slots, note_key=self._note_key
        )


# ---------------------------------------------------------------------------- opening


@dataclass(frozen=True, slots=True)
class InnerOpened:
    """The inner record has been decrypted, its signature verified, its fields matched."""

    inner: Inner


@dataclass(frozen=True, slots=True)
class FileData:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnd:
    """File ``index`` is complete and its SHA-256 matched the signed inner record."""

    index: int


OpenEvent = InnerOpened | FileData | FileEnd


class Opener:
    """Open one envelope for recipient ``me``. Feed the body ciphertext; act on the events.

    Checks, in order: (the outer signature, by :func:`verify_envelope` beforehand) ->
    each chunk decrypts under the file key with the header-bound AAD -> the inner
    signature -> inner fields equal the header -> each file's SHA-256 -> at
    :meth:`close`, the stream ended with its FINAL chunk at the declared size and hash.
    Nothing a recipient writes should be committed before :meth:`close` returns.
    """

    def __init__(self, envelope: VerifiedEnvelope, me: str, key: EncryptionKey) -> None:
        header = envelope.header
        sealed = header.keys.get(me)
        if sealed is None:
            raise EnvelopeError(
                Reason.ENV_NOT_A_RECIPIENT, f"{me} is not a recipient of {header.msg_id_text}"
            )
        if sealed.kid != key.kid:
            raise EnvelopeError(
                Reason.ENV_KEY_UNSEAL_FAILED,
                f"the file key is sealed to {me}'s key {sealed.kid}, not to key {key.kid}",
            )
        try:
            self._file_key = key.unseal(sealed.box)
        except nacl.exceptions.CryptoError as exc:
            raise EnvelopeError(
                Reason.ENV_KEY_UNSEAL_FAILED, f"the file key sealed to {me} does not open"
            ) from exc
        self._env = envelope
        self._aad = envelope.aad
        body = envelope.body
        self._last_piece = body.size - STREAM_HEADER_BYTES - (body.chunk_count - 1) * _CT_CHUNK
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._started = False
        self._buffer = bytearray()
        self._received = 0
        self._chunks_done = 0
        self._final_seen = False
        self._hash = hashlib.sha256()
        self._plain = bytearray()
        self._inner: Inner | None = None
        self._file_index = 0
        self._file_left = 0
        self._file_hash = hashlib.sha256()

    @property
    def note_key(self) -> bytes:
        """The document's note key (schemas.notes), for the notes of its flows."""
        return note_key(self._file_key)

    @property
    def inner(self) -> Inner | None:
        return self._inner

    def feed(self, data: bytes) -> list[OpenEvent]:
        """Feed body ciphertext; returns what became available. Raises EnvelopeError."""
        size = self._env.body.size
        if self._received + len(data) > size:
            raise EnvelopeError(
                Reason.BODY_TRAILING_DATA,
                f"body is longer than the {size} bytes its signed header declares",
            )
        self._received += len(data)
        self._hash.update(data)
        self._buffer += data
        events: list[OpenEvent] = []
        if not self._started:
            if len(self._buffer) < STREAM_HEADER_BYTES:
                return events
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, bytes(self._buffer[:STREAM_HEADER_BYTES]), self._file_key
            )
            del self._buffer[:STREAM_HEADER_BYTES]
            self._started = True
        offset = 0
        count = self._env.body.chunk_count
        while self._chunks_done < count:
            is_last = self._chunks_done == count - 1
            need = self._last_piece if is_last else _CT_CHUNK
            if len(self._buffer) - offset < need:
                break
            piece = bytes(self._buffer[offset : offset + need])
            offset += need
            events.extend(self._decrypt(piece, is_last=is_last))
        if offset:
            del self._buffer[:offset]
        return events

    def _decrypt(self, piece: bytes, *, is_last: bool) -> list[OpenEvent]:
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, piece, self._aad
            )
        except nacl.exceptions.CryptoError as exc:
            raise EnvelopeError(
                Reason.BODY_DECRYPT_FAILED,
                f"body chunk {self._chunks_done} does not authenticate: the body was altered, "
                "or belongs to another header",
            ) from exc
        self._chunks_done += 1
        if tag == _TAG_FINAL and not is_last:
            raise EnvelopeError(
                Reason.BODY_TRAILING_DATA,
                f"chunk {self._chunks_done - 1} is tagged FINAL but the header declares more",
            )
        if tag not in (_TAG_FINAL, _TAG_MESSAGE):
            raise EnvelopeError(
                Reason.BODY_DECRYPT_FAILED,
                f"chunk {self._chunks_done - 1} carries tag {tag}; only MESSAGE and FINAL occur",
            )
        if is_last:
            if tag != _TAG_FINAL:
                raise EnvelopeError(Reason.BODY_MISSING_FINAL, "the last chunk is not tagged FINAL")
            self._final_seen = True
        return self._consume(plain)

    def _consume(self, plain: bytes) -> list[OpenEvent]:
        events: list[OpenEvent] = []
        if self._inner is None:
            self._plain += plain
            opened = self._try_inner()
            if opened is None:
                return events
            events.append(opened)
            plain = bytes(self._plain)
            self._plain.clear()
            events.extend(self._skip_empty_files())
        view = memoryview(plain)
        inner = self._inner
        assert inner is not None  # noqa: S101 - set by _try_inner above
        while view:
            if self._file_index >= len(inner.files):
                raise EnvelopeError(
                    Reason.INNER_MALFORMED, "the body carries more bytes than its files declare"
                )
            take = min(len(view), self._file_left)
            part = bytes(view[:take])
            self._file_hash.update(part)
            self._file_left -= take
            view = view[take:]
            events.append(FileData(self._file_index, part))
            if self._file_left == 0:
                events.append(self._end_file())
                events.extend(self._skip_empty_files())
        return events

    def _try_inner(self) -> InnerOpened | None:
        if len(self._plain) < 4:
            return None
        (length,) = struct.unpack(">I", self._plain[:4])
        if length > codec.INNER_LIMITS.max_size:
            raise EnvelopeError(
                Reason.INNER_MALFORMED, f"inner record claims {length} bytes; the limit is 1 MiB"
            )
        if len(self._plain) < 4 + length + 64:
            return None
        inner_bytes = bytes(self._plain[4 : 4 + length])
        isig = bytes(self._plain[4 + length : 4 + length + 64])
        del self._plain[: 4 + length + 64]
        header = self._env.header
        if not _verify(self._env.sender_public, DOMAIN_INNER, inner_bytes, isig):
            raise EnvelopeError(
                Reason.INNER_BAD_SIGNATURE,
                f"the inner signature does not verify with {header.sender}'s key",
            )
        try:
            inner = Inner.from_wire(
                codec.decode_map(inner_bytes, codec.INNER_LIMITS), what="inner record"
            )
        except XchgError as exc:
            raise EnvelopeError(Reason.INNER_MALFORMED, str(exc)) from exc
        named = ("to", "cc") if header.slots is None else ()
        if header.slots is not None and (inner.to or inner.cc or inner.slots != header.slots.root):
            raise EnvelopeError(
                Reason.INNER_HEADER_MISMATCH,
                "the inner record does not sign the recipients' slots the header signs: the "
                "plaintext was signed for another message (surreptitious forwarding) and is "
                "refused",
            )
        if header.slots is None and inner.slots is not None:
            raise EnvelopeError(
                Reason.INNER_HEADER_MISMATCH, "the inner record names slots the header has not"
            )
        for name in ("msg_id", "sender", *named, "classification"):
            if getattr(inner, name) != getattr(header, name):
                raise EnvelopeError(
                    Reason.INNER_HEADER_MISMATCH,
                    f"inner {name} differs from the header's: the plaintext was signed for "
                    "another message (surreptitious forwarding) and is refused",
                )
        expected = 4 + length + 64 + sum(f.size for f in inner.files)
        if expected != self._env.body.plaintext_size:
            raise EnvelopeError(
                Reason.INNER_MALFORMED,
                f"files declare {expected} plaintext bytes; the body holds "
                f"{self._env.body.plaintext_size}",
            )
        self._inner = inner
        self._file_left = inner.files[0].size
        return InnerOpened(inner)

    def _skip_empty_files(self) -> list[OpenEvent]:
        inner = self._inner
        events: list[OpenEvent] = []
        while inner is not None and self._file_index < len(inner.files) and self._file_left == 0:
            events.append(self._end_file())
        return events

    def _end_file(self) -> FileEnd:
        assert self._inner is not None  # noqa: S101 - only called once the inner is open
        entry = self._inner.files[self._file_index]
        if self._file_hash.digest() != entry.sha256:
            raise EnvelopeError(
                Reason.INNER_FILE_DIGEST,
                f"file {self._file_index} does not match its signed SHA-256",
            )
        event = FileEnd(self._file_index)
        self._file_index += 1
        self._file_hash = hashlib.sha256()
        if self._file_index < len(self._inner.files):
            self._file_left = self._inner.files[self._file_index].size
        return event

    def close(self) -> Inner:
        """Finish: the whole body arrived, ended FINAL, and matches the header's hash."""
        body = self._env.body
        if self._received < body.size:
            at_boundary = self._started and not self._buffer
            raise EnvelopeError(
                Reason.BODY_MISSING_FINAL if at_boundary else Reason.BODY_TRUNCATED,
                f"body ended after {self._received} of {body.size} bytes"
                + (" at a chunk boundary, without its FINAL chunk" if at_boundary else ""),
            )
        if self._hash.digest() != body.sha256:
            raise EnvelopeError(
                Reason.BODY_HASH_MISMATCH, "body SHA-256 differs from the signed header's"
            )
        if not self._final_seen or self._inner is None:
            raise EnvelopeError(Reason.BODY_MISSING_FINAL, "the body stream did not finish")
        if self._file_index != len(self._inner.files):
            raise EnvelopeError(Reason.INNER_MALFORMED, "the body ended before its last file")
        return self._inner


class BodyChecker:
    """The hub's view of a body: size and SHA-256 against the signed header, no key needed."""

    def __init__(self, body: BodyDescriptor) -> None:
        self._body = body
        self._hash = hashlib.sha256()
        self.received = 0

    def feed(self, data: bytes) -> None:
        if self.received + len(data) > self._body.size:
            raise EnvelopeError(
                Reason.BODY_TRAILING_DATA,
                f"body is longer than the {self._body.size} bytes its signed header declares",
            )
        self.received += len(data)
        self._hash.update(data)

    def close(self) -> None:
        if self.received != self._body.size:
            raise EnvelopeError(
                Reason.BODY_TRUNCATED,
                f"body ended after {self.received} of {self._body.size} bytes",
            )
        if self._hash.digest() != self._body.sha256:
            raise EnvelopeError(
                Reason.BODY_HASH_MISMATCH, "body SHA-256 differs from the signed header's"
            )


# ------------------------------------------------------- helpers over caller's streams

BLOCK = 1024 * 1024


def describe_file(name: str, media_type: str, source: BinaryIO) -> FileEntry:
    """Hash a stream from its current position to its end (the first of two passes)."""
    digest = hashlib.sha256()
    size = 0
    while block := source.read(BLOCK):
        digest.update(block)
        size += len(block)
    return FileEntry(name=name, type=media_type, size=size, sha256=digest.digest())


def seal_streams(
    draft: Draft,
    signing_key: SigningKey,
    directory: Directory,
    sources: Sequence[BinaryIO],
    sink: BinaryIO,
) -> Sealed:
    """Seal the files read from ``sources`` (one per ``draft.files``) into ``sink``."""
    if len(sources) != len(draft.files):
        raise UsageError("one source stream per declared file")
    sealer = Sealer(draft, signing_key, directory)
    for source in sources:
        while block := source.read(BLOCK):
            sink.write(sealer.push(block))
    tail, sealed = sealer.finish()
    sink.write(tail)
    return sealed


def seal_bytes(
    draft: Draft, signing_key: SigningKey, directory: Directory, contents: Sequence[bytes]
) -> tuple[Sealed, bytes]:
    """Seal in-memory files (small documents, tests); returns (sealed, body ciphertext)."""
    sealer = Sealer(draft, signing_key, directory)
    parts = [sealer.push(c) for c in contents]
    tail, sealed = sealer.finish()
    return sealed, b"".join([*parts, tail])


def open_bytes(
    envelope: VerifiedEnvelope, me: str, key: EncryptionKey, body: bytes
) -> tuple[Inner, list[bytes]]:
    """Open an in-memory body; returns the inner record and each file's bytes."""
    opener = Opener(envelope, me, key)
    files: dict[int, bytearray] = {}
    for event in opener.feed(body):
        if isinstance(event, FileData):
            files.setdefault(event.index, bytearray()).extend(event.data)
    inner = opener.close()
    return inner, [bytes(files.get(i, b"")) for i in range(len(inner.files))]


def file_entry(name: str, media_type: str, content: bytes) -> FileEntry:
    """Describe an in-memory file."""
    return FileEntry(
        name=name, type=media_type, size=len(content), sha256=hashlib.sha256(content).digest()
    )
