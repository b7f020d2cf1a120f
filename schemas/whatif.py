"""What-if: how a document would be routed and judged, without sending anything.

``hubctl route META_FILE --from ORG`` and ``spoke send --dry-run`` print the same report:
per recipient the direction, the channel that would carry it and why (or why none can),
each rule's verdict under the directory's settings, and the copies ``--auto-cc`` would
add. Each recipient is gated by :mod:`schemas.gating` on the channel the spoke sends on,
as the hub gates it (and as the spoke's own check does). Pure: the callers read the files
and the store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from schemas.directory import Directory, NotAddressed, not_addressed_sentence
from schemas.display import table
from schemas.gating import Accept, gate, shared_channels, uplink
from schemas.labels import Direction
from schemas.rules import (
    Document,
    Evaluation,
    Referenced,
    Settings,
    Verdict,
    assign_copy_numbers,
    evaluate,
)
from schemas.slots import INLINE_MAX


@dataclass(frozen=True, slots=True)
class RecipientRoute:
    recipient: str
    name_zh: str
    role: str  # "to", "cc", or "cc (added)" by --auto-cc
    direction: Direction
    channel: str | None  # None: the hub would refuse the document for this recipient
    why: str


@dataclass(frozen=True, slots=True)
class WhatIf:
    doc: Document
    directory_version: int
    routes: tuple[RecipientRoute, ...]
    evaluation: Evaluation
    added_cc: tuple[str, ...]  # what --auto-cc added (empty without it)
    not_addressed: tuple[NotAddressed, ...] = ()  # members of its groups it would not reach

    @property
    def gate_problems(self) -> tuple[str, ...]:
        return tuple(f"{r.recipient}: {r.why}" for r in self.routes if r.channel is None)

    @property
    def accepted(self) -> bool:
        return self.evaluation.ok and not self.gate_problems

    def as_json(self) -> dict[str, object]:
        return {
            "sender": self.doc.sender,
            "doc_type": self.doc.doc_type.name,
            "classification": self.doc.classification.name,
            "directory_version": self.directory_version,
            "accepted": self.accepted,
            "recipients": [
                {
                    "recipient": r.recipient,
                    "role": r.role,
                    "direction": r.direction.value,
                    "channel": r.channel,
                    "why": r.why,
                }
                for r in self.routes
            ],
            "rules": [
                {
                    "rule": res.rule.id,
                    "article": res.rule.article,
                    "mode": res.mode.value,
                    "verdict": res.verdict.value,
                    "note": res.note,
                    "findings": [f.as_dict(res.mode) for f in res.findings],
                }
                for res in self.evaluation.results
            ],
            "added_cc": list(self.added_cc),
            "would_add_cc": list(self.evaluation.add_cc),
            "not_addressed": [n.as_json() for n in self.not_addressed],
            "slots": len(self.routes) > INLINE_MAX,  # recipients travel as slots (4a)
        }

    def render(self) -> str:
        doc = self.doc
        head = (
            f"What if {doc.sender} sends a {doc.doc_type} ({doc.classification}), "
            f"directory v{self.directory_version}. Nothing is sent."
        )
        rows = [
            [
                f"{r.recipient} {r.name_zh}",
                r.role,
                f"{r.direction.zh} {r.direction.value}",
                r.channel or "REFUSED",
                r.why,
            ]
            for r in self.routes
        ]
        lines = [head, "", table(["recipient", "role", "direction", "channel", "why"], rows)]
        lines += ["", "rules:"]
        for res in self.evaluation.results:
            shown = res.verdict.value.upper() if res.verdict is Verdict.FAIL else res.verdict.value
            lines.append(f"  {res.rule.id:<21} {res.mode.value:<8} {shown:<15} {res.note}")
            lines.extend(f"      {f.sentence()}" for f in res.findings)
        if self.added_cc:
            lines += ["", f"copies added by --auto-cc: {', '.join(self.added_cc)}"]
        elif self.evaluation.add_cc:
            lines += [
                "",
                f"copies --auto-cc would add: {', '.join(self.evaluation.add_cc)}",
            ]
        if self.not_addressed:
            lines += ["", not_addressed_sentence(self.not_addressed, self.directory_version)]
        count = len(self.routes)
        if count > INLINE_MAX:
            lines += [
                "",
                (
                    f"envelope: one envelope to {count} recipients, who travel as slots: each "
                    "receives the document and only its own slot (docs/wire-format.md, 4a)"
                ),
            ]
        lines.append("")
        if self.accepted:
            warned = len(self.evaluation.warnings)
            lines.append(
                "verdict: the hub would accept it"
                + (
                    f" ({warned} rule warning{'s' * (warned != 1)}, logged as rule.warned)"
                    if warned
                    else ""
                )
            )
        else:
            refused = [f.rule.id for f in self.evaluation.refusals]
            refused += ["gating"] if self.gate_problems else []
            lines.append(f"verdict: REFUSED ({', '.join(dict.fromkeys(refused))})")
        return "\n".join(lines) + "\n"


def with_auto_cc(
    doc: Document, directory: Directory, settings: Settings
) -> tuple[Document, tuple[str, ...]]:
    """``doc`` with every organ the skip-level rule wants copied added to cc (份号 renumbered)."""
    added = tuple(
        o for o in evaluate(doc, directory, settings, looked_up=False).add_cc if o not in doc.to
    )
    added = tuple(o for o in added if o not in doc.cc)
    if not added:
        return doc, ()
    cc = doc.cc + added
    copies = (
        assign_copy_numbers(doc.to + cc) if doc.classification.is_state_secret else doc.copy_numbers
    )
    return replace(doc, cc=cc, copy_numbers=copies), added


def what_if(
    doc: Document,
    directory: Directory,
    settings: Settings,
    *,
    referenced: Referenced | None = None,
    looked_up: bool = True,
    auto_cc: bool = False,
    not_addressed: tuple[NotAddressed, ...] = (),
) -> WhatIf:
    added: tuple[str, ...] = ()
    if auto_cc:
        doc, added = with_auto_cc(doc, directory, settings)
    evaluation = evaluate(doc, directory, settings, referenced=referenced, looked_up=looked_up)
    sender = directory.org(doc.sender)
    label = doc.classification
    # the channel the spoke sends on, gated per recipient as the hub gates it arriving there
    arrival = None if sender is None else uplink(directory, sender, label)
    routes = []
    for recipient in doc.recipients:
        entry = directory.org(recipient)
        role = "to" if recipient in doc.to else ("cc (added)" if recipient in added else "cc")
        direction = evaluation.directions[recipient]
        if entry is None or sender is None:
            missing = recipient if entry is None else doc.sender
            routes.append(
                RecipientRoute(
                    recipient, "?", role, direction, None, f"{missing} is not in the directory"
                )
            )
            continue
        if label > sender.clearance or label > entry.clearance:
            who, clearance = (
                (doc.sender, sender.clearance)
                if label > sender.clearance
                else (recipient, entry.clearance)
            )
            why = f"{label} is above the clearance of {who} ({clearance})"
            routes.append(RecipientRoute(recipient, entry.name_zh, role, direction, None, why))
            continue
        decision = (
            None
            if arrival is None
            else gate(doc.sender, label, (recipient,), arrival.id, directory)
        )
        channel = (
            directory.channel(decision.routes[0].channel) if isinstance(decision, Accept) else None
        )
        shared = shared_channels(sender, entry)
        if channel is None:
            why = (
                f"no channel both are on admits {label.name} (shared: "
                f"{', '.join(shared) or 'none'})"
            )
            routes.append(RecipientRoute(recipient, entry.name_zh, role, direction, None, why))
            continue
        others = [c for c in shared if c != channel.id]
        why = f"the lowest-ceiling channel both are on that admits {label.name} (ceiling " + (
            f"{channel.ceiling.name}; also shared: {', '.join(others)})"
            if others
            else f"{channel.ceiling.name})"
        )
        routes.append(RecipientRoute(recipient, entry.name_zh, role, direction, channel.id, why))
    return WhatIf(doc, directory.version, tuple(routes), evaluation, added, not_addressed)
