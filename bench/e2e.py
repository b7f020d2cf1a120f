"""End-to-end benchmark: 1 KiB documents through hubd and Mosquitto, against a raw relay.

    python bench/e2e.py                      # both runs, print a table
    python bench/e2e.py --write              # ... and update docs/benchmarks.md
    python bench/e2e.py --load precomputed --store postgresql --replicas 2   # issue 15

The same run measures two systems with the same load generators on the same broker:

- **hub**: N sender processes publish pre-sealed envelopes (1 KiB signed, encrypted
  document) to hubd; hubd verifies, gates, stores durably (SQLite WAL, synchronous=FULL,
  group commit), answers ACCEPTED and delivers; M recipient processes verify, decrypt,
  check the inner signature and answer a signed DELIVERED (batched per sender), which hubd
  records and forwards. Latency is send -> DELIVERED back at the sender.
- **raw**: the same senders publish the same number of bytes to a minimal aiomqtt
  forwarder (no crypto, no store), which relays to the recipient; the recipient relays an
  acknowledgement back the same way. Latency is send -> acknowledgement back.

With ``--load precomputed`` the hub's share is what is measured (issue 15): every envelope
is sealed and every recipient's DELIVERED batch signed before the clock starts; a
recipient only looks the delivered frame's digest up and publishes the batch it completes
(``--receipt-batch`` documents a batch at saturation; one a batch in the paced run, as a
spoke flushing every 2 ms answers at these rates), and a sender reads receipt batches
without checking their signatures. The hub does all it does with real spokes.

With ``--store postgresql`` the hub runs on a fresh PostgreSQL database made for each run
and dropped after it; ``--replicas N`` makes it N hubd replicas on that database, the clock
starting once they have split the buckets (bench/hubs.py). The hub's CPU is then every
replica's, each also shown alone, and the CPU of the PostgreSQL server processes serving
the hubs is counted per document too (and in "all").

Each system is measured twice: at saturation (closed loop, a window of documents in
flight per sender) for throughput, and at a fixed offered rate for p50/p99 latency.

The load generators (senders and recipients, in both systems) connect with the spokes' own
MQTT link (:class:`runtime.mqtt.BrokerLink`), as real spokes do; the relay is the
minimal aiomqtt forwarder the baseline calls for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import aiomqtt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.hubs import BenchHubs
from bench.runfolder import kept_on_failure
from runtime.link import Link
from runtime.mqtt import BrokerLink, mqtt_client_id
from schemas import codec, topics, transport
from schemas.directory import Directory, sign_directory, verify_directory
from schemas.envelope import verify_envelope
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import (
    ReceiptBatch,
    ReceiptEntry,
    ReceiptStatus,
    sign_receipts,
    verify_receipts,
)
from schemas.seal import Draft, file_entry, open_bytes, seal_bytes
from tests.hubproc import Mosquitto, live_directory
from tests.world import World, make_world

CHANNEL = "govnet"
DOC = 1024
SENDERS = ["jl.gov", "jl.dept.health", "jl.dept.finance", "jl.dept.security"]
RECIPIENTS = ["jl.cc", "jl.jl", "jl.sp", "jl.ly"]


def now() -> float:
    return time.perf_counter()


@dataclass
class Keys:
    signing: SigningKey
    encryption: EncryptionKey


def _blob(world: World, directory: Directory) -> bytes:
    """What a child process needs: key seeds and the signed directory (picklable)."""
    seeds = {org: (k.signing.seed, k.encryption.secret) for org, k in world.keys.items()}
    return pickle.dumps((world.hub_key.seed, seeds, sign_directory(directory, world.hub_key)))


def _unblob(blob: bytes) -> tuple[dict[str, Keys], Directory]:
    hub_seed, seeds, frame = pickle.loads(blob)  # noqa: S301 - our own blob
    hub = SigningKey(hub_seed)
    directory = verify_directory(frame, hub.public, now=None).directory
    return {org: Keys(SigningKey(a), EncryptionKey(b)) for org, (a, b) in seeds.items()}, directory


def loop_run(coro: object) -> object:
    from runtime import startup  # noqa: PLC0415 - in the child process

    startup.configure("json", "warning")  # the links' connect/disconnect lines are noise here
    try:
        import uvloop  # noqa: PLC0415

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def _client(port: int, name: str) -> aiomqtt.Client:
    import socket  # noqa: PLC0415

    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=name,
        clean_session=True,
        max_inflight_messages=1000,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    client.pending_calls_threshold = 100_000
    return client


# ------------------------------------------------------------------------ senders


@dataclass
class Plan:
    mode: str  # "hub" | "raw"
    port: int
    count: int  # documents per sender
    rate: float  # documents/s per sender; 0 = closed loop
    window: int  # closed loop: documents in flight per sender
    prepared: Path | None = None  # --load precomputed: this run's pickled envelopes
    signatory: str | None = None  # upward documents name one (bench/federated.py's reports)


def seal_envelope(
    org: str,
    target: str,
    keys: Keys,
    directory: Directory,
    content: bytes,
    signatory: str | None = None,
) -> tuple[bytes, bytes, bytes]:
    """One 1 KiB document from ``org`` to ``target``: (msg_id, transport payload, frame)."""
    draft = Draft(
        sender=org,
        to=(target,),
        classification=Classification.INTERNAL,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,  # jl.gov's 函 down to a prefecture is refused
        title="bench",
        signatory=signatory,
        created_at=time.time_ns() // 1_000_000 + 5_000,
        files=[file_entry("doc.bin", "application/octet-stream", content)],
    )
    sealed, body = seal_bytes(draft, keys.signing, directory, [content])
    payload = transport.encode(transport.EnvelopeMsg(sealed.frame, body))
    return sealed.header.msg_id, payload, sealed.frame


@dataclass
class Answers:
    """A recipient's precomputed DELIVERED batches: which batch a frame's digest is in,
    how many documents each batch covers, and each batch's transport payload."""

    batch_of: dict[bytes, int]
    sizes: list[int]
    payloads: list[bytes]


