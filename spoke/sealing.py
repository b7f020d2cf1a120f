"""Sealing a checked drop into ``.spoke/queue/<msg_id>.body``, exactly as it was checked.

Three passes over the files: a digest of each (what the inner record and status.json
state, and what a declared SHA-256 is compared with), the seal itself (which refuses a
file whose bytes no longer match its digest), and a last look at every file's status
(device, inode, size, mtime, ctime) and the folder's. Any change means the drop was still
being written: :class:`ChangedWhileSealing`, and the sender gives it back to the outbox.
Never a partial send.

Before sealing, a drop the same as one sent within ``duplicate_window`` (the same
metadata and bytes, or the same 发文字号) is refused, unless its metadata says
``resend = true``. Once sealed it is recorded, durably, before it is published
(:func:`seal_and_record`): the envelope, and what its status.json will show.

Whatever else goes wrong with a claimed drop ends in failed/ with its reason, except what
:func:`transient` names: a failure that is the spoke's own machine's, not the document's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import sqlite3
from pathlib import Path
from typing import BinaryIO

import structlog

from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import XchgError
from schemas.ids import msg_id_text, new_msg_id
from schemas.keys import SigningKey
from schemas.metadata import name_key
from schemas.rules import Mode
from schemas.seal import Draft, FileEntry, Sealed, describe_file, seal_streams
from spoke.checks import Prepared, declared_mismatch, stamp
from spoke.context import SpokeContext
from spoke.files import shown_name
from spoke.refusals import refuse
from spoke.state import Outbound, SpokeState

# Errors that say the spoke's disk is full: a read never raises them, so they come from
# writing the sealed copy (or the state database), never from the document.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
log = structlog.get_logger("spoke.outbox")


def transient(exc: BaseException) -> str | None:
    """Why a claimed drop should wait rather than fail, or None: it fails.

    The document is not at fault, and failing it would ask its sender to drop it again
    for nothing: the disk is full (the sealed copy, or the state database, could not be
    written) or the state database is busy. The drop stays claimed and is tried again at
    the next scan, as drops wait in the outbox while the spoke holds sending (no
    directory, no key). A broker away is not a failure at all: the sealed drop is queued
    and published once connected. Everything else (a bad header, a document that cannot
    be read, a key problem, a defect of ours) fails the drop with its reason."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return f"the disk is full ({exc.strerror or exc})"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text or "locked" in text or "busy" in text:
            return f"the spoke's state database cannot be written now ({text})"
    return None


class ChangedWhileSealing(XchgError):  # noqa: N818 - an event, not a fault
    """A file of the drop changed while it was being sealed."""


def seal_and_record(
    ctx: SpokeContext, prepared: Prepared, directory: Directory, signer: SigningKey, queue: Path
) -> Outbound:
    """Seal a checked drop into ``queue`` (blocking) and record it, durably, with what its
    status.json will show, before it is published; refused if it is a duplicate."""
    meta = prepared.metadata
    entries = digests(prepared)
    print_ = fingerprint(prepared, entries)
    now = ctx.clock()
    window_ms = int(ctx.config.limits.duplicate_window * 1000)
    refuse_duplicate(ctx.state, prepared, print_, now=now, window_ms=window_ms)
    doc = prepared.document  # what the rules judged is exactly what is sealed
    recipients = doc.recipients
    tracked = prepared.claimed.msg_id  # given when the drop was taken
    draft = Draft(
        msg_id=new_msg_id() if tracked is None else tracked,
        sender=ctx.org,
        to=doc.to,
        cc=doc.cc,
        classification=meta.classification,
        precedence=meta.precedence,
        doc_type=meta.doc_type,
        title=meta.title,
        created_at=now,
        files=entries,
        expires_at=meta.expires_ms,
        in_reply_to=meta.in_reply_to_bytes,
        doc_number=meta.doc_number,
        signatory=meta.signatory,
        secrecy_period=meta.secrecy_period,
        copy_numbers=dict(doc.copy_numbers),
        directive=meta.directive,
        date=None if meta.date is None else meta.date.isoformat(),
        terms=meta.terms(now),
    )
    sealed = seal_drop(prepared, draft, signer, directory, queue)
    header = sealed.header
    out = Outbound(
        msg_id=header.msg_id,
        name=prepared.claimed.name,
        work=prepared.claimed.work,
        channel=prepared.channel,
        frame=sealed.frame,
        body_path=queue / f"{header.msg_id_text}.body",
        body_size=sealed.body.size,
        state="QUEUED",
        created_at=draft.created_at,
        slots=sealed.slots,
    )
    notes: dict[str, object] = {
        "added_cc": list(prepared.added_cc),
        "copy_numbers": dict(doc.copy_numbers),
        "rule_warnings": [f.as_dict(Mode.WARN) for f in prepared.warnings],
        "files": [
            {"name": shown_name(e.name), "size": e.size, "sha256": e.sha256.hex()} for e in entries
        ],
        "completeness": prepared.completeness.value,
        "resend": meta.resend,
        "not_addressed": [n.as_json() for n in prepared.not_addressed],
    }
    ctx.state.add_outbound(
        out,
        recipients,
        header.classification.name,
        header.precedence.name,
        notes=notes,
        fingerprint=print_,
        doc_number=meta.doc_number,
        note_key=sealed.note_key,  # to write and read the notes of its recall and return
    )
    for finding in prepared.warnings:  # never the title: it travels encrypted
        log.warning(
            "rule.warned",
            rule=finding.rule.id,
            article=finding.rule.article,
            msg_id=header.msg_id_text,
            name=shown_name(out.name),
        )  # no finding text: it quotes the document number
    log.info(
        "drop.sealed",
        name=shown_name(out.name),
        msg_id=header.msg_id_text,
        recipients=len(recipients),
        classification=header.classification.name,
        precedence=header.precedence.name,
        channel=out.channel,
        added_cc=list(prepared.added_cc),
        files=len(entries),
        size=sum(e.size for e in entries),
    )
    if prepared.not_addressed:  # the sender named a group: say who it did not reach
        log.warning(
            "drop.not_addressed",
            name=shown_name(out.name),
            msg_id=header.msg_id_text,
            not_addressed=[n.as_json() for n in prepared.not_addressed],
            version=directory.version,
        )
    return out


