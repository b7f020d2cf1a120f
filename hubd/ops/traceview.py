"""How ``hubctl trace`` prints one message's life: its row, the ledger's entries about it in
time order, and its deliveries now, each with the hub it was handed to when it went on
through another hub (docs/architecture.md, "Hubs under hubs")."""

from __future__ import annotations

from typing import Any

from hubd.core.states import MessageState
from hubd.ops.trace import Step, Trace
from hubd.ops.view import attempts_text, size
from schemas.clock import ms_to_text
from schemas.display import table
from schemas.ids import msg_id_text
from schemas.labels import DocType

# ------------------------------------------------------------------ trace


def render_trace(tr: Trace) -> str:
    lines = [f"message {msg_id_text(tr.msg_id)} (as of {ms_to_text(tr.at)})"]
    m = tr.message
    if m is None:
        lines.append("  the store holds no message row for it, only audit entries")
    else:
        doc = DocType[m.doc_type] if m.doc_type in DocType.__members__ else m.doc_type
        expires = "never" if m.expires_at is None else ms_to_text(m.expires_at)
        lines += [
            f"  {doc}, {m.classification}, {m.precedence}, body {size(m.body_size)}",
            (
                f"  from {m.sender} on {m.arrival_channel}; created {ms_to_text(m.created_at)} "
                f"(the sender's clock), received {ms_to_text(m.received_at)}; expires {expires}"
            ),
        ]
        if m.state is MessageState.QUARANTINED:
            lines.append(f"  QUARANTINED ({m.reason}): kept by the hub, never forwarded")
        else:
            lines.append(f"  {m.state}")
        if m.purged_at is not None:
            lines.append(
                f"  content purged by retention at {ms_to_text(m.purged_at)}: the hub no longer "
                "holds it (the ledger keeps its hashes); it cannot be redelivered"
            )
    lines += ["", table(("time", "event", "org", "what"), [_step(s) for s in tr.steps])]
    if tr.deliveries:
        # The hub closes a delivery at DELIVERED; a SIGNED_FOR after it is in the ledger
        # (and the receipts), so the last receipt is shown beside the delivery's state.
        last = {
            s.org: s.event.removeprefix("receipt.").upper()
            for s in tr.steps
            if s.event.startswith("receipt.")
        }
        via = handed_to(tr.steps)
        rows = [
            (
                d.recipient,
                d.channel,
                d.state.value,
                str(d.attempts),
                ms_to_text(d.updated_at),
                last.get(d.recipient, "-"),
                via.get(d.recipient, "-"),
            )
            for d in tr.deliveries
        ]
        lines += ["", "deliveries now:"]
        header = (
            "recipient",
            "channel",
            "state",
            "attempts",
            "last change",
            "last receipt",
            "next hub",
        )
        lines.append(table(header, rows))
        hubs = sorted(set(via.values()))
        if hubs:
            onward = (
                f"went on through {', '.join(hubs)}: 'hubctl trace {msg_id_text(tr.msg_id)}' on "
                "that hub shows the rest of its way"
            )
            lines += ["", onward]
    return "\n".join(lines) + "\n"


def handed_to(steps: tuple[Step, ...]) -> dict[str, str]:
    """recipient -> the neighbour hub its copy was handed to, from the acceptance entry."""
    for step in steps:
        via = step.detail.get("via") if step.event == "message.accepted" else None
        if isinstance(via, dict):
            return {str(k): str(v) for k, v in via.items()}
    return {}


def _step(step: Step) -> tuple[str, str, str, str]:
    name, what = describe(step)
    return (ms_to_text(step.at, precise=True), name, step.org or "-", what)


def describe(step: Step) -> tuple[str, str]:
    """A short name for the event and a sentence for what the ledger says of it."""
    d: dict[str, Any] = step.detail
    event = step.event
    if event in {"message.accepted", "message.quarantined"}:
        routes = d.get("routes") or {}
        text = f"from {step.org} on {d.get('channel')}"
        if d.get("from_hub"):
            text += f", relayed by hub {d.get('from_hub')}"
        by_channel: dict[str, list[str]] = {}
        for recipient, channel in routes.items():
            by_channel.setdefault(str(channel), []).append(str(recipient))
        if by_channel:
            text += "; routed " + "; ".join(
                f"on {channel} to {', '.join(recipients)}"
                for channel, recipients in by_channel.items()
            )
        counts = d.get("channels") or {}  # a large group: a count per channel (schemas.slots)
        if counts:
            text += "; routed " + "; ".join(
                f"on {channel} to {count} recipients" for channel, count in counts.items()
            )
        via = d.get("via") or {}
        hubs = sorted({str(h) for h in via.values()} | {str(h) for h in d.get("via_hubs") or ()})
        if hubs:
            text += f"; handed on to hub {', '.join(hubs)}"
        warnings = d.get("rule_warnings") or []
        if warnings:
            text += "; rules warned: " + ", ".join(str(w.get("rule")) for w in warnings)
        if event == "message.quarantined":
            return "QUARANTINED", text + "; above the arrival channel's ceiling, not forwarded"
        return "accepted", text
    if event == "delivery.sent":
        return "sent", f"published to {step.org} on {d.get('channel')}, attempt {d.get('attempt')}"
    if event == "delivery.dead":
        return "DEAD", (
            f"no DELIVERED after {attempts_text(d.get('attempts'))}: gave up; the sender got DEAD"
        )
    if event == "delivery.expired":
        return "EXPIRED", (
            f"expired after {attempts_text(d.get('attempts'))} without DELIVERED; the sender got "
            "EXPIRED"
        )
    if event == "delivery.redelivered":
        return "REDELIVER", (
            f"{_who(d.get('requested_by'))} asked to redeliver it (via {d.get('via')}); "
            f"DEAD after {attempts_text(d.get('attempts_before'))}, PENDING again from attempt 1"
        )
    if event == "message.purged":
        kept = (
            "body removed, frame kept (a 批复 may still answer this 请示)"
            if d.get("frame_kept")
            else "frame and body removed"
        )
        where = ", the spool file too" if d.get("spooled") else ""
        body = d.get("body_sha256")
        hashes = f"frame sha256 {d.get('frame_sha256')}" + (f", body sha256 {body}" if body else "")
        return "PURGED", f"content purged by retention: {kept}{where}; kept: {hashes}"
    if event.startswith("receipt."):
        return event.removeprefix("receipt.").upper(), f"receipt signed by {d.get('issuer')}"
    extra = ", ".join(f"{k}={v}" for k, v in sorted(d.items()))
    return event, extra


def _who(requested_by: object) -> str:
    """'uid 1000 (ops) pid 4242' from an audit entry's requested_by."""
    if not isinstance(requested_by, dict):
        return "someone"
    user = requested_by.get("user")
    name = f" ({user})" if user else ""
    return f"uid {requested_by.get('uid')}{name} pid {requested_by.get('pid')}"
