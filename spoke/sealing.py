"""Sealing a checked drop into ``.spoke/queue/<msg_id>.body``, exactly as it was checked.

Three passes over the files: a digest of each (what the inner record and status.json
state, and what a declared SHA-256 is compared with), the seal itself (which refuses a
file whose bytes no longer match its digest), and a last look at every file's status
(device, inode, size, mtime, ctime) and the folder's. Any change means the drop was still
being written: :class:`ChangedWhileSealing`, and the sender gives it back to the outbox.
Never a partial send.

Before sealing, a drop the same as one sent within ``duplicate_window`` (the same
metadata and bytes, or the same 发文字号) is refused, unless its metadata says
``resend = true``.

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

from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import XchgError
from schemas.ids import msg_id_text
from schemas.keys import SigningKey
from schemas.metadata import name_key
from schemas.seal import Draft, FileEntry, Sealed, describe_file, seal_streams
from spoke.checks import Prepared, declared_mismatch, stamp
from spoke.files import shown_name
from spoke.refusals import refuse
from spoke.state import SpokeState

# Errors that say the spoke's disk is full: a read never raises them, so they come from
# writing the sealed copy (or the state database), never from the document.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


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