def prepare(
    world_blob: bytes,
    senders: Sequence[str],
    recipients: Sequence[str],
    count: int,
    batch: int,
    signatory: str | None = None,
) -> tuple[dict[str, list[tuple[bytes, bytes]]], dict[str, Answers]]:
    """Every sender's envelopes and every recipient's signed answers, before the clock."""
    all_keys, directory = _unblob(world_blob)
    content = os.urandom(DOC)
    sent: dict[str, list[tuple[bytes, bytes]]] = {}
    pairs: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}  # (sender, recipient)
    for org in senders:
        sent[org] = []
        for i in range(count):
            target = recipients[i % len(recipients)]
            msg_id, payload, frame = seal_envelope(
                org, target, all_keys[org], directory, content, signatory
            )
            sent[org].append((msg_id, payload))
            pairs.setdefault((org, target), []).append((msg_id, hashlib.sha256(frame).digest()))
    answers = {org: Answers({}, [], []) for org in recipients}
    at = time.time_ns() // 1_000_000
    for (_sender, org), docs in pairs.items():
        mine = answers[org]
        for start in range(0, len(docs), batch):
            chunk = docs[start : start + batch]
            entries = [
                ReceiptEntry(
                    msg_id=msg_id,
                    recipient=org,
                    status=ReceiptStatus.DELIVERED,
                    at=at,
                    subject=digest,
                    classification=Classification.INTERNAL,
                    reason=None,
                    detail=None,
                    retriable=False,
                )
                for msg_id, digest in chunk
            ]
            frame = sign_receipts(org, all_keys[org].signing, entries, at=at)
            for _msg_id, digest in chunk:
                mine.batch_of[digest] = len(mine.payloads)
            mine.sizes.append(len(chunk))
            mine.payloads.append(transport.encode(transport.ReceiptsMsg(frame, 0)))
    return sent, answers


def sender_main(
    plan: Plan, org: str, targets: Sequence[str], world_blob: bytes, go: Event, out: Queue[object]
) -> None:
    all_keys, directory = _unblob(world_blob)
    keys = all_keys[org]
    payloads: list[tuple[bytes, bytes]] = []  # (msg_id, payload)
    if plan.prepared is not None:
        sent, _answers = pickle.loads(plan.prepared.read_bytes())  # noqa: S301 - our own file
        payloads = sent[org]
    content = os.urandom(DOC)
    for i in range(plan.count if plan.prepared is None else 0):
        target = targets[i % len(targets)]
        if plan.mode == "hub":
            msg_id, payload, _frame = seal_envelope(
                org, target, keys, directory, content, plan.signatory
            )
            payloads.append((msg_id, payload))
        else:
            msg_id = os.urandom(16)
            filler = os.urandom(len(payloads[0][1]) if payloads else 1900)
            payloads.append((msg_id, codec.encode(["raw", target, org, msg_id, filler])))
    out.put(loop_run(_send(plan, org, directory, payloads, go)))


