"""Checking a claimed drop before it is sealed: the contract, the directory, the rules.

:func:`prepare` looks at exactly what will be sealed (the metadata file as it is now, every
file of the drop, groups expanded, copies auto_cc adds, 份号 assigned) and either returns
a :class:`Prepared` or raises a :class:`~spoke.refusals.Refusal` naming the rule and the
values in Chinese and English. It also records each file's status (:data:`Stamp`), so
that the sender can tell whether anything changed while it sealed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.clock import ms_to_text
from schemas.directory import GROUP_PREFIX, Directory, NotAddressed, OrgEntry
from schemas.errors import DirectoryError, Reason
from schemas.gating import Accept, Reject, gate, shared_channels, uplink
from schemas.labels import Classification
from schemas.metadata import (
    MAX_METADATA_BYTES,
    DropMetadata,
    MetadataError,
    name_key,
    parse_metadata,
    too_large,
)
from schemas.rules import Document, Finding
from schemas.slots import MAX_SLOTS
from spoke.files import check_regular, is_clutter, name_problem, name_problem_zh, shown_name
from spoke.outbox import Claimed, Completeness
from spoke.refusals import Refusal, refuse
from spoke.ruling import copied_as_needed, judge

Stamp = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Prepared:
    """A claimed drop that passed every check, the document rules included: what to seal."""

    claimed: Claimed
    metadata: DropMetadata
    files: list[tuple[str, Path]]  # (name in the document, path on disk)
    document: Document  # recipients expanded, auto_cc applied, 份号 assigned
    added_cc: tuple[str, ...]  # copies auto_cc (自动抄送) added
    warnings: tuple[Finding, ...]  # findings of rules set to warn: sent anyway
    channel: str
    stamps: dict[Path, Stamp]  # every file, the folder and the metadata, as checked
    not_addressed: tuple[NotAddressed, ...] = ()  # group members left out (awaiting keys)

    @property
    def to(self) -> tuple[str, ...]:
        return self.document.to

    @property
    def cc(self) -> tuple[str, ...]:
        return self.document.cc

    @property
    def completeness(self) -> Completeness:
        return self.claimed.completeness


def prepare(
    claimed: Claimed,
    *,
    org: str,
    directory: Directory,
    max_file_bytes: int,
    max_files: int,
    now: int,
) -> Prepared:
    """Check a claimed drop against the contract, the directory and the document rules, on
    exactly what will be sealed; Refusal if it fails."""
    if claimed.refusal is not None:
        raise claimed.refusal
    stamps: dict[Path, Stamp] = {}
    metadata = read_metadata(claimed, stamps)
    if metadata.expires_ms is not None and metadata.expires_ms <= now:
        raise refuse("drop.already_expired", expires=ms_to_text(metadata.expires_ms))
    terms = metadata.terms(now)
    for name, at in ({} if terms is None else terms.deadlines).items():
        if at <= now:
            zh = {"sign_by": "签收时限", "accept_by": "受理时限", "done_by": "办理时限"}[name]
            raise refuse("drop.deadline_past", deadline=f"{name} {zh}", at=ms_to_text(at))
    files = _collect(claimed, stamps, max_file_bytes=max_file_bytes, max_files=max_files)
    if metadata.files:
        _check_declared_sizes(claimed, metadata, files, stamps)
    to, cc = address(metadata, org=org, directory=directory)
    doc = Document.from_metadata(metadata, org, to, cc)
    doc, added = copied_as_needed(doc, directory, auto_cc=metadata.auto_cc)
    within_envelope(doc.to, doc.cc, (*metadata.to, *metadata.cc), directory, sender=org)
    channel = _gate(doc, org=org, directory=directory)
    sealable(doc, directory, now)
    evaluation = judge(doc, directory)
    left_out = not_addressed(metadata, org=org, directory=directory)
    return Prepared(
        claimed, metadata, files, doc, added, evaluation.warnings, channel, stamps, left_out
    )


def read_metadata(claimed: Claimed, stamps: dict[Path, Stamp]) -> DropMetadata:
    """The metadata file, never through a link, never blocking on a pipe."""
    shown = shown_name(claimed.meta_name)
    try:
        fd = os.open(claimed.meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if claimed.meta.is_symlink():
            raise refuse("drop.symlink", file=shown) from exc
        raise refuse("drop.unreadable", file=shown, error=exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("drop.not_a_file", file=shown)
        stamps[claimed.meta] = stamp(st)
        data = b""
        while len(data) <= MAX_METADATA_BYTES and (block := os.read(fd, 1 << 16)):
            data += block
    finally:
        os.close(fd)
    try:
        if st.st_size > MAX_METADATA_BYTES:  # say how long it is, not how much was read
            raise too_large(claimed.meta_name, st.st_size)
        return parse_metadata(data, source=claimed.meta_name)
    except MetadataError as exc:
        raise bad_metadata(shown, exc) from exc


def bad_metadata(meta_name: str, exc: MetadataError) -> Refusal:
    return refuse(
        "drop.bad_metadata",
        {
            "problems": [
                {"field": f, "problem": p, "problem_zh": zh}
                for (f, p), zh in zip(exc.problems, exc.problems_zh, strict=True)
            ]
        },
        metadata=meta_name,
        problems_en=str(exc),
        problems_zh=exc.text_zh,
    )


def address(
    metadata: DropMetadata, *, org: str, directory: Directory
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(to, cc) with groups expanded, this organisation left out; Refusal if unusable."""
    if directory.org(org) is None:
        raise refuse("drop.sender_unknown", org=org, version=directory.version)
    try:
        to, cc = directory.addressees(metadata.to, metadata.cc, sender=org)
    except ValueError as exc:
        unknown = [a for a in (*metadata.to, *metadata.cc) if not _known(directory, a)]
        raise refuse(
            "drop.unknown_recipient",
            {"to": metadata.to, "cc": metadata.cc},
            problem=str(exc),
            unknown="、".join(unknown) or "?",
            version=directory.version,
        ) from exc
    for group in directory.unreachable_groups((*metadata.to, *metadata.cc), sender=org):
        members = [m for m in group.members if m != org]
        raise refuse(
            "drop.group_awaiting_keys",
            {"group": f"@{group.id}", "members": members},
            group=group.id,
            name=group.name_zh,
            name_en=group.name_en,
            members=", ".join(members),
            version=directory.version,
        )
    if not to:
        raise refuse("drop.no_recipient", {"to": metadata.to})
    within_envelope(to, cc, (*metadata.to, *metadata.cc), directory, sender=org)
    return to, cc


