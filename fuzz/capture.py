"""Make the fuzz targets' seed corpus from real bytes: ``python fuzz/capture.py``.

Builds the exchange of fuzz/fixture/topology.toml in a temporary folder with the project's
own tools (key files in their formats, ``hubctl directory build`` signs the directory),
then runs the real code to produce what travels: sealed envelopes and their bodies,
chunks, receipt batches signed by the hub and by a recipient, ledger checkpoints, leaves
and proofs, every transport message, presence topics and payloads, admin socket lines
(requests from hubctl's encoder, answers from the hub's), drop metadata files in TOML and
JSON with English and Chinese field names, key files, an evidence file, and the request
heads Python's HTTP client sends (recorded on a socket of this machine). Each seed is written under
fuzz/corpus/<target>/ named by its content's SHA-1, as libFuzzer names inputs; a target
whose inputs start with a mode byte (fuzz/README.md) gets that byte in front.

The keys are fuzz/world.py's fixed throwaway keys, so the targets can verify what is
captured here and sign what they fuzz.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import cast

import world  # fuzz/world.py: this script runs from fuzz/, which Python puts on sys.path
from run import TARGETS

from hubd.admin.protocol import Op, encode_error, encode_request, encode_result
from hubd.engine.arrival import Arrival
from hubd.engine.dirdesk import DirectoryDesk
from hubd.engine.dispatch import Publish
from runtime.files import write_private
from schemas import codec, dirtree, evidence, merkle, topics, transport
from schemas.clock import DAY_MS
from schemas.directory import Directory, verify_directory
from schemas.envelope import verify_envelope
from schemas.ids import new_msg_id
from schemas.keys import HubPublicKey, PublicKeys, dump_secret_key
from schemas.labels import Classification, DocType, Precedence, SecrecyPeriod
from schemas.ledger import Checkpoint, Entry, cosign, pack_path, read_checkpoint, sign_checkpoint
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from schemas.seal import Draft, Sealed, file_entry, seal_bytes
from spoke.demo import EMERGENCY, NOTICE, REPORT, REQUEST, SECRET_REPORT

BIN = Path(sys.executable).parent
# The mode bytes of the targets that take one (see each target's docstring).
ENV_FRAME, ENV_HDR, ENV_CORE = b"\x00", b"\x01", b"\x02"
RCPT_FRAME, RCPT_HUB, RCPT_SPOKE = b"\x00", b"\x01", b"\x02"
DIR_FRAME, DIR_BODY = b"\x00", b"\x01"
LEDGER_CKPT, LEDGER_BODY, LEDGER_LEAF, LEDGER_PATH, LEDGER_ENTRIES, LEDGER_RESTORE = (
    b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05",
)  # fmt: skip
ADMIN_REQUEST, ADMIN_ANSWER = b"\x00", b"\x01"
META_TOML, META_JSON = b"\x00", b"\x01"
KEYS_ORG, KEYS_HUB, KEYS_SECRET = b"\x00", b"\x01", b"\x02"
SLOTS_BLOB, SLOTS_PART, SLOTS_FORGED_PART, SLOTS_FORGED_BLOB, SLOTS_STORED = (
    b"\x00", b"\x01", b"\x02", b"\x03", b"\x04",
)  # fmt: skip
TREE_PUBLISHED, TREE_ROOT, TREE_DELTA, TREE_LEAF, TREE_ASK, TREE_ANSWER, TREE_FORGED = (
    b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06",
)  # fmt: skip


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count: dict[str, int] = {}

    def add(self, target: str, data: bytes) -> None:
        folder = self.root / target
        folder.mkdir(parents=True, exist_ok=True)
        (folder / hashlib.sha1(data, usedforsecurity=False).hexdigest()).write_bytes(data)
        self.count[target] = self.count.get(target, 0) + 1


def build_exchange(scratch: Path, now: int) -> bytes:
    """Key files and a directory signed by ``hubctl directory build``; the frame."""
    orgs = scratch / "keys" / "orgs"
    for org in world.ORGS:
        folder = orgs / org
        folder.mkdir(parents=True)
        signing, encryption = world.signing_key(org), world.encryption_key(org)
        public = PublicKeys(org, signing.public, encryption.public, now, now + 3650 * DAY_MS)
        (folder / f"{org}.pub.json").write_bytes(public.dump())
    hub = scratch / "keys" / "hub"
    hub.mkdir(parents=True)
    hub_key = world.signing_key(world.HUB)
    write_private(hub / "hub.sign.key", dump_secret_key(world.HUB, hub_key))
    (hub / "hub.pub.json").write_bytes(
        HubPublicKey(hub_key.public, now, now + 3650 * DAY_MS).dump()
    )
    command = [
        str(BIN / "hubctl"), "directory", "build", "--topology", str(world.TOPOLOGY),
        "--keys", str(orgs), "--hub-key", str(hub / "hub.sign.key"),
        "--out", str(hub / "directory.bin"), "--valid-days", "365",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return (hub / "directory.bin").read_bytes()


def main() -> None:
    corpus_root = world.CORPUS
    if corpus_root.exists():
        shutil.rmtree(corpus_root)
    corpus = Corpus(corpus_root)
    now = 1_795_000_000_000  # 2026-11-18, fixed so that a recapture differs only in randomness
    with tempfile.TemporaryDirectory(prefix="govxchg-fuzz-") as tmp:
        frame = build_exchange(Path(tmp), now)
    world.DIRECTORY_FRAME.write_bytes(frame)
    hub_key = world.signing_key(world.HUB)
    directory = verify_directory(frame, hub_key.public, now=None).directory
    corpus.add("directory", DIR_FRAME + frame)
    corpus.add("directory", DIR_BODY + codec.decode_map(frame, codec.DIRECTORY_FRAME_LIMITS)["dir"])
    created = world.now_of(directory)

    sealed = envelopes(corpus, directory, created)
    slots(corpus, created)
    msg_id = sealed.header.msg_id
    batches = receipts(corpus, sealed.frame, msg_id, created)
    ledger(corpus, msg_id, created, batches)
    presence(corpus, frame)
    directory_tree(corpus)
    admin(corpus, directory, msg_id, created)
    metadata(corpus, msg_id)
    key_files(corpus, now)
    http_requests(corpus)
    for target in TARGETS:
        print(f"{target:10} {corpus.count.get(target, 0):3} seeds")


def envelopes(corpus: Corpus, directory: Directory, created: int) -> Sealed:
    """Envelopes: sealed by the real Sealer."""
    notice = Draft(
        sender="jl.gov",
        to=("jl.cc",),
        cc=("jl.cc.nongan",),
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        title="关于做好今冬明春供暖保障工作的通知",
        created_at=created,
        files=[file_entry("通知.txt", "text/plain", "供暖".encode())],
        doc_number="吉政办发〔2026〕12号",
        directive=True,
        date="2026-11-18",
    )
    secret = Draft(
        sender="jl.gov",
        to=("cn.gov",),
        classification=Classification.SECRET,
        precedence=Precedence.FLASH,
        doc_type=DocType.REPORT,
        title="（涉密标题不显示）",
        created_at=created,
        files=[
            file_entry("a.pdf", "application/pdf", b"%PDF-1.7"),
            file_entry("b", "application/octet-stream", b""),
        ],
        signatory="李某",
        secrecy_period=SecrecyPeriod.parse("1年"),
        copy_numbers={"cn.gov": "000001"},
        expires_at=created + 7 * DAY_MS,
        in_reply_to=bytes(range(16)),
    )
    sealed_pairs = [
        seal_bytes(notice, world.signing_key("jl.gov"), directory, ["供暖".encode()]),
        seal_bytes(secret, world.signing_key("jl.gov"), directory, [b"%PDF-1.7", b""]),
    ]
    for sealed, body in sealed_pairs:
        outer = codec.decode_map(sealed.frame, codec.FRAME_LIMITS)
        corpus.add("envelope", ENV_FRAME + sealed.frame)
        corpus.add("envelope", ENV_HDR + outer["hdr"])
        corpus.add("envelope", ENV_CORE + codec.decode_map(outer["hdr"], codec.HDR_LIMITS)["core"])
        corpus.add("transport", transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    sealed, body = sealed_pairs[0]
    msg_id = sealed.header.msg_id
    zeros = replace(notice, msg_id=new_msg_id(), files=[file_entry("z", "text/plain", bytes(6))])
    zeros_sealed, zeros_body = seal_bytes(zeros, world.signing_key("jl.gov"), directory, [bytes(6)])
    corpus.add("inner", inner_seed(zeros_sealed.frame, zeros_body))
    corpus.add("transport", transport.encode(transport.EnvelopeMsg(sealed.frame, None)))
    corpus.add("transport", transport.encode(transport.ChunkMsg(msg_id, 0, body[:40])))
    corpus.add("transport", transport.encode(transport.ResumeMsg(msg_id, 40)))
    corpus.add("transport", transport.encode(transport.HelloMsg(7)))
    corpus.add("transport", transport.encode(transport.AskHelloMsg()))
    corpus.add("inner", inner_seed(sealed_pairs[0][0].frame, body))

    return sealed


def slots(corpus: Corpus, created: int) -> None:
    """An envelope whose recipients are in slots, sealed by the real Sealer to jl.cc and
    the counties of ``world.crowded_directory()`` with jl.cc.nongan in cc (two 份号), kept
    as fixture/slots.bin (the message sent up): the slots target fuzzes against it. Its
    seeds: every slot as the hub receives it, a few recipients' parts as the hub sends them
    down (with the byte that picks the recipient), stored parts, and a few bytes to forge
    from; the transport message up and one down."""
    draft = Draft(
        sender="jl.gov",
        to=("jl.cc", *world.COUNTIES),
        cc=("jl.cc.nongan",),
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        title="关于做好全省县级冬季供暖保障工作的通知",
        created_at=created,
        files=[file_entry("通知.txt", "text/plain", "供暖".encode())],
        copy_numbers={"jl.cc": "000001", "jl.cc.nongan": "000002"},
    )
    crowded = world.crowded_directory()
    sealed, body = seal_bytes(draft, world.signing_key("jl.gov"), crowded, ["供暖".encode()])
    assert sealed.slots is not None  # noqa: S101 - more than INLINE_MAX recipients
    up = transport.encode(transport.EnvelopeMsg(sealed.frame, body, sealed.slots))
    world.SLOTS_MESSAGE.write_bytes(up)
    hub = verify_envelope(sealed.frame, crowded, expected_sender="jl.gov", slots=sealed.slots)
    assert hub.slots is not None  # noqa: S101 - a v2 header, every slot given
    orgs = [slot.org for slot in hub.slots.slots]
    corpus.add("slots", SLOTS_BLOB + sealed.slots)
    for org in ("jl.cc", "jl.cc.nongan", orgs[len(orgs) // 2]):
        part = hub.part_for(org)
        assert part is not None  # noqa: S101
        corpus.add("slots", SLOTS_PART + bytes([orgs.index(org)]) + part)
        corpus.add("slots", SLOTS_STORED + part)
    corpus.add("slots", SLOTS_FORGED_PART + bytes(range(24)))
    corpus.add("slots", SLOTS_FORGED_BLOB + bytes(range(24)))
    corpus.add("transport", up)
    down = transport.EnvelopeMsg(sealed.frame, body, hub.part_for("jl.cc"))
    corpus.add("transport", transport.encode(down))


def receipts(corpus: Corpus, frame: bytes, msg_id: bytes, created: int) -> list[bytes]:
    """Receipts: the hub's and a recipient's, about the envelope ``frame``."""
    hub_key = world.signing_key(world.HUB)
    subject = hashlib.sha256(frame).digest()
    label = Classification.INTERNAL

    def entry(status: ReceiptStatus, recipient: str | None, **extra: object) -> ReceiptEntry:
        fields: dict[str, object] = {"reason": None, "detail": None, "retriable": False}
        fields.update(extra)
        return ReceiptEntry(
            msg_id=msg_id, recipient=recipient, status=status, at=created, subject=subject,
            classification=label, **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    hub_batch = sign_receipts(
        "jl.hub",
        hub_key,
        [
            entry(ReceiptStatus.ACCEPTED, None),
            entry(
                ReceiptStatus.REJECTED,
                None,
                reason="rule.request_recipient",
                detail="a 请示 has one primary recipient; send it to jl.gov only",
                retriable=True,
            ),
            entry(ReceiptStatus.DEAD, "jl.cc", reason="hub.busy", detail="gave up after 12 tries"),
        ],
        at=created,
    )
    spoke_batch = sign_receipts(
        "jl.cc",
        world.signing_key("jl.cc"),
        [entry(ReceiptStatus.DELIVERED, "jl.cc"), entry(ReceiptStatus.SIGNED_FOR, "jl.cc")],
        at=created,
    )
    for batch, mode in ((hub_batch, RCPT_HUB), (spoke_batch, RCPT_SPOKE)):
        corpus.add("receipts", RCPT_FRAME + batch)
        corpus.add("receipts", mode + codec.decode_map(batch, codec.RECEIPT_FRAME_LIMITS)["rcpt"])
    corpus.add("transport", transport.encode(transport.ReceiptsMsg(hub_batch, 3)))
    corpus.add("transport", transport.encode(transport.ReceiptsMsg(spoke_batch, 0)))
    return [hub_batch, spoke_batch]


def ledger(corpus: Corpus, msg_id: bytes, created: int, batches: list[bytes]) -> None:
    """The ledger: entries, checkpoints, proofs."""
    hub_key = world.signing_key(world.HUB)
    entries = [
        Entry(1, created, "message.accepted", msg_id, "jl.gov", json.dumps({"to": ["jl.cc"]})),
        Entry(2, created + 5, "receipt.delivered", msg_id, "jl.cc", "{}"),
        Entry(3, created + 9, "ledger.restored", None, None, json.dumps({"size": 2})),
    ]
    leaves = [e.leaf() for e in entries]
    digests = [merkle.leaf_hash(leaf) for leaf in leaves]

    def node(level: int, index: int) -> bytes:
        return merkle.root_of(digests[index << level : (index + 1) << level])

    ckpt2 = sign_checkpoint(Checkpoint("jl.hub", 2, merkle.root_of(digests[:2]), created), hub_key)
    ckpt3 = sign_checkpoint(Checkpoint("jl.hub", 3, merkle.root_of(digests), created + 9), hub_key)
    consistency = pack_path(merkle.consistency_proof(2, 3, node))
    inclusion = pack_path(merkle.inclusion_proof(2, 3, node))
    proof_entries = transport.encode_proof_entries(
        [(leaf, pack_path(merkle.inclusion_proof(i, 3, node))) for i, leaf in enumerate(leaves)]
    )
    corpus.add("ledger", LEDGER_CKPT + ckpt3)
    corpus.add("ledger", LEDGER_BODY + codec.decode_map(ckpt3, codec.FRAME_LIMITS)["ckpt"])
    for leaf in leaves:
        corpus.add("ledger", LEDGER_LEAF + leaf)
    corpus.add("ledger", LEDGER_PATH + consistency)
    corpus.add("ledger", LEDGER_ENTRIES + proof_entries)
    corpus.add("ledger", LEDGER_RESTORE + leaves[2])
    for message in (
        transport.CheckpointMsg(ckpt3, 2, consistency),
        transport.ConsistencyAsk(2, 3),
        transport.ConsistencyMsg(2, 3, consistency, leaves[2], inclusion),
        transport.ConsistencyMsg(0, 3, None),
        transport.ProveAsk(msg_id, 0),
        transport.ProofMsg(msg_id, ckpt2, proof_entries, more=False),
        transport.ProofMsg(msg_id, None, None, more=False, refusal="ledger.unknown_message"),
        transport.CosignMsg(3, world.signing_key("jl.cc").kid, bytes(64)),
    ):
        corpus.add("transport", transport.encode(message))
    # the evidence file 'spoke prove' writes for the message: its entries, proofs, receipts
    witness = world.signing_key("jl.cc")
    evidence_doc = evidence.build(
        msg_id=msg_id,
        made_by="jl.cc",
        made_at=created + 10,
        hub_id="jl.hub",
        hub_keys=[(hub_key.kid, hub_key.public)],
        checkpoint=ckpt3,
        entries=[(leaves[i], merkle.inclusion_proof(i, 3, node)) for i in (0, 1)],
        receipts=batches,
        keys={"jl.cc": [(witness.kid, witness.public)]},
        cosignatures=[
            ("jl.cc", witness.kid, witness.public, cosign(read_checkpoint(ckpt3), witness))
        ],
    )
    corpus.add("evidence", evidence.dumps(evidence_doc).encode())


def presence(corpus: Corpus, frame: bytes) -> None:
    """Presence: the topics a hub reads, and what is published on them."""
    for org, payload in (("jl.cc", topics.ONLINE), ("jl.gov", topics.OFFLINE)):
        corpus.add("presence", topics.presence("govnet", org).encode() + b"\x00" + payload)
    corpus.add("presence", topics.up("govnet", "jl.cc").encode() + b"\x00" + b"\x92\xa5hello\x07")
    corpus.add("presence", topics.directory("govnet").encode() + b"\x00" + frame[:64])
    corpus.add("presence", topics.ledger("classified").encode() + b"\x00")


def directory_tree(corpus: Corpus) -> None:
    """The directory as spokes take it: the publications the hub retains (version 1, and
    version 2 with its change), their roots and change, the leaves, and the hub's answers
    (its DirectoryDesk) to requests for present, absent and invalid keys."""
    first, following = world.served()
    for served in (first, following):
        corpus.add("dirtree", TREE_PUBLISHED + served.publication)
        root_frame, delta_frame = dirtree.read_publication(served.publication)
        root = codec.decode_map(root_frame, dirtree.ROOT_FRAME_LIMITS)["root"]
        corpus.add("dirtree", TREE_ROOT + root)
        if delta_frame is not None:
            delta = codec.decode_map(delta_frame, dirtree.DELTA_FRAME_LIMITS)["delta"]
            corpus.add("dirtree", TREE_DELTA + delta)
    for leaf in first.tree.leaves:
        corpus.add("dirtree", TREE_LEAF + leaf)
    payloads: list[bytes] = []
    record = cast("Publish", lambda _channel, _org, payload: payloads.append(payload))
    desk = DirectoryDesk(send=record)  # what it sends is recorded, its future not awaited
    desk.served = first
    keys = first.tree.keys
    for ask, (version, asked) in enumerate(
        (
            (0, [keys[0], keys[-1]]),  # held no root: the answer carries it
            (1, ["jl.cc", "@counties#0", "jl.aa", "@counties#1", "zz.last", "@aaa#0"]),
            (1, ["not a key"]),
        )
    ):
        request = transport.DirGetMsg(ask, version, dirtree.encode_ask(asked))
        corpus.add("transport", transport.encode(request))
        if ask < 2:
            corpus.add("dirtree", TREE_ASK + request.keys)
        desk.answer_now(Arrival("govnet", "jl.cc", transport.encode(request), 0, ask), request)
    for payload in payloads:
        corpus.add("transport", payload)
        answer = transport.decode(payload)
        assert isinstance(answer, transport.DirEntriesMsg)  # noqa: S101 - the desk's own
        corpus.add("dirtree", TREE_ANSWER + answer.answer)
    # forged answers are built from the input by the target; a few bytes to start from
    corpus.add("dirtree", TREE_FORGED + bytes(range(48)))
    corpus.add("dirtree", TREE_FORGED + b"\xff" * 16 + b"jl.cc.a@counties#0")


def admin(corpus: Corpus, directory: Directory, msg_id: bytes, created: int) -> None:
    """The admin socket: hubctl's requests, the hub's answers."""
    for line in (
        encode_request(Op.PRESENCE),
        encode_request(Op.DIRECTORY_PUBLISH),
        encode_request(Op.REDELIVER, msg_id=msg_id.hex()),
        encode_request(Op.REDELIVER, dead=True, to="jl.cc"),
    ):
        corpus.add("admin", ADMIN_REQUEST + line.rstrip(b"\n"))
    presence = {
        "hub": directory.hub_id,
        "directory_version": directory.version,
        "at": created,
        "spokes": [
            {"org": "jl.cc", "channel": "govnet", "online": True, "since": created},
            {"org": "cn.gov", "channel": "classified", "online": False, "since": None},
        ],
    }
    for line in (
        encode_result(presence),
        encode_result({"redelivered": 2, "msg_ids": [msg_id.hex()]}),
        encode_error("hub.draining", "the hub is stopping (SIGTERM); ask again at its next start"),
    ):
        corpus.add("admin", ADMIN_ANSWER + line.rstrip(b"\n"))


def metadata(corpus: Corpus, msg_id: bytes) -> None:
    """Drop metadata: the demo's files in TOML, and the same fields in JSON."""
    for text in (NOTICE, REPORT, SECRET_REPORT, REQUEST, EMERGENCY):
        corpus.add("metadata", META_TOML + text.encode())
    corpus.add(
        "metadata",
        META_JSON
        + json.dumps(
            {
                "to": ["jl.cc", "@counties.jl.cc"],
                "classification": "INTERNAL",
                "doc_type": "NOTICE",
                "title": "关于做好今冬明春供暖保障工作的通知",
                "expires": "2026-12-31T18:00:00+08:00",
                "files": [{"name": "通知.pdf", "size": 1024}],
            },
            ensure_ascii=False,
        ).encode(),
    )
    corpus.add(
        "metadata",
        META_JSON
        + json.dumps(
            {
                "主送": "cn.gov",
                "密级": "机密★1年",
                "文种": "报告",
                "标题": "报告",
                "签发人": "李某",
                "回复文件": msg_id.hex(),
                "文件": [{"文件名": "a.pdf", "sha256": hashlib.sha256(b"a").hexdigest()}],
                "重发": False,
            },
            ensure_ascii=False,
        ).encode(),
    )
    corpus.add(
        "metadata",
        META_TOML
        + b'to = ["jl.cc"]\nclassification = "INTERNAL"\ndoc_type = "NOTICE"\ntitle = "t"\n'
        b'[[files]]\nname = "a.txt"\nsize = 3\n',
    )