def media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def digests(prepared: Prepared) -> list[FileEntry]:
    """Each file's name, type, size and SHA-256, read once; refused if a declared digest
    differs."""
    entries = []
    for name, path in prepared.files:
        with _open(path) as source:
            entries.append(describe_file(name, media_type(name), source))
    declared = {name_key(d.name): d.sha256 for d in prepared.metadata.files if d.sha256}
    wrong = [
        (e, declared[name_key(e.name)])
        for e in entries
        if name_key(e.name) in declared and e.sha256.hex() != declared[name_key(e.name)]
    ]
    if wrong:
        if changed(prepared):  # still being written: not a wrong declaration (yet)
            raise ChangedWhileSealing(prepared.claimed.name)
        raise declared_mismatch(
            prepared.claimed.name,
            [
                (
                    f"the SHA-256 of '{shown_name(e.name)}' is {e.sha256.hex()}, {want} declared",
                    f"“{shown_name(e.name)}”的 SHA-256 为 {e.sha256.hex()}，声明为 {want}",
                )
                for e, want in wrong
            ],
        )
    return entries


def fingerprint(prepared: Prepared, entries: list[FileEntry]) -> bytes:
    """What makes two drops the same document: the metadata as read (either language,
    TOML or JSON) and every file's name and digest."""
    what = {
        "metadata": prepared.metadata.model_dump(mode="json", exclude={"resend"}),
        "files": sorted((e.name, e.sha256.hex()) for e in entries),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).digest()


def refuse_duplicate(
    state: SpokeState, prepared: Prepared, print_: bytes, *, now: int, window_ms: int
) -> None:
    """Refusal if the same document went out within the window (and resend is not set)."""
    if window_ms <= 0 or prepared.metadata.resend:
        return
    doc_number = prepared.metadata.doc_number or None  # "" is no number
    found = state.sent_before(print_, doc_number, since=now - window_ms)
    if found is None:
        return
    msg_id, at, same = found
    fill = {"first_msg_id": msg_id_text(msg_id), "first_at": ms_to_text(at)}
    if same:
        raise refuse("drop.duplicate", **fill)
    raise refuse("drop.duplicate_doc_number", doc_number=doc_number, **fill)


def seal_drop(
    prepared: Prepared,
    draft: Draft,
    signer: SigningKey,
    directory: Directory,
    queue: Path,
) -> Sealed:
    """Seal into ``queue/.<work>.body.tmp``, fsynced, then rename it to ``<msg_id>.body``;
    ChangedWhileSealing if anything of the drop changed meanwhile."""
    partial = queue / f".{prepared.claimed.work.name}.body.tmp"
    try:
        with contextlib.ExitStack() as files, partial.open("wb") as sink:
            sources = [files.enter_context(_open(path)) for _, path in prepared.files]
            sealed = seal_streams(draft, signer, directory, sources, sink)
            sink.flush()
            os.fsync(sink.fileno())
        if changed(prepared):
            raise ChangedWhileSealing(prepared.claimed.name)
    except BaseException:  # a half-written body is nobody's: never left in the queue
        partial.unlink(missing_ok=True)
        raise
    partial.replace(queue / f"{sealed.header.msg_id_text}.body")
    return sealed


def changed(prepared: Prepared) -> list[Path]:
    """The paths whose status is no longer what the checks saw."""
    out = []
    for path, seen in prepared.stamps.items():
        try:
            now = stamp(path.lstat())
        except OSError:
            now = None
        if now != seen:
            out.append(path)
    return out


def _open(path: Path) -> BinaryIO:
    """A file of the drop, for reading; never through a link, never blocking on a pipe
    (the checks refused both, but the file may have been swapped since)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise refuse(
            "drop.unreadable", file=shown_name(path.name), error=exc.strerror or str(exc)
        ) from exc
    return os.fdopen(fd, "rb")
