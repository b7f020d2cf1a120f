"""The verifier written from docs/wire-format.md alone accepts the evidence the project's code
builds, catches each tampering, and agrees with schemas.evidence.verify."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec, evidence, merkle
from schemas.errors import SchemaError
from schemas.keys import HubPublicKey, SigningKey
from schemas.labels import Classification
from schemas.ledger import Checkpoint, Entry, cosign, read_checkpoint, sign_checkpoint
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from tests.evidence import independent_verifier
from tests.world import REPO

HUB = SigningKey(b"\x01" * 32)
OTHER_HUB = SigningKey(b"\x02" * 32)
SENDER = SigningKey(b"\x03" * 32)
CC = SigningKey(b"\x04" * 32)
NONGAN = SigningKey(b"\x05" * 32)
SIZE = 300  # a real tree: nine levels, an incomplete right edge

ACCEPTED_MSG = bytes.fromhex("a0" * 16)  # accepted, delivered, signed for, expired, dead
QUARANTINED_MSG = bytes.fromhex("b1" * 16)
REFUSED_MSG = bytes.fromhex("c2" * 16)
FLOWS_MSG = bytes.fromhex("d3" * 16)  # recalled, returned, reported on, reminded, refused


def _receipt(
    status: ReceiptStatus,
    msg_id: bytes,
    recipient: str | None,
    at: int,
    reason: str | None = None,
) -> ReceiptEntry:
    return ReceiptEntry(
        msg_id=msg_id,
        recipient=recipient,
        status=status,
        at=at,
        subject=hashlib.sha256(b"frame of " + msg_id).digest(),
        classification=Classification.INTERNAL,
        reason=reason,
        detail=None if reason is None else "the sentence that explains it",
        retriable=False,
    )


@dataclass(frozen=True)
class Ledger:
    entries: list[Entry]
    checkpoint: bytes
    receipts: dict[bytes, list[bytes]]  # msg_id -> the receipt frames that speak of it


@cache
def _ledger() -> Ledger:
    """SIZE entries about other messages, with the three messages' entries scattered in them."""
    rng = random.Random(9162)
    accepted = sign_receipts(
        "hub", HUB, [_receipt(ReceiptStatus.ACCEPTED, ACCEPTED_MSG, None, 10)], at=10
    )
    delivered = sign_receipts(
        "jl.cc", CC, [_receipt(ReceiptStatus.DELIVERED, ACCEPTED_MSG, "jl.cc", 20)], at=20
    )
    signed_for = sign_receipts(
        "jl.cc", CC, [_receipt(ReceiptStatus.SIGNED_FOR, ACCEPTED_MSG, "jl.cc", 30)], at=30
    )
    ends = sign_receipts(
        "hub",
        HUB,
        [
            _receipt(ReceiptStatus.EXPIRED, ACCEPTED_MSG, "jl.cc.nongan", 40),
            _receipt(
                ReceiptStatus.DEAD, ACCEPTED_MSG, "jl.sp", 41, reason="delivery.retries_exhausted"
            ),
        ],
        at=41,
    )
    # the flows on a sent document (wire-format 6.1), each as 12.4 says it is recorded
    recall = sign_receipts(
        "jl.gov", SENDER, [_receipt(ReceiptStatus.RECALL, FLOWS_MSG, None, 42)], at=42
    )
    flows_by_cc = [
        sign_receipts("jl.cc", CC, [_receipt(status, FLOWS_MSG, "jl.cc", 43 + i)], at=43 + i)
        for i, status in enumerate(
            (
                ReceiptStatus.WITHDRAWN,
                ReceiptStatus.RECALL_ACCEPTED,
                ReceiptStatus.RECALL_REFUSED,
                ReceiptStatus.RETURNED,
                ReceiptStatus.READ,
                ReceiptStatus.HANDLING,
                ReceiptStatus.DONE,
                ReceiptStatus.CASE_ACCEPTED,
                ReceiptStatus.CASE_DECLINED,
            )
        )
    ]
    refused_statement = b"the frame of a statement the hub refused"
    hub_flows = sign_receipts(
        "hub",
        HUB,
        [
            _receipt(ReceiptStatus.RECALLED, FLOWS_MSG, None, 55),
            _receipt(ReceiptStatus.RECALLED, FLOWS_MSG, "jl.sp", 55),
            _receipt(ReceiptStatus.REMINDED, FLOWS_MSG, "jl.cc", 56, "deadline.sign_by"),
            _receipt(ReceiptStatus.REFUSED, FLOWS_MSG, "jl.cc", 57, "flow.not_received").model_copy(
                update={"subject": hashlib.sha256(refused_statement).digest()}
            ),
        ],
        at=57,
    )
    quarantined = sign_receipts(
        "hub",
        HUB,
        [_receipt(ReceiptStatus.REJECTED, QUARANTINED_MSG, None, 50, "label.above_ceiling")],
        at=50,
    )
    refused = sign_receipts(
        "hub",
        HUB,
        [_receipt(ReceiptStatus.REJECTED, REFUSED_MSG, None, 60, "rule.skip_level")],
        at=60,
    )

    def frame_of(msg_id: bytes) -> str:
        return json.dumps({"frame_sha256": hashlib.sha256(b"frame of " + msg_id).hexdigest()})

    def batch(frame: bytes) -> str:
        return json.dumps({"batch_sha256": hashlib.sha256(frame).hexdigest(), "issuer": "jl.cc"})

    ours: list[tuple[str, bytes, str, str]] = [
        ("message.accepted", ACCEPTED_MSG, "jl.gov", frame_of(ACCEPTED_MSG)),
        ("delivery.sent", ACCEPTED_MSG, "jl.cc", '{"attempt":1}'),
        ("receipt.delivered", ACCEPTED_MSG, "jl.cc", batch(delivered)),
        ("receipt.signed_for", ACCEPTED_MSG, "jl.cc", batch(signed_for)),
        ("delivery.expired", ACCEPTED_MSG, "jl.cc.nongan", '{"attempts":3}'),
        ("message.quarantined", QUARANTINED_MSG, "jl.gov", frame_of(QUARANTINED_MSG)),
        (
            "message.rejected",
            REFUSED_MSG,
            "jl.gov",
            json.dumps({**json.loads(frame_of(REFUSED_MSG)), "reason": "rule.skip_level"}),
        ),
        ("receipt.recall", FLOWS_MSG, "jl.gov", batch(recall)),
        *(
            (f"receipt.{status.lower()}", FLOWS_MSG, "jl.cc", batch(frame))
            for status, frame in zip(
                (
                    "WITHDRAWN",
                    "RECALL_ACCEPTED",
                    "RECALL_REFUSED",
                    "RETURNED",
                    "READ",
                    "HANDLING",
                    "DONE",
                    "CASE_ACCEPTED",
                    "CASE_DECLINED",
                ),
                flows_by_cc,
                strict=True,
            )
        ),
        ("delivery.recalled", FLOWS_MSG, "jl.sp", "{}"),
        ("deadline.reminded", FLOWS_MSG, "jl.cc", '{"kind":"sign_by","stage":"due"}'),
        (
            "flow.refused",
            FLOWS_MSG,
            "jl.cc",
            json.dumps(
                {
                    "batch_sha256": hashlib.sha256(refused_statement).hexdigest(),
                    "reason": "flow.not_received",
                    "status": "RETURNED",
                }
            ),
        ),
        ("delivery.dead", ACCEPTED_MSG, "jl.sp", '{"attempts":10}'),
    ]
    slots = sorted(rng.sample(range(SIZE - 1), len(ours)))
    slots[-1] = SIZE - 1  # delivery.dead is the last leaf: its path is the short right edge
    placed = dict(zip(slots, ours, strict=True))
    entries = []
    for i in range(SIZE):
        event, msg_id, org, detail = placed.get(
            i, ("delivery.sent", rng.randbytes(16), "jl.yb", '{"attempt":1}')
        )
        entries.append(Entry(i + 1, 1000 + i, event, msg_id, org, detail))
    tree = merkle.Frontier()
    for e in entries:
        tree.append(e.leaf_hash())
    checkpoint = sign_checkpoint(Checkpoint("hub", SIZE, tree.root(), 5000), HUB)
    receipts = {
        ACCEPTED_MSG: [accepted, delivered, signed_for, ends],
        FLOWS_MSG: [recall, *flows_by_cc, hub_flows],
        QUARANTINED_MSG: [quarantined],
        REFUSED_MSG: [refused],
    }
    return Ledger(entries, checkpoint, receipts)


