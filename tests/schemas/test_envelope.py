"""Sealing and opening envelopes: round trips, and the tamper matrix.

Every refusal is asserted by its machine reason (``exc.reason is Reason.X``), because the
reason is what the hub copies into a REJECTED receipt. Tampered envelopes are rebuilt by
hand from the documented layout (schemas/envelope.py, schemas/seal.py): decode with plain
msgpack, change, re-encode with ``schemas.codec.encode``, and re-sign with the sender's
real key where the case is a buggy or hostile *sender* rather than a network attacker.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.clock import DAY_MS
from schemas.directory import Directory
from schemas.envelope import (
    CHUNK_OVERHEAD,
    CHUNK_PLAIN,
    MAX_RECIPIENTS,
    STREAM_HEADER_BYTES,
    Header,
    VerifiedEnvelope,
    body_aad,
    check_freshness,
    encode_frame,
    verify_envelope,
)
from schemas.errors import (
    EnvelopeError,
    PeerError,
    Reason,
    ReplayError,
    SchemaError,
    SignatureError,
)
from schemas.ids import new_msg_id
from schemas.keys import DOMAIN_HEADER, DOMAIN_INNER, seal_to
from schemas.labels import Classification, Precedence, SecrecyPeriod
from schemas.seal import (
    BodyChecker,
    FileData,
    FileEnd,
    Inner,
    InnerOpened,
    Opener,
    OpenEvent,
    Sealed,
    Sealer,
    SourceChangedError,
    open_bytes,
    seal_streams,
)
from tests.world import NOW, World

CT_CHUNK = CHUNK_PLAIN + CHUNK_OVERHEAD  # ciphertext bytes of every chunk but the last
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
KiB = 1024


# --------------------------------------------------------------------------- helpers


def unpack(data: bytes) -> Any:
    """Plain msgpack decode (arrays become lists, so edits are easy)."""
    return msgpack.unpackb(data, raw=False)


def frame_parts(frame: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(outer frame map, hdr map, core map) of an envelope frame."""
    outer = unpack(frame)
    hdr = unpack(outer["hdr"])
    return outer, hdr, unpack(hdr["core"])


def rebuild_frame(
    world: World,
    frame: bytes,
    edit: Callable[[dict[str, Any]], None] = lambda _core: None,
    *,
    resign: bool,
    body: dict[str, Any] | None = None,
) -> bytes:
    """The frame with ``edit`` applied to its core, keeping the old signature or re-signing
    with the real key of the frame's sender (a buggy or hostile sender)."""
    outer, hdr, core = frame_parts(frame)
    edit(core)
    new_hdr = codec.encode({"core": codec.encode(core), "body": body or hdr["body"]})
    sig = world.keys[outer["from"]].signing.sign(DOMAIN_HEADER, new_hdr) if resign else outer["sig"]
    return encode_frame(outer["from"], outer["kid"], new_hdr, sig)


def signed_envelope(world: World, sender: str, core: dict[str, Any], body: bytes) -> bytes:
    """A frame for ``core`` and ``body``, correctly described and signed by ``sender``."""
    descriptor = {"size": len(body), "chunk": CHUNK_PLAIN, "sha256": hashlib.sha256(body).digest()}
    hdr = codec.encode({"core": codec.encode(core), "body": descriptor})
    key = world.keys[sender].signing
    return encode_frame(sender, key.kid, hdr, key.sign(DOMAIN_HEADER, hdr))


def unseal_file_key(world: World, frame: bytes, me: str) -> bytes:
    _, _, core = frame_parts(frame)
    return world.keys[me].encryption.unseal(core["keys"][me]["box"])


def decrypt_body(file_key: bytes, core: bytes, body: bytes) -> bytes:
    """The whole plaintext stream of a body (by hand, with nacl's secretstream)."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(
        state, body[:STREAM_HEADER_BYTES], file_key
    )
    aad = body_aad(core)
    parts = []
    for offset in range(STREAM_HEADER_BYTES, len(body), CT_CHUNK):
        plain, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
            state, body[offset : offset + CT_CHUNK], aad
        )
        parts.append(plain)
    return b"".join(parts)


def encrypt_body(
    file_key: bytes, core: bytes, plaintext: bytes, *, final_at: int | None = None
) -> bytes:
    """Encrypt a plaintext stream the way the Sealer does: 64 KiB chunks, the last FINAL
    (or chunk ``final_at`` FINAL, to build a stream that goes on after its FINAL chunk;
    -1 for none)."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)
    aad = body_aad(core)
    pieces = [plaintext[i : i + CHUNK_PLAIN] for i in range(0, len(plaintext), CHUNK_PLAIN)]
    final = len(pieces) - 1 if final_at is None else final_at
    out = [stream_header]
    for index, piece in enumerate(pieces):
        tag = TAG_FINAL if index == final else TAG_MESSAGE
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, aad, tag))
    return b"".join(out)


def reencrypted(
    world: World,
    sealed: Sealed,
    body: bytes,
    edit: Callable[[dict[str, Any]], None],
    *,
    opener: str = "jl.cc",
) -> tuple[bytes, bytes]:
    """A hostile sender's envelope: the header edited and re-signed, and the original
    plaintext (inner record and its signature included) re-encrypted under the same file
    key with the AAD of the edited core. Returns (frame, body)."""
    outer, _, core = frame_parts(sealed.frame)
    file_key = unseal_file_key(world, sealed.frame, opener)
    plaintext = decrypt_body(file_key, unpack(outer["hdr"])["core"], body)
    edit(core)
    new_body = encrypt_body(file_key, codec.encode(core), plaintext)
    return signed_envelope(world, outer["from"], core, new_body), new_body


def verified(world: World, frame: bytes, directory: Directory | None = None) -> VerifiedEnvelope:
    return verify_envelope(frame, directory or world.directory)


def feed_all(
    envelope: VerifiedEnvelope, world: World, me: str, body: bytes, piece: int | None = None
) -> tuple[list[OpenEvent], Inner]:
    """Feed ``body`` to a recipient's Opener in ``piece``-sized parts; close it."""
    opener = Opener(envelope, me, world.keys[me].encryption)
    step = piece or max(len(body), 1)
    events: list[OpenEvent] = []
    for offset in range(0, len(body), step):
        events.extend(opener.feed(body[offset : offset + step]))
    return events, opener.close()


def open_as(world: World, frame: bytes, me: str, body: bytes) -> list[bytes]:
    """The recipient's whole path: outer signature, then open and close."""
    _, files = open_bytes(verified(world, frame), me, world.keys[me].encryption, body)
    return files


def hub_check(sealed: Sealed, body: bytes, piece: int | None = None) -> None:
    checker = BodyChecker(sealed.body)
    step = piece or max(len(body), 1)
    for offset in range(0, len(body), step):
        checker.feed(body[offset : offset + step])
    checker.close()


def files_of(events: Sequence[OpenEvent], count: int) -> list[bytes]:
    out = [bytearray() for _ in range(count)]
    for event in events:
        if isinstance(event, FileData):
            out[event.index] += event.data
    return [bytes(f) for f in out]


def event_shape(events: Sequence[OpenEvent]) -> list[tuple[str, int]]:
    """Events with consecutive FileData of one file collapsed: the order that matters."""
    shape: list[tuple[str, int]] = []
    for event in events:
        if isinstance(event, InnerOpened):
            shape.append(("inner", -1))
        elif isinstance(event, FileData):
            assert event.data, "a FileData event carries at least one byte"
            if shape[-1:] != [("data", event.index)]:
                shape.append(("data", event.index))
        else:
            shape.append(("end", event.index))
    return shape