async def spoke_link(
    port: int, name: str, subscriptions: list[str], sink: object, hello: list[tuple[str, bytes]]
) -> tuple[BrokerLink, asyncio.Event, asyncio.Task[None]]:
    """A connected spoke link (as real spokes connect); ``hello`` is published, in order,
    on every connect. Returns the link, the event that stops it and its task."""

    async def on_connected(link: Link) -> None:
        for topic, payload in hello:
            await link.publish(topic, payload, retain=topic.endswith("/presence"))

    link = BrokerLink(
        name,
        "127.0.0.1",
        port,
        [CHANNEL],
        subscriptions=subscriptions,
        client_id=mqtt_client_id(name),
        sink=sink,  # type: ignore[arg-type]
        on_connected=on_connected,
        window=1000,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(link.run(stop))
    async with asyncio.timeout(30):
        await link.connected.wait()
    return link, stop, runner


async def _send(
    plan: Plan, org: str, directory: Directory, payloads: list[tuple[bytes, bytes]], go: Event
) -> dict[str, object]:
    sent: dict[bytes, float] = {}
    done: dict[bytes, float] = {}
    accepted = 0
    finished = asyncio.Event()
    slots = asyncio.Semaphore(plan.window if plan.rate == 0 else 1_000_000)
    up = topics.up(CHANNEL, org) if plan.mode == "hub" else f"raw/up/{org}"
    down = topics.down(CHANNEL, org) if plan.mode == "hub" else f"raw/down/{org}"

    def on_receipt(_topic: str, payload: bytes) -> None:
        nonlocal accepted
        t = now()
        if plan.mode == "raw":
            msg_id = codec.decode(payload, transport.TRANSPORT_LIMITS)[1]
            ids = [msg_id]
        else:
            msg = transport.decode(payload)
            if not isinstance(msg, transport.ReceiptsMsg):
                return
            batch = (
                unverified_receipts(msg.frame)
                if plan.prepared is not None
                else verify_receipts(msg.frame, directory).batch
            )
            ids = []
            for entry in batch.entries:
                if entry.status is ReceiptStatus.ACCEPTED:
                    accepted += 1
                elif entry.status is ReceiptStatus.DELIVERED and entry.msg_id is not None:
                    ids.append(entry.msg_id)
        for msg_id in ids:
            if msg_id in sent and msg_id not in done:
                done[msg_id] = t
                slots.release()
        if len(done) >= len(payloads):
            finished.set()

    hello = (
        [
            (topics.presence(CHANNEL, org), topics.ONLINE),
            (up, transport.encode(transport.HelloMsg(0))),
        ]
        if plan.mode == "hub"
        else []
    )
    link, stop, runner = await spoke_link(plan.port, f"bench-send-{org}", [down], on_receipt, hello)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start = now()
    acks: list[asyncio.Future[bool]] = []
    for i, (msg_id, payload) in enumerate(payloads):
        if plan.rate:
            delay = start + i / plan.rate - now()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await slots.acquire()
        sent[msg_id] = now()
        acks.append(link.enqueue(up, payload))
    await asyncio.gather(*acks)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(120):
            await finished.wait()
    elapsed = max(done.values(), default=now()) - start
    stop.set()
    await runner
    latencies = [(done[m] - sent[m]) * 1000 for m in done]
    return {
        "org": org,
        "sent": len(sent),
        "done": len(done),
        "accepted": accepted,
        "elapsed": elapsed,
        "latencies": latencies,
    }


def unverified_receipts(frame: bytes) -> ReceiptBatch:
    """A receipt batch read without checking its signature (--load precomputed: the
    load generator's cost is kept out of the hub's measurement; the hub checks every one)."""
    outer = codec.decode_frame(
        frame, codec.RECEIPT_FRAME_LIMITS, {"from": str, "kid": str, "rcpt": bytes, "sig": bytes}
    )
    return ReceiptBatch.from_wire(
        codec.decode_map(outer["rcpt"], codec.RECEIPT_LIMITS), what="receipt batch"
    )


# ------------------------------------------------------------------------ recipients


def recipient_main(
    mode: str,
    port: int,
    org: str,
    world_blob: bytes,
    stop: Event,
    prepared: Path | None,
    ready: Queue[object],
) -> None:
    """Receive and answer until ``stop``; ``org`` goes on ``ready`` once subscribed."""
    all_keys, directory = _unblob(world_blob)
    if prepared is not None:
        _sent, answers = pickle.loads(prepared.read_bytes())  # noqa: S301 - our own file
        loop_run(_answer(port, org, answers[org], stop, ready))
        return
    loop_run(_receive(mode, port, org, all_keys[org], directory, stop, ready))


async def _answer(port: int, org: str, answers: Answers, stop: Event, ready: Queue[object]) -> None:
    """Publish each precomputed DELIVERED batch once every document it covers came."""
    down, up = topics.down(CHANNEL, org), topics.up(CHANNEL, org)
    seen: set[bytes] = set()
    missing = list(answers.sizes)
    link: BrokerLink | None = None

    def on_message(_topic: str, payload: bytes) -> None:
        assert link is not None
        msg = transport.decode(payload)
        if not isinstance(msg, transport.EnvelopeMsg):
            return
        digest = hashlib.sha256(msg.frame).digest()
        index = answers.batch_of.get(digest)
        if index is None or digest in seen:
            return  # not ours, or delivered again
        seen.add(digest)
        missing[index] -= 1
        if not missing[index]:
            link.enqueue(up, answers.payloads[index])

    hello = [
        (topics.presence(CHANNEL, org), topics.ONLINE),
        (up, transport.encode(transport.HelloMsg(0))),
    ]
    link, link_stop, runner = await spoke_link(port, f"bench-recv-{org}", [down], on_message, hello)
    ready.put(org)
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    link_stop.set()
    await runner


async def _receive(
    mode: str,
    port: int,
    org: str,
    keys: object,
    directory: object,
    stop: Event,
    ready: Queue[object],
) -> None:
    pending: dict[str, list[ReceiptEntry]] = {}
    seen: set[bytes] = set()
    down = topics.down(CHANNEL, org) if mode == "hub" else f"raw/down/{org}"
    up = topics.up(CHANNEL, org) if mode == "hub" else f"raw/up/{org}"
    link: BrokerLink | None = None

    def on_message(_topic: str, payload: bytes) -> None:
        assert link is not None
        if mode == "raw":
            _, _target, sender, msg_id, _filler = codec.decode(payload, transport.TRANSPORT_LIMITS)
            link.enqueue(up, codec.encode(["ack", msg_id, sender]))
            return
        msg = transport.decode(payload)
        if not isinstance(msg, transport.EnvelopeMsg) or msg.body is None:
            return
        envelope = verify_envelope(msg.frame, directory)  # type: ignore[arg-type]
        open_bytes(envelope, org, keys.encryption, msg.body)  # type: ignore[attr-defined]
        header = envelope.header
        if header.msg_id in seen:
            return
        seen.add(header.msg_id)
        entry = ReceiptEntry(
            msg_id=header.msg_id,
            recipient=org,
            status=ReceiptStatus.DELIVERED,
            at=time.time_ns() // 1_000_000,
            subject=envelope.digest,
            classification=header.classification,
            reason=None,
            detail=None,
            retriable=False,
        )
        pending.setdefault(header.sender, []).append(entry)

    hello = (
        [
            (topics.presence(CHANNEL, org), topics.ONLINE),
            (up, transport.encode(transport.HelloMsg(0))),
        ]
        if mode == "hub"
        else []
    )
    link, link_stop, runner = await spoke_link(port, f"bench-recv-{org}", [down], on_message, hello)
    ready.put(org)

    async def flush() -> None:
        # One signed DELIVERED batch per original sender every 2 ms, as a spoke does.
        assert link is not None
        while True:
            await asyncio.sleep(0.002)
            batches = list(pending.values())
            pending.clear()
            for entries in batches:
                at = time.time_ns() // 1_000_000
                frame = sign_receipts(org, keys.signing, entries, at=at)  # type: ignore[attr-defined]
                link.enqueue(up, transport.encode(transport.ReceiptsMsg(frame, 0)))

    flusher = asyncio.create_task(flush()) if mode == "hub" else None
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    if flusher is not None:
        flusher.cancel()
    link_stop.set()
    await runner


# ------------------------------------------------------------------------ raw forwarder


def forwarder_main(port: int, stop: Event) -> None:
    loop_run(_forward(port, stop))


async def _forward(port: int, stop: Event) -> None:
    async with _client(port, "bench-forwarder") as client:
        await client.subscribe("raw/up/+", qos=1)
        pubs: list[asyncio.Task[None]] = []

        async def relay() -> None:
            async for message in client.messages:
                payload = bytes(message.payload)
                value = codec.decode(payload, transport.TRANSPORT_LIMITS)
                target = value[1] if value[0] == "raw" else value[2]
                pubs.append(
                    asyncio.create_task(client.publish(f"raw/down/{target}", payload, qos=1))
                )
                if len(pubs) > 200:
                    await asyncio.gather(*pubs)
                    pubs.clear()

        task = asyncio.create_task(relay())
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        task.cancel()


# ------------------------------------------------------------------------ driver


@dataclass
class Result:
    mode: str
    senders: int
    recipients: int
    rate: float
    docs: int
    delivered: int
    per_second: float
    p50: float
    p99: float
    hub_rss_mb: float | None = None
    hub_cpu_us: float | None = None  # hub (or relay) CPU per delivered document
    all_cpu_us: float = 0.0  # every process of the run (broker, load generators) per document
    replica_cpu_us: dict[str, float] = field(default_factory=dict)  # per replica, by name
    owners: dict[str, str] = field(default_factory=dict)  # organisation -> replica name
    hub_errors: dict[str, int] = field(default_factory=dict)  # error events per hub
    store_cpu_us: float | None = None  # PostgreSQL's server processes per document


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ledger_toml(checkpoints: str) -> str:
    """The hub config's [ledger] section for --ledger-checkpoints (empty: the hub's default)."""
    if checkpoints == "default":
        return ""
    return f"[ledger]\ncheckpoints = {'true' if checkpoints == 'on' else 'false'}\n"


def run_once(mode: str, args: argparse.Namespace, *, rate: float, count: int, tmp: Path) -> Result:
    ctx = mp.get_context("spawn")
    world = make_world()
    directory = live_directory(world)
    blob = _blob(world, directory)
    broker = Mosquitto(tmp / f"mosquitto-{mode}-{rate}").start()
    hub = None
    profiler = None
    stop = ctx.Event()
    extra = []
    recipients = RECIPIENTS[: args.recipients]
    try:
        if mode == "hub":
            hub = BenchHubs(
                tmp / f"hub-{rate}",
                world.hub_key,
                directory,
                broker.port,
                store=args.store,
                replicas=args.replicas,
                extra_toml=ledger_toml(args.ledger_checkpoints),
            )
            hub.start(SENDERS[: args.senders], recipients)  # hub first: stopped if it fails
            if args.profile and rate == 0:
                import subprocess  # noqa: PLC0415

                profiler = subprocess.Popen(  # noqa: S603
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "-o",
                        args.profile,
                        "--pid",
                        str(hub.pids[0]),
                        "-f",
                        "speedscope",
                        "--nonblocking",
                        "-r",
                        "200",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )

        else:
            fwd = ctx.Process(target=forwarder_main, args=(broker.port, stop))
            fwd.start()
            extra.append(fwd)
        prepared = None
        if mode == "hub" and args.load == "precomputed":
            prepared = tmp / f"prepared-{rate}.pickle"
            batch = args.receipt_batch if rate == 0 else 1
            made = prepare(blob, SENDERS[: args.senders], recipients, count, batch)
            prepared.write_bytes(pickle.dumps(made))
        ready = ctx.Queue()
        for org in recipients:
            p = ctx.Process(
                target=recipient_main, args=(mode, broker.port, org, blob, stop, prepared, ready)
            )
            p.start()
            extra.append(p)
        # Nothing is sent before every recipient subscribed: the raw relay keeps nothing
        # for a recipient not there yet, and a sender would wait for it for ever.
        for _ in recipients:
            ready.get(timeout=120)
        go, out = ctx.Event(), ctx.Queue()
        per_sender_rate = rate / args.senders if rate else 0.0
        plan = Plan(mode, broker.port, count, per_sender_rate, args.window, prepared)
        senders = [
            ctx.Process(target=sender_main, args=(plan, org, recipients, blob, go, out))
            for org in SENDERS[: args.senders]
        ]
        for p in senders:
            p.start()
        time.sleep(2.0 + count / 4000)  # sealing happens before the go signal
        # CPU spent while documents flow: the hub (or the relay) alone, and everything.
        middles = hub.pids if hub is not None else [extra[0].pid]
        pids = [*middles, *(p.pid for p in [*extra, *senders] if p.pid not in middles)]
        if broker.process is not None:
            pids.append(broker.process.pid)
        before = {pid: cpu_seconds(pid) for pid in pids if pid is not None}
        store_pids = hub.store_pids() if hub is not None else []
        store_before = {pid: cpu_seconds(pid) for pid in store_pids}
        go.set()
        results = [out.get(timeout=600) for _ in senders]
        spent = {pid: cpu_seconds(pid) - t0 for pid, t0 in before.items()}
        # a server process that ended meanwhile reads 0.0: counted as nothing, not negative
        store_spent = sum(max(0.0, cpu_seconds(pid) - t0) for pid, t0 in store_before.items())
        for p in senders:
            p.join(30)
        rss = hub.peak_rss_mb() if hub is not None else None
    finally:
        stop.set()
        for p in extra:
            p.join(10)
            if p.is_alive():
                p.kill()
        if hub is not None:
            hub.terminate()
        broker.stop()
        if profiler is not None:
            profiler.wait(60)  # py-spy writes its file when the hub exits
    errors = hub.error_events() if hub is not None else {}
    latencies = sorted(x for r in results for x in r["latencies"])
    delivered = sum(int(r["done"]) for r in results)
    elapsed = max(float(r["elapsed"]) for r in results)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    per_doc = 1e6 / delivered if delivered else 0.0
    replicas = (
        {hub.label(i): spent[pid] * per_doc for i, pid in enumerate(middles)}
        if hub is not None and hub.replicas
        else {}
    )
    return Result(
        mode,
        args.senders,
        len(recipients),
        rate,
        count * args.senders,
        delivered,
        delivered / elapsed if elapsed else 0.0,
        q[49],
        q[98],
        rss,
        sum(spent[pid] for pid in middles) * per_doc,
        (sum(spent.values()) + store_spent) * per_doc,
        replicas,
        hub.owners if hub is not None else {},
        errors,
        store_spent * per_doc if store_pids else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=2)
    parser.add_argument(
        "--docs", type=int, default=10_000, help="documents per sender (saturation run)"
    )
    parser.add_argument("--window", type=int, default=400, help="documents in flight per sender")
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="offered docs/s for the latency run"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the latency run")
    parser.add_argument(
        "--half-raw",
        action="store_true",
        help="with --mode both: offer half the raw relay's saturation throughput measured in "
        "this run (instead of --rate) in both latency runs",
    )
    parser.add_argument("--mode", choices=["both", "hub", "raw"], default="both")
    parser.add_argument(
        "--load",
        choices=["spokes", "precomputed"],
        default="spokes",
        help="spokes: senders seal, recipients open and sign, as real spokes; precomputed: "
        "all of it done before the clock starts, so the hub's share is measured",
    )
    parser.add_argument(
        "--receipt-batch",
        type=int,
        default=16,
        help="--load precomputed: documents per DELIVERED batch at saturation",
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--ledger-checkpoints",
        choices=["on", "off", "default"],
        default="default",
        help="write [ledger] checkpoints = true/false into the hub config (default: omit it)",
    )
    parser.add_argument("--profile", default="", help="py-spy the hub during saturation into FILE")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's folder (hub state, store, logs) in /tmp; kept anyway if a run fails",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the hub's store: SQLite in its folder, or a fresh PostgreSQL database on "
        "127.0.0.1:5432 for each run, dropped after it",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="N hubd replicas ([replicas] enabled, names a, b, ...) on --store postgresql; "
        "0: one hub without a [replicas] section",
    )
    args = parser.parse_args()
    if args.replicas and (args.store != "postgresql" or args.mode == "raw"):
        parser.error(
            "--replicas 需要 --store postgresql 且 --mode 为 hub 或 both / --replicas needs "
            "--store postgresql and --mode hub or both: replicas share one PostgreSQL store"
        )
    if args.half_raw and args.mode != "both":
        parser.error(
            "--half-raw needs --mode both: the rate is half the raw relay's, measured first"
        )
    if args.load == "precomputed" and args.window < args.recipients * args.receipt_batch:
        parser.error(
            "--load precomputed needs --window >= --recipients x --receipt-batch: a batch is "
            "answered once every document in it came, and a smaller window never sends them"
        )
    tmp = Path(tempfile.mkdtemp(prefix="govx-bench-"))
    modes = ["raw", "hub"] if args.mode == "both" else [args.mode]
    rows = []
    rate = args.rate
    with kept_on_failure(tmp, keep=args.keep):
        for mode in modes:
            rows.append(run_once(mode, args, rate=0, count=args.docs, tmp=tmp))
            if args.half_raw and mode == "raw":
                rate = round(rows[-1].per_second / 2)  # the raw relay's saturation, halved
            latency_count = int(rate * args.seconds / args.senders)
            rows.append(run_once(mode, args, rate=rate, count=latency_count, tmp=tmp))
    table = format_table(rows)
    print(table)
    if args.write:
        write_doc(table, args)


