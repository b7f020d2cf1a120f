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
``ledger.restored`` entry is accepted, logged, and the old checkpoint kept.

:func:`decide` and :func:`conclude` are the pure decisions; :class:`Witness` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from schemas import transport
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import PeerError, Reason, SignatureError
from schemas.ledger import (
    Consistent,
    Entry,
    Fork,
    Judgement,
    Restored,
    RestoreProof,
    SignedCheckpoint,
    cosign,
    judge,
    read_checkpoint,
    unpack_path,
    verify_checkpoint,
)
from schemas.localfs import atomic_write
from spoke.context import SpokeContext
from spoke.keyring import Ready
from spoke.state import LedgerAlarm

log = structlog.get_logger("spoke.witness")
security = structlog.get_logger("spoke.security")

# ================================================================ decisions (pure)


@dataclass(frozen=True, slots=True)
class Adopt:
    """The first checkpoint this spoke ever sees: trusted on first use."""

    checkpoint: SignedCheckpoint


@dataclass(frozen=True, slots=True)
class Same:
    """Nothing new (the retained copy again, or the same checkpoint on another channel)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the hub for a consistency proof between ``old`` and ``new`` (old <= new)."""

    old: int
    new: int
    fallback: Fork | None = None  # the verdict if the hub does not answer


Decision = Adopt | Same | Ask | Consistent | Restored | Fork


def verify(frame: bytes, directory: Directory) -> SignedCheckpoint:
    """A checkpoint frame signed by this directory's hub with a key valid when signed."""
    unverified = read_checkpoint(frame)
    if unverified.checkpoint.hub_id != directory.hub_id:
        raise SignatureError(
            Reason.LEDGER_BAD_SIGNATURE,
            f"a checkpoint of hub {unverified.checkpoint.hub_id}, not of {directory.hub_id} "
            "whose directory this spoke holds",
        )
    public = directory.signing_key(directory.hub_id, unverified.kid, unverified.at)
    return verify_checkpoint(frame, public)


def decide(
    held: SignedCheckpoint | None, new: SignedCheckpoint, prev_size: int, proof: bytes
) -> Decision:
    """What to do with a verified checkpoint that came as ``["ckpt", frame, prev, proof]``.

    A fork found with the attached proof is not final yet: the hub is asked, since its
    answer may carry a signed restore statement that explains the break."""
    if held is None:
        return Adopt(new)
    if new.frame == held.frame or (
        new.size == held.size and new.root == held.root and new.at <= held.at
    ):
        return Same()
    ask = Ask(min(held.size, new.size), max(held.size, new.size))
    if prev_size != held.size or new.size < held.size:
        return ask
    try:
        path = unpack_path(proof)
    except PeerError:
        return ask
    verdict = judge(held, new, path)
    return Ask(ask.old, ask.new, verdict) if isinstance(verdict, Fork) else verdict


def conclude(
    held: SignedCheckpoint, new: SignedCheckpoint, answer: transport.ConsistencyMsg
) -> Judgement:
    """The verdict on ``new`` given the hub's answer to ``Ask`` (proof and restore entry)."""
    proof: list[bytes] | None = None
    if answer.proof is not None:
        with contextlib.suppress(PeerError):
            proof = unpack_path(answer.proof)
    restore: RestoreProof | None = None
    if answer.restore_leaf is not None and answer.restore_path is not None:
        with contextlib.suppress(PeerError):
            restore = RestoreProof(
                Entry.from_leaf(answer.restore_leaf), unpack_path(answer.restore_path)
            )
    return judge(held, new, proof, restore)


def answers(ask: Ask, answer: transport.ConsistencyMsg) -> bool:
    return (answer.old, answer.new) == (ask.old, ask.new)


def fork_fields(fork: Fork) -> dict[str, Any]:
    """What ``ledger.fork`` logs and ``why.json`` keeps (sizes, roots in hex, times)."""
    held, new = fork.held.checkpoint, fork.new.checkpoint
    return {
        "hub_id": held.hub_id,
        "held_size": held.size,
        "held_root": held.root.hex(),
        "held_at": ms_to_text(held.at, precise=True),
        "new_size": new.size,
        "new_root": new.root.hex(),
        "new_at": ms_to_text(new.at, precise=True),
        "why": fork.why,
    }


def pair_digest(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(a).digest() + hashlib.sha256(b).digest()).digest()