def expected_shape(contents: Sequence[bytes]) -> list[tuple[str, int]]:
    shape = [("inner", -1)]
    for index, content in enumerate(contents):
        if content:
            shape.append(("data", index))
        shape.append(("end", index))
    return shape


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# A document with every boundary: empty, one byte short of, exactly, and one byte over a
# chunk, and a file that spans several chunks on its own.
BOUNDARY_CONTENTS = [
    b"",
    random_bytes(64 * KiB - 1, 1),
    random_bytes(64 * KiB, 2),
    random_bytes(64 * KiB + 1, 3),
    random_bytes(200_000, 4),
    b"",
    b"z",
]


@pytest.fixture(scope="module")
def boundary(world: World) -> tuple[Sealed, bytes]:
    return world.seal(
        "jl.gov", ("jl.cc", "jl.jl"), cc=("jl.sp", "jl.dept.health"), contents=BOUNDARY_CONTENTS
    )


@pytest.fixture(scope="module")
def multi_chunk(world: World) -> tuple[Sealed, bytes]:
    """One recipient, a body of four chunks (the last one partial)."""
    sealed, body = world.seal("jl.gov", ("jl.cc",), contents=[random_bytes(200_000, 5)])
    assert sealed.body.chunk_count == 4
    return sealed, body


@pytest.fixture(scope="module")
def trio(world: World) -> tuple[Sealed, bytes]:
    """jl.gov to jl.cc and jl.sp, copy to jl.jl: a small document for recipient edits."""
    return world.seal("jl.gov", ("jl.cc", "jl.sp"), cc=("jl.jl",), contents=[b"trio"])


@pytest.fixture(scope="module")
def rich(world: World) -> tuple[Sealed, bytes]:
    """Every optional header field set, so that every field can be changed."""
    return world.seal(
        "jl.gov",
        ("jl.cc", "jl.sp"),
        cc=("jl.jl", "jl.yb"),
        classification=Classification.SECRET,
        precedence=Precedence.URGENT,
        expires_at=NOW + 7 * DAY_MS,
        in_reply_to=new_msg_id(),
        doc_number="吉政发〔2026〕1号",
        signatory="张三",
        secrecy_period=SecrecyPeriod.parse("1y"),
        copy_numbers={"jl.cc": "000001", "jl.sp": "000002", "jl.jl": "000003", "jl.yb": "000004"},
        directive=True,
        date="2026-11-18",
        contents=[b"rich document"],
    )


# ------------------------------------------------------------------------ round trips


def test_single_recipient_round_trip_returns_the_files_and_the_signed_inner_record(
    world: World,
) -> None:
    contents = [b"first file", b"", random_bytes(3000)]
    sealed, body = world.seal("jl.gov", ("jl.cc",), contents=contents, date="2026-11-18")
    envelope = verify_envelope(sealed.frame, world.directory, expected_sender="jl.gov")
    inner, files = open_bytes(envelope, "jl.cc", world.keys["jl.cc"].encryption, body)
    assert files == contents
    assert inner.title == "关于做好冬季供暖工作的通知"
    assert inner.date == "2026-11-18"
    assert [f.name for f in inner.files] == ["file0.txt", "file1.txt", "file2.txt"]
    assert [f.size for f in inner.files] == [len(c) for c in contents]
    assert envelope.header == sealed.header
    assert envelope.body == sealed.body
    assert envelope.digest == hashlib.sha256(sealed.frame).digest()
    assert sealed.body.size == len(body)
    assert sealed.body.sha256 == hashlib.sha256(body).digest()


@pytest.mark.parametrize("me", ["jl.cc", "jl.jl", "jl.sp", "jl.dept.health"])
def test_every_recipient_in_to_and_cc_opens_the_same_files(
    world: World, boundary: tuple[Sealed, bytes], me: str
) -> None:
    sealed, body = boundary
    assert set(sealed.header.keys) == {"jl.cc", "jl.jl", "jl.sp", "jl.dept.health"}
    assert open_as(world, sealed.frame, me, body) == BOUNDARY_CONTENTS


@pytest.mark.parametrize("piece", [1, 777, CT_CHUNK, CT_CHUNK + 1, None], ids=str)
def test_feeding_the_body_in_odd_pieces_gives_identical_files_and_events_in_order(
    world: World, boundary: tuple[Sealed, bytes], piece: int | None
) -> None:
    sealed, body = boundary
    events, inner = feed_all(verified(world, sealed.frame), world, "jl.jl", body, piece)
    assert files_of(events, len(inner.files)) == BOUNDARY_CONTENTS
    assert isinstance(events[0], InnerOpened)
    assert event_shape(events) == expected_shape(BOUNDARY_CONTENTS)
    assert sum(isinstance(e, FileEnd) for e in events) == len(BOUNDARY_CONTENTS)


def _seal_with_plaintext_size(world: World, target: int) -> tuple[Sealed, bytes, bytes]:
    """Seal one file sized so that the plaintext stream is exactly ``target`` bytes."""
    size = target - 200
    for _ in range(3):  # the inner record's length depends (a little) on the file size
        content = random_bytes(size, target)
        sealed, body = world.seal("jl.gov", ("jl.cc",), contents=[content])
        prefix = sealed.body.plaintext_size - size
        if prefix + size == target:
            return sealed, body, content
        size = target - prefix
    raise AssertionError(f"could not hit a plaintext of {target} bytes")


@pytest.mark.parametrize(
    ("plaintext", "chunks"),
    [
        (CHUNK_PLAIN - 1, 1),
        (CHUNK_PLAIN, 1),
        (CHUNK_PLAIN + 1, 2),
        (2 * CHUNK_PLAIN, 2),
        (2 * CHUNK_PLAIN + 1, 3),
    ],
)
def test_plaintext_stream_at_a_chunk_boundary_round_trips_with_the_full_chunk_last(
    world: World, plaintext: int, chunks: int
) -> None:
    sealed, body, content = _seal_with_plaintext_size(world, plaintext)
    assert sealed.body.plaintext_size == plaintext
    assert sealed.body.chunk_count == chunks
    assert len(body) == STREAM_HEADER_BYTES + plaintext + chunks * CHUNK_OVERHEAD
    for piece in (1000, None):
        events, _ = feed_all(verified(world, sealed.frame), world, "jl.cc", body, piece)
        assert files_of(events, 1) == [content]
    hub_check(sealed, body)


def test_seal_streams_output_opens_to_the_source_files(world: World) -> None:
    contents = [random_bytes(300_000, 7), b"", b"tail"]
    draft, _ = world.draft("jl.gov", ("jl.cc",), contents=contents)
    sink = io.BytesIO()
    sources = [io.BytesIO(c) for c in contents]
    sealed = seal_streams(draft, world.keys["jl.gov"].signing, world.directory, sources, sink)
    body = sink.getvalue()
    assert sealed.body.size == len(body)
    assert open_as(world, sealed.frame, "jl.cc", body) == contents


sizes = st.one_of(
    st.integers(0, 300),
    st.sampled_from([CHUNK_PLAIN - 1, CHUNK_PLAIN, CHUNK_PLAIN + 1]),
    st.integers(0, 140_000),
)


