"""A notice to a large group through a real hub (issue 14): bytes per recipient, time until
every member has it, hub and broker memory.

    python bench/groupnotice.py                      # groups of 16, 1,000 and 10,000 (~3 min)
    python bench/groupnotice.py --orgs 200 --groups 40
    python bench/groupnotice.py --write              # ... and update docs/benchmarks.md

A nation of N organisations (bench/nation.py) with key pairs for the national government
and the members of the largest group; a real Mosquitto and a real hubd serving its
directory (first resend after an hour, so that one round is measured). For each group size
G, smallest first, the members not yet connected connect as spokes do (bench/national.py's
SimSpoke: a will, the down topic subscribed, a retained "online", a hello; no directory
taken), and once the hub counts them online the national government seals one 通知 to the
G members (schemas.seal.seal_bytes) and publishes it on its up topic. Above 16 recipients
the envelope carries them as slots (schemas.slots): the sender uploads every slot once, the
hub sends each member the frame, the body and only its own slot with its proof.

Measured per group: the bytes of the message each member received (min, median, max); the
time from the publish until the hub's ACCEPTED reached the sender and until every member
held its envelope; the same G payloads (each member's own bytes, as received) published
straight to the G down topics by one raw client, and the ratio of the hub's time to it; the
hub's CPU during the delivery; hub and broker peak RSS (VmHWM, so the largest group's
figure is the run's); a sample of members verifies what it received as a recipient
(``verify_envelope(..., recipient=org, slots=part)``) and opens it (``open_bytes``); then
every member answers with a signed DELIVERED and the time until the sender holds all of
them. For contrast, the size of the same envelope as a v1 frame (every recipient and
sealed key in the signed header; such a header allowed at most 1,000 recipients), signed
but never sent: what each member would have received without slots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import replace_block
from bench.nation import CHANNEL, Nation, make_nation
from bench.national import (
    CONNECTING,
    SimSpoke,
    _bytes,
    _mb,
    _run,
    _s,
    guard_memory,
    metric,
    peak_mb,
    run_options,
    until,
)
from bench.rawmqtt import RawClient, Sink, Whole
from bench.runfolder import kept_on_failure
from runtime.clock import now_ms
from schemas import codec, topics, transport
from schemas.directory import Directory
from schemas.envelope import encode_frame, verify_envelope
from schemas.keys import DOMAIN_HEADER, EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from schemas.seal import Draft, Sealed, file_entry, open_bytes, seal_bytes
from schemas.slots import INLINE_MAX, PART_LIMITS, SLOT_LIMITS
from tests.hubproc import HubProcess, Mosquitto
from tests.spokesim import valid_marks

ENVELOPE_TAG = transport.encode(transport.EnvelopeMsg(b"", b""))[1:5]  # "env", after the array
RECEIPTS_HEAD = transport.encode(transport.ReceiptsMsg(b"", 0))[:6]  # fixarray, "rcpt"
NOTICE = "关于做好年度安全生产工作的通知\n\n各单位：请于本月底前完成自查并报送结果。\n".encode()
SAMPLED = 8  # members of each group that verify and open what they received
HUB_TOML = "[delivery]\nretry_initial = 3600\nretry_max = 3600\n"  # one clean round


def now() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------ the spokes


class Envelopes:
    """The members' traffic: envelopes on their own down topic (they take no directory; the
    bench gives them the nation's)."""

    name = "envelopes on the down topic"

    def __init__(self, directory: Directory, keys: dict[str, tuple[SigningKey, EncryptionKey]]):
        self._directory, self._keys = directory, keys

    def subscriptions(self, channel: str, org: str) -> list[str]:  # noqa: ARG002 - the protocol's signature
        return []

    async def on_online(self, client: RawClient, channel: str, org: str) -> None:  # noqa: ARG002
        return

    def claims(self, channel: str, org: str, topic: str, head: bytes) -> bool:
        return topic == topics.down(channel, org) and head[1:5] == ENVELOPE_TAG

    def check(self, payload: bytes) -> int:
        """Verify and open a message as its addressee (the member its part names; for a v1
        header, the first recipient the bench holds a key of); its directory version."""
        message = transport.decode(payload)
        assert isinstance(message, transport.EnvelopeMsg)
        if message.slots is not None:
            org = _part_org(message.slots)
        else:
            named = verify_envelope(message.frame, self._directory).header.recipients
            org = next(o for o in named if o in self._keys)
        return self.open(payload, org)[0]

    def open(self, payload: bytes, org: str) -> tuple[int, list[bytes]]:
        """What member ``org`` does with a message: verify it as its recipient, open it
        with its key; (directory version, files)."""
        message = transport.decode(payload)
        assert isinstance(message, transport.EnvelopeMsg)
        assert message.body is not None
        envelope = verify_envelope(
            message.frame, self._directory, recipient=org, slots=message.slots
        )
        _, files = open_bytes(envelope, org, self._keys[org][1], message.body)
        return envelope.header.dir_version, files


