"""Hubs under hubs: what a hub makes of an envelope another hub relays, and who of its
recipients is this hop's to carry (docs/architecture.md, "Hubs under hubs"). Pure.

An envelope comes to a hub from its sender's own spoke (``peer`` None: the topic's owner is
the sender, as always) or from a neighbour hub (``peer``: the hub whose link it came on — a
member at the national hub, the upstream at a member). Before anything else the hub checks
that the neighbour may relay it: its membership key is listed, not revoked and in its
window, and the sender is an organisation the neighbour serves (a province cannot send as
an organisation outside its prefix). An outside organisation never sends as if it were a
spoke of this hub: its documents come through the hub it is reached through.

Then the hop's recipients: those not behind the neighbour it came from (a document from
cn.gov to jl.gov and ln.gov reaches Jilin's hub for jl.gov only: ln.gov's copy went from
the national hub to Liaoning's). Each of them goes on to its next hop: its own spoke, or
the neighbour hub it is reached through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from hubd.core.states import Event
from schemas.clock import ms_to_text
from schemas.directory import Directory, HubRole
from schemas.errors import Reason
from schemas.receipts import ReceiptEntry, ReceiptStatus


@dataclass(frozen=True, slots=True)
class Wrong:
    """The relay is refused: ``reason`` and a sentence naming the values compared."""

    reason: Reason
    detail: str


def judge_arrival(sender: str, peer: str | None, directory: Directory, now: int) -> Wrong | None:
    """May an envelope from ``sender`` come to this hub the way it came (``peer``: the
    neighbour hub it was relayed by; None: the sender's own spoke)?"""
    org = directory.org(sender)
    if peer is None:
        if org is not None and org.via is not None:
            return Wrong(
                Reason.FED_WRONG_HOP,
                f"{sender} is reached through hub {org.via} in directory version "
                f"{directory.version}; its documents come through that hub, not as a spoke "
                "of this one",
            )
        return None
    hub = directory.hub(peer)
    if hub is None or hub.role is HubRole.REMOTE:
        return Wrong(
            Reason.FED_OUTSIDE_PREFIX,
            f"{peer} is not a neighbour hub in directory version {directory.version}; "
            "the hub operator must list it before it relays anything",
        )
    live = [
        k for k in hub.keys if not directory.is_revoked(k.kid) and k.not_before <= now < k.not_after
    ]
    if not live:
        return Wrong(
            Reason.FED_MEMBERSHIP,
            f"hub {peer} holds no membership key that is unrevoked and valid at "
            f"{ms_to_text(now)} in directory version {directory.version} (keys: "
            f"{', '.join(k.kid for k in hub.keys) or 'none'}); nothing it relays is taken "
            "until a directory lists its new key",
        )
    if org is None or org.via != peer:
        served = ", ".join(hub.prefixes) if hub.prefixes else "the organisations outside this hub"
        return Wrong(
            Reason.FED_OUTSIDE_PREFIX,
            f"hub {peer} relayed a document from {sender}, which it does not serve "
            f"(it serves {served}); a hub relays only what its own organisations send",
        )
    return None


def onward(recipients: Sequence[str], peer: str | None, directory: Directory) -> tuple[str, ...]:
    """The recipients this hop carries: all of them, but those behind the neighbour the
    envelope came from."""
    return tuple(r for r in recipients if directory.carries(r, peer))


def loop_refusal(peer: str, count: int) -> Wrong:
    """Every recipient is behind the hub the envelope came from: sending it back is a loop."""
    return Wrong(
        Reason.FED_LOOP,
        f"all {count} recipients are reached through hub {peer}, which relayed it here; "
        "the directories of the two hubs disagree about who serves them",
    )


# ------------------------------------------------------------------ answers from hubs


FORWARDED: Final = frozenset(
    {ReceiptStatus.REJECTED, ReceiptStatus.EXPIRED, ReceiptStatus.DEAD, ReceiptStatus.RECALLED}
)  # what a hub's answer tells the document's sender too; an ACCEPTED stays between the hubs


def hop_event(status: ReceiptStatus) -> Event | None:
    """What another hub's signed statement does to the deliveries it speaks of."""
    return {
        ReceiptStatus.ACCEPTED: Event.RELAY,  # it took the document over
        ReceiptStatus.REJECTED: Event.REFUSE,
        ReceiptStatus.EXPIRED: Event.EXPIRE,  # a far hub's outcome for one recipient
        ReceiptStatus.DEAD: Event.GIVE_UP,
        ReceiptStatus.RECALLED: Event.RECALL,  # a far hub stopped it before its recipient had it
    }.get(status)


@dataclass(frozen=True, slots=True)
class HopMove:
    """Record ``entry`` for the delivery of ``msg_id`` to ``recipient`` and move it by
    ``event``."""

    entry: ReceiptEntry
    msg_id: bytes
    recipient: str
    event: Event


@dataclass(frozen=True, slots=True)
class HopPlan:
    """What another hub's batch does here: the moves, and the refusals of a far hub (not
    this hop's neighbour) whose deliveries were handed over long ago, which the shell finds
    in the store."""

    moves: tuple[HopMove, ...]
    far: tuple[tuple[ReceiptEntry, bytes], ...]  # (REJECTED entry, msg_id)


def plan_hop_answers(
    entries: Sequence[ReceiptEntry],
    *,
    issuer: str,
    peer: str,
    mine: Callable[[str], bool],
    behind: Callable[[bytes], Sequence[str]],
    framed: Callable[[bytes], bytes | None] = lambda _subject: None,
) -> HopPlan:
    """The deliveries a hub's batch (signed by ``issuer``, relayed by the neighbour
    ``peer``) moves. Only what lies behind that hub: ``mine(recipient)`` says whether a
    recipient is reached through ``peer`` and, for a far issuer, behind the issuer too;
    anything else a hub signs about anyone else's deliveries is ignored (a member hub may
    not expire or hand over another province's, or this hub's own).

    - the neighbour's ACCEPTED of a document (no recipient: it answers for its whole hop)
      hands over every delivery of it still awaited here whose next hop is that hub
      (``behind``); its REJECTED refuses them, unless it says to try again later
      (retriable: the delivery waits and is published again at its next retry). A REJECTED
      of bytes it could not authenticate names no msg_id, only the frame's hash
      (``framed`` finds the document);
    - a far hub's REJECTED refuses the deliveries handed over long ago behind it (``far``);
    - an EXPIRED, DEAD or RECALLED names its recipient, whose delivery was handed over.
    """
    moves: list[HopMove] = []
    far: list[tuple[ReceiptEntry, bytes]] = []
    for entry in entries:
        event = hop_event(entry.status)
        msg_id = entry.msg_id
        whole = event in (Event.RELAY, Event.REFUSE)
        if event is None or (whole and (entry.recipient is not None or entry.retriable)):
            continue  # a hop's answer is about the whole document; a retriable one waits
        if event is Event.RELAY and issuer != peer:
            continue  # only the neighbour hands over what it received
        if msg_id is None and event is Event.REFUSE and issuer == peer:
            msg_id = framed(entry.subject)
        if msg_id is None:
            continue
        if event is Event.REFUSE and issuer != peer:
            far.append((entry, msg_id))
            continue
        if whole:
            recipients: Sequence[str] = behind(msg_id)
        elif entry.recipient is None:
            continue  # a recall as that hub answered it: its recipients' entries say more
        else:
            recipients = (entry.recipient,) if mine(entry.recipient) else ()
        moves.extend(HopMove(entry, msg_id, r, event) for r in recipients)
    return HopPlan(tuple(moves), tuple(far))
