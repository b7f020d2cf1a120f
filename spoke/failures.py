"""Drops that go wrong: each logged once, and ending in failed/ with its explanation.

No file and no name stops the agent. A blocking step of one drop that raises is logged
once (``drop.error``, with its traceback) however often it is tried again; a drop that the
spoke's checks or the hub refuse moves to ``failed/`` unchanged, with ``NAME.error.txt``
and ``NAME.error.json`` (:mod:`spoke.failed`), is recorded under its tracking id for
``spoke status`` and logged (``drop.failed``); a drop the spoke may not even move is
explained beside it, in the outbox, until something of it changes (``drop.stuck``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TypeVar

import structlog

from schemas.ids import msg_id_text, new_msg_id
from spoke.context import SpokeContext
from spoke.failed import Failed, FailedFolder
from spoke.files import shown_name
from spoke.outbox import Claimed, Orphan, Outbox, Unmovable
from spoke.refusals import Refusal, refuse
from spoke.state import FailedDrop

T = TypeVar("T")
log = structlog.get_logger("spoke.outbox")


class Failures:
    """What goes wrong with drops: the log, failed/, and the outbox's explanations."""

    def __init__(self, ctx: SpokeContext, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.folder = FailedFolder(ctx.config.folder("failed"))
        self._troubles: set[str] = set()  # drops whose own failure failed: logged once

    async def guard(self, name: str, step: Callable[[], T]) -> T | None:
        """Run one drop's blocking step in a worker thread; whatever it raises is logged
        once per drop (drop.error, with the traceback) and never stops the outbox (an
        Unmovable drop is the caller's to explain)."""
        try:
            return await asyncio.to_thread(step)
        except Unmovable:
            raise
        except Exception:
            if name not in self._troubles:
                self._troubles.add(name)
                log.exception("drop.error", name=shown_name(name))
            return None

    def settled(self, name: str) -> None:
        """The drop ``name`` went on (sealed, or failed): a new trouble of it is logged."""
        self._troubles.discard(name)

    def place(self, name: str) -> Failed:
        """Where in failed/ the drop ``name`` goes (blocking): decided once, so that a
        move cut half-way is finished there."""
        path = self.folder.place(name)
        return Failed(path, self.folder.error_stem(path.name))

    def fail(
        self,
        claimed: Claimed,
        refusal: Refusal,
        *,
        msg_id: bytes | None = None,
        placed: Failed | None = None,
    ) -> None:
        """Move a drop to failed/ unchanged (to ``placed``, where an earlier try began),
        with NAME.error.txt and NAME.error.json, under its tracking id (``msg_id``: the one
        the hub refused; else the claim's)."""
        by_hub = msg_id is not None
        tracked = msg_id or claimed.msg_id or new_msg_id()
        failed = self._take(claimed, placed)
        self._record(claimed.name, failed, refusal, tracked, by_hub=by_hub)
        with contextlib.suppress(OSError):
            claimed.work.rmdir()
        self.settled(claimed.name)

    def _take(self, claimed: Claimed, placed: Failed | None = None) -> Failed:
        """Move what is left of a claimed drop (the document, its metadata, its
        temporaries) into failed/, unchanged: to ``placed`` if given."""
        metas = [claimed.work / m for m in claimed.meta_names]
        extras = [claimed.work / n for n in claimed.beside]
        target = None if placed is None else placed.path
        return self.folder.take(claimed.payload, metas, claimed.name, extras, target=target)

    def _record(
        self, name: str, failed: Failed, refusal: Refusal, msg_id: bytes, *, by_hub: bool
    ) -> None:
        """Explain a drop now in failed/, remember it under its tracking id, log it."""
        at = self.ctx.clock()
        by = "hub" if by_hub else "spoke"
        self.folder.explain(failed, refusal, original=name, at=at, msg_id=msg_id, by=by)
        shown = shown_name(name), shown_name(failed.path.name)  # as status shows them
        self.ctx.state.add_failed(FailedDrop(msg_id, *shown, refusal.rule, by, at))
        log.warning(
            "drop.failed",
            name=shown_name(name),
            rule=refusal.rule,
            detail=refusal.loggable,  # never a 发文字号 or another value of the metadata
            msg_id=msg_id_text(msg_id),
            refused_by=by,
        )

    def explain_stuck(self, stuck: Unmovable) -> None:
        """The spoke may not move a drop: say so beside it, in the outbox (NAME.error.txt,
        .json; ignored there), and leave it until something of it changes."""
        refusal = refuse(
            "drop.cannot_move",
            {"document": shown_name(stuck.name), "error": stuck.error.strerror},
            document=shown_name(stuck.name),
            error=stuck.error.strerror or str(stuck.error),
        )
        beside = FailedFolder(self.outbox.folder)
        where = Failed(self.outbox.folder / stuck.name, beside.error_stem(stuck.name))
        beside.explain(where, refusal, original=stuck.name, at=self.ctx.clock())
        log.warning("drop.stuck", name=shown_name(stuck.name), detail=refusal.message)

    def forget_stuck(self, name: str) -> None:
        """A drop that could not be moved has been now: its explanation in the outbox goes."""
        beside = FailedFolder(self.outbox.folder)
        stem = beside.error_stem(name)
        machine = self.outbox.folder / f"{stem}.error.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(machine.read_text(encoding="utf-8"))["rule"] == "drop.cannot_move":
                machine.unlink()
                (self.outbox.folder / f"{stem}.error.txt").unlink(missing_ok=True)

    def fail_orphan(self, orphan: Orphan) -> None:
        """Something in the outbox that can never become a drop by itself: to failed/ with
        its reason, or explained where it is if it cannot be moved."""
        source = self.outbox.folder / orphan.name
        if not (source.exists() or source.is_symlink()):
            return  # taken away meanwhile: nothing to answer
        try:
            failed = self.folder.take(source, [], orphan.name)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                return
            self.outbox.mark_stuck(orphan.key)
            self.explain_stuck(Unmovable(orphan.name, exc))
            return
        self._record(orphan.name, failed, orphan.refusal, new_msg_id(), by_hub=False)
        self.settled(orphan.name)