def _part_org(part: bytes) -> str:
    """The organisation a recipient's part names (read, not proven: :meth:`Envelopes.open`
    proves it)."""
    _, raw, _ = codec.decode(part, PART_LIMITS)
    return str(codec.decode_map(raw, SLOT_LIMITS)["org"])


class Sender(SimSpoke):
    """The national government's spoke: it sends the notice and tallies the receipts."""

    def __init__(self, org: str, taker: Envelopes, directory: Directory) -> None:
        super().__init__(org, taker, keep=False)
        self._directory = directory
        self.status: dict[tuple[bytes, str | None], ReceiptStatus] = {}  # (msg_id, recipient)
        self.accepted: set[bytes] = set()
        self.last_receipt = 0.0

    def _route(self, topic: str, head: bytes, _size: int) -> Sink | None:
        if topic == topics.down(CHANNEL, self.org) and head.startswith(RECEIPTS_HEAD):
            return Whole(self.take)  # verified and tallied when whole
        return None

    def take(self, payload: bytes) -> None:
        message = transport.decode(payload)
        assert isinstance(message, transport.ReceiptsMsg)
        for entry in verify_receipts(message.frame, self._directory).batch.entries:
            if entry.msg_id is None:
                continue  # a refusal of a frame that names no message: none is sent here
            if entry.status is ReceiptStatus.ACCEPTED:
                self.accepted.add(entry.msg_id)
            else:
                self.status[(entry.msg_id, entry.recipient)] = entry.status
        self.last_receipt = now()

    def count(self, msg_id: bytes, status: ReceiptStatus) -> int:
        return sum(1 for (m, _), s in self.status.items() if m == msg_id and s is status)


# ------------------------------------------------------------------ what is measured


@dataclass
class Row:
    """The figures of one group (None: not measured; ``notes`` say why)."""

    group: int
    header: str = ""  # "v1 (inline)" or "v2 (slots)"
    connected: int = 0  # member spokes connected when the notice went out
    frame_bytes: int = 0  # the signed frame every member receives
    body_bytes: int = 0  # the body's ciphertext, the same for every member
    slots_upload_bytes: int = 0  # the sender's one upload of every slot
    received_min: int | None = None  # bytes of the message each member received
    received_median: int | None = None
    received_max: int | None = None
    messages_per_member: list[int] = field(default_factory=list)  # distinct counts seen
    v1_frame_bytes: int = 0  # the same envelope with every recipient in the header
    v1_per_member: int = 0  # the message each member would have received
    accepted_s: float | None = None  # publish until the sender holds the hub's ACCEPTED
    all_have_s: float | None = None  # publish until every member holds its envelope
    raw_s: float | None = None  # the same payloads, one raw client to the down topics
    delivered_s: float | None = None  # members answer until the sender holds every DELIVERED
    hub_cpu_s: float | None = None  # hubd user+system CPU from the publish to all_have
    broker_cpu_s: float | None = None
    verified: int = 0  # sampled members whose message verified and opened to the notice
    hub_peak_mb: float | None = None
    broker_peak_mb: float | None = None
    bench_peak_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.all_have_s is None or not self.raw_s:
            return None
        return self.all_have_s / self.raw_s


def _t(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:,.0f} ms" if value < 1 else _s(value)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def notice(nation: Nation, members: list[str]) -> tuple[Sealed, bytes]:
    """The national government's 通知 to ``members`` (a real Draft, sealed)."""
    sender = nation.spokes[0]
    to = tuple(members)
    draft = Draft(
        sender=sender,
        to=to,
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        title="关于做好年度安全生产工作的通知",
        created_at=now_ms(),
        files=[file_entry("通知.txt", "text/plain", NOTICE)],
        **valid_marks(to, (), Classification.INTERNAL, {}),  # type: ignore[arg-type]
    )
    return seal_bytes(draft, nation.keys[sender][0], nation.directory, [NOTICE])