def key_files(corpus: Corpus, now: int) -> None:
    """Key files an organisation hands over, and the hub's pinned key."""
    hub_key = world.signing_key(world.HUB)
    org_keys = world.signing_key("jl.cc"), world.encryption_key("jl.cc")
    public = PublicKeys("jl.cc", org_keys[0].public, org_keys[1].public, now, now + 365 * DAY_MS)
    corpus.add("keys", KEYS_ORG + public.dump())
    corpus.add("keys", KEYS_HUB + HubPublicKey(hub_key.public, now, now + DAY_MS).dump())
    # a secret key file's shape, with a key made here and thrown away (not a fixture key)
    corpus.add("keys", KEYS_SECRET + dump_secret_key("jl.cc", type(hub_key)(bytes(32))))


def http_requests(corpus: Corpus) -> None:
    """What an HTTP client (Python's urllib, as a scraper or a script would) sends the
    hub's metrics and status listener, recorded on a socket of this machine."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        for method, path in (("GET", "/metrics"), ("HEAD", "/healthz"), ("GET", "/?x=1")):
            heads: list[bytes] = []
            thread = threading.Thread(target=_record_one, args=(listener, heads))
            thread.start()
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - ours
                answer.read()
            thread.join()
            corpus.add("http", heads[0])


def _record_one(listener: socket.socket, heads: list[bytes]) -> None:
    connection, _ = listener.accept()
    with connection:
        head = b""
        while b"\r\n\r\n" not in head:
            head += connection.recv(4096)
        heads.append(head)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def inner_seed(frame: bytes, body: bytes) -> bytes:
    """The inner record of a sealed body, opened with the recipient's key (the real Opener)."""
    from schemas.seal import Opener  # noqa: PLC0415 - only here

    envelope = verify_envelope(frame, world.load_directory().directory)
    opener = Opener(envelope, "jl.cc", world.encryption_key("jl.cc"))
    opener.feed(body)
    inner = opener.inner
    assert inner is not None  # noqa: S101 - the body was sealed just now
    return codec.encode(inner.to_wire())


if __name__ == "__main__":
    main()
