"""``hubctl route``: what the hub would do with a drop, without sending anything.

It reads what a spoke would send (a drop's metadata file and the sending organisation),
builds the document as a sending spoke does (groups expanded, the sender left out, 份号
assigned to a state secret; a group's members awaiting keys left out and named), looks a
批复's 请示 up in the hub's store (read-only; the hub may be running) and hands everything
to the pure what-if report of :mod:`schemas.whatif`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Select
from sqlalchemy.exc import SQLAlchemyError

from hubd.provision.sources import RouteError
from hubd.store import rulefacts as rulecheck
from hubd.store.connections import engine_for, read_only_url
from schemas.directory import Directory
from schemas.errors import StoreError
from schemas.labels import DocType
from schemas.metadata import DropMetadata, parse_metadata
from schemas.rules import Document, Referenced, settings_of
from schemas.whatif import WhatIf, what_if


@dataclass(frozen=True, slots=True)
class Answer:
    report: WhatIf
    looked_up: bool  # False: a 批复's reference could not be checked in the store
    note: str  # why not, or ""

    def render(self) -> str:
        text = self.report.render()
        return text + (f"note: {self.note}\n" if self.note else "")

    def as_json(self) -> dict[str, object]:
        return {**self.report.as_json(), "in_reply_to_checked": self.looked_up, "note": self.note}


def read_metadata(path: Path) -> DropMetadata:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RouteError(f"cannot read the metadata file {path}: {exc.strerror}") from exc
    try:
        return parse_metadata(data, source=path.name)
    except ValueError as exc:
        raise RouteError(f"{path} cannot be used: {exc}") from exc


def document(metadata: DropMetadata, sender: str, directory: Directory) -> Document:
    """The document a spoke of ``sender`` would seal from ``metadata``."""
    if directory.org(sender) is None:
        raise RouteError(
            f"--from {sender}: no such organisation in directory v{directory.version}; "
            "'hubctl directory show' lists them"
        )
    try:
        to, cc = directory.addressees(metadata.to, metadata.cc, sender=sender)
    except ValueError as exc:
        raise RouteError(f"{exc}; check the address in the metadata") from exc
    for group in directory.unreachable_groups((*metadata.to, *metadata.cc), sender=sender):
        members = ", ".join(m for m in group.members if m != sender)
        raise RouteError(
            f"分组 @{group.id}（{group.name_zh}）的成员 {members} 在第 {directory.version} 版"
            "交换目录中都尚待提交密钥，该分组无人可以收文 / every member of the group "
            f"@{group.id} ({group.name_en}), {members}, is awaiting keys in directory version "
            f"{directory.version}; leave @{group.id} out, or sign a new directory once their "
            "public keys are in"
        )
    if not to:
        raise RouteError(
            f"after expanding groups, no primary recipient (主送) remains besides {sender}; "
            "name at least one other organisation"
        )
    return Document.from_metadata(metadata, sender, to, cc)


async def look_up(store_url: str | None, in_reply_to: bytes) -> Referenced | None:
    """What the hub's store holds under ``in_reply_to``, read-only. Raises StoreError."""
    if store_url is None:
        raise StoreError("no hub configuration was given (--config)", retriable=False)
    engine = engine_for(read_only_url(store_url))
    try:
        async with engine.connect() as conn:

            async def read(query: Select[Any]) -> Sequence[Any]:
                rows: Sequence[Any] = (await conn.execute(query)).all()
                return rows

            return await rulecheck.look_up(read, in_reply_to)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"cannot read the hub's store: {exc}", retriable=True) from exc
    finally:
        await engine.dispose()


async def route(
    metadata: DropMetadata,
    sender: str,
    directory: Directory,
    store_url: str | None,
    *,
    auto_cc: bool,
) -> Answer:
    doc = document(metadata, sender, directory)
    referenced, looked_up, note = None, True, ""
    if doc.doc_type is DocType.REPLY and doc.in_reply_to is not None:
        try:
            referenced = await look_up(store_url, doc.in_reply_to)
        except StoreError as exc:
            looked_up = False
            note = (
                f"the hub's store could not be read ({exc}), so whether in_reply_to names a "
                "请示 the recipient sent is unchecked here; the hub checks it on arrival"
            )
    report = what_if(
        doc,
        directory,
        settings_of(directory),
        referenced=referenced,
        looked_up=looked_up,
        auto_cc=auto_cc,
        not_addressed=directory.not_addressed((*metadata.to, *metadata.cc), sender=sender),
    )
    return Answer(report, looked_up, note)
