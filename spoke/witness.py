"""The spoke as a witness of the hub's ledger (docs/wire-format.md, 12.3).

The hub publishes each signed checkpoint, retained, on ``xchg/v1/<channel>/ledger``. The
witness keeps the latest one it verified in ``.spoke/ledger/checkpoint.ckpt`` and, for
each new one, checks that one tree extends the other: with the consistency proof the
message carries when it starts from the size held, otherwise with one the witness asks
for (one question at a time; checkpoints that arrive meanwhile wait, newest only). It
countersigns what it verified. A fork (two signed histories that cannot both be true) is
a security event: both frames are kept in ``.spoke/ledger/forks/<time>/``, the new
checkpoint is not adopted, and ``spoke status`` says so until an operator runs ``spoke
witness reset --accept-current``. A restore the hub declared in a signed, included
``ledger.restored`` entry is accepted only if the restored ledger keeps the history this
spoke logged up to the restored size (a proof from the largest logged checkpoint within
it); it is logged, the old checkpoint kept, and ``spoke status`` shows it until reset. A
checkpoint the hub does not prove (no answer, or no proof) is ``ledger.unproven``, an
alarm until a later checkpoint is proven to extend the held one; one smaller than the
held one and signed after it is a fork.

The held checkpoint is kept in state.db too (and the adopted ones in a bounded log): a
lost ``checkpoint.ckpt`` is written again from it, never replaced by the hub's next word.

:func:`decide` and :func:`conclude` are the pure decisions; :class:`Witness` does the I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from runtime.files import atomic_write
from schemas import transport
from schemas.clock import ms_to_text
from schemas.errors import PeerError
from schemas.ledger import (
    Consistent,
    Fork,
    Restored,
    SignedCheckpoint,
    cosign,
    read_checkpoint,
)
from spoke.context import SpokeContext
from spoke.keyring import Ready
from spoke.state import LedgerAlarm, LoggedCheckpoint
from spoke.witnessrules import (
    Adopt,
    Ask,
    Decision,
    RestoreChecked,
    Same,
    Unproven,
    conclude,
    confirm_restore,
    decide,
    fork_fields,
    pair_digest,
    restore_base,
    stamp,
    unanswered,
    verify,
)

__all__ = [  # the decisions are spoke.witnessrules'; importers of this module use these names
    "Adopt",
    "Ask",
    "RestoreChecked",
    "Same",
    "Unproven",
    "Witness",
    "WitnessFiles",
    "conclude",
    "decide",
    "verify",
]

log = structlog.get_logger("spoke.witness")
security = structlog.get_logger("spoke.security")

# ================================================================ files


class WitnessFiles:
    """``.spoke/ledger/``: checkpoint.ckpt, restored/, forks/, unproven/, reset/, witness.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.held = folder / "checkpoint.ckpt"
        self.status = folder / "witness.json"

    def load(self) -> bytes | None:
        try:
            return self.held.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def save(self, frame: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.held, frame, mode=0o644)

    def keep(self, sub: str, name: str, frame: bytes) -> Path:
        path = self.folder / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, frame, mode=0o644)
        return path

    def keep_pair(
        self, sub: str, held: SignedCheckpoint, new: SignedCheckpoint, at: int, why: dict[str, Any]
    ) -> Path:
        """Both frames and why, in ``<sub>/<time>-<pair>/`` (forks/, unproven/)."""
        name = f"{stamp(at)}-{pair_digest(held.frame, new.frame).hex()[:8]}"
        folder = self.folder / sub / name
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "held.ckpt", held.frame, mode=0o644)
        atomic_write(folder / "new.ckpt", new.frame, mode=0o644)
        text = json.dumps(why, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        atomic_write(folder / "why.json", text.encode(), mode=0o644)
        return folder

    def write_status(self, doc: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        atomic_write(self.status, text.encode(), mode=0o644)


def describe(signed: SignedCheckpoint) -> dict[str, Any]:
    return {
        "size": signed.size,
        "root": signed.root.hex(),
        "at": ms_to_text(signed.at, precise=True),
        "kid": signed.kid,
    }


def logged(signed: SignedCheckpoint) -> LoggedCheckpoint:
    return LoggedCheckpoint(signed.size, signed.root, signed.at, signed.frame)


# ================================================================ the witness (I/O)

Send = Callable[[str, bytes], Awaitable[bool]]  # (channel, payload) on our up topic


@dataclass(frozen=True, slots=True)
class Pending:
    channel: str
    message: transport.CheckpointMsg


class Witness:
    """One hub's checkpoints, judged one at a time by :meth:`run` (and :meth:`examine`)."""

    def __init__(self, ctx: SpokeContext, send: Send) -> None:
        self.ctx = ctx
        self.send = send
        self.files = WitnessFiles(ctx.config.work / "ledger")
        self.held: SignedCheckpoint | None = None
        self.latest: SignedCheckpoint | None = None  # the newest verified, adopted or not
        self._pending: Pending | None = None
        self._wake = asyncio.Event()
        self._asked: tuple[int, int] | None = None
        self._answer: asyncio.Future[transport.ConsistencyMsg] | None = None
        self._question = asyncio.Lock()
        self._judging = asyncio.Lock()  # one judgement (questions and all) at a time
        self._cosigned: int | None = None
        self._cosigned_at: int | None = None  # when (ms): cosign_every spaces them

    def load(self) -> None:
        """The held checkpoint: state.db's, written back to checkpoint.ckpt if the file is
        missing, unreadable or another; else the file's (a state.db from before the log);
        else the newest logged one. Only a spoke with none of them trusts its next one."""
        state = self.ctx.state
        remembered = state.held_checkpoint()
        frame = self.files.load()
        if remembered is not None:
            self.held = read_checkpoint(remembered)  # verified when saved; keys may rotate
            if frame != remembered:
                self._restore_file(frame, remembered, "state.db")
            return
        on_file = self._read_file(frame)
        if on_file is not None:
            self.held = on_file
            state.hold_checkpoint(logged(on_file))
            return
        history = state.logged_checkpoints()
        if history:
            self.held = read_checkpoint(history[-1].frame)
            state.hold_checkpoint(history[-1], log=False)
            self._restore_file(frame, history[-1].frame, "the checkpoint log in state.db")

    def _read_file(self, frame: bytes | None) -> SignedCheckpoint | None:
        if frame is None:
            return None
        try:
            return read_checkpoint(frame)
        except PeerError as exc:
            log.error("ledger.checkpoint_refused", reason=exc.reason.value, detail=exc.message)
            self.files.keep("unreadable", f"{stamp(self.ctx.clock())}.ckpt", frame)
            self.files.held.unlink(missing_ok=True)
            return None

    def _restore_file(self, frame: bytes | None, remembered: bytes, source: str) -> None:
        if frame is None:
            was = "missing"
        elif self._read_file(frame) is None:
            was = "unreadable"
        else:
            was = "another checkpoint"
            self.files.keep("replaced", f"{stamp(self.ctx.clock())}.ckpt", frame)
        self.files.save(remembered)
        log.warning(
            "ledger.checkpoint_file_restored",
            file=str(self.files.held),
            was=was,
            size=read_checkpoint(remembered).size,
            detail=f"{self.files.held.name} was {was}: written again from {source}, which "
            "remembers the checkpoint this spoke held; the hub's next one is checked against it",
        )

    # ------------------------------------------------------------------ inbound

    def checkpoint(self, channel: str, message: transport.CheckpointMsg) -> None:
        """A checkpoint arrived: the newest waits for :meth:`run` (older waiting ones go)."""
        self._pending = Pending(channel, message)
        self._wake.set()

    def directory_changed(self) -> None:
        self._wake.set()  # a checkpoint refused for want of a directory may verify now

    def answer(self, message: transport.ConsistencyMsg) -> None:
        future, asked = self._answer, self._asked
        if future is not None and not future.done() and asked == (message.old, message.new):
            future.set_result(message)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        await asyncio.to_thread(self.write_status)
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            try:
                await self._one(pending)
            except Exception:  # one bad checkpoint must never stop the witness
                log.exception("ledger.failed")

    async def _one(self, pending: Pending) -> None:
        directory = self.ctx.directory()
        if directory is None:
            if self._pending is None:
                self._pending = pending  # tried again when a directory arrives
            return
        try:
            new = verify(pending.message.frame, directory)
        except PeerError as exc:
            log.warning(
                "ledger.checkpoint_refused",
                channel=pending.channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            return
        self.latest = new
        message = pending.message
        async with self._judging:
            decision = await self._judge(pending.channel, new, message.prev_size, message.proof)
            if decision is not None:
                await self._apply(pending.channel, decision)

    async def examine(self, channel: str, new: SignedCheckpoint) -> Decision | None:
        """Judge a verified checkpoint met elsewhere (a proof's) as if it had been published,
        and act on the verdict; None if nothing is held or the hub could not be asked."""
        async with self._judging:
            if self.held is None:
                return None
            decision = await self._judge(channel, new, -1, b"")
            if decision is not None:
                await self._apply(channel, decision)
            return decision

    async def judge_other(self, channel: str, other: SignedCheckpoint) -> Decision | None:
        """The verdict on someone else's checkpoint (``spoke witness check``), not acted on."""
        async with self._judging:
            if self.held is None:
                return None
            return await self._judge(channel, other, -1, b"")

    async def _judge(
        self, channel: str, new: SignedCheckpoint, prev_size: int, proof: bytes
    ) -> Decision | None:
        decision: Decision | None = decide(self.held, new, prev_size, proof)
        if isinstance(decision, Ask):
            decision = await self._settle(channel, decision, new)
        if isinstance(decision, Restored):
            decision = await self._check_restore(channel, decision)
        return decision

    async def _settle(self, channel: str, ask: Ask, new: SignedCheckpoint) -> Decision | None:
        held = self.held
        assert held is not None  # noqa: S101 - decide() asks only when one is held
        answer, sent = await self._ask(channel, ask.old, ask.new)
        if answer is not None:
            return conclude(held, new, answer)
        if ask.fallback is not None:
            return ask.fallback
        return self._no_answer(channel, ask.old, ask.new, held, new, sent=sent)

    def _no_answer(
        self,
        channel: str,
        old: int,
        new_size: int,
        held: SignedCheckpoint,
        new: SignedCheckpoint,
        *,
        sent: bool,
    ) -> Fork | Unproven | None:
        log.warning(
            "ledger.no_answer",
            channel=channel,
            old=old,
            new=new_size,
            detail="the hub did not answer a consistency question within [ledger] answer_timeout"
            if sent
            else "the question could not be sent (not connected); the next checkpoint asks again",
        )
        if not sent:
            return None
        return unanswered(held, new, f"no answer to the question from size {old} to {new_size}")

    async def _check_restore(self, channel: str, restored: Restored) -> Decision | None:
        """A declared restore must keep the history up to the restored size that this spoke
        logged: asked from the largest logged checkpoint within it."""
        base = restore_base(self.ctx.state.logged_checkpoints(), restored)
        if base is None:
            return RestoreChecked(restored, None)
        new = restored.keep
        if base.size == 0:
            return RestoreChecked(restored, 0)  # every tree extends the empty one
        answer, sent = await self._ask(channel, base.size, new.size)
        if answer is None:
            held = self.held
            assert held is not None  # noqa: S101 - a restore is judged against a held one
            return self._no_answer(channel, base.size, new.size, held, new, sent=sent)
        return confirm_restore(restored, read_checkpoint(base.frame), answer.proof)

    async def ask(self, channel: str, old: int, new: int) -> transport.ConsistencyMsg | None:
        """The hub's answer to ``["consistency", old, new]``, or None (not connected, or
        no answer within ``[ledger] answer_timeout``). One question at a time."""
        answer, _ = await self._ask(channel, old, new)
        return answer

    async def _ask(
        self, channel: str, old: int, new: int
    ) -> tuple[transport.ConsistencyMsg | None, bool]:
        """(the answer or None, whether the question was sent)."""
        async with self._question:
            loop = asyncio.get_running_loop()
            self._asked, self._answer = (old, new), loop.create_future()
            try:
                payload = transport.encode(transport.ConsistencyAsk(old, new))
                if not await self.send(channel, payload):
                    return None, False
                async with asyncio.timeout(self.ctx.config.ledger.answer_timeout):
                    return await self._answer, True
            except TimeoutError:
                return None, True
            finally:
                self._asked, self._answer = None, None

    async def _apply(self, channel: str, decision: Decision) -> None:
        match decision:
            case Adopt(checkpoint):
                await self._adopt(checkpoint)
                log.warning(
                    "ledger.first_checkpoint",
                    channel=channel,
                    detail="no checkpoint held and none logged: this one is trusted on first "
                    "use; later ones must extend it",
                    **describe(checkpoint),
                )
                await self._cosign(channel, checkpoint)
            case Consistent(keep):
                held = self.held
                if held is None or keep.frame != held.frame:
                    await self._adopt(keep)
                    await self._cosign(channel, keep)
                    if held is not None:
                        await self._proven(channel, held, keep)
            case RestoreChecked():
                await self._restored(channel, decision)
            case Fork():
                await self.record_fork(decision, channel=channel)
            case Unproven():
                await self.record_unproven(decision, channel=channel)
            case Restored() | Same() | Ask():
                pass  # a Restored is acted on only once checked (RestoreChecked)

    async def _adopt(self, checkpoint: SignedCheckpoint, *, forget_above: int | None = -1) -> None:
        """Hold ``checkpoint``: state.db first (the file is restored from it), then the file.
        ``forget_above``: first drop logged checkpoints larger than it (None: all)."""
        state = self.ctx.state
        if forget_above is None or forget_above >= 0:
            await asyncio.to_thread(state.forget_logged, above=forget_above)
        await asyncio.to_thread(state.hold_checkpoint, logged(checkpoint))
        await asyncio.to_thread(self.files.save, checkpoint.frame)
        self.held = checkpoint
        await asyncio.to_thread(self.write_status)

    async def _proven(self, channel: str, held: SignedCheckpoint, keep: SignedCheckpoint) -> None:
        why = f"size {keep.size} proven to extend size {held.size}"
        closed = await asyncio.to_thread(
            self.ctx.state.clear_alarms, at=self.ctx.clock(), by="witness", why=why,
            kinds=("unproven",),
        )  # fmt: skip
        if closed:
            log.info("ledger.proven", channel=channel, closed=closed, size=keep.size, detail=why)
            await asyncio.to_thread(self.write_status)

    async def _cosign(
        self, channel: str, checkpoint: SignedCheckpoint, *, always: bool = False
    ) -> None:
        settings = self.ctx.config.ledger
        if not settings.cosign or self._cosigned == checkpoint.size:
            return
        now = self.ctx.clock()
        last = self._cosigned_at
        if not always and last is not None and now - last < settings.cosign_every * 1000:
            return
        gate = self.ctx.gate()
        if not isinstance(gate, Ready):
            return  # fail closed: the spoke signs nothing while it may not send
        sig = cosign(checkpoint, gate.signer)
        message = transport.CosignMsg(checkpoint.size, gate.signer.kid, sig)
        if await self.send(channel, transport.encode(message)):
            self._cosigned, self._cosigned_at = checkpoint.size, now

    async def _restored(self, channel: str, checked: RestoreChecked) -> None:
        restored = checked.restored
        old = self.held
        assert old is not None  # noqa: S101 - a restore is judged against a held one
        now = self.ctx.clock()
        kept = await asyncio.to_thread(
            self.files.keep, "restored", f"{stamp(now)}-{old.size}.ckpt", old.frame
        )
        reason = str(restored.entry.details().get("reason", ""))[:300]
        prefix = (
            "no checkpoint this spoke logged lies within the restored ledger: nothing to "
            "compare it with"
            if checked.since is None
            else f"the restored ledger was proven to keep the history up to size "
            f"{checked.since} that this spoke saw"
        )
        log.warning(
            "ledger.restored",
            channel=channel,
            lost_from=restored.lost_from,
            lost_to=restored.lost_to,
            entry_seq=restored.entry.seq,
            checked_from=checked.since,
            hub_reason=reason,
            kept=str(kept),
            detail=f"the hub declared that it restored its ledger: entries {restored.lost_from + 1}"
            f" to {restored.lost_to} are lost; {prefix}; the old checkpoint is kept as evidence",
        )
        alarm = _alarm(
            "restored", old, restored.keep, why=reason or "declared restore", folder=kept, at=now
        )
        alarm = dataclasses.replace(alarm, lost_from=restored.lost_from)
        await asyncio.to_thread(
            self.ctx.state.add_alarm, pair_digest(old.frame, restored.keep.frame), alarm
        )
        await self._adopt(restored.keep, forget_above=restored.lost_from)
        await self._cosign(channel, restored.keep, always=True)  # witnessed what was said

    async def record_fork(self, fork: Fork, *, channel: str | None) -> Path:
        """Log, keep both frames and why, record it for ``spoke status`` (once per pair)."""
        now = self.ctx.clock()
        fields = fork_fields(fork)
        pair = pair_digest(fork.held.frame, fork.new.frame)
        known = self.ctx.state.alarm_folder(pair)
        if known is not None:
            return Path(known)
        for alarm in self.ctx.state.alarms(kind="fork", open_only=True):
            if (alarm.held_size, alarm.held_root) == (fork.held.size, fork.held.root):
                # the hub goes on with the history that forked: said again, kept once
                security.error(
                    "ledger.fork", channel=channel, folder=alarm.folder, repeat=True, **fields
                )
                return Path(alarm.folder)
        folder = await asyncio.to_thread(
            self.files.keep_pair,
            "forks",
            fork.held,
            fork.new,
            now,
            {**fields, "recorded_at": ms_to_text(now)},
        )
        alarm = _alarm("fork", fork.held, fork.new, why=fork.why, folder=folder, at=now)
        await asyncio.to_thread(self.ctx.state.add_alarm, pair, alarm)
        security.error("ledger.fork", channel=channel, folder=str(folder), **fields)
        await asyncio.to_thread(self.write_status)
        return folder

    async def record_unproven(self, unproven: Unproven, *, channel: str | None) -> None:
        """An open alarm until a later checkpoint is proven to extend the held one."""
        held, new = unproven.held, unproven.new
        fields = {"held_size": held.size, "new_size": new.size, "why": unproven.why}
        pair = pair_digest(held.frame, new.frame)
        if self.ctx.state.alarm_folder(pair) is not None:
            return
        for alarm in self.ctx.state.alarms(kind="unproven", open_only=True):
            if (alarm.held_size, alarm.held_root) == (held.size, held.root):
                log.error("ledger.unproven", channel=channel, repeat=True, **fields)
                return
        now = self.ctx.clock()
        folder = await asyncio.to_thread(
            self.files.keep_pair,
            "unproven",
            held,
            new,
            now,
            {**fields, "recorded_at": ms_to_text(now)},
        )
        alarm = _alarm("unproven", held, new, why=unproven.why, folder=folder, at=now)
        await asyncio.to_thread(self.ctx.state.add_alarm, pair, alarm)
        log.error(
            "ledger.unproven",
            channel=channel,
            folder=str(folder),
            detail=f"the hub did not prove that size {max(held.size, new.size)} extends size "
            f"{min(held.size, new.size)}: the new checkpoint is not adopted; the alarm stays "
            "until a later checkpoint is proven to extend the held one",
            **fields,
        )
        await asyncio.to_thread(self.write_status)

    # ------------------------------------------------------------------ operator actions

    async def reset(self, *, by: str, why: str) -> SignedCheckpoint | None:
        """``spoke witness reset --accept-current``: close the open alarms (forks, restores,
        unproven) and hold the newest checkpoint the hub showed (or, if none came yet, the
        next one). The checkpoint log starts again from it."""
        async with self._judging:
            now = self.ctx.clock()
            state = self.ctx.state
            cleared = await asyncio.to_thread(state.clear_alarms, at=now, by=by, why=why)
            old = self.held
            if old is not None:
                await asyncio.to_thread(
                    self.files.keep, "reset", f"{stamp(now)}-{old.size}.ckpt", old.frame
                )
            adopted = self.latest
            if adopted is not None:
                await self._adopt(adopted, forget_above=None)
            else:
                await asyncio.to_thread(state.forget_logged, above=None)
                await asyncio.to_thread(state.hold_checkpoint, None)
                await asyncio.to_thread(self.files.held.unlink, missing_ok=True)
                self.held = None
            security.warning(
                "ledger.reset",
                by=by,
                why=why[:500],
                alarms_cleared=cleared,
                previous_size=None if old is None else old.size,
                adopted_size=None if adopted is None else adopted.size,
            )
            await asyncio.to_thread(self.write_status)
            return adopted

    def write_status(self) -> None:
        """``.spoke/ledger/witness.json``: what a monitoring system reads."""
        alarms = self.ctx.state.alarms()

        def count(kind: str) -> tuple[int, list[LedgerAlarm]]:
            of_kind = [a for a in alarms if a.kind == kind]
            return len(of_kind), [a for a in of_kind if a.cleared_at is None]

        forks, open_forks = count("fork")
        restores, open_restores = count("restored")
        unproven, open_unproven = count("unproven")
        self.files.write_status(
            {
                "held": None if self.held is None else describe(self.held),
                "forks_total": forks,
                "forks_open": len(open_forks),
                "restores_total": restores,
                "restores_open": len(open_restores),
                "unproven_total": unproven,
                "unproven_open": len(open_unproven),
                "open_forks": [
                    {"folder": a.folder, "at": ms_to_text(a.at), "why": a.why} for a in open_forks
                ],
                "updated_at": ms_to_text(self.ctx.clock(), precise=True),
            }
        )


def _alarm(
    kind: str, held: SignedCheckpoint, new: SignedCheckpoint, *, why: str, folder: Path, at: int
) -> LedgerAlarm:
    return LedgerAlarm(
        kind, at, held.size, held.root, held.at, new.size, new.root, new.at, why, str(folder)
    )