@settings(max_examples=25, deadline=None)
@given(
    file_sizes=st.lists(sizes, min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
    piece=st.integers(1, 3 * CT_CHUNK),
)
def test_random_documents_round_trip_for_every_piece_size(
    world: World, file_sizes: list[int], seed: int, piece: int
) -> None:
    contents = [random_bytes(size, seed + i) for i, size in enumerate(file_sizes)]
    sealed, body = world.seal("jl.gov", ("jl.cc",), cc=("jl.jl",), contents=contents)
    envelope = verified(world, sealed.frame)
    for me in ("jl.cc", "jl.jl"):
        events, _ = feed_all(envelope, world, me, body, piece)
        assert files_of(events, len(contents)) == contents
        assert event_shape(events) == expected_shape(contents)
    hub_check(sealed, body, piece)


@pytest.mark.parametrize("piece", [1, 777, None], ids=str)
def test_body_checker_accepts_the_genuine_body(
    boundary: tuple[Sealed, bytes], piece: int | None
) -> None:
    sealed, body = boundary
    checker = BodyChecker(sealed.body)
    step = piece or len(body)
    for offset in range(0, len(body), step):
        checker.feed(body[offset : offset + step])
    checker.close()
    assert checker.received == len(body)


def test_rebuilding_an_untouched_frame_gives_the_same_bytes(
    world: World, rich: tuple[Sealed, bytes]
) -> None:
    """Control for the tamper helpers: a no-op edit changes nothing and still verifies, so
    every refusal below comes from the edit, not from the re-encoding."""
    sealed, _ = rich
    assert rebuild_frame(world, sealed.frame, resign=False) == sealed.frame
    assert verified(world, rebuild_frame(world, sealed.frame, resign=True)).header == sealed.header


def test_reencrypting_an_unchanged_header_opens(world: World, trio: tuple[Sealed, bytes]) -> None:
    """Control for the re-encryption helper used by the inner-record cases below."""
    sealed, body = trio
    frame, new_body = reencrypted(world, sealed, body, lambda _core: None)
    assert new_body != body  # fresh stream header, same key and plaintext
    assert open_as(world, frame, "jl.cc", new_body) == [b"trio"]


# ---------------------------------------------------- header fields and the signature


@dataclass(frozen=True)
class FieldEdit:
    case: str
    field: str
    value: Callable[[World, dict[str, Any]], Any]
    resigned: Reason | None  # verify_envelope's verdict once the sender re-signs (None: ok)


def _rebox(world: World, core: dict[str, Any]) -> dict[str, Any]:
    keys = dict(core["keys"])
    keys["jl.cc"] = {
        "kid": keys["jl.cc"]["kid"],
        "box": seal_to(world.keys["jl.cc"].encryption.public, os.urandom(32)),
    }
    return keys


FIELD_EDITS = [
    FieldEdit("v", "v", lambda _w, _c: 2, Reason.ENV_BAD_SLOTS),  # v2 names its slots' root
    FieldEdit(
        "slots-added",
        "slots",
        lambda _w, _c: {"root": bytes(32), "count": 40},
        Reason.ENV_BAD_SLOTS,  # a v1 header with slots: the slots a v2 header has
    ),
    FieldEdit("msg_id", "msg_id", lambda _w, _c: new_msg_id(), None),
    FieldEdit("sender", "sender", lambda _w, _c: "jl.jl", Reason.SIG_SENDER_MISMATCH),
    FieldEdit(
        "sender_kid",
        "sender_kid",
        lambda w, _c: w.keys["jl.jl"].signing.kid,
        Reason.SIG_SENDER_MISMATCH,
    ),
    FieldEdit("to-reordered", "to", lambda _w, c: c["to"][::-1], None),
    FieldEdit("cc-reordered", "cc", lambda _w, c: c["cc"][::-1], None),
    FieldEdit("classification-raised", "classification", lambda _w, _c: "TOP_SECRET", None),
    FieldEdit("classification-lowered", "classification", lambda _w, _c: "CONFIDENTIAL", None),
    FieldEdit("precedence", "precedence", lambda _w, _c: "FLASH", None),
    FieldEdit("doc_type", "doc_type", lambda _w, _c: "ORDER", None),
    FieldEdit("created_at", "created_at", lambda _w, c: c["created_at"] + 1, None),
    FieldEdit("expires_at", "expires_at", lambda _w, c: c["expires_at"] + DAY_MS, None),
    FieldEdit("expires_at-removed", "expires_at", lambda _w, _c: None, None),
    FieldEdit("in_reply_to", "in_reply_to", lambda _w, _c: new_msg_id(), None),
    FieldEdit("in_reply_to-removed", "in_reply_to", lambda _w, _c: None, None),
    FieldEdit("dir_version", "dir_version", lambda _w, c: c["dir_version"] + 1, None),
    FieldEdit("doc_number", "doc_number", lambda _w, _c: "吉政发〔2026〕2号", None),
    FieldEdit("doc_number-removed", "doc_number", lambda _w, _c: None, None),
    FieldEdit("signatory", "signatory", lambda _w, _c: "李四", None),
    FieldEdit("secrecy_period", "secrecy_period", lambda _w, _c: "long", None),
    FieldEdit(
        "copy_numbers",
        "copy_numbers",
        lambda _w, c: {k: f"{int(v) + 10:06d}" for k, v in c["copy_numbers"].items()},
        None,
    ),
    FieldEdit("directive", "directive", lambda _w, c: not c["directive"], None),
    FieldEdit("keys-reboxed", "keys", _rebox, None),
    FieldEdit("terms-added", "terms", lambda _w, c: _terms(sign_by=c["created_at"] + 1), None),
    FieldEdit(  # a deadline the document was already past when it was sealed
        "terms-past", "terms", lambda _w, c: _terms(done_by=c["created_at"]), Reason.ENV_BAD_LABEL
    ),
    FieldEdit(  # a drill is an emergency notice's mark
        "terms-drill", "terms", lambda _w, _c: _terms(drill=True), Reason.ENV_BAD_LABEL
    ),
    FieldEdit(  # a case number is a petition's
        "terms-case", "terms", lambda _w, _c: _terms(case="JX2026-0001"), Reason.ENV_BAD_LABEL
    ),
    FieldEdit(  # terms that set nothing are left out
        "terms-empty", "terms", lambda _w, _c: _terms(), Reason.SCHEMA_INVALID
    ),
]


def _terms(**set_: object) -> dict[str, object]:
    return {
        "accept_by": None,
        "case": None,
        "done_by": None,
        "drill": False,
        "sign_by": None,
    } | set_


def _apply(world: World, edit: FieldEdit) -> Callable[[dict[str, Any]], None]:
    def change(core: dict[str, Any]) -> None:
        new = edit.value(world, core)
        assert new != core.get(edit.field), f"edit {edit.case} does not change anything"
        core[edit.field] = new

    return change


def test_field_edit_table_covers_every_header_field() -> None:
    assert {e.field for e in FIELD_EDITS} == set(Header.model_fields)


@pytest.mark.parametrize("edit", FIELD_EDITS, ids=lambda e: e.case)
def test_changed_header_field_under_the_old_signature_is_sig_invalid(
    world: World, rich: tuple[Sealed, bytes], edit: FieldEdit
) -> None:
    sealed, _ = rich
    frame = rebuild_frame(world, sealed.frame, _apply(world, edit), resign=False)
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory, expected_sender="jl.gov")
    assert exc.value.reason is Reason.SIG_INVALID


@pytest.mark.parametrize("edit", FIELD_EDITS, ids=lambda e: e.case)
def test_changed_header_field_resigned_by_the_sender_is_judged_on_its_merits(
    world: World, rich: tuple[Sealed, bytes], edit: FieldEdit
) -> None:
    """The same edits, re-signed: only the signature stood between each edit and the hub
    (except v, sender and sender_kid, which the hub refuses for what they say)."""
    sealed, _ = rich
    frame = rebuild_frame(world, sealed.frame, _apply(world, edit), resign=True)
    if edit.resigned is None:
        envelope = verify_envelope(frame, world.directory, expected_sender="jl.gov")
        assert unpack(envelope.core)[edit.field] == frame_parts(frame)[2][edit.field]
    else:
        with pytest.raises(PeerError) as exc:
            verify_envelope(frame, world.directory, expected_sender="jl.gov")
        assert exc.value.reason is edit.resigned