def within_envelope(
    to: Sequence[str],
    cc: Sequence[str],
    addresses: Sequence[str],
    directory: Directory,
    *,
    sender: str,
) -> None:
    """Refusal if the recipients (groups expanded, members awaiting keys left out, copies
    added) are more than one envelope carries: so that ``spoke send`` refuses the drop
    before it is queued, ``--dry-run`` says so, and the agent before it seals. The one
    place the spoke applies :data:`~schemas.slots.MAX_SLOTS` (more than 16 recipients
    travel as slots, schemas.slots; the hub takes at most that many in one envelope)."""
    count = len(to) + len(cc)
    if count <= MAX_SLOTS:
        return
    groups = {  # what each group named adds, as sealing counts it: the sender left out
        a: sum(1 for m in directory.expand([a]) if m != sender)
        for a in dict.fromkeys(addresses)
        if a.startswith(GROUP_PREFIX)
    }
    raise refuse(
        "drop.too_many_recipients",
        {"count": count, "limit": MAX_SLOTS, "groups": groups},
        count=count,
        limit=MAX_SLOTS,
        groups=", ".join(f"{g}: {n}" for g, n in groups.items())
        or "no group: each named on its own",
        groups_zh="，".join(f"{g} {n} 个" for g, n in groups.items()) or "未写分组，逐一列出",
    )


