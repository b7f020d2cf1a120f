"""The spoke agent: outbox -> seal -> hub, hub -> open -> inbox, receipts both ways.

Run with ``spoke run --config FILE``. Everything durable lives under ``[spoke] root``:
``outbox/ inbox/ sent/ failed/ signfor/ recall/ recall-answers/ return/`` (and what they
fill: ``recalled/ returned/ sentback/``) for integrators, ``.spoke/`` for the agent (its state
database, sealed bodies waiting for the hub, partial downloads, claimed drops). A
restart loses nothing: sealed envelopes are resent until the hub answers, claimed drops
are finished, partial downloads resume. The directory is verified against the pinned hub
key; without a valid one the spoke sends nothing and says why (fail closed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import signal
import sys
import time
from collections.abc import Callable

import aiomqtt
import structlog
from watchfiles import awatch

from runtime.clock import now_ms
from runtime.link import Link, LinkMaker
from runtime.mqtt import BrokerLink, mqtt_client_id, tls_context
from runtime.tasks import cancel_and_wait
from schemas import codec, topics, transport
from schemas.clock import DAY_MS
from schemas.errors import ConfigError, PeerError
from schemas.ids import parse_msg_id
from schemas.keys import HubPublicKey
from schemas.ledger import Fork
from schemas.receipts import verify_receipts
from spoke import control
from spoke.config import SpokeConfig
from spoke.context import SpokeContext
from spoke.dirbook import DirectoryBook, DirectoryUnavailableError, peek_sender
from spoke.flows import REQUEST_FOLDERS, RESEND_EVERY, Flows
from spoke.inbox import clean_staging
from spoke.keyring import (
    OWN_KEYS_EVENT,
    KeySource,
    own_key_problems,
    own_key_sentence,
    own_key_warnings,
)
from spoke.prover import ProveError, Prover
from spoke.receiver import Receiver
from spoke.sender import Sender
from spoke.state import SpokeState
from spoke.witness import RestoreChecked, Same, Unproven, Witness, verify

log = structlog.get_logger("spoke")
ASK_LINK_WAIT_STEPS = 50  # tenths of a second a directory request waits for a connection
OWN_LINE_AGAIN = 10.0  # seconds before this spoke's own entry is asked for again
DIR_ANSWER_PREFIX = b"\x93\xabdir-entries"  # transport.encode(DirEntriesMsg(...)) starts so
FOLDERS = ("outbox", "inbox", "sent", "failed", "signfor", *REQUEST_FOLDERS)
DEFERRED_MAX = 10_000  # receipt batches kept while no directory is in use (then: gap, hello)
GAP_WAIT = 1.0  # a numbered receipt batch missing this long: ask the hub to replay (doubling)
GAP_WAIT_MAX = 60.0
# a numbered receipt batch refused for these reasons never verifies, whatever directory
# comes (a newer protocol version, bytes that do not decode): the cursor passes it
UNREADABLE = ("schema.", "decode.")
UNREADABLE_HINT = (
    "this spoke cannot read a batch the hub numbered for it (a newer protocol version?): "
    "upgrade the spoke; the receipts in it are not shown in status.json"
)


class SpokeAgent:
    def __init__(
        self,
        config: SpokeConfig,
        *,
        clock: Callable[[], int] = now_ms,
        link_maker: LinkMaker = BrokerLink,
    ) -> None:
        """``link_maker`` makes each channel's link (tests pass ``FakeBroker.link``)."""
        root = config.spoke.root
        for name in FOLDERS:
            (root / name).mkdir(parents=True, exist_ok=True)
        for name in ("work", "queue", "incoming"):
            (config.work / name).mkdir(parents=True, exist_ok=True)
        for setting in ("sign_key", "enc_key", "hub_key"):
            path = getattr(config.spoke, setting)
            if not path.is_file():
                problem = (
                    f"{path} does not exist; point [spoke] {setting} at the file that "
                    "'spoke keygen' (the keys) or the hub operator (hub.pub.json) gave you"
                )
                raise ConfigError("spoke configuration", [(f"spoke.{setting}", problem)])
        keys = KeySource(config.org, config.spoke.sign_key, config.spoke.enc_key)
        keyring = keys.load()
        for problem in keys.problems:
            log.warning("keys.file_refused", detail=problem)
        self.pinned = HubPublicKey.load(
            config.spoke.hub_key.read_bytes(), source=str(config.spoke.hub_key)
        )
        self.ctx = SpokeContext(
            config,
            keyring.signing[0],
            keyring.encryption[0],
            SpokeState(config.work / "state.db"),
            clock=clock,
            keyring=keyring,
            keys=keys,
        )
        self.ctx.book = DirectoryBook(self.ctx.state, self.pinned.public, self.ctx.clock)
        self.ctx.book.on_change = self._held_changed
        self.ctx.book.publish = self._ask_hub
        self.sender = Sender(self.ctx)
        self.receiver = Receiver(self.ctx)
        self.receiver.on_reply = lambda answered: self.sender.status_later({answered})
        self.flows = Flows(self.ctx, self.receiver, self.sender)
        self.witness = Witness(self.ctx, self.ctx.publish_up)
        self.prover = Prover(self.ctx, self.ctx.publish_up, self.witness)
        self.stop_event = asyncio.Event()
        self._inbound: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        # receipt batches that came before a directory was in use (_receipts)
        self._deferred: list[tuple[str, bytes]] = []
        self._cursor: dict[str, int] = {}
        self._ahead: dict[str, set[int]] = {}
        self._wake = asyncio.Event()
        self._warned_at: int | None = None  # when the key expiry warnings were last logged
        self._watch_failed = False  # outbox.watch_restarted is logged once
        self._gap_asks: dict[str, asyncio.Task[None]] = {}  # per channel, while a batch is missing
        self._link_maker = link_maker

    @property
    def org(self) -> str:
        return self.ctx.org

    # ================================================================ directory

    def _held_changed(self) -> None:
        """The book's root or the entries it holds changed: the rest of the spoke uses it."""
        book = self.ctx.book
        if book is None or (self.org not in book.entries and self.org not in book.absent):
            return  # judged once this spoke's own entry is held (or proven not listed)
        if self.ctx.verified is None and book.verified is not None:
            log.info("directory.in_use", version=book.verified.version, held=len(book.entries))
        self.ctx.verified = book.verified
        if self._deferred and self.ctx.directory() is not None:
            for item in self._deferred:  # receipt batches that came before: in order
                self._inbound.put_nowait(item)
            self._deferred.clear()
        self.witness.directory_changed()  # a checkpoint that waited for a directory
        self._wake.set()  # the outbox loop sees the new gate, and drops that waited for it

    async def _ask_hub(self, payload: bytes) -> bool:
        """A directory request, on the up topic of a connected channel (waiting a little
        for one: a retained root arrives before the connection says it is up)."""
        for _ in range(ASK_LINK_WAIT_STEPS):
            for channel, link in self.ctx.links.items():
                if link.connected.is_set():
                    return await link.publish(topics.up(channel, self.org), payload)
            await asyncio.sleep(0.1)  # a look at the links' state, bounded
        return False

    async def _directory_root(self, payload: bytes) -> None:
        book = self.ctx.book
        assert book is not None  # noqa: S101 - made with the agent
        was_valid = self.ctx.directory() is not None
        current = book.root
        if not await book.take_publication(payload):
            return
        self.ctx.refresh_keys()
        self._wake.set()  # the outbox loop sees the new gate: resumes, or switches keys
        self.witness.directory_changed()
        # not awaited: with the hub away it would hold up the envelopes queued behind it
        asyncio.get_running_loop().create_task(self._own_line(when="directory"))
        if not was_valid and current is not None:
            await self._hello_all()  # receipts refused while expired: ask for them again

    async def _own_line(self, *, when: str) -> None:
        """This spoke's entry and its line (fetched when missing), then its own checks."""
        book = self.ctx.book
        assert book is not None  # noqa: S101 - made with the agent
        try:
            await book.own_line(self.org)
            fetched = True
        except DirectoryUnavailableError as exc:
            log.info("directory.own_entry_deferred", detail=str(exc))
            fetched = False  # checked with what is held; again once the hub answers
        self._warn_key_expiry(when=when)
        await self._check_own_keys(when=when)
        self._wake.set()
        if not fetched:
            asyncio.get_running_loop().create_task(self._own_line_later(when))

    async def _own_line_later(self, when: str) -> None:
        await asyncio.sleep(OWN_LINE_AGAIN)
        book = self.ctx.book
        if book is not None and book.needed_for(self.org):
            await self._own_line(when=when)

    def _warn_key_expiry(self, *, when: str) -> None:
        """Log, days ahead, that this organisation's last listed key of a kind ends
        (``when``: start, directory, daily)."""
        self._warned_at = self.ctx.clock()
        if self.ctx.verified is None:
            return
        directory = self.ctx.verified.directory
        days = self.ctx.config.spoke.key_warn_days
        for warning in own_key_warnings(directory, self.org, now=self._warned_at, days=days):
            emit = log.error if warning.expired else log.warning
            sentence = own_key_sentence(warning, self.ctx.held_keys(), directory)
            emit(warning.event, checked=when, detail=sentence, **warning.fields())

    async def _check_own_keys(self, *, when: str) -> None:
        """Does the directory list this spoke's keys as it must (``when``: start,
        directory)? If not: one warning event, one line in both languages on stderr saying
        what to do, and the same for ``spoke status``."""
        verified = self.ctx.verified
        if verified is None:
            return
        now = self.ctx.clock()
        problems = own_key_problems(verified.directory, self.org, self.ctx.held_keys(), now)
        lines = [p.line for p in problems]
        await asyncio.to_thread(self.ctx.state.save_own_keys, lines, verified.version, now)
        if not problems:
            return
        log.warning(
            OWN_KEYS_EVENT,
            checked=when,
            directory_version=verified.version,
            kinds=[p.kind for p in problems],
            detail=" ".join(p.en for p in problems),
        )
        zh = "；".join(p.zh for p in problems)
        en = " ".join(p.en for p in problems)
        print(f"spoke run: {zh} / {en}", file=sys.stderr, flush=True)

    async def _key_expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(3600)  # a day on the clock, checked hourly (suspend, NTP)
            if self._warned_at is None or self.ctx.clock() - self._warned_at >= DAY_MS:
                self._warn_key_expiry(when="daily")

    async def _hello_all(self) -> None:
        for channel, link in self.ctx.links.items():
            if link.connected.is_set():
                hello = transport.HelloMsg(self._cursor.get(channel, 0))
                await link.publish(topics.up(channel, self.org), transport.encode(hello))

    # ================================================================ running

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            await self._serve()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            self.ctx.state.close()

    def _links(self) -> None:
        config = self.ctx.config
        for channel, broker in config.channels.items():
            tls = None
            if broker.tls:
                files = (broker.ca, broker.cert, broker.key)
                tls = tls_context(*(None if p is None else str(p) for p in files))
            self.ctx.links[channel] = self._link_maker(
                channel,
                broker.host,
                broker.port,
                [channel],
                subscriptions=[
                    topics.down(channel, self.org),
                    topics.dirroot(channel),
                    topics.ledger(channel),
                ],
                client_id=mqtt_client_id("spoke", self.org, channel),
                sink=self._sink,
                will=aiomqtt.Will(
                    topics.presence(channel, self.org), topics.OFFLINE, qos=1, retain=True
                ),
                on_connected=self._connected,
                window=64,
                tls=tls,
                failover=broker.nodes[1:],
            )

    async def _serve(self) -> None:
        assert self.ctx.book is not None  # noqa: S101 - made with the agent
        self.ctx.book.load()
        control.secure(self.ctx.config.work)
        self.witness.load()
        self._cursor = self.ctx.state.cursors()
        for removed in clean_staging(self.ctx.config.folder("inbox")):
            log.info("inbox.staging_removed", folder=removed.name)
        # to completion before any link, loop or answer exists: nothing else may move a
        # work folder while recovery looks at them
        await asyncio.to_thread(self.sender.recover)
        await asyncio.to_thread(self.flows.repair)  # recalled and returned documents' folders
        self._links()
        verified = self.ctx.verified
        log.info(
            "spoke.starting",
            org=self.org,
            channels=list(self.ctx.links),
            root=str(self.ctx.config.spoke.root),
            directory_version=None if verified is None else verified.version,
        )
        links_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            for link in self.ctx.links.values():
                tasks.create_task(link.run(links_stop), name=f"spoke.link.{link.name}")
            work = [
                tasks.create_task(self._inbound_loop(), name="spoke.inbound"),
                tasks.create_task(self._outbox_loop(), name="spoke.outbox"),
                tasks.create_task(self._watch(), name="spoke.watch"),
                tasks.create_task(self._resend_loop(), name="spoke.resend"),
                tasks.create_task(self._receipt_loop(), name="spoke.receipts"),
                tasks.create_task(self._flows_loop(), name="spoke.flows"),
                tasks.create_task(self._key_expiry_loop(), name="spoke.key_expiry"),
                tasks.create_task(self.witness.run(), name="spoke.witness"),
                tasks.create_task(self._control_loop(), name="spoke.control"),
                tasks.create_task(self._own_line(when="start"), name="spoke.own_line"),
            ]
            await self.stop_event.wait()
            log.info("spoke.stopping")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.receiver.flush()
            await cancel_and_wait(work)
            await self.sender.stop()
            for channel, link in self.ctx.links.items():
                with contextlib.suppress(TimeoutError):
                    presence = topics.presence(channel, self.org)
                    async with asyncio.timeout(2):
                        await link.publish(presence, topics.OFFLINE, retain=True)
            links_stop.set()
        log.info("spoke.stopped")

    def _sink(self, topic: str, payload: bytes) -> None:
        """Directory answers are taken at once (a message in the queue may be waiting for
        one); everything else in arrival order."""
        if payload.startswith(DIR_ANSWER_PREFIX):
            where = topics.parse(topic)
            if where is not None and where.kind is topics.Kind.DOWN and where.org == self.org:
                asyncio.get_running_loop().create_task(self._directory_answer(payload))
                return
        self._inbound.put_nowait((topic, payload))

    async def _directory_answer(self, payload: bytes) -> None:
        try:
            message = transport.decode(payload)
            if isinstance(message, transport.DirEntriesMsg) and self.ctx.book is not None:
                await self.ctx.book.take_answer(message)
        except PeerError as exc:
            log.warning("message.refused", reason=exc.reason.value, detail=exc.message)
        except Exception:  # one bad message must never stop the spoke
            log.exception("message.failed", kind="dir-entries")

    async def _connected(self, link: Link) -> None:
        channel = link.name
        await link.publish(topics.presence(channel, self.org), topics.ONLINE, retain=True)
        hello = transport.HelloMsg(self._cursor.get(channel, 0))
        await link.publish(topics.up(channel, self.org), transport.encode(hello))
        log.info("spoke.connected", channel=channel, last_seq=hello.last_seq)
        await self.sender.republish(channel)
        await self.flows.resend(channel)  # recalls unanswered, statements not yet taken

    # ================================================================ loops

    async def _watch(self) -> None:
        """inotify through watchfiles; the periodic rescan covers file systems that miss events.

        watchfiles gives up on a whole batch of events when one path is not UTF-8 (a GBK
        name from a Windows share): the watch is then started again, the outbox scanned
        (which moves such a name to failed/), and nothing else happens. Logged once."""
        watched = ("outbox", "signfor", *REQUEST_FOLDERS)
        folders = [self.ctx.config.folder(name) for name in watched]
        pause = 0.05
        while not self.stop_event.is_set():
            try:
                async for _ in awatch(*folders, stop_event=self.stop_event, debounce=50, step=20):
                    self._wake.set()
                    pause = 0.05
            except Exception as exc:  # noqa: BLE001 - the watch is only a wake-up call
                self._wake.set()
                if not self._watch_failed:
                    self._watch_failed = True
                    log.warning(
                        "outbox.watch_restarted",
                        detail=f"{type(exc).__name__}: {exc}"[:500],
                        hint="the outbox is scanned at once and every rescan_every seconds",
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.ctx.config.limits.rescan_every)

    async def _outbox_loop(self) -> None:
        limits = self.ctx.config.limits
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.rescan_every):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sender.scan()
            except Exception:  # one bad drop must never stop the outbox
                log.exception("outbox.scan_failed")
            try:
                await self.receiver.sign_for_requests(self.ctx.config.folder("signfor"))
            except Exception:  # nor stop sign-for
                log.exception("signfor.scan_failed")
            try:
                await self.flows.requests()
            except Exception:  # nor recall and return
                log.exception("flow.scan_failed")
            if self.sender.outbox.waiting():
                # something is settling: look again once it may have been stable long enough
                await asyncio.sleep(min(limits.stable_for, limits.rescan_every) / 2)
                self._wake.set()

    async def _resend_loop(self) -> None:
        every = self.ctx.config.limits.resend_every
        while True:
            await asyncio.sleep(every)
            try:
                await self.sender.republish(older_than_ms=int(every * 1000))
            except Exception:  # the next round tries again; the agent must not stop
                log.exception("outbox.resend_failed")

    async def _flows_loop(self) -> None:
        while True:
            await asyncio.sleep(RESEND_EVERY)
            try:
                await self.flows.resend()
            except Exception:  # the next round tries again
                log.exception("flow.resend_failed")

    async def _receipt_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.limits.receipt_flush)
            try:
                await self.receiver.flush()
            except Exception:  # the receipts stay queued for the next flush
                log.exception("receipts.flush_failed")

    async def _inbound_loop(self) -> None:
        while True:
            topic, payload = await self._inbound.get()
            try:
                await self._on_message(topic, payload)
            except Exception:  # one bad message must never stop the inbox
                log.exception("message.failed", topic=topic)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 4 and parts[3] == "dirroot":
            await self._directory_root(payload)
            return
        if len(parts) == 4 and parts[3] == "ledger":
            self._checkpoint(parts[2], payload)
            return
        where = topics.parse(topic)
        if where is None or where.kind is not topics.Kind.DOWN or where.org != self.org:
            return  # amqtt hands reconnecting clients other clients' retained messages too
        try:
            message = transport.decode(payload)
        except PeerError as exc:
            log.warning(
                "message.refused",
                channel=where.channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            return
        match message:
            case transport.EnvelopeMsg(frame, body, part):
                await self.receiver.envelope(where.channel, frame, body, part)
            case transport.ChunkMsg(msg_id, offset, data):
                await self.receiver.chunk(msg_id, offset, data)
            case transport.ReceiptsMsg(frame, seq):
                await self._receipts(where.channel, frame, seq)
            case transport.ResumeMsg(msg_id, offset):
                self.sender.resume(msg_id, offset)
            case transport.AskHelloMsg():
                # the hub lost our hello (it was away from the broker when we connected)
                link = self.ctx.links.get(where.channel)
                if link is not None:
                    hello = transport.HelloMsg(self._cursor.get(where.channel, 0))
                    log.info("spoke.hello_asked", channel=where.channel, last_seq=hello.last_seq)
                    await link.publish(topics.up(where.channel, self.org), transport.encode(hello))
            case transport.ConsistencyMsg():
                self.witness.answer(message)
            case transport.ProofMsg():
                self.prover.proof(message)
            case _:
                pass

    async def _issuer_held(self, frame: bytes) -> None:
        """A receipt batch signed by an organisation (not the hub): its entry first; and
        this spoke's own, without which it judges nothing yet (as for an envelope)."""
        book, issuer = self.ctx.book, peek_sender(frame, codec.RECEIPT_FRAME_LIMITS)
        if book is None or issuer is None or book.root is None:
            return
        root = book.root.root
        hub = issuer == root.hub_id or any(h.id == issuer for h in root.hubs)
        wanted = [self.org] if hub else [issuer, self.org]
        with contextlib.suppress(DirectoryUnavailableError):
            await book.ensure(wanted)

    async def _receipts(self, channel: str, frame: bytes, seq: int) -> None:
        ahead = self._ahead.setdefault(channel, set())
        if seq and (seq <= self._cursor.get(channel, 0) or seq in ahead):
            return  # numbered batches may come twice (live, and replayed after a hello)
        await self._issuer_held(frame)
        directory = self.ctx.directory()
        if directory is None:
            # Nothing is judged yet (its own entry not held: the hub slow to answer, or no
            # valid directory). A numbered batch dropped here would wait for the next
            # reconnect's hello: it is taken again when a directory is in use.
            if len(self._deferred) < DEFERRED_MAX:
                message = transport.encode(transport.ReceiptsMsg(frame, seq))
                self._deferred.append((topics.down(channel, self.org), message))
            log.info("receipt.deferred", channel=channel, seq=seq, waiting=len(self._deferred))
            return
        try:
            verified = verify_receipts(frame, directory)
        except PeerError as exc:
            reason = exc.reason.value
            if seq and reason.startswith(UNREADABLE):
                # no directory makes it readable: held back, it would stop every numbered
                # batch behind it forever; passed, as a batch taken is (sig.*, receipt.* and
                # directory trouble are not: a newer directory may make them verify)
                log.error(
                    "receipt.unreadable_numbered", channel=channel, seq=seq, reason=reason,
                    detail=exc.message, hint=UNREADABLE_HINT,
                )  # fmt: skip
                await self._advance(channel, seq)
                return
            log.warning("receipt.refused", channel=channel, reason=reason, detail=exc.message)
            return
        changed = await self.flows.batch(channel, verified)  # recall, return (spoke.flows)
        for entry in verified.batch.entries:
            if entry.status.flow:
                continue
            msg_id = await asyncio.to_thread(
                functools.partial(
                    self.sender.receipt, entry, write=False, issuer=verified.batch.issuer
                )
            )
            if msg_id is not None:
                changed.add(msg_id)
        self.sender.status_later(changed)
        await asyncio.to_thread(
            self.ctx.state.keep_receipt_frame,
            frame,
            hashlib.sha256(frame).digest(),
            verified.batch.issuer,
            [e.msg_id for e in verified.batch.entries if e.msg_id is not None],
            at=self.ctx.clock(),
            sent_only=True,
        )
        if seq:
            await self._advance(channel, seq)

    async def _advance(self, channel: str, seq: int) -> None:
        """Numbered batch ``seq`` is done with: the cursor moves to the highest contiguous
        number (the hub replays what follows), and a gap is asked for."""
        ahead = self._ahead.setdefault(channel, set())
        ahead.add(seq)
        cursor = self._cursor.get(channel, 0)
        while cursor + 1 in ahead:  # the highest contiguous number: the hub replays what follows
            cursor += 1
            ahead.discard(cursor)
        self._cursor[channel] = cursor
        await asyncio.to_thread(self.ctx.state.save_cursor, channel, cursor)
        if ahead and channel not in self._gap_asks:
            self._gap_asks[channel] = asyncio.get_running_loop().create_task(
                self._ask_for_missing(channel), name=f"spoke.receipt_gap.{channel}"
            )

    async def _ask_for_missing(self, channel: str) -> None:
        """A numbered receipt batch is missing while later ones arrived (the hub stopped
        after numbering it and before sending it, and this spoke never reconnected, so no
        hello asked for it). Batches may also just arrive out of order: wait a moment, then
        say hello with the highest contiguous number, which makes the hub replay what
        follows; again, with a growing pause, while the gap lasts."""
        pause = GAP_WAIT
        try:
            while self._ahead.get(channel):
                await asyncio.sleep(pause)
                link = self.ctx.links.get(channel)
                if not self._ahead.get(channel) or link is None or not link.connected.is_set():
                    continue
                cursor = self._cursor.get(channel, 0)
                log.info(
                    "receipts.gap",
                    channel=channel,
                    last_seq=cursor,
                    next_held=min(self._ahead[channel]),
                )
                hello = transport.encode(transport.HelloMsg(cursor))
                await link.publish(topics.up(channel, self.org), hello)
                pause = min(pause * 2, GAP_WAIT_MAX)
        finally:
            self._gap_asks.pop(channel, None)

    # ================================================================ the ledger

    def _checkpoint(self, channel: str, payload: bytes) -> None:
        if channel not in self.ctx.links:
            return
        try:
            message = transport.decode(payload)
        except PeerError as exc:
            log.warning(
                "ledger.checkpoint_refused",
                channel=channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            return
        if isinstance(message, transport.CheckpointMsg):
            self.witness.checkpoint(channel, message)

    # ================================================================ control requests

    async def _control_loop(self) -> None:
        """Requests from the spoke command (spoke.control): prove, witness check, reset."""
        work = self.ctx.config.work
        running: set[asyncio.Task[None]] = set()
        marked = 0.0
        while True:
            await asyncio.sleep(control.POLL)  # a look at a folder, not synchronisation
            if time.monotonic() - marked >= control.ALIVE_EVERY:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(control.mark_alive, work)
                marked = time.monotonic()
            try:
                taken = await asyncio.to_thread(control.take, work, self.ctx.clock())
            except OSError:
                log.exception("control.failed")
                continue
            for rid, kind, args, uid in taken:
                log.info("control.request", id=rid, kind=kind, uid=uid)
                task = asyncio.get_running_loop().create_task(
                    self._control(rid, kind, args), name=f"spoke.control.{kind}"
                )
                running.add(task)
                task.add_done_callback(running.discard)

    async def _control(self, rid: str, kind: str, args: dict[str, object]) -> None:
        try:
            answer = await self._control_answer(kind, args)
        except ProveError as exc:
            answer = {"ok": False, "code": exc.code, "message": exc.message}
        except Exception:  # a defect: the command is told, the agent carries on
            log.exception("control.failed", kind=kind)
            answer = {
                "ok": False,
                "code": "agent.internal_error",
                "message": "交换程序内部错误，详见其日志 / the agent failed on this request (a "
                "defect): see its log, report it",
            }
        await asyncio.to_thread(control.answer, self.ctx.config.work, rid, answer)

    async def _control_answer(self, kind: str, args: dict[str, object]) -> dict[str, object]:
        if kind == "prove":
            try:
                msg_id = parse_msg_id(str(args.get("msg_id")))
            except ValueError as exc:
                raise ProveError("prove.bad_request", str(exc)) from exc
            proven = await self.prover.prove(msg_id)
            return {
                "ok": True,
                "path": str(proven.path),
                "entries": proven.entries,
                "receipts": proven.receipts,
                "size": proven.size,
                "problems": proven.problems,
            }
        if kind == "directory":
            return await self._directory_entries(args)
        if kind == "witness-check":
            return await self._witness_check(args)
        if kind == "witness-reset":
            adopted = await self.witness.reset(
                by=str(args.get("by"))[:200], why=str(args.get("why"))[:500]
            )
            return {"ok": True, "adopted_size": None if adopted is None else adopted.size}
        raise ProveError("control.unknown", f"unknown request {kind[:40]!r}")

    async def _directory_entries(self, args: dict[str, object]) -> dict[str, object]:
        """The directory entries a document to ``addresses`` needs, fetched for the
        ``spoke send`` command's checks (it reads them from state.db afterwards)."""
        addresses = args.get("addresses")
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ProveError("directory.bad_request", "addresses must be a list of text")
        assert self.ctx.book is not None  # noqa: S101 - made with the agent
        try:
            await self.ctx.book.closure([str(a)[:80] for a in addresses[:2000]], self.org)
        except DirectoryUnavailableError as exc:
            raise ProveError("directory.unavailable", str(exc)) from exc
        return {"ok": True}

    async def _witness_check(self, args: dict[str, object]) -> dict[str, object]:
        """Someone else's checkpoint against the one this witness holds (spoke witness check)."""
        text = args.get("frame")
        try:
            frame = base64.b64decode(text if isinstance(text, str) else "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProveError("witness.bad_request", "the frame is not base64") from exc
        directory = self.ctx.directory()
        held = self.witness.held
        if directory is None or held is None or not self.ctx.links:
            raise ProveError(
                "witness.nothing_held",
                "交换程序尚无有效通讯录或检查点，请等它连上枢纽 / the agent holds no valid "
                "directory or checkpoint yet: let it connect to the hub first",
            )
        try:
            other = verify(frame, directory)
        except PeerError as exc:
            return {"ok": True, "verdict": "refused", "detail": exc.message}
        verdict = await self.witness.judge_other(next(iter(self.ctx.links)), other)
        if verdict is None:
            raise ProveError(
                "prove.no_answer",
                "枢纽未答复一致性询问，请稍后重试 / the hub did not answer the consistency "
                "question: try again later",
            )
        detail = f"held size {held.size}, other size {other.size}"
        match verdict:
            case Same():
                return {"ok": True, "verdict": "same", "detail": f"held size {held.size}"}
            case Fork() as fork:
                folder = await self.witness.record_fork(fork, channel=None)
                return {"ok": True, "verdict": "fork", "detail": fork.why, "folder": str(folder)}
            case Unproven(why=why):
                return {"ok": True, "verdict": "unproven", "detail": f"{detail}; {why}"}
            case RestoreChecked(restored=restored):
                lost = f"entries {restored.lost_from + 1} to {restored.lost_to} lost"
                return {"ok": True, "verdict": "restored", "detail": f"{detail}; {lost}"}
            case _:
                return {"ok": True, "verdict": "consistent", "detail": detail}