@pytest.mark.parametrize("position", range(64))
def test_any_flipped_signature_byte_is_sig_invalid(
    world: World, trio: tuple[Sealed, bytes], position: int
) -> None:
    sealed, _ = trio
    outer, _, _ = frame_parts(sealed.frame)
    frame = encode_frame(outer["from"], outer["kid"], outer["hdr"], flip(outer["sig"], position))
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_INVALID


def test_every_flipped_hdr_byte_is_sig_invalid(world: World, rich: tuple[Sealed, bytes]) -> None:
    """hdr is opaque bin inside the frame, so a flip inside it never breaks the frame's own
    encoding: the signature check (which comes before hdr is decoded) always catches it."""
    sealed, _ = rich
    outer, _, _ = frame_parts(sealed.frame)
    hdr = outer["hdr"]
    for position in range(len(hdr)):
        for mask in (0x01, 0x80, 0xFF):
            frame = encode_frame(
                outer["from"], outer["kid"], flip(hdr, position, mask), outer["sig"]
            )
            with pytest.raises(SignatureError) as exc:
                verify_envelope(frame, world.directory)
            assert exc.value.reason is Reason.SIG_INVALID, (position, mask)


FRAME_FLIP_REASONS = {
    # the flip breaks the frame's encoding or shape
    Reason.DECODE_MALFORMED,
    Reason.DECODE_NON_CANONICAL,
    Reason.DECODE_TRAILING_BYTES,
    Reason.DECODE_LIMIT,
    Reason.DECODE_FORBIDDEN_TYPE,
    Reason.DECODE_TOO_DEEP,
    Reason.SCHEMA_INVALID,
    Reason.SCHEMA_VERSION,
    # the flip renames the sender or the key id to one the directory does not know
    Reason.SIG_UNKNOWN_SENDER,
    Reason.SIG_UNKNOWN_KEY,
    # the flip lands in hdr or sig
    Reason.SIG_INVALID,
}


def test_every_flipped_frame_byte_is_refused_with_a_peer_reason(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    """A sweep over the raw frame: never accepted, never an unexpected exception type; a
    flip inside the hdr or sig payload is exactly SIG_INVALID."""
    sealed, _ = trio
    frame = sealed.frame
    outer, _, _ = frame_parts(frame)
    hdr_at, sig_at = frame.index(outer["hdr"]), frame.index(outer["sig"])
    payload = set(range(hdr_at, hdr_at + len(outer["hdr"]))) | set(range(sig_at, sig_at + 64))
    seen: set[Reason] = set()
    for position in range(len(frame)):
        for mask in (0x01, 0x20, 0xFF):
            with pytest.raises(PeerError) as exc:
                verify_envelope(flip(frame, position, mask), world.directory)
            reason = exc.value.reason
            seen.add(reason)
            assert reason in FRAME_FLIP_REASONS, (position, mask, exc.value)
            if position in payload:
                assert reason is Reason.SIG_INVALID, (position, mask, exc.value)
            elif reason is Reason.SIG_INVALID:
                raise AssertionError(f"flip at {position} outside hdr/sig gave SIG_INVALID")
    assert {Reason.SIG_INVALID, Reason.DECODE_MALFORMED, Reason.SIG_UNKNOWN_SENDER} <= seen


def test_old_signature_grafted_onto_a_new_msg_id_is_sig_invalid(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    other, _ = world.seal("jl.gov", ("jl.cc", "jl.sp"), cc=("jl.jl",), contents=[b"trio"])
    old_outer, _, _ = frame_parts(sealed.frame)
    new_outer, _, new_core = frame_parts(other.frame)
    assert new_core["msg_id"] != sealed.header.msg_id
    frame = encode_frame("jl.gov", new_outer["kid"], new_outer["hdr"], old_outer["sig"])
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_INVALID


# -------------------------------------------------------------------------- the body


def _body_positions(body: bytes) -> list[int]:
    """Stream header, first chunk, a chunk boundary, a middle chunk, the last byte."""
    return [0, 23, STREAM_HEADER_BYTES, 100, STREAM_HEADER_BYTES + CT_CHUNK, 150_000, len(body) - 1]


def test_flipped_body_byte_fails_decryption_for_the_recipient(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    envelope = verified(world, sealed.frame)
    for position in _body_positions(body):
        with pytest.raises(EnvelopeError) as exc:
            feed_all(envelope, world, "jl.cc", flip(body, position))
        assert exc.value.reason is Reason.BODY_DECRYPT_FAILED, position


def test_flipped_body_byte_fails_the_hubs_hash_check(multi_chunk: tuple[Sealed, bytes]) -> None:
    sealed, body = multi_chunk
    for position in _body_positions(body):
        with pytest.raises(EnvelopeError) as exc:
            hub_check(sealed, flip(body, position))
        assert exc.value.reason is Reason.BODY_HASH_MISMATCH, position


def test_swapped_body_chunks_fail_decryption(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    head, first, second = (
        body[:STREAM_HEADER_BYTES],
        body[STREAM_HEADER_BYTES : STREAM_HEADER_BYTES + CT_CHUNK],
        body[STREAM_HEADER_BYTES + CT_CHUNK : STREAM_HEADER_BYTES + 2 * CT_CHUNK],
    )
    swapped = head + second + first + body[STREAM_HEADER_BYTES + 2 * CT_CHUNK :]
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, sealed.frame), world, "jl.cc", swapped)
    assert exc.value.reason is Reason.BODY_DECRYPT_FAILED


def _boundaries(sealed: Sealed) -> list[int]:
    """Cut points at chunk boundaries: after the stream header and after each full chunk."""
    return [STREAM_HEADER_BYTES + k * CT_CHUNK for k in range(sealed.body.chunk_count)]


@pytest.mark.parametrize("cut", [0, 10, STREAM_HEADER_BYTES + 100, -1, -CT_CHUNK // 2])
def test_body_cut_mid_chunk_is_truncated(
    world: World, multi_chunk: tuple[Sealed, bytes], cut: int
) -> None:
    sealed, body = multi_chunk
    short = body[:cut]
    assert len(short) not in _boundaries(sealed)
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, sealed.frame), world, "jl.cc", short, 777)
    assert exc.value.reason is Reason.BODY_TRUNCATED
    with pytest.raises(EnvelopeError) as exc:
        hub_check(sealed, short)
    assert exc.value.reason is Reason.BODY_TRUNCATED


def test_body_without_its_final_chunk_is_missing_final(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    last_boundary = _boundaries(sealed)[-1]
    assert last_boundary == STREAM_HEADER_BYTES + 3 * CT_CHUNK  # the final chunk is cut off
    assert 0 < len(body) - last_boundary < CT_CHUNK
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, sealed.frame), world, "jl.cc", body[:last_boundary])
    assert exc.value.reason is Reason.BODY_MISSING_FINAL
    with pytest.raises(EnvelopeError) as exc:
        hub_check(sealed, body[:last_boundary])
    assert exc.value.reason is Reason.BODY_TRUNCATED


def test_body_cut_at_any_chunk_boundary_is_missing_final(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    envelope = verified(world, sealed.frame)
    for cut in _boundaries(sealed):
        with pytest.raises(EnvelopeError) as exc:
            feed_all(envelope, world, "jl.cc", body[:cut])
        assert exc.value.reason is Reason.BODY_MISSING_FINAL, cut


@pytest.mark.parametrize("extra", [b"\x00", b"x" * 1000, b"\x00" * CT_CHUNK])
def test_bytes_after_the_body_are_trailing_data(
    world: World, multi_chunk: tuple[Sealed, bytes], extra: bytes
) -> None:
    sealed, body = multi_chunk
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, sealed.frame), world, "jl.cc", body + extra)
    assert exc.value.reason is Reason.BODY_TRAILING_DATA
    with pytest.raises(EnvelopeError) as exc:
        hub_check(sealed, body + extra)
    assert exc.value.reason is Reason.BODY_TRAILING_DATA