def _doc(msg_id: bytes = ACCEPTED_MSG, *, witnesses: int = 2) -> dict[str, Any]:
    ledger = _ledger()
    hashes = [e.leaf_hash() for e in ledger.entries]

    def node(level: int, index: int) -> bytes:
        return merkle.root_of(hashes[index << level : (index + 1) << level])

    signed = read_checkpoint(ledger.checkpoint)
    cosigners = [("jl.cc", CC), ("jl.cc.nongan", NONGAN)][:witnesses]
    return evidence.build(
        msg_id=msg_id,
        made_by="jl.gov",
        made_at=6000,
        hub_id="hub",
        hub_keys=[(HUB.kid, HUB.public)],
        checkpoint=ledger.checkpoint,
        entries=[
            (e.leaf(), merkle.inclusion_proof(e.index, SIZE, node))
            for e in ledger.entries
            if e.msg_id == msg_id
        ],
        receipts=ledger.receipts[msg_id],
        keys={"jl.cc": [(CC.kid, CC.public)], "jl.gov": [(SENDER.kid, SENDER.public)]},
        cosignatures=[(org, k.kid, k.public, cosign(signed, k)) for org, k in cosigners],
    )


def _check(doc: dict[str, Any], trusted: bytes | None = HUB.public) -> list[str]:
    """The independent verifier, on the document as it would be read from its JSON file."""
    return independent_verifier.verify(json.loads(evidence.dumps(doc)), trusted)


