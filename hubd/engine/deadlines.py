"""The deadline desk: reminders (催办) for documents whose terms set deadlines, and the
emergency flow's alarm (hubd.core.deadlines decides; this carries it out).

Every round (at the next reminder due, at least every ``[deadlines] look_every``) it reads the
recipients of every document with an open deadline (``messages.terms_open``), asks
:func:`hubd.core.deadlines.decide` for each recipient and deadline, and for each reminder
due writes, in one commit: the reminder's count (``reminders``), a ``deadline.reminded``
ledger entry, and numbered hub-signed REMINDED receipts to the recipient (on its delivery
channel) and to the sender (on the channel the document came on), each saying which
deadline, when it was due and how late it is. A document none of whose recipients has
anything left to meet is closed (``terms_open`` false) and read no more.

A 应急 document at 特提 whose ``sign_by`` passed with recipients that have not signed for
it is an emergency left unacknowledged: ``emergency.unacknowledged`` (error) names them,
deliveries not yet made are published again at once, the sender hears REMINDED for each,
and the operator's command (``[emergency] command``) runs with a JSON description on its
standard input (the hook for an SMS or telephone gateway). A drill (演练) goes the same
way, marked as one in the log, the JSON and the receipts.

With replicas, only the leader runs the desk (one reminder, not one per replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection, insert, update
from sqlalchemy.exc import SQLAlchemyError

from hubd.config import Deadlines as DeadlineSettings
from hubd.core.deadlines import Kind, Quiet, Remind, Settings, Stage, Wait, decide, met
from hubd.engine.issuer import ReceiptIssuer
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.connections import store_error_text
from hubd.store.db import Store
from hubd.store.terms import Item, open_items
from hubd.store.writes import DirectWrite, Operation, QueueReceipts
from schemas.clock import ms_to_text
from schemas.errors import XchgError
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus

log = structlog.get_logger("hubd.deadlines")

HOOK_TIMEOUT_S = 30.0
_RANKS = {c.rank: c for c in Classification}


@dataclass(slots=True)
class CountReminders(DirectWrite):
    """One more reminder for each (msg_id, recipient, kind), sent at ``at``."""

    items: list[tuple[bytes, str, str]]
    at: int
    audit: list[AuditEvent] = field(default_factory=list)

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        r = t.reminders.c
        for msg_id, recipient, kind in self.items:
            changed = conn.execute(
                update(t.reminders)
                .where(r.msg_id == msg_id, r.recipient == recipient, r.kind == kind)
                .values(count=r.count + 1, last_at=self.at)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(t.reminders).values(
                        msg_id=msg_id, recipient=recipient, kind=kind, count=1, last_at=self.at
                    )
                )
        return None, self.audit


@dataclass(slots=True)
class CloseTerms(DirectWrite):
    """Documents with nothing left to remind: read no more."""

    msg_ids: list[bytes]

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        m = t.messages.c
        conn.execute(update(t.messages).where(m.msg_id.in_(self.msg_ids)).values(terms_open=False))
        return None, []


class DeadlineDesk:
    def __init__(
        self,
        store: Store,
        issuer: ReceiptIssuer,
        settings: DeadlineSettings,
        clock: Callable[[], int],
        *,
        hurry: Callable[[bytes, Sequence[str]], int] | None = None,
        names: Callable[[str], str] = str,
    ) -> None:
        self._store, self._issuer, self._clock = store, issuer, clock
        self._config = settings
        self._settings = Settings(
            remind_before_ms=int(settings.remind_before * 1000),
            repeat_every_ms=int(settings.repeat_every * 1000),
            emergency_repeat_ms=int(settings.emergency_repeat * 1000),
            max_overdue=settings.max_overdue,
        )
        self._hurry = hurry  # the dispatcher: publish these deliveries again now
        self.names = names  # an organisation's name, for the emergency command
        self._hooks: set[asyncio.Task[None]] = set()
        self._running: dict[bytes, asyncio.Task[None]] = {}  # the command, per notice
        self.leading: Callable[[], bool] | None = None  # replicas: only the leader reminds
        self.overdue: dict[Kind, int] = dict.fromkeys(Kind, 0)  # for /metrics
        self.unacknowledged = 0  # emergency recipients past sign_by, not signed for
        self.late: tuple[Item, ...] = ()  # past a deadline and not meeting it (status page)
        self.reminded = 0  # reminders sent since start

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                wait = self._config.look_every
                if self.leading is None or self.leading():
                    try:
                        wait = await self.round()
                    except (XchgError, OSError, SQLAlchemyError) as exc:
                        log.warning("deadlines.round_failed", error=store_error_text(exc))
                else:  # another replica reminds: what this one last saw is not current
                    self.overdue, self.late, self.unacknowledged = dict.fromkeys(Kind, 0), (), 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.2)):
                        await stop.wait()
        finally:
            await self.hooks_done()

    def _ran(self, msg_id: bytes, _done: asyncio.Task[None]) -> None:
        self._running.pop(msg_id, None)

    async def hooks_done(self) -> None:
        """Wait for the emergency commands still running (each is bounded by its timeout)."""
        if self._hooks:
            await asyncio.gather(*self._hooks, return_exceptions=True)

    async def round(self) -> float:
        """Send what is due; the seconds until the next thing may be."""
        now = self._clock()
        items = await self._store.read_sync(open_items)
        due: list[tuple[Item, Stage]] = []
        reminding: set[bytes] = set()  # documents with a reminder still to come
        next_at: int | None = None
        late = [i for i in items if _late(i, now)]
        overdue: dict[Kind, int] = dict.fromkeys(Kind, 0)
        for item in late:
            overdue[item.open.kind] += 1
        hop = self._issuer.hop
        for item in items:
            if hop(item.recipient) != item.recipient:
                continue  # behind another hub: reminded by the hub that delivers to it
            decision = decide(item.open, now, self._settings)
            if not isinstance(decision, Quiet):
                reminding.add(item.msg_id)
            if isinstance(decision, Remind):
                due.append((item, decision.stage))
            elif isinstance(decision, Wait):
                next_at = decision.until if next_at is None else min(next_at, decision.until)
        self.overdue = overdue
        self.late = tuple(sorted(late, key=lambda i: i.open.due_at))
        self.unacknowledged = sum(1 for i in late if i.open.emergency and i.open.kind is Kind.SIGN)
        if due:
            await self._remind(due, now)
            await self._alarm([(i, s) for i, s in due if i.open.emergency], items, now)
        # every deadline met (or recalled, or expired), or reminded the most it will be:
        # read no more ('hubctl overdue' still lists what is late)
        closed = sorted({i.msg_id for i in items} - reminding)
        if closed:
            await self._store.submit(CloseTerms(closed))
        most = self._config.look_every
        if next_at is None:
            return most
        return min(max((next_at - self._clock()) / 1000, 0.0), most)

    async def _remind(self, due: list[tuple[Item, Stage]], now: int) -> None:
        to: dict[tuple[str, str], list[ReceiptEntry]] = defaultdict(list)
        counted: list[tuple[bytes, str, str]] = []
        audit: list[AuditEvent] = []
        for item, stage in due:
            entry = _reminder(item, stage, now)
            to[(item.recipient, item.channel)].append(entry)
            to[(self._issuer.hop(item.sender), item.origin)].append(entry)  # or its hub
            counted.append((item.msg_id, item.recipient, item.open.kind.value))
            audit.append(
                AuditEvent(
                    "deadline.reminded",
                    now,
                    item.msg_id,
                    item.recipient,
                    {
                        "kind": item.open.kind.value,
                        "stage": stage.value,
                        "due_at": item.open.due_at,
                    },
                )
            )
        frames = [
            (dest, channel, frame)
            for (dest, channel), entries in to.items()
            for frame in self._issuer.sign(entries)
        ]
        ops: list[Operation] = [CountReminders(counted, now, audit)]
        ops += [QueueReceipts(dest, channel, frame, now) for dest, channel, frame in frames]
        results = await self._store.submit_many(ops)
        for (dest, channel, frame), seq in zip(frames, results[1:], strict=True):
            self._issuer.send_numbered(dest, channel, frame, seq)
        self.reminded += len(due)
        for item, stage in due:
            log.info(
                "deadline.reminded",
                msg_id=msg_id_text(item.msg_id),
                recipient=item.recipient,
                sender=item.sender,
                kind=item.open.kind.value,
                stage=stage.value,
                due_at=ms_to_text(item.open.due_at),
                drill=item.drill or None,
            )

    async def _alarm(
        self, reminded: list[tuple[Item, Stage]], items: Sequence[Item], now: int
    ) -> None:
        """An emergency's sign_by passed (or passed again) with recipients not signed for:
        say who, publish again what is not delivered, run the operator's command."""
        due_now = {
            i.msg_id
            for i, stage in reminded
            if i.open.kind is Kind.SIGN and stage is not Stage.BEFORE
        }
        for msg_id in sorted(due_now):
            late = [
                i
                for i in items
                if i.msg_id == msg_id and i.open.kind is Kind.SIGN and _late(i, now)
            ]
            if not late:
                continue
            first = late[0]
            log.error(
                "emergency.unacknowledged",
                msg_id=msg_id_text(msg_id),
                sender=first.sender,
                sign_by=ms_to_text(first.open.due_at),
                unacknowledged=[i.recipient for i in late],
                drill=first.drill,
            )
            undelivered = [i.recipient for i in late if i.open.state.awaiting]
            if undelivered and self._hurry is not None:
                self._hurry(msg_id, undelivered)
            command = self._config.emergency_command
            running = self._running.get(msg_id)
            if command and (running is None or running.done()):  # one at a time per notice
                description = hook_description(late, self.names, now)
                task = asyncio.get_running_loop().create_task(run_hook(command, description))
                self._hooks.add(task)
                self._running[msg_id] = task
                task.add_done_callback(self._hooks.discard)
                task.add_done_callback(functools.partial(self._ran, msg_id))