def test_trailing_bytes_fed_after_the_whole_body_are_refused(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    opener = Opener(verified(world, sealed.frame), "jl.cc", world.keys["jl.cc"].encryption)
    opener.feed(body)
    with pytest.raises(EnvelopeError) as exc:
        opener.feed(b"\x00")
    assert exc.value.reason is Reason.BODY_TRAILING_DATA
    checker = BodyChecker(sealed.body)
    checker.feed(body)
    with pytest.raises(EnvelopeError) as exc:
        checker.feed(b"\x00")
    assert exc.value.reason is Reason.BODY_TRAILING_DATA


def test_sender_signed_descriptor_that_drops_the_final_chunk_is_refused_by_the_inner_sizes(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    """A (buggy) sender signs the size and hash of a body cut before its FINAL chunk: the
    hub cannot tell, and the recipient refuses as soon as the inner record is open, because
    its files declare more plaintext than the signed body holds."""
    sealed, body = multi_chunk
    short = body[: _boundaries(sealed)[-1]]
    descriptor = {
        "size": len(short),
        "chunk": CHUNK_PLAIN,
        "sha256": hashlib.sha256(short).digest(),
    }
    frame = rebuild_frame(world, sealed.frame, resign=True, body=descriptor)
    hub_check(Sealed(frame, sealed.header, verified(world, frame).body), short)
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, frame), world, "jl.cc", short)
    assert exc.value.reason is Reason.INNER_MALFORMED


def test_sender_signed_stream_without_a_final_tag_is_missing_final(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    """Every chunk decrypts and the sizes agree, but no chunk is tagged FINAL."""
    sealed, body = multi_chunk
    outer, _, core = frame_parts(sealed.frame)
    file_key = unseal_file_key(world, sealed.frame, "jl.cc")
    plaintext = decrypt_body(file_key, unpack(outer["hdr"])["core"], body)
    no_final = encrypt_body(file_key, unpack(outer["hdr"])["core"], plaintext, final_at=-1)
    assert len(no_final) == len(body)
    frame = signed_envelope(world, "jl.gov", core, no_final)
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, frame), world, "jl.cc", no_final)
    assert exc.value.reason is Reason.BODY_MISSING_FINAL


def test_sender_signed_stream_that_continues_after_final_is_trailing_data(
    world: World, multi_chunk: tuple[Sealed, bytes]
) -> None:
    sealed, body = multi_chunk
    outer, _, core = frame_parts(sealed.frame)
    file_key = unseal_file_key(world, sealed.frame, "jl.cc")
    plaintext = decrypt_body(file_key, unpack(outer["hdr"])["core"], body)
    early_final = encrypt_body(file_key, unpack(outer["hdr"])["core"], plaintext, final_at=1)
    frame = signed_envelope(world, "jl.gov", core, early_final)
    with pytest.raises(EnvelopeError) as exc:
        feed_all(verified(world, frame), world, "jl.cc", early_final)
    assert exc.value.reason is Reason.BODY_TRAILING_DATA


# ----------------------------------------------------- recipients and the sealed keys


def _sealed_key(world: World, org: str) -> dict[str, Any]:
    key = world.keys[org].encryption
    return {"kid": key.kid, "box": seal_to(key.public, os.urandom(32))}


RecipientEdit = Callable[[World, dict[str, Any]], None]


def _to_extra(w: World, c: dict[str, Any]) -> None:
    c["to"].append("jl.bs")


def _cc_extra(w: World, c: dict[str, Any]) -> None:
    c["cc"].append("jl.bs")


def _key_extra(w: World, c: dict[str, Any]) -> None:
    c["keys"]["jl.bs"] = _sealed_key(w, "jl.bs")


def _to_dropped(w: World, c: dict[str, Any]) -> None:
    c["to"].remove("jl.sp")


def _cc_dropped(w: World, c: dict[str, Any]) -> None:
    c["cc"] = []


def _key_dropped(w: World, c: dict[str, Any]) -> None:
    del c["keys"]["jl.jl"]


def _to_swapped(w: World, c: dict[str, Any]) -> None:
    c["to"] = ["jl.cc", "jl.bs"]


def _key_swapped(w: World, c: dict[str, Any]) -> None:
    c["keys"]["jl.bs"] = c["keys"].pop("jl.sp")


def _dup_in_to(w: World, c: dict[str, Any]) -> None:
    c["to"].append("jl.cc")


def _dup_across(w: World, c: dict[str, Any]) -> None:
    c["cc"].append("jl.cc")


def _sender_in_to(w: World, c: dict[str, Any]) -> None:
    c["to"].append("jl.gov")
    c["keys"]["jl.gov"] = _sealed_key(w, "jl.gov")


def _sender_in_cc(w: World, c: dict[str, Any]) -> None:
    c["cc"].append("jl.gov")


def _empty_to(w: World, c: dict[str, Any]) -> None:
    c["to"] = []


def _empty_to_moved_to_cc(w: World, c: dict[str, Any]) -> None:
    c["cc"] = [*c["to"], *c["cc"]]
    c["to"] = []


def _crowd(w: World, c: dict[str, Any]) -> None:
    """More recipients than one envelope carries, each keyed (a sender that ignored the
    limit): 600 in to, 401 in cc."""
    box = next(iter(c["keys"].values()))
    extra = [f"jl.x{i}" for i in range(MAX_RECIPIENTS + 1 - len(c["to"]) - len(c["cc"]))]
    c["to"] += extra[:600]
    c["cc"] += extra[600:]
    c["keys"].update(dict.fromkeys(extra, box))


RECIPIENT_EDITS: list[tuple[str, RecipientEdit, Reason]] = [
    ("more-than-an-envelope-carries", _crowd, Reason.ENV_TOO_MANY_RECIPIENTS),
    ("to-extra-without-key", _to_extra, Reason.ENV_KEYS_MISMATCH),
    ("cc-extra-without-key", _cc_extra, Reason.ENV_KEYS_MISMATCH),
    ("key-without-recipient", _key_extra, Reason.ENV_KEYS_MISMATCH),
    ("to-dropped-key-kept", _to_dropped, Reason.ENV_KEYS_MISMATCH),
    ("cc-dropped-key-kept", _cc_dropped, Reason.ENV_KEYS_MISMATCH),
    ("key-dropped-recipient-kept", _key_dropped, Reason.ENV_KEYS_MISMATCH),
    ("to-swapped-key-not", _to_swapped, Reason.ENV_KEYS_MISMATCH),
    ("key-swapped-to-not", _key_swapped, Reason.ENV_KEYS_MISMATCH),
    ("duplicate-in-to", _dup_in_to, Reason.ENV_DUPLICATE_RECIPIENT),
    ("duplicate-across-to-and-cc", _dup_across, Reason.ENV_DUPLICATE_RECIPIENT),
    ("sender-in-to-with-key", _sender_in_to, Reason.ENV_DUPLICATE_RECIPIENT),
    ("sender-in-cc-without-key", _sender_in_cc, Reason.ENV_DUPLICATE_RECIPIENT),
    ("empty-to", _empty_to, Reason.ENV_NO_RECIPIENT),
    ("empty-to-all-in-cc", _empty_to_moved_to_cc, Reason.ENV_NO_RECIPIENT),
]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [(e, r) for _, e, r in RECIPIENT_EDITS],
    ids=[c for c, _, _ in RECIPIENT_EDITS],
)
def test_inconsistent_recipients_resigned_by_the_sender_are_refused_by_the_hub(
    world: World, trio: tuple[Sealed, bytes], edit: RecipientEdit, reason: Reason
) -> None:
    sealed, _ = trio
    frame = rebuild_frame(world, sealed.frame, lambda core: edit(world, core), resign=True)
    with pytest.raises(EnvelopeError) as exc:
        verify_envelope(frame, world.directory, expected_sender="jl.gov")
    assert exc.value.reason is reason


