"""Interoperability: the documented byte layout, checked with independent code.

Signatures made by the project verify with the ``cryptography`` package's Ed25519 (not
PyNaCl), reading frames with plain ``msgpack`` (not ``schemas.codec``) and nothing but
the layout in the module docstrings; and an envelope assembled by hand, signed with
``cryptography``, verifies and opens with the project's code.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.public
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas import codec
from schemas.directory import verify_directory
from schemas.envelope import verify_envelope
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from schemas.seal import open_bytes
from tests.world import NOW, World

HDR_DOMAIN = b"xchg/v1/hdr\x00"
INNER_DOMAIN = b"xchg/v1/inner\x00"
RECEIPT_DOMAIN = b"xchg/v1/rcpt\x00"
DIRECTORY_DOMAIN = b"xchg/v1/dir\x00"
BODY_AAD_DOMAIN = b"xchg/v1/body\x00"
KID_DOMAIN = b"xchg/v1/kid\x00"
CHUNK = 65536
TAG_MESSAGE = 0  # libsodium crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = 3  # ... TAG_FINAL


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def sign_public(world: World, org: str, kid: str) -> bytes:
    """The public key of ``org``'s signing key ``kid``, from its directory entry."""
    entry = world.directory.org(org)
    assert entry is not None
    (key,) = [k for k in entry.sign_keys if k.kid == kid]
    return key.public


def independent_verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Raises InvalidSignature unless ``signature`` is Ed25519 over ``message``."""
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)


def decrypt_stream(file_key: bytes, aad: bytes, body: bytes) -> tuple[bytes, list[int]]:
    """Plaintext and chunk tags of a secretstream body, by hand."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, body[:24], file_key)
    plain, tags = [], []
    for offset in range(24, len(body), CHUNK + 17):
        piece, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
            state, body[offset : offset + CHUNK + 17], aad
        )
        plain.append(piece)
        tags.append(tag)
    return b"".join(plain), tags


def test_secretstream_tag_constants_are_libsodiums() -> None:
    assert sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE == TAG_MESSAGE
    assert sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL == TAG_FINAL


def test_header_signature_verifies_with_an_independent_ed25519(world: World) -> None:
    sealed, body = world.seal("jl.gov", ("jl.cc",), cc=("jl.jl",), contents=[b"interop"])
    outer = unpack(sealed.frame)
    assert set(outer) == {"v", "from", "kid", "hdr", "sig"}
    assert outer["v"] == 1
    assert outer["from"] == "jl.gov"
    public = sign_public(world, outer["from"], outer["kid"])
    independent_verify(public, outer["sig"], HDR_DOMAIN + outer["hdr"])
    with pytest.raises(InvalidSignature):  # the domain prefix is part of what is signed
        independent_verify(public, outer["sig"], outer["hdr"])
    with pytest.raises(InvalidSignature):
        independent_verify(public, outer["sig"], INNER_DOMAIN + outer["hdr"])

    hdr = unpack(outer["hdr"])
    assert set(hdr) == {"core", "body"}
    assert hdr["body"] == {
        "size": len(body),
        "chunk": CHUNK,
        "sha256": hashlib.sha256(body).digest(),
    }
    core = unpack(hdr["core"])
    assert core["sender"] == outer["from"]
    assert core["sender_kid"] == outer["kid"]
    assert (core["to"], core["cc"]) == (["jl.cc"], ["jl.jl"])


def test_key_ids_follow_the_documented_derivation(world: World) -> None:
    key = world.keys["jl.gov"]
    assert (
        key.signing.kid
        == hashlib.sha256(KID_DOMAIN + b"ed25519\x00" + key.signing.public).digest()[:8].hex()
    )
    assert (
        key.encryption.kid
        == hashlib.sha256(KID_DOMAIN + b"x25519\x00" + key.encryption.public).digest()[:8].hex()
    )