def v1_frame(sealed: Sealed, key: SigningKey) -> bytes:
    """The same envelope as a v1 frame: every recipient and its sealed key in the signed
    header (signed with the sender's key; never sent, and over 1,000 recipients no hub
    would have taken it)."""
    header = sealed.header.model_copy(update={"v": 1, "slots": None})
    core = codec.encode(header.to_wire())
    hdr = codec.encode({"core": core, "body": sealed.body.to_wire()})
    return encode_frame(header.sender, key.kid, hdr, key.sign(DOMAIN_HEADER, hdr))


def receipt(nation: Nation, org: str, sealed: Sealed) -> bytes:
    """Member ``org``'s signed DELIVERED for ``sealed``, as a ReceiptsMsg."""
    entry = ReceiptEntry(
        msg_id=sealed.header.msg_id,
        recipient=org,
        status=ReceiptStatus.DELIVERED,
        at=now_ms(),
        subject=hashlib.sha256(sealed.frame).digest(),
        classification=sealed.header.classification,
        reason=None,
        detail=None,
        retriable=False,
    )
    frame = sign_receipts(org, nation.keys[org][0], [entry], at=now_ms())
    return transport.encode(transport.ReceiptsMsg(frame, 0))


async def one_group(
    nation: Nation,
    group: list[str],
    spokes: dict[str, SimSpoke],
    sender: Sender,
    hub: HubProcess,
    broker: Mosquitto,
    args: argparse.Namespace,
    row: Row,
) -> None:
    taker = sender.taker
    assert isinstance(taker, Envelopes)
    assert hub.process is not None
    assert broker.process is not None
    gate = asyncio.Semaphore(CONNECTING)

    async def connect(spoke: SimSpoke) -> None:
        async with gate:
            await spoke.connect(broker.port)

    fresh = [SimSpoke(org, taker, keep=True) for org in group if org not in spokes]
    spokes.update((s.org, s) for s in fresh)
    await asyncio.gather(*(connect(s) for s in fresh))
    row.connected = len(spokes)
    online = len(spokes) + 1  # and the sender

    def all_online() -> bool:
        return (metric(hub.metrics_url, "govxchg_spokes_online") or 0) >= online

    await until(all_online, args.timeout, f"the hub counting {online:,} spokes online")
    members = [spokes[org] for org in group]

    sealed, body = notice(nation, group)
    msg_id = sealed.header.msg_id
    row.header = "v1 (inline)" if sealed.slots is None else "v2 (slots)"
    row.frame_bytes, row.body_bytes = len(sealed.frame), len(body)
    row.slots_upload_bytes = len(sealed.slots or b"")
    row.v1_frame_bytes = len(v1_frame(sealed, nation.keys[sender.org][0]))
    row.v1_per_member = len(
        transport.encode(transport.EnvelopeMsg(b"\0" * row.v1_frame_bytes, body))
    )
    answers = {m.org: receipt(nation, m.org, sealed) for m in members}  # signed before timing
    payload = transport.encode(transport.EnvelopeMsg(sealed.frame, body, sealed.slots))
    before = {m.org: (m.directory_messages, m.directory_bytes) for m in members}
    assert sender.client is not None

    def arrived() -> bool:
        return all(m.directory_messages > before[m.org][0] for m in members)

    hub_cpu, broker_cpu = cpu_s(hub.process.pid), cpu_s(broker.process.pid)
    start = now()
    sender.client.publish(topics.up(CHANNEL, sender.org), payload)
    waits = await asyncio.gather(
        until(lambda: msg_id in sender.accepted, args.timeout, "the hub's ACCEPTED"),
        until(arrived, args.timeout, f"the notice at all {len(group):,} members"),
    )
    row.accepted_s = waits[0]
    row.all_have_s = max(m.last_taken for m in members) - start
    row.hub_cpu_s = cpu_s(hub.process.pid) - hub_cpu
    row.broker_cpu_s = cpu_s(broker.process.pid) - broker_cpu
    refused = [e for e in hub.log_events() if e.get("event") == "message.rejected"]
    if refused:
        row.notes.append(f"the hub rejected: {refused[:1]}")

    sizes = [m.directory_bytes - before[m.org][1] for m in members]
    row.received_min, row.received_max = min(sizes), max(sizes)
    row.received_median = int(statistics.median(sizes))
    row.messages_per_member = sorted({m.directory_messages - before[m.org][0] for m in members})
    for member in members[:: max(1, len(members) // SAMPLED)][:SAMPLED]:
        assert member.kept is not None
        _, files = taker.open(member.kept, member.org)
        if files == [NOTICE] and taker.check(member.kept) == nation.directory.version:
            row.verified += 1

    # the members answer DELIVERED; the sender holds all of them when?
    start = now()
    for member in members:
        assert member.client is not None
        member.client.publish(topics.up(CHANNEL, member.org), answers[member.org])
    row.delivered_s = await until(
        lambda: sender.count(msg_id, ReceiptStatus.DELIVERED) >= len(members),
        args.timeout,
        f"{len(members):,} DELIVERED at the sender",
    )

    # the same bytes, straight through the broker: one raw client to the G down topics
    kept = {m.org: m.kept for m in members}
    before = {m.org: (m.directory_messages, m.directory_bytes) for m in members}
    raw = await RawClient.connect(
        "127.0.0.1", broker.port, f"raw-{len(group)}", route=lambda _t, _h, _s: None
    )
    try:
        start = now()
        for org, data in kept.items():
            assert data is not None
            raw.publish(topics.down(CHANNEL, org), data)
        await until(arrived, args.timeout, "the raw-broker baseline")
        row.raw_s = max(m.last_taken for m in members) - start
    finally:
        await raw.close()


async def run(nation: Nation, groups: list[list[str]], rows: list[Row], hub: HubProcess,
              broker: Mosquitto, args: argparse.Namespace) -> None:  # fmt: skip
    assert hub.process is not None
    assert broker.process is not None
    taker = Envelopes(nation.directory, nation.keys)
    sender = Sender(nation.spokes[0], taker, nation.directory)
    spokes: dict[str, SimSpoke] = {}
    current = rows[0]
    guard = asyncio.create_task(
        guard_memory(broker, args.broker_cap_mb, current, lambda: f"in group {current.group:,}")  # type: ignore[arg-type]
    )
    try:
        await sender.connect(broker.port)
        for group, row in zip(groups, rows, strict=True):
            current = row
            try:
                work = asyncio.ensure_future(
                    one_group(nation, group, spokes, sender, hub, broker, args, row)
                )
                await asyncio.wait({work, guard}, return_when=asyncio.FIRST_COMPLETED)
                if guard.done() and not work.done():
                    work.cancel()
                    guard.result()
                await work
            except (TimeoutError, ConnectionError) as exc:
                row.notes.append(f"stopped: {exc}")
            row.hub_peak_mb = peak_mb(hub.process.pid)
            row.broker_peak_mb = peak_mb(broker.process.pid)
            row.bench_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        guard.cancel()
        with contextlib.suppress(asyncio.CancelledError, MemoryError):
            await guard
        clients = [s.client for s in (sender, *spokes.values()) if s.client is not None]
        await asyncio.gather(*(c.close() for c in clients))


def groups_of(nation: Nation, sizes: list[int]) -> list[list[str]]:
    """Nested groups spread over the members of the largest (so over every level of the
    tree): each group is a prefix of the pool taken in bit-reversed order, so a smaller
    group's members belong to every larger one and the connections add up."""
    pool = nation.spokes[1:]
    bits = max(1, (len(pool) - 1).bit_length())
    order = sorted(range(len(pool)), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    return [[pool[i] for i in order[:size]] for size in sizes]


def measure(args: argparse.Namespace, sizes: list[int], tmp: Path) -> list[Row]:
    nation = make_nation(args.orgs, max(sizes) + 1, now=now_ms())
    if nation.spokes[0] != "cn":
        raise AssertionError(
            f"the sender should be the national government, not {nation.spokes[0]}"
        )
    groups = groups_of(nation, sizes)
    rows = [Row(len(g)) for g in groups]
    broker = Mosquitto(tmp / "mosquitto", settings=("max_connections -1",)).start()
    hub = None
    try:
        hub = HubProcess(
            tmp / "hub", nation.hub_key, nation.directory, broker_port=broker.port,
            extra_toml=HUB_TOML,
        )  # fmt: skip
        hub.start(timeout=args.timeout)
        try:
            _run(run(nation, groups, rows, hub, broker, args))
        except MemoryError as exc:
            rows[-1].notes.append(f"stopped: {exc}")
    finally:
        if hub is not None and hub.process is not None and hub.process.poll() is None:
            hub.terminate()
        broker.stop()
    return rows


# ------------------------------------------------------------------ report


def _received(row: Row) -> str:
    low, mid, high = row.received_min, row.received_median, row.received_max
    return "" if low is None or mid is None or high is None else f"{low:,} / {mid:,} / {high:,} B"


def _counts(row: Row) -> str:
    return ", ".join(map(str, row.messages_per_member))


def _sampled(row: Row) -> str:
    return f"{row.verified} of {min(SAMPLED, row.group)}"


def format_table(rows: list[Row], orgs: int) -> str:
    lines: list[tuple[str, list[str]]] = [
        ("header", [r.header for r in rows]),
        ("members online (spokes connected)", [f"{r.connected:,}" for r in rows]),
        ("signed frame; body", [f"{r.frame_bytes:,} B; {r.body_bytes:,} B" for r in rows]),
        ("sender's upload of every slot", [_bytes(r.slots_upload_bytes) for r in rows]),
        ("bytes each member received: min / median / max", [_received(r) for r in rows]),
        ("messages each member received", [_counts(r) for r in rows]),
        ("the same as a v1 frame: bytes each member", [_bytes(r.v1_per_member) for r in rows]),
        ("sampled members: verified and opened", [_sampled(r) for r in rows]),
        ("publish until the sender holds ACCEPTED", [_t(r.accepted_s) for r in rows]),
        ("publish until every member has it", [_t(r.all_have_s) for r in rows]),
        ("the same payloads, raw broker", [_t(r.raw_s) for r in rows]),
        ("hub / raw broker", [f"{r.ratio:,.1f}x" if r.ratio is not None else "" for r in rows]),
        ("members answer; the sender holds every DELIVERED", [_t(r.delivered_s) for r in rows]),
        ("hub CPU during the delivery", [_t(r.hub_cpu_s) for r in rows]),
        ("broker CPU during the delivery", [_t(r.broker_cpu_s) for r in rows]),
        ("hub peak RSS (so far)", [_mb(r.hub_peak_mb) for r in rows]),
        ("broker peak RSS (so far)", [_mb(r.broker_peak_mb) for r in rows]),
        ("load generator peak RSS (so far)", [_mb(r.bench_peak_mb) for r in rows]),
    ]
    out = [
        "| "
        + " | ".join([f"a notice to a group ({orgs:,} orgs)", *[f"{r.group:,}" for r in rows]])
        + " |",
        "| --- |" + " ---: |" * len(rows),
    ]
    out += [f"| {name} | " + " | ".join(values) + " |" for name, values in lines]
    notes = [f"- group of {r.group:,}: {n}" for r in rows for n in r.notes]
    return "\n".join(out + (["", *notes] if notes else []))


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=12_000, help="organisations in the nation")
    parser.add_argument(
        "--groups", default=f"{INLINE_MAX},1000,10000", help="group sizes, smallest first (a,b,c)"
    )
    run_options(parser)
    args = parser.parse_args(argv)
    sizes = sorted(int(x) for x in args.groups.split(",") if x.strip())
    if max(sizes) >= args.orgs:
        parser.error(f"--groups up to {max(sizes):,} need more than that many --orgs")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    if hard < max(sizes) + 200:
        parser.error(
            f"a group of {max(sizes)} needs {max(sizes) + 200} open files; the limit is {hard}"
        )
    if args.tmp is not None:  # the caller's folder: left as it is
        rows = measure(args, sizes, args.tmp)
    else:
        with kept_on_failure(Path(tempfile.mkdtemp(prefix="govx-group-"))) as tmp:
            rows = measure(args, sizes, tmp)
    table = format_table(rows, args.orgs)
    print(table)
    if args.json is not None:
        args.json.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in rows], indent=1))
    if args.write:
        command = f"python bench/groupnotice.py --orgs {args.orgs} --groups {args.groups}"
        replace_block("group-notice", command, table)
    return rows


if __name__ == "__main__":
    main()
