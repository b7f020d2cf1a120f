"""The operator's answers (:mod:`hubd.ops.query`) as text for a terminal.

Tables go through :func:`schemas.display.table`, so organisation names in Chinese line up.
Times are UTC; ages are counted from the moment the answer was taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hubd.core.states import MessageState
from hubd.ops.contact import BrokerState, SpokePresence
from hubd.ops.find import Findings, Found, Search
from hubd.ops.query import Delivery, Listing, Status
from hubd.ops.replicas import render_replicas
from hubd.ops.spokes import NeighbourHub, Spoke
from hubd.ops.waiting import Queue
from hubd.provision.directory import awaiting_lines
from schemas.clock import duration_text, ms_to_text
from schemas.display import size_text, table
from schemas.ids import msg_id_text
from schemas.labels import DocType, Precedence

URGENT_FIRST = sorted(Precedence, key=lambda p: -p.rank)


def duration(ms: int) -> str:
    """A short age: 42s, 4m12s, 3h05m, 2d04h (a time in the future counts as 0s)."""
    return duration_text(max(ms, 0))


size = size_text  # 900 B, 12.0 KiB, 320.0 MiB, 1.5 GiB


def attempts_text(count: object) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def _ago(at: int, now: int) -> str:
    return f"{ms_to_text(at)} ({duration(now - at)} ago)"


# ------------------------------------------------------------------ status


def render_status(s: Status) -> str:
    lines = [f"as of      {ms_to_text(s.at)}"]
    store = s.store
    where = f"{store.kind} {store.where}: {size(store.bytes)}"
    if store.wal_bytes:
        where += f", write-ahead log {size(store.wal_bytes)}"
    if store.spool_bytes is not None:
        where += f"; spool (large bodies) {size(store.spool_bytes)}"
    lines.append(f"store      {where}")
    lines.append(f"directory  {_directory_line(s)}")
    if s.directory.directory is not None:
        awaiting = s.directory.directory.awaiting_own_keys()
        lines += [f"           {line}" for line in awaiting_lines(awaiting)]
    if s.hub is not None:
        lines.append(f"hub        {_hub_line(s)}")
        lines += [
            f"upstream   {b.upstream}, {_broker_line(b)}"
            if b.upstream is not None
            else f"broker     {_broker_line(b)}"
            for b in s.hub.brokers
        ]
    lines.append("")
    lines += _delivery_lines(s)
    if s.pending:
        lines += ["", "pending by recipient and precedence (sent: published, not yet confirmed):"]
        lines.append(_pending_table(s))
    lines += render_replicas(s.replicas)  # nothing for a lone hub
    if s.hubs:
        lines += ["", "hubs (hubs under hubs: the links to the other level):"]
        lines.append(_hubs_table(s.hubs, s.at))
    if s.spokes:
        lines += ["", "spokes:", _spokes_table(s.spokes, s.at)]
    elif s.directory.directory is None:
        lines += ["", "spokes: not listed, the directory cannot be used (above)"]
    if s.presence_note is not None:
        lines += ["", f"presence unknown: {s.presence_note}."]
    lines += ["", *_warning_lines(s)]
    return "\n".join(lines) + "\n"


def _hub_line(s: Status) -> str:
    hub = s.hub
    assert hub is not None  # noqa: S101 - only called with one
    if hub.answered:
        return f"running, answered on {hub.socket} (presence below is the hub's own)"
    if hub.socket is None:
        return "not asked: the admin socket is turned off; everything below is from the store"
    return f"did not answer on {hub.socket}: {hub.problem}; everything below is from the store"


def _broker_line(b: BrokerState) -> str:
    """One broker connection of the running hub: the node it is on, of how many."""
    nodes = b.broker.split(",")
    channels = f"channels {', '.join(b.channels)}"
    if b.node is None and b.upstream is not None:
        return (
            f"{channels}: not connected to {' or '.join(nodes)}; documents to and from the "
            "hub above wait here until it is back (uplink.lost in the log)"
        )
    if b.node is None:
        return (
            f"{channels}: not connected to {' or '.join(nodes)}; the hub keeps trying "
            "(broker.unreachable in its log)"
        )
    if len(nodes) > 1 and b.node in nodes:
        return f"{channels}: on {b.node}, node {nodes.index(b.node) + 1} of {len(nodes)}"
    return f"{channels}: on {b.node}"


def _warning_lines(s: Status) -> list[str]:
    """Keys, certificates and the directory expiring, soonest first (schemas.expiry)."""
    found = s.warnings
    if not found.expiring and not found.unchecked:
        return ["warnings: none (nothing expires within the warning horizons)"]
    lines = [f"warnings ({len(found.expiring) + len(found.unchecked)}):"]
    lines += [f"  {'EXPIRED' if w.expired else 'expiring'}: {w.sentence()}" for w in found.expiring]
    lines += [f"  unchecked: {text}" for text in found.unchecked]
    return lines


def _directory_line(s: Status) -> str:
    info = s.directory
    d = info.directory
    if d is None:
        return f"{info.path} cannot be used: {info.problem}"
    text = f"v{d.version} of {d.hub_id}, issued {ms_to_text(d.issued_at)}, "
    if s.at >= d.expires_at:
        return text + (
            f"EXPIRED {duration(s.at - d.expires_at)} ago at {ms_to_text(d.expires_at)}: "
            "spokes refuse it; run 'hubctl directory build', then 'systemctl reload hubd'"
        )
    return text + f"expires {ms_to_text(d.expires_at)} (in {duration(d.expires_at - s.at)})"


def _delivery_lines(s: Status) -> list[str]:
    states = s.states
    total = s.pending_total
    sent = sum(g.sent for g in s.pending)
    lines = [
        f"deliveries pending: {total}"
        + (f" ({total - sent} not yet sent, {sent} sent and not yet confirmed)" if total else "")
    ]
    if s.oldest is not None:
        o = s.oldest
        lines.append(
            f"oldest pending: {msg_id_text(o.msg_id)} to {o.recipient} on {o.channel}, "
            f"{o.precedence}, {duration(s.at - o.created_at)} (since {ms_to_text(o.created_at)})"
        )
    lines.append(
        f"dead letters: {states['DEAD']} gave up, {states['EXPIRED']} expired"
        + (" ('hubctl dead' lists them)" if states["DEAD"] or states["EXPIRED"] else "")
    )
    done = states["DELIVERED"] + states["SIGNED_FOR"]
    lines.append(f"confirmed by their recipients: {done}")
    if states["RECALLED"]:
        lines.append(f"recalled by their senders before delivery (撤回): {states['RECALLED']}")
    return lines


def _pending_table(s: Status) -> str:
    cells: dict[tuple[str, str], dict[Precedence, int]] = {}
    sent: dict[tuple[str, str], int] = {}
    oldest: dict[tuple[str, str], int] = {}
    for g in s.pending:  # most urgent first: the rows keep that order
        key = (g.recipient, g.channel)
        cells.setdefault(key, {})[g.precedence] = g.count
        sent[key] = sent.get(key, 0) + g.sent
        oldest[key] = min(oldest.get(key, g.oldest_at), g.oldest_at)
    header = ("recipient", "channel", *(str(p) for p in URGENT_FIRST), "sent", "oldest")
    rows = [
        (
            recipient,
            channel,
            *(str(counts.get(p, "-")) for p in URGENT_FIRST),
            str(sent[(recipient, channel)]),
            duration(s.at - oldest[(recipient, channel)]),
        )
        for (recipient, channel), counts in cells.items()
    ]
    return table(header, rows)


def _presence(presence: Sequence[tuple[str, SpokePresence | None]], now: int) -> str:
    if all(p is None or p.online is None for _, p in presence):
        return "unknown"
    parts = []
    for channel, p in presence:
        if p is None or p.online is None:
            parts.append(f"{channel} unknown")
            continue
        state = "online" if p.online else "offline"
        since = "" if p.since is None else f" for {duration(now - p.since)}"
        parts.append(f"{channel} {state}{since}")
    return ", ".join(parts)


def _spokes_table(spokes: Sequence[Spoke], now: int) -> str:
    rows = [
        (
            f"{s.org} {s.name_zh}",
            s.level,
            ",".join(channel for channel, _ in s.presence),
            _presence(s.presence, now),
            "never" if s.last_heard_at is None else _ago(s.last_heard_at, now),
            str(s.pending),
            "-" if s.oldest_pending_at is None else duration(now - s.oldest_pending_at),
        )
        for s in spokes
    ]
    header = ("organisation", "level", "channels", "presence", "last heard", "pending", "oldest")
    return table(header, rows)


def _hubs_table(hubs: Sequence[NeighbourHub], now: int) -> str:
    rows = [
        (
            f"{h.hub} {h.name_zh}",
            h.role,
            ", ".join(h.prefixes) if h.prefixes else "everyone else",
            ",".join(channel for channel, _ in h.presence),
            _presence(h.presence, now),
            str(h.pending),
            "-" if h.oldest_pending_at is None else duration(now - h.oldest_pending_at),
        )
        for h in hubs
    ]
    header = ("hub", "role", "serves", "link", "presence", "pending", "oldest")
    return table(header, rows)


# ------------------------------------------------------------------ find


def _asked(search: Search) -> str:
    parts = []
    if search.sender is not None:
        parts.append(f"from {search.sender}")
    if search.recipient is not None:
        parts.append(f"to {search.recipient}")
    if search.doc_number is not None:
        parts.append("with the 发文字号 asked for")
    if search.since is not None:
        parts.append(f"received since {ms_to_text(search.since)}")
    if search.until is not None:
        parts.append(f"before {ms_to_text(search.until)}")
    return ", ".join(parts) if parts else "any"


def _recipients(f: Found) -> str:
    if f.state is MessageState.QUARANTINED:
        return f"none: quarantined ({f.reason}), never forwarded"
    return ", ".join(f"{r.recipient} {r.state.value}" for r in f.recipients) or "-"


def render_find(found: Findings) -> str:
    asked = _asked(found.search)
    if not found.items:
        none = (
            "未找到公文：枢纽存储中没有；被枢纽或发文方交换程序拒收的公文不存储（查看枢纽日志中的 "
            "message.rejected，或发文方的 failed/ 文件夹） / "
            f"no message found ({asked}; as of {ms_to_text(found.at)}): the hub's store holds "
            "none; a document refused by the hub or by the sender's spoke is not stored (look "
            "for message.rejected in the hub's log, or the spoke's failed/ folder)"
        )
        lines = [none]
    else:
        head = (
            f"messages found: {found.total} ({asked}), the most recent first; "
            f"as of {ms_to_text(found.at)}"
        )
        lines = [head]
        header = ("msg_id", "received", "sender", "label", "recipients")
        rows = [
            (
                msg_id_text(f.msg_id),
                ms_to_text(f.received_at),
                f.sender,
                f"{_doc_type_text(f.doc_type)}, {f.classification}, {f.precedence}",
                _recipients(f),
            )
            for f in found.items
        ]
        lines.append(table(header, rows))
        hidden = found.total - len(found.items)
        if hidden > 0:
            lines.append(f"... and {hidden} more (--limit shows more, --since narrows)")
        lines.append("'hubctl trace MSG_ID' shows one message's life")
    if found.note is not None:
        lines.append(f"note: {found.note}")
    return "\n".join(lines) + "\n"


def _doc_type_text(name: str) -> str:
    return str(DocType[name]) if name in DocType.__members__ else name


# ------------------------------------------------------------------ queue and dead letters


def _more(listing: Listing) -> list[str]:
    hidden = listing.total - len(listing.items)
    return [f"... and {hidden} more (--limit shows more)"] if hidden > 0 else []


def _whom(listing: Listing) -> str:
    return "" if listing.recipient is None else f" for {listing.recipient}"


def render_queue(queue: Queue) -> str:
    listing = queue.listing
    now = listing.at
    if not listing.items:
        return f"no deliveries pending{_whom(listing)} (as of {ms_to_text(now)})\n"
    head = (
        f"deliveries pending{_whom(listing)}: {listing.total}, in the order the hub sends "
        f"them (precedence, then age); as of {ms_to_text(now)}"
    )
    header = (
        "msg_id",
        "recipient",
        "precedence",
        "classification",
        "channel",
        "state",
        "attempts",
        "age",
        "last attempt",
        "expires",
        "waiting",
    )
    rows = [
        (
            msg_id_text(d.msg_id),
            d.recipient,
            str(d.precedence),
            str(d.classification),
            d.channel,
            d.state.value,
            str(d.attempts),
            duration(now - d.created_at),
            "-" if d.last_attempt_at is None else _ago(d.last_attempt_at, now),
            _expires(d.expires_at, now),
            why.short(now),
        )
        for d, why in zip(listing.items, queue.why, strict=True)
    ]
    lines = [head, table(header, rows), *_more(listing), "", "why each waits:"]
    lines += [
        f"  {msg_id_text(d.msg_id)} to {d.recipient}: {why.detail}"
        for d, why in zip(listing.items, queue.why, strict=True)
    ]
    if not queue.presence_known:
        lines += ["", f"presence unknown: the hub did not answer ({queue.hub_problem})."]
    return "\n".join(lines) + "\n"


def _expires(at: int | None, now: int) -> str:
    if at is None:
        return "never"
    if at <= now:
        return f"{ms_to_text(at)} (passed)"
    return f"{ms_to_text(at)} (in {duration(at - now)})"


def dead_reason(d: Delivery) -> str:
    if d.reason == "delivery.gave_up":
        return f"gave up: no DELIVERED from {d.recipient} after {attempts_text(d.attempts)}"
    if d.expires_at is not None:
        return f"expired at {ms_to_text(d.expires_at)} before {d.recipient} confirmed"
    return "expired before the recipient confirmed"


def render_dead(listing: Listing) -> str:
    """Dead letters in two parts: those that gave up (DEAD: 'hubctl redeliver' brings them
    back) and those that expired (EXPIRED: never redelivered), each the most recent first."""
    now = listing.at
    if not listing.items:
        return f"no dead letters{_whom(listing)} (as of {ms_to_text(now)})\n"
    counts = listing.by_state or {}
    gave_up, expired = counts.get("DEAD", 0), counts.get("EXPIRED", 0)
    head = (
        f"dead letters{_whom(listing)}: {listing.total} ({gave_up} gave up, {expired} "
        f"expired), the most recent first; as of {ms_to_text(now)}"
    )
    lines = [head]
    header = (
        "msg_id",
        "recipient",
        "sender",
        "precedence",
        "classification",
        "channel",
        "state",
        "attempts",
        "since",
        "reason",
    )
    came_back = (
        f"gave up ({gave_up}): 'hubctl redeliver MSG_ID' or 'hubctl redeliver --dead' "
        "brings them back"
    )
    ended = (
        f"expired ({expired}): not redelivered, their validity (the sender's expires_at) "
        "ended; the sender sends them again"
    )
    parts = (("DEAD", came_back), ("EXPIRED", ended))
    for state, title in parts:
        rows = [_dead_row(d, now) for d in listing.items if d.state.value == state]
        if rows:
            lines += ["", f"{title}:", table(header, rows)]
    return "\n".join([*lines, *_more(listing)]) + "\n"


def _dead_row(d: Delivery, now: int) -> tuple[str, ...]:
    reason = dead_reason(d)
    refused = d.not_redeliverable(now) if d.state.value == "DEAD" else None
    if refused is not None:  # given up, but its expiry or retention has ended it since
        reason += f"; {_NOT_ANY_MORE.get(refused.code, 'cannot be redelivered')}"
    return (
        msg_id_text(d.msg_id),
        d.recipient,
        d.sender,
        str(d.precedence),
        str(d.classification),
        d.channel,
        d.state.value,
        str(d.attempts),
        ms_to_text(d.updated_at),
        reason,
    )


_NOT_ANY_MORE = {
    "redeliver.expired": "expired since: cannot be redelivered",
    "redeliver.purged": "content purged by retention: cannot be redelivered",
}


# ------------------------------------------------------------------ redelivery


def expired_note(count: int) -> str:
    """Why 'hubctl redeliver --dead' leaves the EXPIRED dead letters 'hubctl dead' lists."""
    documents = "document is" if count == 1 else "documents are"
    return (
        f"{count} 份已过期的公文不重新投递：发文方签署的有效期已过，枢纽不在有效期后投递；请发文方"
        "重新发送（新的 msg_id）；'hubctl dead' 将其列在 expired 下 / "
        f"{count} expired {documents} not redelivered: their validity ended (the sender's "
        "signed expires_at has passed) and the hub never delivers a document after it; the "
        "sender must send it again (a new msg_id); 'hubctl dead' lists them under 'expired'"
    )


def render_redelivery(answer: dict[str, Any], *, store: str) -> str:
    """hubctl redeliver's answer: who will deliver, what came back, what did not and why."""
    moved = answer.get("redelivered") or []
    refused = answer.get("refused") or []
    if answer.get("via") == "admin socket":
        where = (
            "redelivered by the running hub: it publishes them now (to a recipient that is "
            "offline, as soon as it is back)"
        )
    else:
        where = (
            f"the hub is not running ({answer.get('hub_down')}): written to its store "
            f"({store}); it delivers them when it next starts"
        )
    expired = int(answer.get("expired") or 0)
    lines = []
    if moved:
        lines.append(f"{where}:")
        lines += [f"  {d['msg_id']}  to {d['recipient']}" for d in moved]
    elif not refused:
        lines.append(
            "nothing to redeliver: no dead letter that gave up (DEAD) matches"
            if expired
            else "nothing to redeliver: no dead letter matches"
        )
    if refused:
        lines.append("not redelivered:")
        lines += [f"  {r['detail']}" for r in refused]
    if expired:
        lines.append(expired_note(expired))
    more = answer.get("more") or 0
    if more:
        lines.append(
            f"... and {more} more dead letters this request did not reach; run "
            "'hubctl redeliver --dead' again"
        )
    return "\n".join(lines) + "\n"
