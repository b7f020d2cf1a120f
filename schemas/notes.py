"""Notes: the words that go with a flow on a document (a recall's reason, a 退文's reason,
the answer to a recall), readable by the document's parties and not by the hub.

Everyone a note is for already holds the document's file key: its sender, which sealed it,
and its recipients, which unsealed it. So a note is encrypted under a key derived from the
file key, never under the file key itself (a party keeps the note key, which opens no
body):

    note_key = SHA-256("xchg/v1/notekey\\0" || file_key)
    aad      = "xchg/v1/note\\0" || msg_id(16) || status || 0x00 || issuer
    note     = nonce(24) || XChaCha20-Poly1305-IETF(note_key, nonce, aad, UTF-8 text)

The AAD binds a note to its document, its status and its issuer: a recall's reason cannot
be replayed as a 退文's, or as another organisation's. The receipt entry carrying it is
signed like any other (schemas.receipts), so a note is both secret and attributable.
"""

from __future__ import annotations

import hashlib

import nacl.exceptions
import nacl.utils
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from schemas.errors import PeerError, Reason, UsageError

DOMAIN_NOTE_KEY = b"xchg/v1/notekey\x00"
DOMAIN_NOTE = b"xchg/v1/note\x00"
NONCE_BYTES = 24
TAG_BYTES = 16
MAX_CHARS = 2000  # like a receipt's detail
MAX_NOTE_BYTES = NONCE_BYTES + 4 * MAX_CHARS + TAG_BYTES  # 8040: within RECEIPT_LIMITS' bin


def note_key(file_key: bytes) -> bytes:
    """The key a document's notes are sealed under, derived from its file key."""
    if len(file_key) != 32:
        raise UsageError("a file key is 32 bytes")
    return hashlib.sha256(DOMAIN_NOTE_KEY + file_key).digest()


def _aad(msg_id: bytes, status: str, issuer: str) -> bytes:
    return DOMAIN_NOTE + msg_id + status.encode("ascii") + b"\x00" + issuer.encode("ascii")


def check_text(text: str) -> str:
    """A note's text: 1..2000 characters, not only white space, no control characters
    but line breaks and tabs. UsageError names what is wrong."""
    if not text.strip():
        raise UsageError("a note is empty: say why in a few words")
    if len(text) > MAX_CHARS:
        raise UsageError(f"a note is at most {MAX_CHARS} characters; this one has {len(text)}")
    bad = next((c for c in text if ord(c) < 0x20 and c not in "\n\t"), None)
    if bad is not None:
        raise UsageError(f"a note may not contain the control character U+{ord(bad):04X}")
    return text


def seal_note(key: bytes, text: str, *, msg_id: bytes, status: str, issuer: str) -> bytes:
    """``text`` sealed for the parties of ``msg_id`` (see the module docstring)."""
    plain = check_text(text).encode()
    nonce = nacl.utils.random(NONCE_BYTES)
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _aad(msg_id, status, issuer), nonce, key
    )


def open_note(key: bytes, note: bytes, *, msg_id: bytes, status: str, issuer: str) -> str:
    """The text of ``note``; PeerError ``flow.bad_note`` if it does not open or read."""
    if len(note) < NONCE_BYTES + TAG_BYTES + 1 or len(note) > MAX_NOTE_BYTES:
        raise PeerError(Reason.FLOW_BAD_NOTE, f"a note of {len(note)} bytes cannot be one")
    try:
        plain = crypto_aead_xchacha20poly1305_ietf_decrypt(
            note[NONCE_BYTES:], _aad(msg_id, status, issuer), note[:NONCE_BYTES], key
        )
        return check_text(plain.decode("utf-8", errors="strict"))
    except nacl.exceptions.CryptoError as exc:
        raise PeerError(
            Reason.FLOW_BAD_NOTE,
            f"{issuer}'s note on its {status} does not open with this document's key",
        ) from exc
    except (UnicodeDecodeError, UsageError) as exc:
        raise PeerError(Reason.FLOW_BAD_NOTE, f"{issuer}'s note is not text: {exc}") from exc