@pytest.mark.parametrize(
    "edit", [e for _, e, _ in RECIPIENT_EDITS], ids=[c for c, _, _ in RECIPIENT_EDITS]
)
def test_recipient_edits_without_resigning_are_sig_invalid(
    world: World, trio: tuple[Sealed, bytes], edit: RecipientEdit
) -> None:
    sealed, _ = trio
    frame = rebuild_frame(world, sealed.frame, lambda core: edit(world, core), resign=False)
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory, expected_sender="jl.gov")
    assert exc.value.reason is Reason.SIG_INVALID


@pytest.mark.parametrize(
    ("to", "cc", "reason"),
    [
        (("jl.cc", "jl.cc"), (), Reason.ENV_DUPLICATE_RECIPIENT),
        (("jl.cc",), ("jl.cc",), Reason.ENV_DUPLICATE_RECIPIENT),
        (("jl.cc", "jl.gov"), (), Reason.ENV_DUPLICATE_RECIPIENT),
        ((), ("jl.cc",), Reason.ENV_NO_RECIPIENT),
    ],
)
def test_sealer_refuses_a_draft_with_inconsistent_recipients(
    world: World, to: tuple[str, ...], cc: tuple[str, ...], reason: Reason
) -> None:
    with pytest.raises(EnvelopeError) as exc:
        world.seal("jl.gov", to, cc=cc)
    assert exc.value.reason is reason


def test_recipient_dropped_from_to_and_keys_and_resigned_fails_the_old_body_binding(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    """Re-signing a consistent header alone passes the hub, but the body's AAD is bound
    to the original core, so the remaining recipient cannot decrypt it."""
    sealed, body = trio

    def drop(core: dict[str, Any]) -> None:
        core["to"].remove("jl.sp")
        del core["keys"]["jl.sp"]

    frame = rebuild_frame(world, sealed.frame, drop, resign=True)
    assert verified(world, frame).header.recipients == ("jl.cc", "jl.jl")
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.cc", body)
    assert exc.value.reason is Reason.BODY_DECRYPT_FAILED


def _drop_sp(world: World, core: dict[str, Any]) -> None:
    core["to"].remove("jl.sp")
    del core["keys"]["jl.sp"]


def _add_bs(world: World, core: dict[str, Any]) -> None:
    file_key = world.keys["jl.cc"].encryption.unseal(core["keys"]["jl.cc"]["box"])
    core["cc"].append("jl.bs")
    bs = world.keys["jl.bs"].encryption
    core["keys"]["jl.bs"] = {"kid": bs.kid, "box": seal_to(bs.public, file_key)}


def _new_msg_id(world: World, core: dict[str, Any]) -> None:
    core["msg_id"] = new_msg_id()


def _raise(world: World, core: dict[str, Any]) -> None:
    core["classification"] = "CONFIDENTIAL"


def _lower(world: World, core: dict[str, Any]) -> None:
    core["classification"] = "PUBLIC"


INNER_FIELD_EDITS: list[tuple[str, RecipientEdit, str]] = [
    ("classification-raised", _raise, "jl.cc"),
    ("classification-lowered", _lower, "jl.cc"),
    ("recipient-dropped", _drop_sp, "jl.cc"),
    ("recipient-added", _add_bs, "jl.bs"),
    ("msg_id-changed", _new_msg_id, "jl.cc"),
]


@pytest.mark.parametrize(
    ("edit", "me"),
    [(e, m) for _, e, m in INNER_FIELD_EDITS],
    ids=[c for c, _, _ in INNER_FIELD_EDITS],
)
def test_classification_or_recipients_changed_and_resigned_is_refused_by_recipient_inner_check(
    world: World, trio: tuple[Sealed, bytes], edit: RecipientEdit, me: str
) -> None:
    """The sender re-signs an edited header *and* re-encrypts the body so the AAD matches:
    the hub accepts it (a validly signed, consistent header), but the signed inner record
    still names the original classification and recipients, and the recipient refuses."""
    sealed, body = trio
    frame, new_body = reencrypted(world, sealed, body, lambda core: edit(world, core))
    verify_envelope(frame, world.directory, expected_sender="jl.gov")
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, me, new_body)
    assert exc.value.reason is Reason.INNER_HEADER_MISMATCH


@pytest.mark.parametrize("edit", [_raise, _lower], ids=["raised", "lowered"])
def test_classification_changed_and_resigned_without_reencrypting_fails_the_body_binding(
    world: World, trio: tuple[Sealed, bytes], edit: RecipientEdit
) -> None:
    sealed, body = trio
    frame = rebuild_frame(world, sealed.frame, lambda core: edit(world, core), resign=True)
    verify_envelope(frame, world.directory, expected_sender="jl.gov")
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.cc", body)
    assert exc.value.reason is Reason.BODY_DECRYPT_FAILED