def _late(item: Item, now: int) -> bool:
    """Past its deadline and not met."""
    o = item.open
    return o.due_at <= now and not met(o.kind, o.state, o.handling)


def _reminder(item: Item, stage: Stage, now: int) -> ReceiptEntry:
    kind, due_at = item.open.kind, item.open.due_at
    when = ms_to_text(due_at)
    if stage is Stage.BEFORE:
        zh = f"{kind.zh}时限 {when} 将到，请及时{kind.zh}"
        en = f"the {kind.value} deadline {when} is near: please {_verb(kind)}"
    else:
        late = max(now - due_at, 0) // 60_000
        zh = f"{kind.zh}时限 {when} 已过（逾期 {late} 分钟），请尽快{kind.zh}"
        en = f"the {kind.value} deadline {when} has passed ({late} min ago): please {_verb(kind)}"
    drill = "【演练】" if item.drill else ""
    return ReceiptEntry(
        msg_id=item.msg_id,
        recipient=item.recipient,
        status=ReceiptStatus.REMINDED,
        at=now,
        subject=item.subject,
        classification=item.classification,
        reason=f"deadline.{kind.value}",
        detail=f"{drill}催办：{zh} / {'[drill] ' if item.drill else ''}reminder: {en}",
        retriable=False,
    )


