"""Keys, key ids and domain-separated signatures (Ed25519 and X25519 via PyNaCl).

Every signed thing has its own domain-separation prefix, so a signature made for one
purpose (a header) can never be replayed as another (a receipt, a directory).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing

from schemas.ids import check_key_id, check_org_id

DOMAIN_HEADER = b"xchg/v1/hdr\x00"
DOMAIN_INNER = b"xchg/v1/inner\x00"
DOMAIN_RECEIPT = b"xchg/v1/rcpt\x00"
DOMAIN_DIRECTORY = b"xchg/v1/dir\x00"
DOMAIN_BODY_AAD = b"xchg/v1/body\x00"
DOMAIN_KEY_ID = b"xchg/v1/kid\x00"

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class KeyKind(Enum):
    SIGN = "ed25519"
    ENCRYPT = "x25519"


def key_id(kind: KeyKind, public: bytes) -> str:
    """16 hex digits naming a public key: SHA-256(prefix || alg || 0x00 || key)[:8]."""
    digest = hashlib.sha256(DOMAIN_KEY_ID + kind.value.encode() + b"\x00" + public).digest()
    return digest[:8].hex()


def verify_signature(public: bytes, domain: bytes, data: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is ``public``'s Ed25519 signature over ``domain || data``."""
    if len(signature) != SIGNATURE_BYTES or len(public) != PUBLIC_KEY_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(domain + data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def seal_to(public: bytes, data: bytes) -> bytes:
    """Anonymous sealed box (X25519 + XSalsa20-Poly1305) of ``data`` to ``public``."""
    return bytes(nacl.public.SealedBox(nacl.public.PublicKey(public)).encrypt(data))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 signing key and the id of its public half."""

    seed: bytes = field(repr=False)  # never print secret material
    public: bytes = field(init=False, repr=False)
    kid: str = field(init=False)
    _nacl: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_nacl", key)
        object.__setattr__(self, "public", bytes(key.verify_key))
        object.__setattr__(self, "kid", key_id(KeyKind.SIGN, self.public))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def sign(self, domain: bytes, data: bytes) -> bytes:
        return self._nacl.sign(domain + data).signature


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """An X25519 key pair for sealed boxes and the id of its public half."""

    secret: bytes = field(repr=False)
    public: bytes = field(init=False, repr=False)
    kid: str = field(init=False)
    _box: nacl.public.SealedBox[nacl.public.PrivateKey] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        private = nacl.public.PrivateKey(self.secret)
        object.__setattr__(self, "_box", nacl.public.SealedBox(private))
        object.__setattr__(self, "public", bytes(private.public_key))
        object.__setattr__(self, "kid", key_id(KeyKind.ENCRYPT, self.public))

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(bytes(nacl.public.PrivateKey.generate()))

    def unseal(self, box: bytes) -> bytes:
        """Open a sealed box; raises nacl.exceptions.CryptoError if it is not for us."""
        return bytes(self._box.decrypt(box))


# ---- key files: pure (de)serialisation; runtime.files does the careful file writes ----

SECRET_KEY_FORMAT = "govxchg-secret-key/v1"  # noqa: S105 - a format name, not a secret
PUBLIC_KEYS_FORMAT = "govxchg-public-keys/v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, length: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid base64") from exc
    if len(raw) != length:
        raise ValueError(f"{what} must be {length} bytes, not {len(raw)}")
    return raw


def _json_doc(data: bytes) -> Any:
    """A key file's JSON document; ValueError (never RecursionError) for what is not one."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:  # '[[[[...': deeper than the JSON decoder goes
        raise ValueError("it is not a key file: its JSON nests too deeply") from None


MILLIS_MAX = 2**63 - 1  # the wire's range for times (schemas.model.MAX_WIRE_INT)


def _millis(value: object, what: str) -> int:
    """A validity bound: whole milliseconds since the Unix epoch, within the wire's range."""
    try:
        ms: int = int(value)  # type: ignore[call-overload]
    except (ValueError, TypeError, OverflowError):  # 1e400 is infinity in JSON: no integer
        ms = -1
    if not 0 <= ms <= MILLIS_MAX:
        raise ValueError(
            f"{what} must be a time in whole milliseconds since 1970 (0 to 2^63-1), "
            f"not {value!r:.40}"
        )
    return ms


def dump_secret_key(owner: str, key: SigningKey | EncryptionKey) -> bytes:
    """The JSON text of a secret key file. The owner is an org id or ``hub``."""
    kind = KeyKind.SIGN if isinstance(key, SigningKey) else KeyKind.ENCRYPT
    secret = key.seed if isinstance(key, SigningKey) else key.secret
    doc = {
        "format": SECRET_KEY_FORMAT,
        "owner": owner,
        "kind": kind.value,
        "kid": key.kid,
        "secret": _b64(secret),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def load_secret_key(data: bytes, *, source: str) -> tuple[str, SigningKey | EncryptionKey]:
    """Parse a secret key file; ValueError names the file and the problem."""
    try:
        doc = _json_doc(data)
        if not isinstance(doc, dict) or doc.get("format") != SECRET_KEY_FORMAT:
            raise ValueError(f"it is not a {SECRET_KEY_FORMAT} file")
        kind = KeyKind(doc["kind"])
        secret = _unb64(doc["secret"], 32, "secret")
        key: SigningKey | EncryptionKey = (
            SigningKey(secret) if kind is KeyKind.SIGN else EncryptionKey(secret)
        )
        if key.kid != doc["kid"]:
            raise ValueError(f"its kid {doc['kid']!r} does not match its key ({key.kid})")
        owner = str(doc["owner"])
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"key file {source}: {exc}") from exc
    return owner, key


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """The public halves an organisation hands to the hub operator for the directory."""

    org: str
    sign_public: bytes
    enc_public: bytes
    not_before: int  # ms since the Unix epoch
    not_after: int

    @property
    def sign_kid(self) -> str:
        return key_id(KeyKind.SIGN, self.sign_public)

    @property
    def enc_kid(self) -> str:
        return key_id(KeyKind.ENCRYPT, self.enc_public)

    def dump(self) -> bytes:
        doc: dict[str, Any] = {
            "format": PUBLIC_KEYS_FORMAT,
            "org": self.org,
            "sign": {"kid": self.sign_kid, "public": _b64(self.sign_public)},
            "encrypt": {"kid": self.enc_kid, "public": _b64(self.enc_public)},
            "not_before": self.not_before,
            "not_after": self.not_after,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def load(cls, data: bytes, *, source: str) -> PublicKeys:
        try:
            doc = _json_doc(data)
            if not isinstance(doc, dict) or doc.get("format") != PUBLIC_KEYS_FORMAT:
                raise ValueError(f"it is not a {PUBLIC_KEYS_FORMAT} file")
            keys = cls(
                org=check_org_id(doc["org"]),
                sign_public=_unb64(doc["sign"]["public"], 32, "sign.public"),
                enc_public=_unb64(doc["encrypt"]["public"], 32, "encrypt.public"),
                not_before=_millis(doc["not_before"], "not_before"),
                not_after=_millis(doc["not_after"], "not_after"),
            )
            for half, kid in (("sign", keys.sign_kid), ("encrypt", keys.enc_kid)):
                if check_key_id(doc[half]["kid"]) != kid:
                    raise ValueError(f"{half}.kid does not match its public key ({kid})")
            if keys.not_after <= keys.not_before:
                raise ValueError("not_after must be later than not_before")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"public key file {source}: {exc}") from exc
        return keys


HUB_KEY_FORMAT = "govxchg-hub-key/v1"


@dataclass(frozen=True, slots=True)
class HubPublicKey:
    """The hub's public signing key: spokes pin it; the directory lists it for receipts."""

    public: bytes
    not_before: int
    not_after: int

    @property
    def kid(self) -> str:
        return key_id(KeyKind.SIGN, self.public)

    def dump(self) -> bytes:
        doc = {
            "format": HUB_KEY_FORMAT,
            "kid": self.kid,
            "public": _b64(self.public),
            "not_before": self.not_before,
            "not_after": self.not_after,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def load(cls, data: bytes, *, source: str) -> HubPublicKey:
        try:
            doc = _json_doc(data)
            if not isinstance(doc, dict) or doc.get("format") != HUB_KEY_FORMAT:
                raise ValueError(f"it is not a {HUB_KEY_FORMAT} file")
            key = cls(
                _unb64(doc["public"], 32, "public"),
                _millis(doc["not_before"], "not_before"),
                _millis(doc["not_after"], "not_after"),
            )
            if doc["kid"] != key.kid:
                raise ValueError(f"kid does not match its public key ({key.kid})")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"hub key file {source}: {exc}") from exc
        return key
