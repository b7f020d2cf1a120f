"""Print annotated example bytes for docs/wire-format.md.

Run from the repository root: ``.venv/bin/python docs/examples/make_wire_examples.py``.

Everything uses fixed keys and a fixed clock, so key ids, the directory frame, the
inner record and its signature are the same on every run. The file key, the sealed
boxes and the secretstream header are random by design, so ``core`` (the boxes), the
body ciphertext, its SHA-256, ``hdr``, the header signature and the receipt subject
differ from run to run. The output is illustrative; the reference code is the truth.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import nacl.bindings as sodium

from schemas import codec
from schemas.directory import (
    ChannelEntry,
    Directory,
    KeyEntry,
    OrgEntry,
    OrgLevel,
    sign_directory,
    verify_directory,
)
from schemas.envelope import STREAM_HEADER_BYTES, verify_envelope
from schemas.keys import (
    DOMAIN_INNER,
    EncryptionKey,
    HubPublicKey,
    PublicKeys,
    SigningKey,
    dump_secret_key,
    verify_signature,
)
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import (
    ReceiptEntry,
    ReceiptStatus,
    sign_receipts,
    subject_of,
    verify_receipts,
)
from schemas.seal import Draft, file_entry, open_bytes, seal_bytes

NOW = 1_795_000_000_000  # 2026-11-18T11:06:40Z
DAY = 24 * 60 * 60 * 1000
HEX_BYTES = 14  # hex bytes shown per line before eliding

HUB_SIGN = SigningKey(b"\x01" * 32)
GOV_SIGN = SigningKey(b"\x02" * 32)
GOV_ENC = EncryptionKey(b"\x03" * 32)
CC_SIGN = SigningKey(b"\x04" * 32)
CC_ENC = EncryptionKey(b"\x05" * 32)


# ------------------------------------------------------------------ msgpack annotator


def _token(data: bytes, pos: int) -> tuple[str, int, int, object]:
    """One msgpack header at ``pos``: (kind, header length, payload length, value or count)."""
    b = data[pos]
    if b <= 0x7F:
        return "uint", 1, 0, b
    if b >= 0xE0:
        return "int", 1, 0, b - 0x100
    if 0x80 <= b <= 0x8F:
        return "map", 1, 0, b & 0x0F
    if 0x90 <= b <= 0x9F:
        return "array", 1, 0, b & 0x0F
    if 0xA0 <= b <= 0xBF:
        return "str", 1, b & 0x1F, None
    fixed = {0xC0: ("nil", None), 0xC2: ("bool", False), 0xC3: ("bool", True)}
    if b in fixed:
        kind, value = fixed[b]
        return kind, 1, 0, value
    sized = {
        0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
        0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
        0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4),
    }  # fmt: skip
    if b in sized:
        kind, width = sized[b]
        n = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        if kind in {"array", "map"}:
            return kind, 1 + width, 0, n
        return kind, 1 + width, n, None
    ints = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    if b in ints:
        width = ints[b]
        raw = data[pos + 1 : pos + 1 + width]
        return (
            ("uint" if b <= 0xCF else "int"),
            1 + width,
            0,
            int.from_bytes(raw, "big", signed=b >= 0xD0),
        )
    raise ValueError(f"byte 0x{b:02x} at {pos} is not allowed on the wire")


def _hex(raw: bytes) -> str:
    shown = raw[:HEX_BYTES].hex(" ")
    return shown + (" …" if len(raw) > HEX_BYTES else "")


def _scalar(kind: str, payload: bytes, value: object) -> str:
    if kind == "str":
        return f'str({len(payload)}) "{payload.decode()}"'
    if kind == "bin":
        return f"bin({len(payload)}) {_hex(payload)}"
    if kind == "nil":
        return "nil"
    if kind == "bool":
        return str(value).lower()
    return f"{kind} {value}"


def annotate(data: bytes) -> list[str]:
    """One line per map entry or array item: offset, bytes, meaning."""
    lines: list[str] = []

    def value(pos: int, depth: int, label: str, key_bytes: bytes) -> int:
        kind, head, size, val = _token(data, pos)
        end = pos + head + size
        pad = "  " * depth
        if kind in {"map", "array"}:
            lines.append(
                f"{pos - len(key_bytes):04x}  {_hex(key_bytes + data[pos:end]):<44} "
                f"{pad}{label}{kind} of {val}"
            )
            for _ in range(int(val)):  # type: ignore[call-overload]
                if kind == "map":
                    k_kind, k_head, k_size, _v = _token(data, end)
                    key = data[end + k_head : end + k_head + k_size]
                    assert k_kind == "str"  # noqa: S101 - canonical maps have str keys
                    end = value(
                        end + k_head + k_size, depth + 1, f"{key.decode()} = ",
                        data[end : end + k_head + k_size],
                    )  # fmt: skip
                else:
                    end = value(end, depth + 1, "- ", b"")
            return end
        payload = data[pos + head : end]
        lines.append(
            f"{pos - len(key_bytes):04x}  {_hex(key_bytes + data[pos:end]):<44} "
            f"{pad}{label}{_scalar(kind, payload, val)}"
        )
        return end

    assert value(0, 0, "", b"") == len(data)  # noqa: S101 - one value, no trailing bytes
    return lines


def show(title: str, data: bytes) -> None:
    print(f"\n### {title} ({len(data)} bytes)\n")
    for line in annotate(data):
        print(line)


# ------------------------------------------------------------------------ the example


def build_directory() -> bytes:
    window = {"not_before": NOW - 10 * DAY, "not_after": NOW + 365 * DAY}

    def keys(key: SigningKey | EncryptionKey) -> tuple[KeyEntry, ...]:
        return (KeyEntry(kid=key.kid, public=key.public, **window),)

    def org(org_id: str, zh: str, en: str, level: OrgLevel, parent: str | None) -> OrgEntry:
        sign, enc = (GOV_SIGN, GOV_ENC) if org_id == "jl.gov" else (CC_SIGN, CC_ENC)
        return OrgEntry(
            id=org_id, name_zh=zh, name_en=en, level=level, parent=parent, code=None,
            clearance=Classification.INTERNAL, channels=("govnet",),
            sign_keys=keys(sign), enc_keys=keys(enc), directive_to=(),
        )  # fmt: skip

    directory = Directory(
        v=1,
        hub_id="jl.hub",
        version=1,
        issued_at=NOW - DAY,
        expires_at=NOW + 30 * DAY,
        hub_keys=keys(HUB_SIGN),
        channels=(ChannelEntry(id="govnet", name="政务专网", ceiling=Classification.INTERNAL),),
        orgs=(
            org("jl.gov", "吉林省人民政府办公厅", "Jilin General Office", OrgLevel.PROVINCE, None),
            org("jl.cc", "长春市人民政府", "Changchun", OrgLevel.PREFECTURE, "jl.gov"),
        ),
        revoked=(),
        groups=(),
    )
    return sign_directory(directory, HUB_SIGN)


def main() -> None:
    print("## Key ids (fixed keys)\n")
    for name, key in (
        ("hub    ed25519 seed   01*32", HUB_SIGN),
        ("jl.gov ed25519 seed   02*32", GOV_SIGN),
        ("jl.gov x25519  secret 03*32", GOV_ENC),
        ("jl.cc  ed25519 seed   04*32", CC_SIGN),
        ("jl.cc  x25519  secret 05*32", CC_ENC),
    ):
        print(f"{name}: public {key.public.hex()}  kid {key.kid}")

    dir_frame = build_directory()
    directory = verify_directory(dir_frame, HUB_SIGN.public, now=NOW).directory
    dir_bytes = codec.decode_map(dir_frame, codec.DIRECTORY_FRAME_LIMITS)["dir"]
    print("\nColumns below: offset, bytes (key header, key, value header, value), meaning.")
    show("Directory frame", dir_frame)
    show("dir (the Directory record, signed by sig)", dir_bytes)
    print(f"\nSHA-256(dir) = {hashlib.sha256(dir_bytes).hexdigest()}")

    content = "示例正文。\n".encode()
    draft = Draft(
        sender="jl.gov",
        to=("jl.cc",),
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        title="关于做好冬季供暖工作的通知",
        doc_number="吉政办发〔2026〕12号",
        created_at=NOW,
        msg_id=bytes.fromhex("00112233445566778899aabbccddeeff"),
        date="2026-11-18",
        files=[file_entry("通知.txt", "text/plain", content)],
    )
    sealed, body = seal_bytes(draft, GOV_SIGN, directory, [content])
    env = verify_envelope(sealed.frame, directory, expected_sender="jl.gov")
    inner, files = open_bytes(env, "jl.cc", CC_ENC, body)
    assert files == [content]  # noqa: S101 - the example must round-trip

    show("Envelope frame", env.frame)
    show("hdr (signed by sig)", env.hdr)
    show("core (the Header record)", env.core)

    print("\n### Body\n")
    desc = env.body
    print(f"body.size = {desc.size}, chunk = {desc.chunk}")
    print(f"chunk_count = ceil(({desc.size} - 24) / 65553) = {desc.chunk_count}")
    print(f"plaintext_size = {desc.size} - 24 - 17 * {desc.chunk_count} = {desc.plaintext_size}")
    print(f"secretstream header = {body[:STREAM_HEADER_BYTES].hex()}")
    print(f'AAD = SHA-256("xchg/v1/body\\0" || core) = {env.aad.hex()}')
    print(f"SHA-256(body) = {hashlib.sha256(body).hexdigest()} (= body.sha256)")

    # Rebuild the plaintext exactly as the sealer lays it out, to show its pieces.
    inner_bytes = codec.encode(inner.to_wire())
    isig = GOV_SIGN.sign(DOMAIN_INNER, inner_bytes)
    assert verify_signature(GOV_SIGN.public, DOMAIN_INNER, inner_bytes, isig)  # noqa: S101
    plain = struct.pack(">I", len(inner_bytes)) + inner_bytes + isig + content
    assert len(plain) == desc.plaintext_size  # noqa: S101
    print(
        f"\nplaintext = u32be {len(inner_bytes)} ({plain[:4].hex()}) || inner "
        f"({len(inner_bytes)} bytes) || isig (64) || 通知.txt ({len(content)} bytes)"
    )
    print(f"isig = {isig.hex()}")
    show("inner (the Inner record, inside the ciphertext)", inner_bytes)

    entry = ReceiptEntry(
        msg_id=inner.msg_id,
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=NOW + 2000,
        subject=subject_of(env.frame),
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    rcpt_frame = sign_receipts("jl.cc", CC_SIGN, [entry], at=NOW + 2000)
    verify_receipts(rcpt_frame, directory, expected_issuer="jl.cc")
    outer = codec.decode_map(rcpt_frame, codec.RECEIPT_FRAME_LIMITS)
    rcpt = outer["rcpt"]
    print(f"\n### Receipt frame (DELIVERED by jl.cc, {len(rcpt_frame)} bytes)\n")
    print(f"keys from, kid, rcpt, sig, v as in the envelope frame; sig = {outer['sig'].hex()}")
    show("rcpt (the ReceiptBatch record)", rcpt)

    print("\n## Key files\n")
    print(dump_secret_key("jl.gov", GOV_SIGN).decode(), end="")
    public = PublicKeys("jl.gov", GOV_SIGN.public, GOV_ENC.public, NOW - 10 * DAY, NOW + 365 * DAY)
    print(public.dump().decode(), end="")
    print(HubPublicKey(HUB_SIGN.public, NOW - 10 * DAY, NOW + 365 * DAY).dump().decode(), end="")
    assert sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES == STREAM_HEADER_BYTES  # noqa: S101


if __name__ == "__main__":
    main()