def _verb(kind: Kind) -> str:
    return {
        Kind.SIGN: "sign for it (签收)",
        Kind.ACCEPT: "decide whether to accept the petition (受理)",
        Kind.DONE: "report it handled (办结)",
    }[kind]


def hook_description(
    items: Sequence[Item], names: Callable[[str], str], now: int
) -> dict[str, Any]:
    """The JSON the emergency command reads on its standard input."""
    first = items[0]
    return {
        "event": "emergency.unacknowledged",
        "drill": first.drill,
        "msg_id": msg_id_text(first.msg_id),
        "sender": first.sender,
        "sign_by": ms_to_text(first.open.due_at),
        "at": ms_to_text(now),
        "unacknowledged": [
            {"org": i.recipient, "name": names(i.recipient), "state": i.open.state.value}
            for i in items
        ],
    }


async def run_hook(command: Sequence[str], description: dict[str, Any]) -> None:
    """The operator's command, with ``description`` as JSON on its standard input, in a
    session of its own (killed whole past :data:`HOOK_TIMEOUT_S`), with a minimal
    environment; its exit code is logged, its output is not read."""
    data = json.dumps(description, ensure_ascii=False).encode()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        log.error("emergency.hook_failed", command=command[0], error=str(exc))
        return
    try:
        async with asyncio.timeout(HOOK_TIMEOUT_S):
            await process.communicate(data)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        ended = f"no end in {HOOK_TIMEOUT_S:g} s: killed"
        log.error("emergency.hook_failed", command=command[0], error=ended)
        return
    if process.returncode:
        log.error("emergency.hook_failed", command=command[0], exit_code=process.returncode)
    else:
        log.info("emergency.hook_ran", command=command[0], msg_id=description["msg_id"])