def test_inner_signature_and_plaintext_layout_verify_independently(world: World) -> None:
    contents = [os.urandom(100_000), b"", b"second"]
    sealed, body = world.seal("jl.gov", ("jl.cc",), contents=contents)
    outer = unpack(sealed.frame)
    core_bytes = unpack(outer["hdr"])["core"]
    core = unpack(core_bytes)
    box = core["keys"]["jl.cc"]["box"]
    private = nacl.public.PrivateKey(world.keys["jl.cc"].encryption.secret)
    file_key = nacl.public.SealedBox(private).decrypt(box)
    aad = hashlib.sha256(BODY_AAD_DOMAIN + core_bytes).digest()

    plaintext, tags = decrypt_stream(file_key, aad, body)
    assert tags == [TAG_MESSAGE] * (len(tags) - 1) + [TAG_FINAL]
    assert len(tags) == 2
    (length,) = struct.unpack(">I", plaintext[:4])
    inner_bytes = plaintext[4 : 4 + length]
    isig = plaintext[4 + length : 4 + length + 64]
    public = sign_public(world, "jl.gov", outer["kid"])
    independent_verify(public, isig, INNER_DOMAIN + inner_bytes)
    with pytest.raises(InvalidSignature):
        independent_verify(public, isig, HDR_DOMAIN + inner_bytes)

    inner = unpack(inner_bytes)
    for field in ("msg_id", "sender", "to", "cc", "classification"):
        assert inner[field] == core[field]
    assert plaintext[4 + length + 64 :] == b"".join(contents)
    assert [(f["size"], f["sha256"]) for f in inner["files"]] == [
        (len(c), hashlib.sha256(c).digest()) for c in contents
    ]


def test_receipt_signature_verifies_with_an_independent_ed25519(world: World) -> None:
    entry = ReceiptEntry(
        msg_id=os.urandom(16),
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=NOW,
        subject=os.urandom(32),
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    key = world.keys["jl.cc"].signing
    frame = sign_receipts("jl.cc", key, [entry], at=NOW)
    outer = unpack(frame)
    assert set(outer) == {"v", "from", "kid", "rcpt", "sig"}
    public = sign_public(world, outer["from"], outer["kid"])
    independent_verify(public, outer["sig"], RECEIPT_DOMAIN + outer["rcpt"])
    with pytest.raises(InvalidSignature):
        independent_verify(public, outer["sig"], HDR_DOMAIN + outer["rcpt"])
    assert unpack(outer["rcpt"])["entries"][0]["status"] == "DELIVERED"
    verify_receipts(frame, world.directory, expected_issuer="jl.cc")


def test_directory_signature_verifies_with_an_independent_ed25519(world: World) -> None:
    frame = world.signed_directory()
    outer = unpack(frame)
    assert set(outer) == {"v", "kid", "dir", "sig"}
    assert outer["kid"] == world.hub_key.kid
    independent_verify(world.hub_key.public, outer["sig"], DIRECTORY_DOMAIN + outer["dir"])
    with pytest.raises(InvalidSignature):
        independent_verify(world.hub_key.public, outer["sig"], RECEIPT_DOMAIN + outer["dir"])
    assert unpack(outer["dir"])["version"] == world.directory.version


def test_hand_built_envelope_signed_with_cryptography_verifies_and_opens(world: World) -> None:
    """The converse: an envelope assembled from the documented layout alone, signed with
    ``cryptography``'s Ed25519 (same seed as the directory's key for jl.gov), is accepted
    by verify_envelope and opened by the recipient."""
    sender, recipient = "jl.gov", "jl.cc"
    signer = Ed25519PrivateKey.from_private_bytes(world.keys[sender].signing.seed)
    kid = world.keys[sender].signing.kid
    enc = world.keys[recipient].encryption
    contents = [os.urandom(70_000), b"hand made"]
    msg_id = os.urandom(16)

    file_key = os.urandom(32)
    box = nacl.public.SealedBox(nacl.public.PublicKey(enc.public)).encrypt(file_key)
    core = codec.encode(
        {
            "v": 1,
            "msg_id": msg_id,
            "sender": sender,
            "sender_kid": kid,
            "to": [recipient],
            "cc": [],
            "classification": "INTERNAL",
            "precedence": "ROUTINE",
            "doc_type": "LETTER",
            "created_at": NOW,
            "expires_at": None,
            "in_reply_to": None,
            "dir_version": world.directory.version,
            "doc_number": None,
            "signatory": None,
            "secrecy_period": None,
            "copy_numbers": {},
            "directive": False,
            "keys": {recipient: {"kid": enc.kid, "box": bytes(box)}},
        }
    )
    inner = codec.encode(
        {
            "v": 1,
            "msg_id": msg_id,
            "sender": sender,
            "to": [recipient],
            "cc": [],
            "classification": "INTERNAL",
            "title": "手工组装的公文",
            "date": None,
            "files": [
                {
                    "name": f"f{i}.bin",
                    "type": "application/octet-stream",
                    "size": len(c),
                    "sha256": hashlib.sha256(c).digest(),
                }
                for i, c in enumerate(contents)
            ],
        }
    )
    isig = signer.sign(INNER_DOMAIN + inner)
    plaintext = struct.pack(">I", len(inner)) + inner + isig + b"".join(contents)

    aad = hashlib.sha256(BODY_AAD_DOMAIN + core).digest()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    parts = [sodium.crypto_secretstream_xchacha20poly1305_init_push(state, file_key)]
    pieces = [plaintext[i : i + CHUNK] for i in range(0, len(plaintext), CHUNK)]
    for index, piece in enumerate(pieces):
        tag = TAG_FINAL if index == len(pieces) - 1 else TAG_MESSAGE
        parts.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, aad, tag))
    body = b"".join(parts)

    hdr = codec.encode(
        {
            "core": core,
            "body": {"size": len(body), "chunk": CHUNK, "sha256": hashlib.sha256(body).digest()},
        }
    )
    sig = signer.sign(HDR_DOMAIN + hdr)
    frame = msgpack.packb(
        {"from": sender, "hdr": hdr, "kid": kid, "sig": sig, "v": 1}, use_bin_type=True
    )
    assert frame == codec.encode({"v": 1, "from": sender, "kid": kid, "hdr": hdr, "sig": sig})

    envelope = verify_envelope(frame, world.directory, expected_sender=sender)
    assert envelope.header.msg_id == msg_id
    opened, files = open_bytes(envelope, recipient, enc, body)
    assert files == contents
    assert opened.title == "手工组装的公文"


