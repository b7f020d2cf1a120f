"""Writing received documents into ``inbox/<msg_id>/``, atomically.

The body is opened streaming (:class:`schemas.seal.Opener`) into a staging folder
``inbox/.tmp-<msg_id>/`` (dot-named: integrators never look at it), each file under its
own sanitised name, then ``meta.json``; every file and the folder are fsynced, the folder
is renamed to ``inbox/<msg_id>`` and the inbox folder fsynced. Only then does the spoke
send DELIVERED. A crash at any point leaves either nothing or the complete folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from runtime.files import fsync_dir
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope
from schemas.keys import EncryptionKey
from schemas.seal import FileData, FileEnd, Inner, InnerOpened, Opener
from schemas.terms import Terms
from spoke.files import fsync_tree, sanitise, write_json

META = "meta.json"


class InboxWrite:
    """One document being opened into the staging folder."""

    def __init__(
        self, inbox: Path, envelope: VerifiedEnvelope, me: str, key: EncryptionKey
    ) -> None:
        self.inbox = inbox
        self.me = me
        self.envelope = envelope
        self.msg_id_text = envelope.header.msg_id_text
        self.staging = inbox / f".tmp-{self.msg_id_text}"
        self.final = inbox / self.msg_id_text
        if self.staging.exists():  # left by a crash: start again
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self._opener = Opener(envelope, me, key)
        self._names: list[str] = []
        self._handles: dict[int, BinaryIO] = {}
        self._inner: Inner | None = None

    def feed(self, data: bytes) -> None:
        for event in self._opener.feed(data):
            match event:
                case InnerOpened(inner):
                    self._inner = inner
                    taken: set[str] = {META}
                    self._names = [sanitise(f.name, taken) for f in inner.files]
                    for i, name in enumerate(self._names):
                        if inner.files[i].size == 0:
                            (self.staging / name).touch()
                case FileData(index, chunk):
                    handle = self._handles.get(index)
                    if handle is None:
                        handle = self._handles[index] = (self.staging / self._names[index]).open(
                            "wb"
                        )
                    handle.write(chunk)
                case FileEnd(index):
                    handle = self._handles.pop(index, None)
                    if handle is not None:
                        handle.flush()
                        os.fsync(handle.fileno())
                        handle.close()

    @property
    def note_key(self) -> bytes:
        """The document's note key (schemas.notes), kept to read and write its flows' notes."""
        return self._opener.note_key

    def feed_file(self, path: Path, block: int = 1 << 20) -> None:
        with path.open("rb") as source:
            while chunk := source.read(block):
                self.feed(chunk)

    def commit(self, directory: Directory, *, received_at: int, channel: str) -> Path:
        """Every check passed: meta.json, fsync, rename into place. Returns the folder."""
        inner = self._opener.close()
        header = self.envelope.header
        sender = directory.org(header.sender)
        meta: dict[str, Any] = {
            "msg_id": self.msg_id_text,
            "sender": {"id": header.sender, "name": None if sender is None else sender.name_zh},
            "to": list(header.to),
            "cc": list(header.cc),
            # addressed to more than 16: to and cc name only this organisation
            "recipients": header.recipient_count,
            "classification": header.classification.name,
            "classification_zh": header.classification.zh,
            "secrecy_period": header.secrecy_period,
            "copy_number": header.copy_numbers.get(self.me),
            "precedence": header.precedence.name,
            "precedence_zh": header.precedence.zh,
            "doc_type": header.doc_type.name,
            "doc_type_zh": header.doc_type.zh,
            "title": inner.title,
            "doc_number": header.doc_number,
            "signatory": header.signatory,
            "date": inner.date,
            "directive": header.directive,
            "in_reply_to": None if header.in_reply_to is None else header.in_reply_to.hex(),
            "created_at": ms_to_text(header.created_at),
            "expires_at": None if header.expires_at is None else ms_to_text(header.expires_at),
            "terms": terms_json(header.terms),
            "received_at": ms_to_text(received_at, precise=True),
            "channel": channel,
            "files": [
                {
                    "name": name,
                    "original_name": f.name,
                    "type": f.type,
                    "size": f.size,
                    "sha256": f.sha256.hex(),
                }
                for name, f in zip(self._names, inner.files, strict=True)
            ],
            "verified": "sender signature, inner signature and every file's SHA-256",
            "receipts": {
                "delivered_at": ms_to_text(received_at, precise=True),
                "signed_for_at": None,
            },
        }
        write_json(self.staging / META, meta)
        fsync_tree(self.staging)
        self.staging.rename(self.final)
        fsync_dir(self.inbox)
        return self.final

    def abort(self) -> None:
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def clean_staging(inbox: Path) -> Iterable[Path]:
    """Remove staging folders a crash left; returns what was removed."""
    removed = []
    if inbox.exists():
        for path in inbox.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mark_signed_for(folder: Path, at: int) -> None:
    """Record the SIGNED_FOR time in the document's meta.json (atomically)."""
    path = folder / META
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["receipts"]["signed_for_at"] = ms_to_text(at, precise=True)
    write_json(path, meta)


def terms_json(terms: Terms | None) -> dict[str, object] | None:
    """What the sender asks of this organisation and by when (schemas.terms), for meta.json:
    签收时限 sign_by, 受理时限 accept_by, 办理时限 done_by, the petition's case, a drill."""
    if terms is None:
        return None
    return {
        "sign_by": None if terms.sign_by is None else ms_to_text(terms.sign_by),
        "accept_by": None if terms.accept_by is None else ms_to_text(terms.accept_by),
        "done_by": None if terms.done_by is None else ms_to_text(terms.done_by),
        "case": terms.case,
        "drill": terms.drill,
    }
