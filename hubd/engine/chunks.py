"""Bodies that come in chunks: the head that opens a transfer, the chunks written to the
spool in arrival order, and the end that finishes the body and stores the message.

The head and the end are decided by :func:`hubd.core.admit.admit` like any envelope; the
chunks between them only have to fit (the spool checks size and hash as it writes).

The folder spool takes a chunk on the event loop, in the pass that read it; the store's
spool (replicas) awaits each append, so there every chunk is slow work: in a task of its
own, taken in arrival order (tasks start in that order and the spool appends one at a time
per transfer; one out of order is only a gap the sender is asked to fill).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools

import structlog

from hubd.core.admit import Admit, Facts, Path, Quarantine, Refuse, Stored, admit
from hubd.engine.answers import Answers
from hubd.engine.arrival import Arrival, Slow, Step
from hubd.engine.dispatch import Publish
from hubd.engine.envelopes import Envelopes
from hubd.engine.jobs import Payload
from hubd.store.bodyref import BodyRef
from hubd.store.spool import BodySpool, Transfer, TransferMovedError
from schemas import transport
from schemas.envelope import VerifiedEnvelope
from schemas.errors import PeerError, Reason, StoreError
from schemas.ids import msg_id_text

log = structlog.get_logger("hubd.ingest")


class Chunks:
    def __init__(
        self, *, spool: BodySpool, envelopes: Envelopes, answers: Answers, send: Publish
    ) -> None:
        self._spool, self._envelopes, self._answers, self._send = spool, envelopes, answers, send

    # ------------------------------------------------------------ the head

    def head_now(self, arrival: Arrival, envelope: VerifiedEnvelope) -> Step:
        """The head of a chunked body: go on with a transfer under way at once; a new one
        first asks the store (a stored message's body is not spooled again)."""
        transfer = self._spool.get(envelope.header.msg_id)
        facts = self._envelopes.facts(arrival, envelope, Path.HEAD, under_way=transfer is not None)
        outcome = admit(facts)
        if isinstance(outcome, Refuse):
            self._answers.refuse(arrival, envelope, outcome)
            return None
        if transfer is not None and isinstance(outcome, Admit | Quarantine):
            self._ask_for_rest(transfer, arrival)
            return None
        return Slow(functools.partial(self._head, arrival, facts))

    async def head_slowly(self, arrival: Arrival, envelope: VerifiedEnvelope) -> None:
        """A large group's head: no quick path (admit runs in a worker thread for it)."""
        under_way = await self._spool.find(envelope.header.msg_id) is not None
        facts = self._envelopes.facts(arrival, envelope, Path.HEAD, under_way=under_way)
        await self._head(arrival, facts)

    async def _head(self, arrival: Arrival, facts: Facts) -> None:
        """Begin (or continue) the transfer and ask for the rest, if admit takes the head."""
        envelope = facts.envelope
        # another head of it (a resend) may have begun the transfer while this one waited
        # for a task: go on with that one, as at arrival (or one another replica began)
        transfer = await self._spool.find(envelope.header.msg_id)
        if transfer is not None:
            facts = dataclasses.replace(facts, under_way=True)
        outcome, _ = await self._envelopes.decide(facts)
        if not isinstance(outcome, Admit | Quarantine):
            self._envelopes.answer(arrival, envelope, outcome)
            return
        if transfer is None:
            try:
                transfer = await self._spool.begin(envelope, arrival.channel, arrival.org)
            except (OSError, StoreError) as exc:
                self._refuse_spool_failed(arrival, envelope, exc)
                return
        self._ask_for_rest(transfer, arrival)

    def _ask_for_rest(self, transfer: Transfer, arrival: Arrival) -> None:
        transfer.channel = arrival.channel  # a resend may come on another connection
        self._send_resume(transfer)

    def _send_resume(self, transfer: Transfer) -> None:
        """Ask the sender for the rest; handed to the connection, not waited for (a slow
        task must never wait on a broker the intake may be holding off)."""
        resume = transport.ResumeMsg(transfer.msg_id, transfer.received)
        self._send(transfer.channel, transfer.org, transport.encode(resume))

    # ------------------------------------------------------------ the chunks

    def chunk_now(self, arrival: Arrival, chunk: transport.ChunkMsg) -> Step:
        """Body bytes go to the spool file at once (in arrival order); slow work only for
        the chunk that completes a body (fsync, checks, store) or one that reveals a gap,
        and for every chunk when the spool is the store's."""
        transfer = self._spool.get(chunk.msg_id)
        if transfer is None and self._spool.shared:  # another replica may have begun it
            return Slow(functools.partial(self._chunk_slowly, arrival, chunk))
        if transfer is None or transfer.org != arrival.org:
            return None  # not under way (finished, refused, or never announced)
        try:
            appended = self._spool.append_now(transfer, chunk.offset, chunk.data)
        except PeerError as exc:
            self._spool.forget(transfer)  # its later chunks find nothing
            return Slow(functools.partial(self._refuse_body, arrival, transfer, exc))
        except OSError as exc:  # the spool's disk (full, or failing): refuse, retriable
            self._spool.forget(transfer)
            return Slow(functools.partial(self._spool_failed, arrival, transfer, exc))
        if appended is None:
            return Slow(functools.partial(self._chunk_slowly, arrival, chunk))
        if (not appended and chunk.offset > transfer.received) or (appended and transfer.complete):
            return Slow(functools.partial(self._chunk, arrival, chunk))  # a gap, or the end
        return None

    async def _chunk_slowly(self, arrival: Arrival, chunk: transport.ChunkMsg) -> None:
        """A chunk the spool has to await: found (perhaps another replica's transfer),
        appended, then as :meth:`_chunk`."""
        transfer: Transfer | None = None
        try:
            transfer = await self._spool.find(chunk.msg_id)
            if transfer is None or transfer.org != arrival.org or transfer.finishing:
                return
            appended = await self._spool.append(transfer, chunk.offset, chunk.data)
        except TransferMovedError:
            # another replica appended first: go on from what the store holds
            log.info("spool.moved", msg_id=msg_id_text(chunk.msg_id), org=arrival.org)
            again = await self._spool.find(chunk.msg_id)
            if again is not None:
                self._send_resume(again)
            return
        except PeerError as exc:  # raised by append: the transfer is known
            assert transfer is not None  # noqa: S101 - only append raises it
            self._spool.forget(transfer)
            await self._refuse_body(arrival, transfer, exc)
            return
        except (OSError, StoreError) as exc:
            if transfer is not None:
                await self._spool_failed(arrival, transfer, exc)
            return
        if (not appended and chunk.offset > transfer.received) or (appended and transfer.complete):
            await self._chunk(arrival, chunk)

    async def _refuse_body(self, arrival: Arrival, transfer: Transfer, exc: PeerError) -> None:
        """A body the spool refused (longer than signed): nothing of it is kept."""
        await self._spool.discard(transfer)
        self._answers.refuse(arrival, transfer.envelope, Refuse(exc.reason, exc.message))

    async def _spool_failed(
        self, arrival: Arrival, transfer: Transfer, exc: OSError | StoreError
    ) -> None:
        self._spool.forget(transfer)
        with contextlib.suppress(OSError, StoreError):
            await self._spool.discard(transfer)
        self._refuse_spool_failed(arrival, transfer.envelope, exc)

    def _refuse_spool_failed(
        self, arrival: Arrival, envelope: VerifiedEnvelope, exc: OSError | StoreError
    ) -> None:
        disk_full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        reason = Reason.HUB_DISK_LOW if disk_full else Reason.HUB_BUSY
        what = exc.strerror if isinstance(exc, OSError) else str(exc)
        refusal = Refuse(
            reason,
            f"the hub could not write the body to its spool ({what}); nothing of it "
            "is kept. Send it again later; the hub operator is told",
            retriable=True,
        )
        self._answers.refuse(arrival, envelope, refusal)

    async def _chunk(self, arrival: Arrival, chunk: transport.ChunkMsg) -> None:
        """After the chunk was spooled: ask for a gap, or finish a complete body."""
        transfer = self._spool.get(chunk.msg_id)
        if transfer is None or transfer.org != arrival.org or transfer.finishing:
            return  # finished, refused, or another task is finishing it
        if not transfer.complete:
            if chunk.offset > transfer.received:  # a gap: ask for what is missing
                self._send_resume(transfer)
            return
        transfer.finishing = True  # before any await: a body is finished (and stored) once
        try:
            await self._end(arrival, transfer)
        finally:
            self._spool.forget(transfer)

    # ------------------------------------------------------------ the end

    async def _end(self, arrival: Arrival, transfer: Transfer) -> None:
        """The body is complete: make it durable, then decide on the message as it stands.

        Gating and the rules again, with the directory of now: it may have changed while
        the body came (or the transfer was resumed from the spool after a restart). The
        rules were checked when the head arrived, so a refusal here is rare, and the
        verdict gives the warnings of the message as it is stored.
        """
        problem: PeerError | None = None
        body_path: BodyRef | None
        try:
            body_path = await self._spool.finish(transfer)  # the folder's fsync is off-loop
        except TransferMovedError:
            return  # another replica finished it, and answers
        except PeerError as exc:
            problem, body_path = exc, None
            await self._spool.discard(transfer)
        except (OSError, StoreError) as exc:
            await self._spool_failed(arrival, transfer, exc)
            return
        envelope = transfer.envelope
        facts = self._envelopes.facts(
            arrival, envelope, Path.END, channel=transfer.channel, spooled=problem
        )
        outcome, facts = await self._envelopes.decide(facts)
        if isinstance(outcome, Admit | Quarantine):
            assert body_path is not None  # noqa: S101 - admit refuses a body the spool refused
            payload = Payload(envelope.frame, None, body_path, envelope.body.size)
            await self._envelopes.store(arrival, envelope, outcome, payload)
            return
        if body_path is not None and not isinstance(facts.stored, Stored):
            # refused, and no stored message of this msg_id (whose body path it is) needs it
            with contextlib.suppress(OSError, StoreError):
                await self._spool.remove(body_path)
        self._envelopes.answer(arrival, envelope, outcome)