def test_directory_frame_signed_with_cryptography_verifies_with_the_project(world: World) -> None:
    """A directory re-signed by an independent Ed25519 over the documented domain is
    accepted by verify_directory (the pinned key is the hub's)."""
    outer = unpack(world.signed_directory())
    signer = Ed25519PrivateKey.from_private_bytes(world.hub_key.seed)
    sig = signer.sign(DIRECTORY_DOMAIN + outer["dir"])
    frame = codec.encode({"v": 1, "kid": outer["kid"], "dir": outer["dir"], "sig": sig})
    verified = verify_directory(frame, world.hub_key.public, now=NOW)
    assert verified.directory == world.directory


SLOT_DOMAIN = b"xchg/v1/slot\x00"


def rfc9162_root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 2.1.3.2, as written there: the root an inclusion path leads to."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def test_a_recipients_slot_proves_into_the_signed_root_and_opens_with_independent_code(
    world: World,
) -> None:
    """Section 4a by hand: plain msgpack, hashlib, the RFC's path algorithm and a PyNaCl
    SealedBox; the project's code only seals and makes the hub's part."""
    crowd = world.crowded(20)
    to = [o.id for o in crowd.directory.orgs if o.id.startswith("jl.cc.c")]
    sealed, body = crowd.seal(to=to, contents=[b"slotted"])
    hub = verify_envelope(sealed.frame, crowd.directory, slots=sealed.slots)
    me = to[13]
    part = hub.part_for(me)
    assert part is not None

    frame = unpack(sealed.frame)
    hdr = unpack(frame["hdr"])
    core = unpack(hdr["core"])
    assert (core["v"], core["to"], core["keys"]) == (2, [], {})
    index, slot_bytes, path = unpack(part)
    slot = unpack(slot_bytes)
    leaf = hashlib.sha256(b"\x00" + SLOT_DOMAIN + slot_bytes).digest()
    hashes = [path[i : i + 32] for i in range(0, len(path), 32)]
    assert rfc9162_root(index, core["slots"]["count"], leaf, hashes) == core["slots"]["root"]
    assert (slot["org"], slot["role"]) == (me, "to")
    assert slot["kid"] == crowd.keys[me].encryption.kid

    private = nacl.public.PrivateKey(crowd.keys[me].encryption.secret)
    file_key = nacl.public.SealedBox(private).decrypt(slot["box"])
    aad = hashlib.sha256(BODY_AAD_DOMAIN + hdr["core"]).digest()
    plain, _ = decrypt_stream(file_key, aad, body)
    (length,) = struct.unpack(">I", plain[:4])
    inner = unpack(plain[4 : 4 + length])
    assert (inner["to"], inner["cc"], inner["slots"]) == ([], [], core["slots"]["root"])
    assert plain.endswith(b"slotted")