def not_addressed(
    metadata: DropMetadata, *, org: str, directory: Directory
) -> tuple[NotAddressed, ...]:
    """The members of the drop's groups it does not go to (awaiting keys): the sender is
    told (spoke send, status.json, the log), never left to find out."""
    return directory.not_addressed((*metadata.to, *metadata.cc), sender=org)


def _known(directory: Directory, address: str) -> bool:
    try:
        directory.expand([address])
    except ValueError:
        return False
    return True


def _gate(doc: Document, *, org: str, directory: Directory) -> str:
    """The hub's gating of everyone (copies auto_cc added included): the channel to send on."""
    return gate_drop(org, doc.classification, doc.recipients, directory)


def gate_drop(
    org: str, label: Classification, recipients: Sequence[str], directory: Directory
) -> str:
    """The channel to send a drop of ``label`` from ``org`` to ``recipients`` on: the one
    :func:`~schemas.gating.uplink` picks, if the hub's gating (:func:`~schemas.gating.gate`)
    accepts the drop arriving on it; Refusal otherwise, naming what the hub would."""
    me = directory.org(org)
    if me is None:
        raise refuse("drop.sender_unknown", org=org, version=directory.version)
    if label > me.clearance:
        raise _sender_clearance(org, me, label)
    channel = uplink(directory, me, label)
    if channel is None:
        raise refuse(
            "drop.no_channel",
            {"classification": label.name, "channels": list(me.channels)},
            channels=", ".join(me.channels),
            classification=label,
            classification_zh=label.zh,
        )
    decision = gate(org, label, recipients, channel.id, directory)
    if isinstance(decision, Accept):
        return channel.id
    about = decision.recipient if isinstance(decision, Reject) else None
    entry = None if about is None else directory.org(about)
    match decision:
        case Reject(reason=Reason.POLICY_RECIPIENT_CLEARANCE) if entry is not None:
            raise refuse(
                "drop.above_clearance",
                {"classification": label.name, "org": entry.id, "clearance": entry.clearance.name},
                classification=label,
                classification_zh=label.zh,
                org=entry.id,
                name=entry.name_zh,
                clearance=entry.clearance,
                clearance_zh=entry.clearance.zh,
            )
        case Reject(reason=Reason.ENV_RECIPIENT_AWAITING_KEYS) if entry is not None:
            raise refuse(
                "drop.recipient_awaiting_keys",
                {"org": entry.id},
                org=entry.id,
                name=entry.name_zh,
                version=directory.version,
            )
        case Reject(reason=Reason.POLICY_NO_CHANNEL) if entry is not None:
            shared = shared_channels(me, entry)
            raise refuse(
                "drop.no_route",
                {
                    "classification": label.name,
                    "org": org,
                    "recipient": entry.id,
                    "shared": list(shared),
                },
                classification=label,
                classification_zh=label.zh,
                org=org,
                recipient=entry.id,
                name=entry.name_zh,
                shared=", ".join(shared) or "none",
                shared_zh="、".join(shared) or "无",
            )
        case _:  # address() and the checks above leave the router nothing else to say
            raise refuse("drop.internal_error", error=f"{decision.reason}: {decision.detail}")


def sealable(doc: Document, directory: Directory, now: int) -> None:
    """Every recipient has an encryption key to seal the file key to at ``now`` (in its
    window, not revoked): the lookup sealing makes, so that a drop sealing would fail on
    is refused here, by ``spoke send`` as by the agent, not found out after the claim."""
    for recipient in doc.recipients:
        try:
            directory.encryption_key(recipient, now)
        except DirectoryError as exc:
            entry = directory.org(recipient)
            raise refuse(
                "drop.recipient_no_key",
                {"org": recipient},
                org=recipient,
                name=recipient if entry is None else entry.name_zh,
                version=directory.version,
            ) from exc


