"""Fuzz target: the signed inner record, as a recipient opens a body (``schemas.seal.Opener``).

Input: the inner record's bytes (canonical msgpack of title, files, ... as sealed).
The target builds what a sender would: the captured header of a notice from jl.gov (its
file key sealed, once, to jl.cc with a fixed file key), a plaintext of
``u32(len) || inner || Ed25519(jl.gov, inner) || file bytes`` (zeros, as many as the
record declares, up to 64 KiB) encrypted as a secretstream bound to that header, and
hands the body to jl.cc's ``Opener``. So the decryption succeeds and the inner record's
decode, its model, the comparison with the header, the declared sizes and each file's
digest are reached. A body whose first chunk does not decrypt is fuzz_envelope's
business (it stops at the first chunk's authentication).
The documented failure is an ``XchgError``; anything else escaping is a crash.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from typing import Any

import atheris
import nacl.bindings as sodium

with atheris.instrument_imports(include=["schemas", "world"]):
    import world

    from schemas import codec
    from schemas.envelope import (
        CHUNK_PLAIN,
        BodyDescriptor,
        Header,
        RecipientKey,
        VerifiedEnvelope,
        body_aad,
    )
    from schemas.errors import XchgError
    from schemas.keys import DOMAIN_INNER, seal_to
    from schemas.seal import FileData, Opener

DIRECTORY = world.load_directory().directory
SENDER = world.signing_key("jl.gov")
ME = world.encryption_key("jl.cc")
FILE_KEY = hashlib.sha256(b"govxchg fuzz fixture file key").digest()
MAX_FILES_BYTES = 64 * 1024


def _header() -> Header:
    """The captured notice to jl.cc (a mode-2 seed of fuzz_envelope), its file key sealed
    again with FILE_KEY."""
    for path in sorted((world.CORPUS / "envelope").iterdir()):
        seed = path.read_bytes()
        if seed[:1] != b"\x02":  # not a header core
            continue
        header = Header.from_wire(
            codec.decode_map(seed[1:], codec.HEADER_LIMITS), what="captured header"
        )
        if "jl.cc" in header.keys:
            break
    else:
        raise SystemExit("fuzz_inner: no captured header addressed to jl.cc; run capture.py")
    keys = {
        org: RecipientKey(kid=DIRECTORY.encryption_key(org, header.created_at).kid,
                          box=seal_to(DIRECTORY.encryption_key(org, header.created_at).public,
                                      FILE_KEY))
        for org in header.keys
    }  # fmt: skip
    return header.model_copy(update={"keys": keys})


HEADER = _header()
CORE = codec.encode(HEADER.to_wire())
AAD = body_aad(CORE)


def declared_bytes(inner: bytes) -> int:
    """The file bytes the record declares (0 if it does not decode), at most 64 KiB."""
    try:
        value: Any = codec.decode(inner, codec.INNER_LIMITS)
    except XchgError:
        return 0
    files = value.get("files") if isinstance(value, dict) else None
    if not isinstance(files, tuple):
        return 0
    sizes = [f.get("size") for f in files if isinstance(f, dict)]
    total = sum(s for s in sizes if type(s) is int and s > 0)
    return min(total, MAX_FILES_BYTES)


def seal(plain: bytes) -> bytes:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    out = [sodium.crypto_secretstream_xchacha20poly1305_init_push(state, FILE_KEY)]
    pieces = [plain[i : i + CHUNK_PLAIN] for i in range(0, len(plain), CHUNK_PLAIN)] or [b""]
    for n, piece in enumerate(pieces):
        tag = (
            sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
            if n == len(pieces) - 1
            else sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
        )
        out.append(sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, AAD, tag))
    return b"".join(out)


def test_one_input(data: bytes) -> None:
    isig = SENDER.sign(DOMAIN_INNER, data)
    plain = struct.pack(">I", len(data)) + data + isig + bytes(declared_bytes(data))
    body = seal(plain)
    descriptor = BodyDescriptor(
        size=len(body), chunk=CHUNK_PLAIN, sha256=hashlib.sha256(body).digest()
    )
    envelope = VerifiedEnvelope(
        frame=b"", hdr=b"", core=CORE, header=HEADER, body=descriptor,
        sender_public=SENDER.public, digest=bytes(32),
    )  # fmt: skip
    opener = Opener(envelope, "jl.cc", ME)
    try:
        sizes: dict[int, int] = {}
        for event in opener.feed(body):
            if isinstance(event, FileData):
                sizes[event.index] = sizes.get(event.index, 0) + len(event.data)
        inner = opener.close()
    except XchgError:
        return
    for index, entry in enumerate(inner.files):
        if sizes.get(index, 0) != entry.size:
            raise AssertionError(f"file {index} opened to {sizes.get(index, 0)} of {entry.size}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
