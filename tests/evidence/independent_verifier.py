"""An evidence-file verifier written from docs/wire-format.md alone (section 12.5).

It imports no project code: the standard library, `cryptography`'s Ed25519 and the
`msgpack` library. It is a worked example for auditors who write their own tool, and a
check that the wire format is specified well enough for an outsider.

    verify(doc, trusted_hub_public) -> list of problems (empty: the file is valid)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CKPT = b"xchg/v1/ckpt\0"
COSIGN = b"xchg/v1/cosign\0"
RCPT = b"xchg/v1/rcpt\0"
HUB_STATUSES = {"ACCEPTED", "REJECTED", "EXPIRED", "DEAD", "RECALLED", "REFUSED", "REMINDED"}
SENDER_STATUSES = {"RECALL"}  # said of the document as a whole by its sender (6.1)
# statements an organisation signs, matched like DELIVERED (12.4)
STATEMENTS = {
    "DELIVERED", "SIGNED_FOR", "RECALL", "WITHDRAWN", "RECALL_ACCEPTED", "RECALL_REFUSED",
    "RETURNED", "READ", "HANDLING", "DONE", "CASE_ACCEPTED", "CASE_DECLINED",
}  # fmt: skip
# 12.4: receipt status -> (ledger events, what besides msg_id must match)
EVENTS = {
    "ACCEPTED": ("message.accepted",),
    "REJECTED": ("message.quarantined", "message.rejected"),
    "EXPIRED": ("delivery.expired",),
    "DEAD": ("delivery.dead",),
    "REFUSED": ("flow.refused",),
    "REMINDED": ("deadline.reminded",),
    **{status: (f"receipt.{status.lower()}",) for status in STATEMENTS},
}


class FatalError(Exception):
    """A problem that stops checking the part it was found in."""


def kid_of(public: bytes) -> str:
    """Section 1: the first 8 bytes of SHA-256("xchg/v1/kid\\0" || "ed25519" || 0 || public)."""
    return hashlib.sha256(b"xchg/v1/kid\0ed25519\0" + public).digest()[:8].hex()


def b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise FatalError(f"{what}: not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FatalError(f"{what}: not base64 ({exc})") from None


def unpack(data: bytes, what: str) -> Any:
    """Section 2: one canonical msgpack value (re-encoding gives the same bytes)."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is one problem
        raise FatalError(f"{what}: not msgpack ({exc})") from None

    def canon(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: canon(v[k]) for k in sorted(v, key=lambda s: s.encode())}
        return [canon(x) for x in v] if isinstance(v, list) else v

    if msgpack.packb(canon(value), use_bin_type=True) != data:
        raise FatalError(f"{what}: not canonical msgpack")
    return value


def record(
    data: bytes, keys: set[str], what: str, versions: tuple[int, ...] = (1,)
) -> dict[str, Any]:
    value = unpack(data, what)
    if not isinstance(value, dict) or set(value) != keys:
        raise FatalError(f"{what}: not a map of exactly {sorted(keys)}")
    if type(value["v"]) is not int or value["v"] not in versions:
        raise FatalError(f"{what}: v is not {' or '.join(map(str, versions))}")
    return value