def _sender_clearance(org: str, me: OrgEntry, label: Classification) -> Refusal:
    return refuse(
        "drop.sender_clearance",
        {"classification": label.name, "org": org, "clearance": me.clearance.name},
        classification=label,
        classification_zh=label.zh,
        org=org,
        clearance=me.clearance,
        clearance_zh=me.clearance.zh,
    )


def _bad_name(name: str, where: str | None = None) -> Refusal:
    shown = f"'{shown_name(name)}'" if where is None else f"'{where}/{shown_name(name)}'"
    return refuse(
        "drop.bad_name",
        {"name": shown_name(name)},
        name=shown,
        problem=name_problem(name),
        problem_zh=name_problem_zh(name),
    )


def _collect(
    claimed: Claimed, stamps: dict[Path, Stamp], *, max_file_bytes: int, max_files: int
) -> list[tuple[str, Path]]:
    payload = claimed.payload
    document = shown_name(claimed.name)
    if name_problem(claimed.name) is not None:
        raise _bad_name(claimed.name)
    try:
        st = payload.lstat()
    except OSError as exc:
        raise refuse("drop.unreadable", file=document, error=exc.strerror or str(exc)) from exc
    if not stat.S_ISDIR(st.st_mode):
        stamps[payload] = stamp(check_regular(payload, max_bytes=max_file_bytes))
        return [(claimed.name, payload)]
    stamps[payload] = stamp(st)
    try:
        listed = {e.name: e for e in os.scandir(payload)}
    except OSError as exc:
        raise refuse("drop.unreadable", file=document, error=exc.strerror or str(exc)) from exc
    # .DS_Store and the like stay with the drop unsent; a hostile name is never clutter
    entries = sorted(n for n in listed if not (is_clutter(n, listed) and name_problem(n) is None))
    if not entries:
        raise refuse("drop.empty_folder", {"name": document}, document=document)
    if len(entries) > max_files:
        raise refuse("drop.too_many_files", document=document, files=len(entries), limit=max_files)
    files = []
    for name in entries:
        if name_problem(name) is not None:
            raise _bad_name(name, document)
        path = payload / name
        if listed[name].is_dir(follow_symlinks=False):
            raise refuse(
                "drop.nested_folder",
                {"name": shown_name(name)},
                document=document,
                name=shown_name(name),
            )
        stamps[path] = stamp(check_regular(path, max_bytes=max_file_bytes))
        files.append((name, path))
    return files


def _check_declared_sizes(
    claimed: Claimed,
    metadata: DropMetadata,
    files: list[tuple[str, Path]],
    stamps: dict[Path, Stamp],
) -> None:
    """Every declared file there with its declared size, nothing undeclared."""
    found = {name_key(name): (name, stamps[path][2]) for name, path in files}
    problems: list[tuple[str, str]] = []
    for declared in metadata.files:
        key = name_key(declared.name)
        if key not in found:
            problems.append(
                (
                    f"'{declared.name}' is declared but not in the drop",
                    f"声明了“{declared.name}”，但投递中没有该文件",
                )
            )
        elif declared.size is not None and found[key][1] != declared.size:
            name, size = found[key]
            problems.append(
                (
                    f"'{shown_name(name)}' is {size} bytes, {declared.size} declared",
                    f"“{shown_name(name)}”为 {size} 字节，声明为 {declared.size} 字节",
                )
            )
    wanted = {name_key(d.name) for d in metadata.files}
    for key, (name, _) in sorted(found.items()):
        if key not in wanted:
            problems.append(
                (
                    f"'{shown_name(name)}' is in the drop but not declared",
                    f"投递中有“{shown_name(name)}”，但元数据未声明",
                )
            )
    if problems:
        raise declared_mismatch(claimed.name, problems)


def declared_mismatch(document: str, problems: list[tuple[str, str]]) -> Refusal:
    return refuse(
        "drop.declared_mismatch",
        {"document": shown_name(document), "problems": [en for en, _ in problems]},
        document=shown_name(document),
        problems_en="; ".join(en for en, _ in problems),
        problems_zh="；".join(zh for _, zh in problems),
    )