def stamp(ms: int) -> str:
    """A time as a file name part: 20261125T154247123Z."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f"{ms % 1000:03d}Z"


# ================================================================ files


class WitnessFiles:
    """``.spoke/ledger/``: checkpoint.ckpt, restored/, forks/, reset/, witness.json."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.held = folder / "checkpoint.ckpt"
        self.status = folder / "witness.json"

    def load(self) -> bytes | None:
        try:
            return self.held.read_bytes()
        except FileNotFoundError:
            return None

    def save(self, frame: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.held, frame, mode=0o644)

    def keep(self, sub: str, name: str, frame: bytes) -> Path:
        path = self.folder / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, frame, mode=0o644)
        return path

    def keep_fork(self, fork: Fork, at: int, why: dict[str, Any]) -> Path:
        name = f"{stamp(at)}-{pair_digest(fork.held.frame, fork.new.frame).hex()[:8]}"
        folder = self.folder / "forks" / name
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "held.ckpt", fork.held.frame, mode=0o644)
        atomic_write(folder / "new.ckpt", fork.new.frame, mode=0o644)
        text = json.dumps(why, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        atomic_write(folder / "why.json", text.encode(), mode=0o644)
        return folder

    def write_status(self, doc: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        atomic_write(self.status, text.encode(), mode=0o644)


def fork_sentence(alarm: LedgerAlarm) -> str:
    """The first line of ``spoke status`` while a fork is open (one line, both languages)."""
    return (
        f"账本分叉 / LEDGER FORK: 枢纽签发了两个互相矛盾的账本检查点（持有 {alarm.held_size}，"
        f"新 {alarm.new_size}），请告知枢纽运维人员和本单位安全保密负责人并保留文件夹 "
        f"{alarm.folder} / the hub signed two checkpoints that cannot both be true (held size "
        f"{alarm.held_size}, new size {alarm.new_size}, {ms_to_text(alarm.at)}): tell the hub "
        "operator and your security officer, keep that folder; once they have settled it, "
        "run 'spoke witness reset --accept-current'"
    )


def describe(signed: SignedCheckpoint) -> dict[str, Any]:
    return {
        "size": signed.size,
        "root": signed.root.hex(),
        "at": ms_to_text(signed.at, precise=True),
        "kid": signed.kid,
    }


# ================================================================ the witness (I/O)

Send = Callable[[str, bytes], Awaitable[bool]]  # (channel, payload) on our up topic


@dataclass(frozen=True, slots=True)
class Pending:
    channel: str
    message: transport.CheckpointMsg


class Witness:
    """One hub's checkpoints, judged one at a time by :meth:`run`."""

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
        self._cosigned: int | None = None
        self._cosigned_at: int | None = None  # when (ms): cosign_every spaces them

    def load(self) -> None:
        """The held checkpoint, as saved; a file that no longer reads is set aside."""
        frame = self.files.load()
        if frame is None:
            return
        try:
            self.held = read_checkpoint(frame)  # verified when saved; keys may have rotated
        except PeerError as exc:
            log.error("ledger.checkpoint_refused", reason=exc.reason.value, detail=exc.message)
            self.files.keep("unreadable", f"{stamp(self.ctx.clock())}.ckpt", frame)
            self.files.held.unlink(missing_ok=True)

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
        decision = decide(self.held, new, pending.message.prev_size, pending.message.proof)
        if isinstance(decision, Ask):
            await self._settle(pending.channel, decision, new)
        else:
            await self._apply(pending.channel, decision)

    async def _settle(self, channel: str, ask: Ask, new: SignedCheckpoint) -> None:
        held = self.held
        assert held is not None  # noqa: S101 - decide() asks only when one is held
        answer = await self.ask(channel, ask.old, ask.new)
        if answer is not None:
            await self._apply(channel, conclude(held, new, answer))
        elif ask.fallback is not None:
            await self._apply(channel, ask.fallback)
        else:
            log.warning(
                "ledger.no_answer",
                channel=channel,
                old=ask.old,
                new=ask.new,
                detail="the hub did not answer a consistency question; the next checkpoint "
                "asks again",
            )

    async def ask(self, channel: str, old: int, new: int) -> transport.ConsistencyMsg | None:
        """The hub's answer to ``["consistency", old, new]``, or None (not connected, or
        no answer within ``[ledger] answer_timeout``). One question at a time."""
        async with self._question:
            loop = asyncio.get_running_loop()
            self._asked, self._answer = (old, new), loop.create_future()
            try:
                payload = transport.encode(transport.ConsistencyAsk(old, new))
                if not await self.send(channel, payload):
                    return None
                async with asyncio.timeout(self.ctx.config.ledger.answer_timeout):
                    return await self._answer
            except TimeoutError:
                return None
            finally:
                self._asked, self._answer = None, None

    async def _apply(self, channel: str, decision: Decision) -> None:
        match decision:
            case Adopt(checkpoint):
                await self._adopt(checkpoint)
                log.info("ledger.first_checkpoint", channel=channel, **describe(checkpoint))
                await self._cosign(channel, checkpoint)
            case Consistent(keep):
                if self.held is None or keep.frame != self.held.frame:
                    await self._adopt(keep)
                    await self._cosign(channel, keep)
            case Restored():
                await self._restored(channel, decision)
            case Fork():
                await self.record_fork(decision, channel=channel)
            case Same() | Ask():
                pass

    async def _adopt(self, checkpoint: SignedCheckpoint) -> None:
        await asyncio.to_thread(self.files.save, checkpoint.frame)
        self.held = checkpoint
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

    async def _restored(self, channel: str, restored: Restored) -> None:
        old = self.held
        assert old is not None  # noqa: S101 - a restore is judged against a held one
        now = self.ctx.clock()
        kept = await asyncio.to_thread(
            self.files.keep, "restored", f"{stamp(now)}-{old.size}.ckpt", old.frame
        )
        reason = str(restored.entry.details().get("reason", ""))[:300]
        log.warning(
            "ledger.restored",
            channel=channel,
            lost_from=restored.lost_from,
            lost_to=restored.lost_to,
            entry_seq=restored.entry.seq,
            hub_reason=reason,
            kept=str(kept),
            detail=f"the hub declared that it restored its ledger: entries {restored.lost_from + 1}"
            f" to {restored.lost_to} are lost; the old checkpoint is kept as evidence",
        )
        alarm = _alarm(
            "restored", old, restored.keep, why=reason or "declared restore", folder=kept, at=now
        )
        await asyncio.to_thread(
            self.ctx.state.add_alarm, pair_digest(old.frame, restored.keep.frame), alarm
        )
        await self._adopt(restored.keep)
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
            self.files.keep_fork, fork, now, {**fields, "recorded_at": ms_to_text(now)}
        )
        alarm = _alarm("fork", fork.held, fork.new, why=fork.why, folder=folder, at=now)
        await asyncio.to_thread(self.ctx.state.add_alarm, pair, alarm)
        security.error("ledger.fork", channel=channel, folder=str(folder), **fields)
        await asyncio.to_thread(self.write_status)
        return folder

    # ------------------------------------------------------------------ operator actions

    async def reset(self, *, by: str, why: str) -> SignedCheckpoint | None:
        """``spoke witness reset --accept-current``: close the open forks and hold the
        newest checkpoint the hub showed (or, if none came yet, the next one)."""
        now = self.ctx.clock()
        cleared = await asyncio.to_thread(self.ctx.state.clear_forks, at=now, by=by, why=why)
        old = self.held
        if old is not None:
            await asyncio.to_thread(
                self.files.keep, "reset", f"{stamp(now)}-{old.size}.ckpt", old.frame
            )
        adopted = self.latest
        if adopted is not None:
            await asyncio.to_thread(self.files.save, adopted.frame)
        else:
            await asyncio.to_thread(self.files.held.unlink, missing_ok=True)
        self.held = adopted
        security.warning(
            "ledger.reset",
            by=by,
            why=why[:500],
            forks_cleared=cleared,
            previous_size=None if old is None else old.size,
            adopted_size=None if adopted is None else adopted.size,
        )
        await asyncio.to_thread(self.write_status)
        return adopted

    def write_status(self) -> None:
        """``.spoke/ledger/witness.json``: what a monitoring system reads."""
        state = self.ctx.state
        forks = state.alarms(kind="fork")
        open_forks = [a for a in forks if a.cleared_at is None]
        self.files.write_status(
            {
                "held": None if self.held is None else describe(self.held),
                "forks_total": len(forks),
                "forks_open": len(open_forks),
                "restores_total": len(state.alarms(kind="restored")),
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