def ed25519_ok(public: bytes, sig: Any, message: bytes) -> bool:
    if not isinstance(sig, bytes) or len(sig) != 64 or len(public) != 32:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, message)
    except InvalidSignature:
        return False
    return True


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_path(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root an inclusion path leads to, or None if it cannot be one."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def key_table(rows: Any, what: str) -> dict[str, bytes]:
    """[{"kid", "public"}] -> {kid: public}, each kid checked against its key."""
    table: dict[str, bytes] = {}
    for row in rows if isinstance(rows, list) else []:
        public = b64(row.get("public"), f"{what} public")
        if kid_of(public) != row.get("kid"):
            raise FatalError(f"{what}: kid {row.get('kid')!r} is not the kid of its public key")
        table[row["kid"]] = public
    return table


def verify(
    doc: dict[str, Any],
    trusted_hub_public: bytes | None,
    trusted_org_keys: dict[str, set[bytes]] | None = None,
) -> list[str]:
    """Check an evidence file as in wire-format.md 12.5; returns its problems.

    ``trusted_org_keys``: each organisation's signing keys from your own directory; when
    given, receipts and cosignatures under other keys (listed in the file) are problems.
    """
    problems: list[str] = []
    try:
        _verify(doc, trusted_hub_public, trusted_org_keys, problems)
    except FatalError as exc:
        problems.append(str(exc))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problems.append(f"malformed evidence file: {type(exc).__name__} {exc}")
    return problems


def _verify(
    doc: dict[str, Any],
    trusted_hub_public: bytes | None,
    trusted_org_keys: dict[str, set[bytes]] | None,
    problems: list[str],
) -> None:
    if doc.get("format") != "govxchg-evidence/1":
        raise FatalError(f"format {doc.get('format')!r} is not govxchg-evidence/1")
    msg_id, hub_id = bytes.fromhex(doc["msg_id"]), doc["hub_id"]
    hub_keys = key_table(doc["hub_keys"], "hub_keys")
    # 1. the hub key we trust, and its kid
    trusted_kid = None
    if trusted_hub_public is not None:
        trusted_kid = kid_of(trusted_hub_public)
        if hub_keys.get(trusted_kid) != trusted_hub_public:
            problems.append(f"the trusted hub key {trusted_kid} is not in hub_keys")
    ckpt_bytes, size, root = checkpoint(doc, hub_id, hub_keys, trusted_kid)
    # 3. each entry: inclusion in the checkpoint, then its msg_id
    ledger: list[list[Any]] = []
    if not doc["entries"]:
        raise FatalError("the file has no ledger entries")
    for n, entry in enumerate(doc["entries"]):
        leaf = b64(entry["leaf"], f"entry {n} leaf")
        path = [b64(p, f"entry {n} path") for p in entry["path"]]
        value = unpack(leaf, f"entry {n} leaf")
        if not (isinstance(value, list) and len(value) == 6 and type(value[0]) is int):
            problems.append(f"entry {n}: leaf is not [seq, at, event, msg_id, org, detail]")
            continue
        seq = value[0]
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        if seq < 1 or any(len(p) != 32 for p in path) or len(path) > 64:
            problems.append(f"entry {n} (seq {seq}): bad seq or path")
        elif root_from_path(seq - 1, size, leaf_hash, path) != root:
            problems.append(f"entry {n} (seq {seq}): not included in the checkpoint's tree")
        elif value[3] != msg_id:
            problems.append(f"entry {n} (seq {seq}): about another message")
        else:
            ledger.append(value)
    # 4. each receipt: its signature, then the ledger entry that records it
    org_keys = {org: key_table(rows, f"keys[{org}]") for org, rows in doc["keys"].items()}
    if trusted_org_keys is not None:  # the file only says which key: yours say whose it is
        org_keys = {
            org: {kid: k for kid, k in keys.items() if k in trusted_org_keys.get(org, set())}
            for org, keys in org_keys.items()
        }
    receipt_hub_keys = (
        hub_keys if trusted_hub_public is None else {kid_of(trusted_hub_public): trusted_hub_public}
    )
    for n, rcpt_b64 in enumerate(doc["receipts"]):
        raw = b64(rcpt_b64, f"receipt {n}")
        try:
            problems += check_receipt(
                raw,
                n,
                msg_id=msg_id,
                hub_id=hub_id,
                hub_keys=receipt_hub_keys,
                org_keys=org_keys,
                ledger=ledger,
            )
        except FatalError as exc:
            problems.append(str(exc))
    # 5. cosignatures
    for n, cs in enumerate(doc["cosignatures"]):
        public = b64(cs["public"], f"cosignature {n} public")
        if kid_of(public) != cs["kid"]:
            problems.append(f"cosignature {n} ({cs['org']}): kid is not its key's")
        elif trusted_org_keys is not None and public not in trusted_org_keys.get(cs["org"], set()):
            problems.append(f"cosignature {n} ({cs['org']}): not a key of it you trust")
        elif not ed25519_ok(public, b64(cs["sig"], f"cosignature {n}"), COSIGN + ckpt_bytes):
            problems.append(f"cosignature {n} ({cs['org']}): does not verify")


def checkpoint(
    doc: dict[str, Any], hub_id: str, hub_keys: dict[str, bytes], trusted_kid: str | None
) -> tuple[bytes, int, bytes]:
    """12.5 step 2: the checkpoint's signed bytes, its size and root."""
    ckpt_frame = b64(doc["checkpoint"], "checkpoint")
    frame = record(ckpt_frame, {"ckpt", "kid", "sig", "v"}, "checkpoint frame")
    ckpt_bytes = frame["ckpt"]
    if frame["kid"] not in hub_keys:
        raise FatalError(f"checkpoint signed by {frame['kid']!r}, not a key in hub_keys")
    if trusted_kid is not None and frame["kid"] != trusted_kid:
        raise FatalError(
            f"checkpoint signed by {frame['kid']}, not by the trusted key {trusted_kid}"
        )
    if not isinstance(ckpt_bytes, bytes) or not ed25519_ok(
        hub_keys[frame["kid"]], frame["sig"], CKPT + ckpt_bytes
    ):
        raise FatalError("checkpoint signature does not verify")
    ckpt = record(ckpt_bytes, {"at", "hub_id", "root", "size", "v"}, "ckpt")
    if ckpt["hub_id"] != hub_id:
        raise FatalError(f"checkpoint is of hub {ckpt['hub_id']!r}, not {hub_id!r}")
    size, root = ckpt["size"], ckpt["root"]
    return ckpt_bytes, size, root


def check_receipt(
    raw: bytes,
    n: int,
    *,
    msg_id: bytes,
    hub_id: str,
    hub_keys: dict[str, bytes],
    org_keys: dict[str, dict[str, bytes]],
    ledger: list[list[Any]],
) -> list[str]:
    frame = record(raw, {"from", "kid", "rcpt", "sig", "v"}, f"receipt {n}")
    issuer = frame["from"]
    public = (hub_keys if issuer == hub_id else org_keys.get(issuer, {})).get(frame["kid"])
    if public is None:
        return [f"receipt {n}: no key {frame['kid']!r} of {issuer!r} in the file"]
    if not isinstance(frame["rcpt"], bytes) or not ed25519_ok(
        public, frame["sig"], RCPT + frame["rcpt"]
    ):
        return [f"receipt {n}: signature does not verify"]
    # 6.1: a version 2 batch's entries have a tenth key, "note" (sealed: not read here)
    batch = record(frame["rcpt"], {"v", "issuer", "issuer_kid", "at", "entries"}, "rcpt", (1, 2))
    keys = 9 if batch["v"] == 1 else 10
    if any(not isinstance(e, dict) or len(e) != keys for e in batch["entries"]):
        return [f"receipt {n}: an entry of a version {batch['v']} batch without {keys} keys"]
    if (batch["issuer"], batch["issuer_kid"]) != (issuer, frame["kid"]):
        return [f"receipt {n}: batch issuer is not the frame's"]
    problems, frame_hash = [], hashlib.sha256(raw).hexdigest()
    ours = [e for e in batch["entries"] if e["msg_id"] == msg_id]
    if not ours:
        problems.append(f"receipt {n}: speaks of no entry of this message")
    for e in ours:
        status = e["status"]
        spoken_for = None if status in SENDER_STATUSES else issuer
        if (status in HUB_STATUSES) != (issuer == hub_id) or (
            issuer != hub_id and e["recipient"] != spoken_for
        ):
            problems.append(f"receipt {n}: {status} may not be issued by {issuer}")
        elif not any(recorded(e, issuer, frame_hash, leaf) for leaf in ledger):
            problems.append(f"receipt {n}: {status} for {e['recipient']} has no ledger entry")
    return problems


def recorded(e: dict[str, Any], issuer: str, frame_hash: str, leaf: list[Any]) -> bool:
    """12.4: is receipt entry `e` the one ledger entry `leaf` records?"""
    _seq, _at, event, _msg_id, org, detail_text = leaf
    status = e["status"]
    if status == "RECALLED":  # the document (recipient nil: its recall) or one delivery
        return (event, org) == ("delivery.recalled", e["recipient"]) or (
            e["recipient"] is None and event == "receipt.recall"
        )
    if event not in EVENTS.get(status, ()):
        return False
    detail: dict[str, Any] = json.loads(detail_text)
    if status in {"ACCEPTED", "REJECTED"}:
        same = detail.get("frame_sha256") == e["subject"].hex()
        return same and (event != "message.rejected" or bool(detail.get("reason") == e["reason"]))
    if status in STATEMENTS:
        return bool(org == issuer and detail.get("batch_sha256") == frame_hash)
    if status == "REFUSED":  # its subject is the refused statement's batch
        return bool(
            detail.get("batch_sha256") == e["subject"].hex() and detail.get("reason") == e["reason"]
        )
    if status == "REMINDED":
        kind = str(e["reason"]).removeprefix("deadline.")
        return bool(org == e["recipient"] and detail.get("kind") == kind)
    return bool(org == e["recipient"])


def main(argv: list[str]) -> int:
    """``python -m tests.evidence.independent_verifier FILE [--hub-key hub.pub.json]``:
    prints ``valid`` or the problems, one a line; exit 0 when valid."""
    if (
        not argv
        or argv[0].startswith("-")
        or len(argv) not in (1, 3)
        or (len(argv) == 3 and argv[1] != "--hub-key")
    ):
        print("usage: independent_verifier FILE [--hub-key hub.pub.json]")
        return 2
    with open(argv[0], encoding="utf-8") as file:  # noqa: PTH123 - a stand-alone script
        doc = json.load(file)
    trusted = None
    if len(argv) == 3:
        with open(argv[2], encoding="utf-8") as file:  # noqa: PTH123
            trusted = base64.b64decode(json.load(file)["public"], validate=True)
    problems = verify(doc, trusted)
    print("\n".join(problems) or "valid")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