def _project_ok(doc: dict[str, Any]) -> bool:
    try:
        return evidence.verify(doc, trusted_hub_keys=[HUB.public]).ok
    except SchemaError:
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _leaf(doc: dict[str, Any], event: str) -> tuple[int, Entry]:
    for n, item in enumerate(doc["entries"]):
        entry = Entry.from_leaf(_unb64(item["leaf"]))
        if entry.event == event:
            return n, entry
    raise AssertionError(f"no {event} entry")


# ---------------------------------------------------------------- valid evidence


@pytest.mark.parametrize(
    ("msg_id", "entries"),
    [(ACCEPTED_MSG, 6), (QUARANTINED_MSG, 1), (REFUSED_MSG, 1)],
    ids=["accepted-delivered-signed-expired-dead", "quarantined", "refused"],
)
def test_evidence_built_by_the_project_verifies_independently(msg_id: bytes, entries: int) -> None:
    doc = _doc(msg_id)
    assert len(doc["entries"]) == entries
    assert _check(doc) == []
    assert evidence.verify(doc, trusted_hub_keys=[HUB.public]).ok


def test_every_receipt_status_is_in_the_evidence_that_verifies() -> None:
    statuses = set()
    for msg_id in (ACCEPTED_MSG, QUARANTINED_MSG, REFUSED_MSG, FLOWS_MSG):
        for frame in _doc(msg_id)["receipts"]:
            outer = codec.decode(_unb64(frame), codec.RECEIPT_FRAME_LIMITS)
            assert isinstance(outer, dict)
            batch = codec.decode(outer["rcpt"], codec.RECEIPT_LIMITS)
            assert isinstance(batch, dict)
            statuses |= {e["status"] for e in batch["entries"]}
    assert statuses == {s.value for s in ReceiptStatus}


def test_the_flows_receipts_are_each_found_in_the_ledger_by_both_verifiers() -> None:
    doc = _doc(FLOWS_MSG)
    assert _check(doc) == []
    assert _project_ok(doc)
    broken = _doc(FLOWS_MSG)
    broken["entries"] = [
        e for e in broken["entries"] if b"flow.refused" not in _unb64(e["leaf"])
    ]  # the REFUSED's entry gone: both say so
    assert any("REFUSED" in p for p in _check(broken))
    assert not _project_ok(broken)


def test_evidence_without_a_trusted_key_is_checked_for_consistency_only() -> None:
    doc = _doc()
    doc["hub_keys"] = [{"kid": OTHER_HUB.kid, "public": _b64(OTHER_HUB.public)}]
    assert _check(doc, trusted=None) != []  # the checkpoint's key is no longer listed
    assert _check(_doc(), trusted=None) == []


def test_evidence_without_witnesses_verifies() -> None:
    assert _check(_doc(witnesses=0)) == []


# ---------------------------------------------------------------- tamperings