def format_table(rows: list[Result]) -> str:
    split = any(r.replica_cpu_us for r in rows)  # a column for each replica's share
    pg = any(r.store_cpu_us is not None for r in rows)  # and one for the store's server
    lines = [
        (
            "| system | load | documents | delivered | docs/s | p50 ms | p99 ms | hub peak RSS "
            "| hub/relay CPU per doc | "
            + ("CPU per doc, by replica | " if split else "")
            + ("PostgreSQL CPU per doc | " if pg else "")
            + "all CPU per doc |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        + ("---: | " if split else "")
        + ("---: | " if pg else "")
        + "---: |",
    ]
    for r in rows:
        load = "saturation" if r.rate == 0 else f"{r.rate:.0f} docs/s offered"
        rss = "" if r.hub_rss_mb is None else f"{r.hub_rss_mb:.0f} MB"
        shares = " · ".join(f"{name} {us:.0f} µs" for name, us in r.replica_cpu_us.items())
        lines.append(
            f"| {r.mode} | {load} | {r.docs} | {r.delivered} | {r.per_second:.0f} | "
            f"{r.p50:.1f} | {r.p99:.1f} | {rss} | {r.hub_cpu_us or 0:.0f} µs | "
            + (f"{shares} | " if split else "")
            + (f"{r.store_cpu_us:.0f} µs | " if r.store_cpu_us is not None else "| " if pg else "")
            + f"{r.all_cpu_us:.0f} µs |"
        )
    sat = {r.mode: r.per_second for r in rows if r.rate == 0}
    if "hub" in sat and "raw" in sat and sat["raw"]:
        lines.append("")
        lines.append(
            f"Throughput ratio hub / raw relay at saturation: **{sat['hub'] / sat['raw']:.2f}**"
        )
    for r in rows:
        if r.owners:
            load = "saturation" if r.rate == 0 else "paced"
            names = r.replica_cpu_us
            held = {name: [o for o, n in r.owners.items() if n == name] for name in names}
            lines.append("")
            lines.append(
                f"Owners ({load}): "
                + "; ".join(f"{name}: {', '.join(orgs)}" for name, orgs in held.items())
            )
        if any(r.hub_errors.values()):
            lines.append("")
            lines.append(f"**Hub error events** ({r.mode}, rate {r.rate:.0f}): {r.hub_errors}")
    return "\n".join(lines)


def write_doc(table: str, args: argparse.Namespace) -> None:
    words = []
    for k, v in vars(args).items():
        if k in {"write", "mode", "profile", "keep"} or v is False:
            continue
        if (k, v) in {
            ("ledger_checkpoints", "default"),
            ("load", "spokes"),
            ("store", "sqlite"),
            ("replicas", 0),
        }:
            continue
        if k == "receipt_batch" and args.load == "spokes":
            continue
        if k == "rate" and args.half_raw:
            continue
        words.append(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}"))
    # the spokes' load and the hub alone are two tables of docs/benchmarks.md
    name = "e2e" if args.load == "spokes" else "e2e-hub"
    if args.store == "postgresql":  # issue 15's replicas: one block per replica count
        name = f"e2e-pg-replicas-{args.replicas}"
    replace_block(name, "python bench/e2e.py " + " ".join(words), table)


def replace_block(name: str, command: str, table: str) -> None:
    """Put ``table`` between the <!-- name:start/end --> markers of docs/benchmarks.md."""
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    machine = (
        f"{platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d')}"
    )
    block = f"{start}\n`{command}` on {machine}\n\n{table}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