def test_recipients_swapped_consistently_are_refused_at_the_hub_for_a_foreign_key(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio

    def swap(core: dict[str, Any]) -> None:
        _to_swapped(world, core)
        _key_swapped(world, core)

    frame = rebuild_frame(world, sealed.frame, swap, resign=True)
    with pytest.raises(EnvelopeError) as at_hub:
        verify_envelope(frame, world.directory, expected_sender="jl.gov")
    assert at_hub.value.reason is Reason.ENV_KEYS_MISMATCH
    assert "jl.bs" in at_hub.value.message


def test_sealed_key_with_the_right_kid_but_a_bad_box_passes_the_hub_and_fails_the_recipient(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, body = trio

    def garble(core: dict[str, Any]) -> None:
        core["keys"]["jl.sp"]["box"] = bytes(80)

    frame = rebuild_frame(world, sealed.frame, garble, resign=True)
    verify_envelope(frame, world.directory, expected_sender="jl.gov")  # the hub cannot tell
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.sp", body)
    assert exc.value.reason is Reason.ENV_KEY_UNSEAL_FAILED


def test_recipient_missing_from_the_directory_is_refused_at_the_hub(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    smaller = world.directory.model_copy(
        update={"orgs": tuple(o for o in world.directory.orgs if o.id != "jl.sp")}
    )
    with pytest.raises(EnvelopeError) as exc:
        verify_envelope(sealed.frame, smaller, expected_sender="jl.gov")
    assert exc.value.reason is Reason.ENV_UNKNOWN_RECIPIENT


def test_envelope_claiming_to_come_from_the_hub_is_refused(world: World) -> None:
    sealed, _ = world.seal("jl.gov", ["jl.cc"])

    def as_hub(core: dict[str, Any]) -> None:
        core["sender"] = world.directory.hub_id
        core["sender_kid"] = world.hub_key.kid

    _, _, core = frame_parts(sealed.frame)
    as_hub(core)
    hdr = codec.encode({"core": codec.encode(core), "body": frame_parts(sealed.frame)[1]["body"]})
    frame = encode_frame(world.directory.hub_id, world.hub_key.kid, hdr,
                         world.hub_key.sign(DOMAIN_HEADER, hdr))  # fmt: skip
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_UNKNOWN_SENDER


# ------------------------------------------------------- surreptitious forwarding


def _forwarded_core(world: World, sealed: Sealed, file_key: bytes) -> dict[str, Any]:
    """jl.cc's own header to jl.jl, with ``file_key`` sealed to jl.jl."""
    _, _, core = frame_parts(sealed.frame)
    target = world.keys["jl.jl"].encryption
    core.update(
        msg_id=new_msg_id(),
        sender="jl.cc",
        sender_kid=world.keys["jl.cc"].signing.kid,
        to=["jl.jl"],
        cc=[],
        keys={"jl.jl": {"kid": target.kid, "box": seal_to(target.public, file_key)}},
    )
    return core


@pytest.fixture(scope="module")
def original(world: World) -> tuple[Sealed, bytes]:
    return world.seal("jl.gov", ("jl.cc",), contents=[b"for jl.cc only"])


def test_forwarded_body_under_a_new_header_fails_the_aad_binding(
    world: World, original: tuple[Sealed, bytes]
) -> None:
    sealed, body = original
    file_key = unseal_file_key(world, sealed.frame, "jl.cc")
    frame = signed_envelope(world, "jl.cc", _forwarded_core(world, sealed, file_key), body)
    verify_envelope(frame, world.directory, expected_sender="jl.cc")  # the hub sees no problem
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.jl", body)
    assert exc.value.reason is Reason.BODY_DECRYPT_FAILED


def test_forwarded_plaintext_reencrypted_under_a_new_key_fails_the_inner_signature(
    world: World, original: tuple[Sealed, bytes]
) -> None:
    """jl.cc re-encrypts the original plaintext, jl.gov's inner record and signature
    included: the inner signature is checked against the header's sender, jl.cc."""
    sealed, body = original
    outer, _, _ = frame_parts(sealed.frame)
    plaintext = decrypt_body(
        unseal_file_key(world, sealed.frame, "jl.cc"), unpack(outer["hdr"])["core"], body
    )
    new_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    core = _forwarded_core(world, sealed, new_key)
    new_body = encrypt_body(new_key, codec.encode(core), plaintext)
    frame = signed_envelope(world, "jl.cc", core, new_body)
    verify_envelope(frame, world.directory, expected_sender="jl.cc")
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.jl", new_body)
    assert exc.value.reason is Reason.INNER_BAD_SIGNATURE


def test_forwarded_inner_record_resigned_by_the_forwarder_fails_the_inner_fields(
    world: World, original: tuple[Sealed, bytes]
) -> None:
    """jl.cc even re-signs jl.gov's inner record with its own key: the record still names
    jl.gov as sender and jl.cc as recipient, which the header contradicts."""
    sealed, body = original
    outer, _, _ = frame_parts(sealed.frame)
    plaintext = decrypt_body(
        unseal_file_key(world, sealed.frame, "jl.cc"), unpack(outer["hdr"])["core"], body
    )
    length = int.from_bytes(plaintext[:4], "big")
    inner = plaintext[4 : 4 + length]
    isig = world.keys["jl.cc"].signing.sign(DOMAIN_INNER, inner)
    forged = plaintext[: 4 + length] + isig + plaintext[4 + length + 64 :]
    new_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    core = _forwarded_core(world, sealed, new_key)
    new_body = encrypt_body(new_key, codec.encode(core), forged)
    frame = signed_envelope(world, "jl.cc", core, new_body)
    with pytest.raises(EnvelopeError) as exc:
        open_as(world, frame, "jl.jl", new_body)
    assert exc.value.reason is Reason.INNER_HEADER_MISMATCH


# ----------------------------------------------------------------- opening as whom


def test_opening_with_another_organisations_key_is_unseal_failed(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    with pytest.raises(EnvelopeError) as exc:
        Opener(verified(world, sealed.frame), "jl.cc", world.keys["jl.jl"].encryption)
    assert exc.value.reason is Reason.ENV_KEY_UNSEAL_FAILED


def test_sealed_key_that_does_not_open_with_the_named_key_is_unseal_failed(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    """The kid matches, but the box was sealed to someone else: the unseal itself fails."""
    sealed, _ = trio

    def rebox(core: dict[str, Any]) -> None:
        core["keys"]["jl.cc"]["box"] = seal_to(world.keys["jl.jl"].encryption.public, b"k" * 32)

    frame = rebuild_frame(world, sealed.frame, rebox, resign=True)
    with pytest.raises(EnvelopeError) as exc:
        Opener(verified(world, frame), "jl.cc", world.keys["jl.cc"].encryption)
    assert exc.value.reason is Reason.ENV_KEY_UNSEAL_FAILED


def test_opening_as_an_organisation_not_addressed_is_not_a_recipient(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    with pytest.raises(EnvelopeError) as exc:
        Opener(verified(world, sealed.frame), "jl.bs", world.keys["jl.bs"].encryption)
    assert exc.value.reason is Reason.ENV_NOT_A_RECIPIENT


# ------------------------------------------------------- the frame and the sender's key


def test_frame_on_another_senders_topic_is_sender_mismatch(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    with pytest.raises(SignatureError) as exc:
        verify_envelope(sealed.frame, world.directory, expected_sender="jl.jl")
    assert exc.value.reason is Reason.SIG_SENDER_MISMATCH


def test_frame_from_renamed_keeping_the_kid_is_unknown_key(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    """The key is looked up by (from, kid); jl.jl has no key with jl.gov's kid, so the
    lookup fails before any signature is checked."""
    sealed, _ = trio
    outer, _, _ = frame_parts(sealed.frame)
    frame = encode_frame("jl.jl", outer["kid"], outer["hdr"], outer["sig"])
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_UNKNOWN_KEY


def test_frame_from_and_kid_renamed_is_sig_invalid(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    outer, _, _ = frame_parts(sealed.frame)
    frame = encode_frame("jl.jl", world.keys["jl.jl"].signing.kid, outer["hdr"], outer["sig"])
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_INVALID


def test_header_of_one_sender_resigned_by_another_is_sender_mismatch(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    """jl.jl signs jl.gov's hdr and sends it as its own: the signature verifies with
    jl.jl's key, but the signed sender is jl.gov."""
    sealed, _ = trio
    outer, _, _ = frame_parts(sealed.frame)
    jl = world.keys["jl.jl"].signing
    frame = encode_frame("jl.jl", jl.kid, outer["hdr"], jl.sign(DOMAIN_HEADER, outer["hdr"]))
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory, expected_sender="jl.jl")
    assert exc.value.reason is Reason.SIG_SENDER_MISMATCH


def test_frame_from_an_organisation_not_in_the_directory_is_unknown_sender(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    outer, _, _ = frame_parts(sealed.frame)
    frame = encode_frame("jl.nowhere", outer["kid"], outer["hdr"], outer["sig"])
    with pytest.raises(SignatureError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SIG_UNKNOWN_SENDER


def test_frame_version_2_is_unsupported(world: World, trio: tuple[Sealed, bytes]) -> None:
    """Judged on the reason code: the exception class for a bad frame version moved from
    DecodeError to SchemaError while these tests were written; both are PeerErrors."""
    sealed, _ = trio
    outer = unpack(sealed.frame)
    outer["v"] = 2
    with pytest.raises(PeerError) as exc:
        verify_envelope(codec.encode(outer), world.directory)
    assert exc.value.reason is Reason.SCHEMA_VERSION


def test_core_version_3_resigned_is_schema_invalid(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    frame = rebuild_frame(world, sealed.frame, lambda core: core.update(v=3), resign=True)
    with pytest.raises(SchemaError) as exc:
        verify_envelope(frame, world.directory)
    assert exc.value.reason is Reason.SCHEMA_INVALID


DEFAULT_NOT_BEFORE = NOW - 10 * DAY_MS  # tests.world's default key window
DEFAULT_NOT_AFTER = NOW + 365 * DAY_MS


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [
        (DEFAULT_NOT_BEFORE, NOW, Reason.SIG_KEY_EXPIRED),
        (DEFAULT_NOT_BEFORE, NOW - DAY_MS, Reason.SIG_KEY_EXPIRED),
        (NOW + 1, DEFAULT_NOT_AFTER, Reason.SIG_KEY_NOT_YET_VALID),
        (NOW + DAY_MS, NOW + 2 * DAY_MS, Reason.SIG_KEY_NOT_YET_VALID),
        (DEFAULT_NOT_BEFORE, NOW + 1, None),
        (NOW, DEFAULT_NOT_AFTER, None),
    ],
    ids=[
        "expired-at-created",
        "expired-before",
        "valid-1ms-later",
        "valid-tomorrow",
        "last-ms",
        "first-ms",
    ],
)
def test_sender_key_window_is_judged_at_the_signed_created_at(
    world: World,
    trio: tuple[Sealed, bytes],
    not_before: int,
    not_after: int,
    reason: Reason | None,
) -> None:
    sealed, _ = trio
    assert sealed.header.created_at == NOW
    directory = world.rebuild(version=2, not_before=not_before, not_after=not_after)
    if reason is None:
        verify_envelope(sealed.frame, directory, expected_sender="jl.gov")
        return
    with pytest.raises(SignatureError) as exc:
        verify_envelope(sealed.frame, directory, expected_sender="jl.gov")
    assert exc.value.reason is reason


def test_revoked_sender_key_is_refused(world: World, trio: tuple[Sealed, bytes]) -> None:
    sealed, _ = trio
    directory = world.rebuild(version=2, revoked=[world.keys["jl.gov"].signing.kid])
    with pytest.raises(SignatureError) as exc:
        verify_envelope(sealed.frame, directory, expected_sender="jl.gov")
    assert exc.value.reason is Reason.SIG_KEY_REVOKED


def test_revoking_another_organisations_key_does_not_affect_the_sender(
    world: World, trio: tuple[Sealed, bytes]
) -> None:
    sealed, _ = trio
    directory = world.rebuild(version=2, revoked=[world.keys["jl.jl"].signing.kid])
    verify_envelope(sealed.frame, directory, expected_sender="jl.gov")


# ------------------------------------------------------------------------ freshness

SKEW = 5 * 60 * 1000


@pytest.mark.parametrize(
    ("now", "max_skew", "reason"),
    [
        (NOW + SKEW + 1, SKEW, Reason.REPLAY_CLOCK_SKEW),
        (NOW - SKEW - 1, SKEW, Reason.REPLAY_CLOCK_SKEW),
        (NOW + SKEW, SKEW, None),
        (NOW - SKEW, SKEW, None),
        (NOW, SKEW, None),
        # expiry, with a skew window wide enough not to interfere
        (NOW + DAY_MS, 2 * DAY_MS, Reason.REPLAY_EXPIRED),
        (NOW + DAY_MS + 1, 2 * DAY_MS, Reason.REPLAY_EXPIRED),
        (NOW + DAY_MS - 1, 2 * DAY_MS, None),
        # both wrong: skew is judged first
        (NOW + 3 * DAY_MS, SKEW, Reason.REPLAY_CLOCK_SKEW),
    ],
)
def test_check_freshness_refuses_skewed_and_expired_messages(
    world: World, now: int, max_skew: int, reason: Reason | None
) -> None:
    sealed, _ = world.seal("jl.gov", ("jl.cc",), expires_at=NOW + DAY_MS)
    if reason is None:
        check_freshness(sealed.header, now=now, max_skew_ms=max_skew)
        return
    with pytest.raises(ReplayError) as exc:
        check_freshness(sealed.header, now=now, max_skew_ms=max_skew)
    assert exc.value.reason is reason


def test_check_freshness_without_expiry_only_judges_skew(world: World) -> None:
    sealed, _ = world.seal("jl.gov", ("jl.cc",))
    assert sealed.header.expires_at is None
    check_freshness(sealed.header, now=NOW + 100 * DAY_MS, max_skew_ms=200 * DAY_MS)


# ----------------------------------------------- the source changing while sealing


def _sealer(world: World, contents: Sequence[bytes]) -> Sealer:
    draft, _ = world.draft("jl.gov", ("jl.cc",), contents=contents)
    return Sealer(draft, world.keys["jl.gov"].signing, world.directory)


def _seal_pushing(world: World, declared: Sequence[bytes], pushed: Sequence[bytes]) -> None:
    sealer = _sealer(world, declared)
    for part in pushed:
        sealer.push(part)
    sealer.finish()


DOC = random_bytes(100_000, 9)


@pytest.mark.parametrize(
    ("declared", "pushed"),
    [
        ([DOC], [DOC[:-1] + bytes([DOC[-1] ^ 1])]),
        ([DOC], [bytes([DOC[0] ^ 1]) + DOC[1:]]),
        ([DOC], [DOC + b"!"]),
        ([DOC], [DOC, b"!"]),
        ([DOC], [DOC[:-1]]),
        ([DOC], []),
        ([b""], [b"x"]),
        ([DOC, b"second"], [DOC + b"!", b"second"]),
        ([DOC, b"second"], [DOC[:-1], b"second"]),
        ([b"", DOC], [b"x", DOC]),
    ],
    ids=[
        "last-byte-differs",
        "first-byte-differs",
        "grew",
        "grew-in-a-later-push",
        "shrank",
        "vanished",
        "empty-file-grew",
        "first-of-two-grew",
        "first-of-two-shrank",
        "empty-first-file-grew",
    ],
)
def test_sealer_refuses_a_file_that_changed_after_hashing(
    world: World, declared: list[bytes], pushed: list[bytes]
) -> None:
    with pytest.raises(SourceChangedError):
        _seal_pushing(world, declared, pushed)


@pytest.mark.parametrize(
    "changed",
    [DOC[:50_000] + b"?" + DOC[50_001:], DOC + b"more", DOC[:-10]],
    ids=["differs", "grew", "shrank"],
)
def test_seal_streams_refuses_a_source_that_changed_after_hashing(
    world: World, changed: bytes
) -> None:
    draft, _ = world.draft("jl.gov", ("jl.cc",), contents=[DOC])
    with pytest.raises(SourceChangedError):
        seal_streams(
            draft,
            world.keys["jl.gov"].signing,
            world.directory,
            [io.BytesIO(changed)],
            io.BytesIO(),
        )


def test_sealer_accepts_the_declared_bytes_in_any_split(world: World) -> None:
    """Control for the SourceChangedError cases: the same declared files seal and open."""
    contents = [DOC, b"", b"second"]
    sealer = _sealer(world, contents)
    joined = b"".join(contents)
    parts = [sealer.push(joined[i : i + 9999]) for i in range(0, len(joined), 9999)]
    tail, sealed = sealer.finish()
    assert open_as(world, sealed.frame, "jl.cc", b"".join([*parts, tail])) == contents