def test_an_edited_leaf_is_not_included() -> None:
    doc = _doc()
    n, entry = _leaf(doc, "delivery.dead")
    forged = Entry(entry.seq, entry.at, "delivery.sent", entry.msg_id, entry.org, entry.detail)
    doc["entries"][n]["leaf"] = _b64(forged.leaf())
    problems = _check(doc)
    assert any("not included" in p for p in problems)
    assert any("DEAD" in p and "no ledger entry" in p for p in problems)


def test_a_swapped_proof_hash_is_not_included() -> None:
    doc = _doc()
    path = doc["entries"][0]["path"]
    path[0], path[1] = path[1], path[0]
    assert any("entry 0" in p and "not included" in p for p in _check(doc))


def test_a_replaced_proof_hash_is_not_included() -> None:
    doc = _doc()
    doc["entries"][2]["path"][-1] = _b64(hashlib.sha256(b"another subtree").digest())
    assert any("entry 2" in p and "not included" in p for p in _check(doc))


def test_a_leaf_claiming_another_seq_is_not_included() -> None:
    doc = _doc()
    n, entry = _leaf(doc, "delivery.sent")
    moved = Entry(entry.seq + 1, entry.at, entry.event, entry.msg_id, entry.org, entry.detail)
    doc["entries"][n]["leaf"] = _b64(moved.leaf())
    assert any(f"entry {n}" in p and "not included" in p for p in _check(doc))


def test_paths_swapped_between_entries_are_not_included() -> None:
    doc = _doc()
    first, second = doc["entries"][0], doc["entries"][1]
    first["path"], second["path"] = second["path"], first["path"]
    problems = _check(doc)
    assert any("entry 0" in p for p in problems)
    assert any("entry 1" in p for p in problems)


def test_a_seq_beyond_the_checkpoint_is_not_included() -> None:
    doc = _doc()
    n, entry = _leaf(doc, "delivery.dead")  # the last leaf: seq = SIZE
    assert entry.seq == SIZE
    beyond = Entry(SIZE + 1, entry.at, entry.event, entry.msg_id, entry.org, entry.detail)
    doc["entries"][n]["leaf"] = _b64(beyond.leaf())
    assert any(f"entry {n}" in p and "not included" in p for p in _check(doc))


def test_an_entry_of_another_message_is_reported() -> None:
    doc = _doc()
    doc["entries"].append(_doc(QUARANTINED_MSG)["entries"][0])
    assert any("another message" in p for p in _check(doc))


def test_a_checkpoint_resigned_by_another_key_is_refused() -> None:
    doc = _doc()
    signed = read_checkpoint(_unb64(doc["checkpoint"]))
    doc["checkpoint"] = _b64(sign_checkpoint(signed.checkpoint, OTHER_HUB))
    doc["hub_keys"] = [{"kid": OTHER_HUB.kid, "public": _b64(OTHER_HUB.public)}]
    problems = _check(doc)
    assert any("trusted hub key" in p and "not in hub_keys" in p for p in problems)
    assert any("not by the trusted key" in p for p in problems)


def test_a_checkpoint_resigned_by_another_listed_key_is_refused() -> None:
    doc = _doc()
    signed = read_checkpoint(_unb64(doc["checkpoint"]))
    doc["checkpoint"] = _b64(sign_checkpoint(signed.checkpoint, OTHER_HUB))
    doc["hub_keys"].append({"kid": OTHER_HUB.kid, "public": _b64(OTHER_HUB.public)})
    assert any("not by the trusted key" in p for p in _check(doc))


def _edit_ckpt(doc: dict[str, Any], **changes: Any) -> None:
    """Change fields of the checkpoint's body, keeping the hub's signature."""
    frame = codec.decode(_unb64(doc["checkpoint"]), codec.RECEIPT_FRAME_LIMITS)
    assert isinstance(frame, dict)
    body = codec.decode(frame["ckpt"], codec.RECEIPT_LIMITS)
    assert isinstance(body, dict)
    frame["ckpt"] = codec.encode({**body, **changes})
    doc["checkpoint"] = _b64(codec.encode(frame))


@pytest.mark.parametrize("size", [SIZE - 1, SIZE + 1, 2 * SIZE])
def test_an_edited_checkpoint_size_breaks_its_signature(size: int) -> None:
    doc = _doc()
    _edit_ckpt(doc, size=size)
    assert _check(doc) == ["checkpoint signature does not verify"]


def test_a_checkpoint_of_another_hub_is_refused() -> None:
    doc = _doc()
    signed = read_checkpoint(_unb64(doc["checkpoint"]))
    body = signed.checkpoint
    doc["checkpoint"] = _b64(
        sign_checkpoint(Checkpoint("other-hub", body.size, body.root, body.at), HUB)
    )
    assert any("of hub 'other-hub'" in p for p in _check(doc))


def test_a_receipt_whose_signature_is_broken_is_reported() -> None:
    doc = _doc()
    frame = codec.decode(_unb64(doc["receipts"][1]), codec.RECEIPT_FRAME_LIMITS)
    assert isinstance(frame, dict)
    sig = bytearray(frame["sig"])
    sig[7] ^= 0x10
    frame["sig"] = bytes(sig)
    doc["receipts"][1] = _b64(codec.encode(frame))
    assert _check(doc) == ["receipt 1: signature does not verify"]


def test_a_receipt_signed_by_a_key_the_file_does_not_list_is_reported() -> None:
    doc = _doc()
    doc["keys"] = {}
    problems = _check(doc)
    assert [p for p in problems if "no key" in p] == [
        f"receipt 1: no key {CC.kid!r} of 'jl.cc' in the file",
        f"receipt 2: no key {CC.kid!r} of 'jl.cc' in the file",
    ]


def test_a_receipt_under_a_key_the_file_lists_but_your_directory_does_not_is_reported() -> None:
    """The file's keys only say which key was used: a forger lists a key of their own."""
    doc = _doc()
    yours = {"jl.cc": {CC.public}, "jl.cc.nongan": {NONGAN.public}}
    assert independent_verifier.verify(doc, HUB.public, yours) == []
    problems = independent_verifier.verify(doc, HUB.public, {**yours, "jl.cc": {NONGAN.public}})
    assert [p for p in problems if "no key" in p] == [
        f"receipt 1: no key {CC.kid!r} of 'jl.cc' in the file",
        f"receipt 2: no key {CC.kid!r} of 'jl.cc' in the file",
    ]


@pytest.mark.parametrize(
    "event",
    [
        "message.accepted",
        "receipt.delivered",
        "receipt.signed_for",
        "delivery.expired",
        "delivery.dead",
    ],
)
def test_a_receipt_without_its_ledger_entry_is_reported(event: str) -> None:
    doc = _doc()
    n, _ = _leaf(doc, event)
    del doc["entries"][n]
    problems = _check(doc)
    assert len(problems) == 1
    assert "no ledger entry" in problems[0]


@pytest.mark.parametrize("msg_id", [QUARANTINED_MSG, REFUSED_MSG])
def test_a_rejection_without_its_ledger_entry_is_reported(msg_id: bytes) -> None:
    doc = _doc(msg_id)
    doc["entries"].append(_doc()["entries"][0])  # proven, but the wrong message's acceptance
    del doc["entries"][0]
    assert any("REJECTED" in p and "no ledger entry" in p for p in _check(doc))


def test_the_order_of_receipts_does_not_matter() -> None:
    doc = _doc()
    doc["receipts"].reverse()
    assert _check(doc) == []


def test_a_file_without_entries_proves_nothing() -> None:
    doc = _doc()
    doc["entries"], doc["receipts"] = [], []
    assert _check(doc) == ["the file has no ledger entries"]


def test_a_cosignature_that_does_not_verify_is_reported() -> None:
    doc = _doc()
    sig = bytearray(_unb64(doc["cosignatures"][1]["sig"]))
    sig[0] ^= 1
    doc["cosignatures"][1]["sig"] = _b64(bytes(sig))
    assert _check(doc) == ["cosignature 1 (jl.cc.nongan): does not verify"]


def test_a_cosignature_of_another_checkpoint_is_reported() -> None:
    doc = _doc()
    signed = read_checkpoint(_unb64(doc["checkpoint"]))
    body = signed.checkpoint
    older = read_checkpoint(
        sign_checkpoint(Checkpoint("hub", body.size - 1, body.root, body.at), HUB)
    )
    doc["cosignatures"][0]["sig"] = _b64(cosign(older, CC))
    assert _check(doc) == ["cosignature 0 (jl.cc): does not verify"]


def test_a_cosignature_whose_kid_is_not_its_key_is_reported() -> None:
    doc = _doc()
    doc["cosignatures"][0]["kid"] = NONGAN.kid
    assert _check(doc) == ["cosignature 0 (jl.cc): kid is not its key's"]


@pytest.mark.parametrize(
    "text",
    ["{}", '{"format": "govxchg-evidence/1"}', '{"format": "govxchg-evidence/1", "msg_id": 3}'],
)
def test_what_is_not_an_evidence_file_is_one_problem(text: str) -> None:
    assert len(independent_verifier.verify(json.loads(text), HUB.public)) == 1


# ---------------------------------------------------------------- agreement


def _flip(text: str, position: int, bit: int) -> str:
    data = bytearray(_unb64(text))
    data[position % len(data)] ^= 1 << bit
    return _b64(bytes(data))


def _blobs(doc: dict[str, Any]) -> list[tuple[Callable[[], str], Callable[[str], None]]]:
    """Getters and setters of every binary value in the document."""
    places: list[tuple[dict[str, Any] | list[Any], str | int]] = [(doc, "checkpoint")]
    places += [(item, "leaf") for item in doc["entries"]]
    places += [(item["path"], i) for item in doc["entries"] for i in range(len(item["path"]))]
    places += [(doc["receipts"], i) for i in range(len(doc["receipts"]))]
    places += [(item, "sig") for item in doc["cosignatures"]]
    places += [(item, "public") for item in doc["cosignatures"]]
    places += [(item, "public") for item in doc["hub_keys"]]
    places += [(item, "public") for rows in doc["keys"].values() for item in rows]

    def access(
        where: dict[str, Any] | list[Any], key: str | int
    ) -> tuple[Callable[[], str], Callable[[str], None]]:
        def get() -> str:
            return where[key]  # type: ignore[index, no-any-return]

        def put(value: str) -> None:
            where[key] = value  # type: ignore[index]

        return get, put

    return [access(where, key) for where, key in places]


TAMPERINGS = ["flip", "drop_entry", "drop_receipt", "drop_cosignature", "swap_paths", "none"]


@settings(max_examples=60, deadline=None)
@given(
    msg=st.sampled_from([ACCEPTED_MSG, QUARANTINED_MSG, REFUSED_MSG]),
    tampering=st.sampled_from(TAMPERINGS),
    pick=st.integers(min_value=0, max_value=10_000),
    position=st.integers(min_value=0, max_value=10_000),
    bit=st.integers(min_value=0, max_value=7),
)
def test_the_independent_verifier_agrees_with_the_projects_on_random_tamperings(
    msg: bytes, tampering: str, pick: int, position: int, bit: int
) -> None:
    doc = copy.deepcopy(_doc(msg))
    if tampering == "flip":
        get, put = _blobs(doc)[pick % len(_blobs(doc))]
        put(_flip(get(), position, bit))
    elif tampering == "drop_entry":
        del doc["entries"][pick % len(doc["entries"])]
    elif tampering == "drop_receipt":
        del doc["receipts"][pick % len(doc["receipts"])]
    elif tampering == "drop_cosignature":
        del doc["cosignatures"][pick % len(doc["cosignatures"])]
    elif tampering == "swap_paths" and len(doc["entries"]) > 1:
        a, b = random.Random(pick).sample(doc["entries"], 2)
        a["path"], b["path"] = b["path"], a["path"]
    independent_ok = _check(doc) == []
    assert independent_ok == _project_ok(doc), _check(doc)


def test_the_guides_command_checks_a_file_against_the_hub_key_file(tmp_path: Path) -> None:
    """docs/operations.md, "Checking it without them", run as written."""
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    (line,) = [
        ln for ln in guide.splitlines() if ln.startswith(".venv/bin/python -m tests.evidence")
    ]
    argv = [sys.executable, *shlex.split(line)[1:]]
    (tmp_path / "hub.pub.json").write_bytes(HubPublicKey(HUB.public, 0, 2**62).dump())
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        (tmp_path / "evidence.json").write_text(json.dumps(doc), encoding="utf-8")
        return subprocess.run(  # noqa: S603 - the guide's own command
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    good = run(_doc())
    assert (good.returncode, good.stdout) == (0, "valid\n"), good.stderr
    forged = _doc()
    forged["hub_keys"] = [{"kid": OTHER_HUB.kid, "public": _b64(OTHER_HUB.public)}]
    signed = read_checkpoint(_unb64(forged["checkpoint"])).checkpoint
    forged["checkpoint"] = _b64(sign_checkpoint(signed, OTHER_HUB))
    bad = run(forged)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.strip()
