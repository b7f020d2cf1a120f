"""Bad drops: each ends in failed/ with its reason and the original intact, nothing sealed.

The real outbox pipeline (Sender.scan: watch, claim, check, seal) runs against real folders
and a verified directory, with no broker: publishing returns False, so whatever is sealed
stays QUEUED. Drops are made as an integrator makes them: the document first, then
``NAME.meta.toml`` last.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup

from schemas.labels import Classification
from spoke.cli import app
from spoke.config import Limits
from spoke.outbox import Completeness, Outbox, Ready
from spoke.sender import Sender
from tests.spoke.conftest import OFFLINE_LIMITS, OfflineSpoke, OfflineSpokeFactory, snapshot
from tests.world import REPO, World


def names(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def meta(**fields: object) -> str:
    """A NAME.meta.toml with quoted keys (Chinese field names need them)."""
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}\n"
        for k, v in fields.items()
    )


TO_CC = meta(to="jl.cc", classification="内部", doc_type="通知", title="关于供暖的通知")
BODY = "关于做好冬季供暖工作的通知。\n".encode()


# ------------------------------------------------------------------ the table of bad drops


@dataclass(frozen=True)
class BadDrop:
    """A drop an integrator should not have made, and what the spoke must say about it."""

    id: str
    make: Callable[[OfflineSpoke], None]
    name: str  # NAME: what ends in failed/ next to NAME.error.txt and NAME.error.json
    rule: str
    shown: str  # the offending value, as the sentence in NAME.error.txt shows it
    values: dict[str, Any] = field(default_factory=dict)  # expected in NAME.error.json
    org: str = "jl.gov"


def _file(
    name: str, content: bytes = BODY, metadata: str | None = TO_CC
) -> Callable[[OfflineSpoke], None]:
    def make(spoke: OfflineSpoke) -> None:
        (spoke.outbox / name).write_bytes(content)
        if metadata is not None:
            spoke.write_meta(name, metadata)

    return make


def _folder(name: str, files: dict[str, bytes]) -> Callable[[OfflineSpoke], None]:
    def make(spoke: OfflineSpoke) -> None:
        spoke.drop(name, files, TO_CC)

    return make


def _meta_only(spoke: OfflineSpoke) -> None:
    spoke.write_meta("ghost.txt", TO_CC)


def _json_meta(spoke: OfflineSpoke) -> None:
    (spoke.outbox / "report.txt").write_bytes(BODY)
    spoke.write_meta("report.txt", '{"to": "jl.cc", "classification": ', ".meta.json")


def _undecodable_meta(spoke: OfflineSpoke) -> None:
    (spoke.outbox / "report.txt").write_bytes(BODY)
    (spoke.outbox / "report.txt.meta.toml").write_bytes("主送".encode("gb18030") + b' = "jl.cc"\n')


def _symlink(spoke: OfflineSpoke) -> None:
    real = spoke.ctx.config.spoke.root / "real.txt"
    real.write_bytes(BODY)
    (spoke.outbox / "link.txt").symlink_to(real)
    spoke.write_meta("link.txt", TO_CC)


def _symlink_in_folder(spoke: OfflineSpoke) -> None:
    real = spoke.ctx.config.spoke.root / "real.pdf"
    real.write_bytes(b"%PDF-1.7 attachment")
    spoke.drop("请示", {"正文.txt": BODY}, TO_CC)
    (spoke.outbox / "请示" / "附件.pdf").symlink_to(real)


def _fifo(spoke: OfflineSpoke) -> None:
    os.mkfifo(spoke.outbox / "pipe.txt")
    spoke.write_meta("pipe.txt", TO_CC)


def _device(spoke: OfflineSpoke) -> None:
    try:
        os.mknod(spoke.outbox / "null.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device file needs CAP_MKNOD")
    spoke.write_meta("null.txt", TO_CC)


def _unblock_fifos(root: Path) -> None:
    """Give end-of-file to anything stuck reading one of the FIFOs under ``root`` (a spoke
    that opened one would otherwise hang its worker thread, and pytest with it)."""
    for path in root.rglob("*"):
        if path.is_fifo():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is reading it
                continue
            os.close(fd)


def _hard_link(spoke: OfflineSpoke) -> None:
    original = spoke.ctx.config.spoke.root / "original.txt"
    original.write_bytes(BODY)
    os.link(original, spoke.outbox / "linked.txt")
    spoke.write_meta("linked.txt", TO_CC)


def _nested(spoke: OfflineSpoke) -> None:
    spoke.drop("请示", {"正文.txt": BODY}, TO_CC)
    (spoke.outbox / "请示" / "附件").mkdir()
    (spoke.outbox / "请示" / "附件" / "表1.xlsx").write_bytes(b"table")


def _empty_folder(spoke: OfflineSpoke) -> None:
    spoke.drop("请示", {}, TO_CC)


UNDECODABLE = b"\xb1\xa8\xb8\xe6.txt"  # 报告.txt in GB 2312: not UTF-8


def _undecodable_name(spoke: OfflineSpoke) -> None:
    folder = os.fsencode(spoke.outbox)
    fd = os.open(folder + b"/" + UNDECODABLE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, BODY)
    os.close(fd)
    (spoke.outbox / os.fsdecode(UNDECODABLE + b".meta.toml")).write_text(TO_CC, "utf-8")


def _undecodable_name_only(spoke: OfflineSpoke) -> None:
    fd = os.open(os.fsencode(spoke.outbox) + b"/" + UNDECODABLE, os.O_WRONLY | os.O_CREAT)
    os.write(fd, BODY)
    os.close(fd)


def _undecodable_name_in_folder(spoke: OfflineSpoke) -> None:
    spoke.drop("请示", {"正文.txt": BODY}, TO_CC)
    fd = os.open(os.fsencode(spoke.outbox / "请示") + b"/" + UNDECODABLE, os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"attachment")
    os.close(fd)


SECRET_TO = {"classification": "机密★1年", "doc_type": "报告", "title": "（涉密标题）"}

BAD_DROPS = [
    BadDrop(
        "no-metadata-within-metadata_wait",
        _file("report.txt", metadata=None),
        "report.txt",
        "drop.no_metadata",
        "report.txt.meta.toml",
        {"document": "report.txt"},
    ),
    BadDrop(
        "metadata-naming-a-missing-document",
        _meta_only,
        "ghost.txt.meta.toml",
        "drop.metadata_without_document",
        "'ghost.txt'",
        {"document": "ghost.txt", "metadata": "ghost.txt.meta.toml"},
    ),
    BadDrop(
        "unparseable-toml",
        _file("report.txt", metadata='to = "jl.cc\n'),
        "report.txt",
        "drop.bad_metadata",
        "not valid TOML",
    ),
    BadDrop("unparseable-json", _json_meta, "report.txt", "drop.bad_metadata", "not valid JSON"),
    BadDrop("metadata-not-utf8", _undecodable_meta, "report.txt", "drop.bad_metadata", "not UTF-8"),
    BadDrop(
        "unknown-field",
        _file("report.txt", metadata=TO_CC + 'colour = "red"\n'),
        "report.txt",
        "drop.bad_metadata",
        "colour",
    ),
    BadDrop(
        "missing-title",
        _file("report.txt", metadata=meta(to="jl.cc", classification="内部", doc_type="函")),
        "report.txt",
        "drop.bad_metadata",
        "title",
        {
            "problems": [
                {
                    "field": "title",
                    "problem": "this field (title / 标题) is required",
                    "problem_zh": "缺少必填字段 title（标题）",
                }
            ]
        },
    ),
    BadDrop(
        "unknown-recipient",
        _file(
            "report.txt",
            metadata=meta(to="jl.nowhere", classification="内部", doc_type="函", title="t"),
        ),
        "report.txt",
        "drop.unknown_recipient",
        "'jl.nowhere'",
        {"to": ["jl.nowhere"]},
    ),
    BadDrop(
        "unknown-group",
        _file(
            "report.txt",
            metadata=meta(
                to="jl.cc", cc="@nowhere", classification="内部", doc_type="函", title="t"
            ),
        ),
        "report.txt",
        "drop.unknown_recipient",
        "'@nowhere'",
        {"cc": ["@nowhere"]},
    ),
    BadDrop(
        "only-itself-as-recipient",
        _file(
            "report.txt",
            metadata=meta(to="jl.gov", classification="内部", doc_type="函", title="t"),
        ),
        "report.txt",
        "drop.no_recipient",
        "主送",
        {"to": ["jl.gov"]},
    ),
    BadDrop(
        "label-above-the-senders-clearance",
        _file("report.txt", metadata=meta(to="jl.gov", **SECRET_TO)),
        "report.txt",
        "drop.sender_clearance",
        "own clearance (jl.cc: INTERNAL",
        {"classification": "SECRET", "org": "jl.cc", "clearance": "INTERNAL"},
        org="jl.cc",
    ),
    BadDrop(
        "top-secret-above-the-province",
        _file(
            "report.txt", metadata=meta(to="cn.gov", **{**SECRET_TO, "classification": "绝密★长期"})
        ),
        "report.txt",
        "drop.sender_clearance",
        "TOP_SECRET",
        {"classification": "TOP_SECRET", "org": "jl.gov", "clearance": "SECRET"},
    ),
    BadDrop(
        "secret-to-a-prefecture",
        _file("report.txt", metadata=meta(to="jl.cc", **SECRET_TO)),
        "report.txt",
        "drop.above_clearance",
        "jl.cc (长春市人民政府)",
        {"classification": "SECRET", "org": "jl.cc", "clearance": "INTERNAL"},
    ),
    BadDrop(
        "secret-with-a-prefecture-in-cc",
        _file("report.txt", metadata=meta(to="cn.gov", cc="jl.cc", **SECRET_TO)),
        "report.txt",
        "drop.above_clearance",
        "jl.cc (长春市人民政府)",
        {"classification": "SECRET", "org": "jl.cc", "clearance": "INTERNAL"},
    ),
    BadDrop(
        "backslash-dotdot-in-a-folder",
        _folder("请示", {"正文.txt": BODY, "..\\evil.txt": b"climb"}),
        "请示",
        "drop.bad_name",
        "evil.txt",
        {"name": "..\\evil.txt"},
    ),
    BadDrop(
        "control-character-in-the-name",
        _file("通知\x1b[2J.txt"),
        "通知\x1b[2J.txt",
        "drop.bad_name",
        "control character",
        {"name": "通知\\x1b[2J.txt"},
    ),
    BadDrop(
        "windows-reserved-name",
        _file("CON.txt"),
        "CON.txt",
        "drop.bad_name",
        "reserved device name CON",
        {"name": "CON.txt"},
    ),
    BadDrop(
        "windows-forbidden-character",
        _folder("请示", {"正文.txt": BODY, "附件?.pdf": b"pdf"}),
        "请示",
        "drop.bad_name",
        "附件?.pdf",
    ),
    BadDrop(
        "non-utf8-name",
        _undecodable_name,
        os.fsdecode(UNDECODABLE),
        "drop.bad_name",
        "not valid UTF-8",
    ),
    BadDrop(
        "non-utf8-name-without-metadata",
        _undecodable_name_only,
        os.fsdecode(UNDECODABLE),
        "drop.bad_name",
        "'\\xb1\\xa8\\xb8\\xe6.txt' is not valid UTF-8",
        {"name": "\\xb1\\xa8\\xb8\\xe6.txt"},
    ),
    BadDrop(
        "non-utf8-name-in-a-folder",
        _undecodable_name_in_folder,
        "请示",
        "drop.bad_name",
        "not valid UTF-8",
    ),
    BadDrop("symlink", _symlink, "link.txt", "drop.symlink", "link.txt", {"file": "link.txt"}),
    BadDrop(
        "symlink-in-a-folder",
        _symlink_in_folder,
        "请示",
        "drop.symlink",
        "附件.pdf",
        {"file": "附件.pdf"},
    ),
    BadDrop("fifo", _fifo, "pipe.txt", "drop.not_a_file", "pipe.txt", {"file": "pipe.txt"}),
    BadDrop(
        "device-file", _device, "null.txt", "drop.not_a_file", "null.txt", {"file": "null.txt"}
    ),
    BadDrop(
        "hard-link",
        _hard_link,
        "linked.txt",
        "drop.hard_link",
        "2 hard links",
        {"file": "linked.txt", "links": 2},
    ),
    BadDrop(
        "zero-byte-file",
        _file("empty.txt", b""),
        "empty.txt",
        "drop.empty_file",
        "0 bytes",
        {"file": "empty.txt"},
    ),
    BadDrop(
        "zero-byte-attachment",
        _folder("请示", {"正文.txt": BODY, "附件.pdf": b""}),
        "请示",
        "drop.empty_file",
        "附件.pdf",
        {"file": "附件.pdf"},
    ),
    BadDrop(
        "file-over-max_file_bytes",
        _file("big.bin", b"x" * (OFFLINE_LIMITS.max_file_bytes + 1)),
        "big.bin",
        "drop.file_too_large",
        str(OFFLINE_LIMITS.max_file_bytes + 1),
        {"size": OFFLINE_LIMITS.max_file_bytes + 1, "limit": OFFLINE_LIMITS.max_file_bytes},
    ),
    BadDrop(
        "folder-in-a-folder", _nested, "请示", "drop.nested_folder", "请示/附件", {"name": "附件"}
    ),
    BadDrop("empty-folder", _empty_folder, "请示", "drop.empty_folder", "'请示'", {"name": "请示"}),
]


@pytest.mark.parametrize("case", BAD_DROPS, ids=[c.id for c in BAD_DROPS])
async def test_bad_drop_ends_in_failed_with_its_reason_and_the_original_intact(
    offline_spoke: OfflineSpokeFactory, case: BadDrop
) -> None:
    spoke = offline_spoke(case.org)
    case.make(spoke)
    dropped = {name: snapshot(spoke.outbox / name) for name in names(spoke.outbox)}

    try:
        await spoke.settle()
    finally:
        _unblock_fifos(spoke.ctx.config.spoke.root)

    # the original, byte for byte, next to its two error files; nothing else
    assert {name: snapshot(spoke.failed / name) for name in dropped} == dropped
    errors = {f"{case.name}.error.txt", f"{case.name}.error.json"}
    assert set(names(spoke.failed)) == set(dropped) | errors
    # nothing sealed, nothing left behind
    assert spoke.outbound() == []
    assert spoke.queued() == []
    assert names(spoke.outbox) == []
    assert names(spoke.work) == []

    text = (spoke.failed / f"{case.name}.error.txt").read_text(encoding="utf-8")
    data = json.loads((spoke.failed / f"{case.name}.error.json").read_text(encoding="utf-8"))
    assert f"Rule: {case.rule}" in text
    assert case.shown in text
    assert re.search(r"^What to do: \S.*\.$", text, re.MULTILINE), text
    assert data["rule"] == case.rule
    assert data["message"] in text
    assert data["hint"] in text
    for chinese in ("message_zh", "hint_zh"):  # every refusal says it in Chinese too
        assert re.search("[\u4e00-\u9fff]", data[chinese]), data[chinese]
        assert data[chinese] in text
    assert data["values"], "the machine form names the offending values"
    assert {k: data["values"].get(k) for k in case.values} == case.values


async def test_fifo_drop_does_not_block_the_scan(offline_spoke: OfflineSpokeFactory) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the spoke must never do it."""
    spoke = offline_spoke()
    _fifo(spoke)
    spoke.drop("report.txt", BODY, TO_CC)
    try:
        await spoke.settle()
    finally:
        _unblock_fifos(spoke.ctx.config.spoke.root)
    assert len(spoke.outbound()) == 1
    assert "pipe.txt.error.txt" in names(spoke.failed)


async def test_second_failure_under_the_same_name_keeps_the_first(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    nowhere = meta(to="jl.nowhere", classification="内部", doc_type="函", title="t")
    spoke.drop("report.txt", b"first version", nowhere)
    await spoke.settle()
    spoke.drop("report.txt", b"second version", nowhere)
    await spoke.settle()

    assert names(spoke.failed) == sorted(
        f"{name}{suffix}"
        for name in ("report.txt", "report.txt (2)")
        for suffix in ("", ".meta.toml", ".error.txt", ".error.json")
    )
    assert (spoke.failed / "report.txt").read_bytes() == b"first version"
    assert (spoke.failed / "report.txt (2)").read_bytes() == b"second version"
    second = json.loads((spoke.failed / "report.txt (2).error.json").read_text("utf-8"))
    assert second["name"] == "report.txt (2)"


# ------------------------------------------------------------------ refusals a stranger acts on


async def refusal_of(spoke: OfflineSpoke, name: str, metadata: str) -> dict[str, Any]:
    spoke.drop(name, BODY, metadata)
    await spoke.settle()
    data: dict[str, Any] = json.loads(
        (spoke.failed / f"{name}.error.json").read_text(encoding="utf-8")
    )
    return data


async def test_unknown_recipient_hint_names_a_spoke_command_that_exists(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    data = await refusal_of(
        offline_spoke(),
        "report.txt",
        meta(to="jl.nowhere", classification="内部", doc_type="函", title="t"),
    )
    commands = re.findall(r"'spoke ([a-z-]+)", data["hint"])
    assert commands, data["hint"]
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    assert set(commands) <= set(group.commands), data["hint"]


async def test_bad_metadata_hint_points_to_documents_that_exist(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    data = await refusal_of(offline_spoke(), "report.txt", TO_CC + "colour = 1\n")
    named = re.findall(r"(?:docs|schemas)/[\w./-]+\.(?:md|json)", data["hint"])
    assert named, data["hint"]
    assert [p for p in named if not (REPO / p).is_file()] == []


# ------------------------------------------------------------------ never picked up


async def test_dot_files_part_and_tmp_files_are_never_picked_up_nor_failed(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    ignored = {
        ".draft.docx": b"draft",
        ".hidden.txt": BODY,
        ".hidden.txt.meta.toml": TO_CC.encode(),
        "report.docx.part": b"half a document",
        "upload.tmp": b"temporary",
        "next.txt.meta.toml.part": TO_CC.encode(),
        "next.txt.meta.json.tmp": b"{",
    }
    for name, data in ignored.items():
        (spoke.outbox / name).write_bytes(data)
    before = {name: snapshot(spoke.outbox / name) for name in ignored}
    # a document without metadata, dropped at the same moment: when it has been failed,
    # the ignored files have waited as long as metadata_wait too
    (spoke.outbox / "sentinel.txt").write_bytes(BODY)

    await spoke.settle()

    assert names(spoke.failed) == [
        "sentinel.txt",
        "sentinel.txt.error.json",
        "sentinel.txt.error.txt",
    ]
    assert {name: snapshot(spoke.outbox / name) for name in names(spoke.outbox)} == before
    assert spoke.outbound() == []
    assert not spoke.sender.outbox.waiting()


# ------------------------------------------------------------------ a file still being written


def test_outbox_takes_a_drop_written_metadata_last_after_stable_for_seconds(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox", tmp_path / "work", stable_for=10.0, metadata_wait=60.0)
    outbox.folder.mkdir()
    (outbox.folder / "report.txt").write_bytes(b"the whole report\n")
    (outbox.folder / "report.txt.meta.toml").write_text(TO_CC, encoding="utf-8")
    assert outbox.scan(now=0.0) == ([], [])
    assert outbox.scan(now=9.9) == ([], [])
    assert outbox.scan(now=10.0) == (
        [Ready("report.txt", ("report.txt.meta.toml",), Completeness.METADATA_LAST)],
        [],
    )


def test_outbox_takes_a_document_that_changed_after_its_metadata_only_after_the_longer_wait(
    tmp_path: Path,
) -> None:
    outbox = Outbox(
        tmp_path / "outbox",
        tmp_path / "work",
        stable_for=10.0,
        metadata_wait=600.0,
        stable_for_unordered=30.0,
    )
    outbox.folder.mkdir()
    growing = outbox.folder / "growing.txt"
    growing.write_bytes(b"first part\n")
    (outbox.folder / "growing.txt.meta.toml").write_text(TO_CC, encoding="utf-8")
    assert outbox.scan(now=0.0) == ([], [])
    for t in (20.0, 40.0, 60.0, 80.0):  # gaps longer than stable_for, but it changed each time
        with growing.open("ab") as handle:
            handle.write(b"more\n")
        assert outbox.scan(now=t) == ([], []), t
    # stable_for has passed, but the metadata file is no proof of completeness any more
    assert outbox.scan(now=90.0) == ([], [])
    assert outbox.scan(now=109.9) == ([], [])
    assert outbox.scan(now=110.0) == (
        [Ready("growing.txt", ("growing.txt.meta.toml",), Completeness.UNORDERED)],
        [],
    )


def test_outbox_fails_a_document_without_metadata_only_after_metadata_wait(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox", tmp_path / "work", stable_for=1.0, metadata_wait=60.0)
    outbox.folder.mkdir()
    (outbox.folder / "report.txt").write_bytes(BODY)
    assert outbox.scan(now=0.0) == ([], [])
    assert outbox.scan(now=59.9) == ([], [])
    ready, [orphan] = outbox.scan(now=60.0)
    assert ready == []
    assert (orphan.name, orphan.refusal.rule) == ("report.txt", "drop.no_metadata")


async def test_document_still_being_written_is_sealed_once_when_it_stops_changing(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke()
    growing = spoke.outbox / "growing.txt"
    growing.write_bytes(b"first part\n")
    spoke.write_meta("growing.txt", TO_CC)  # the metadata is there from the start
    stable_for = spoke.ctx.config.limits.stable_for
    for i in range(6):
        await spoke.sender.scan()
        assert growing.exists(), i
        assert spoke.outbound() == [], i
        # a slow writer: more than stable_for passes between its writes, so only the
        # change itself can hold the drop back
        await asyncio.sleep(2 * stable_for)
        with growing.open("ab") as handle:
            handle.write(f"part {i}\n".encode() * 100)
    final = growing.read_bytes()

    await spoke.settle()

    [out] = spoke.outbound()
    assert out.state == "QUEUED"
    assert spoke.queued() == [out.body_path]
    assert spoke.open_as(world, out, "jl.cc") == {"growing.txt": final}
    assert (out.work / "growing.txt").stat().st_size == len(final)
    assert names(spoke.failed) == []


# ------------------------------------------------------------------ good drops


async def test_good_file_drop_is_claimed_and_sealed_to_the_members_of_its_groups(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke()
    spoke.drop(
        "供暖通知.txt",
        BODY,
        meta(
            主送="@prefectures",
            抄送="jl.dept.health、jl.cc",  # jl.cc is already a primary recipient
            密级="内部",
            紧急程度="加急",
            文种="通知",
            标题="关于做好冬季供暖工作的通知",
            发文字号="吉政办发〔2026〕12号",
        ),
    )

    await spoke.settle()

    [out] = spoke.outbound()
    assert (out.state, out.channel, out.name) == ("QUEUED", "govnet", "供暖通知.txt")
    assert spoke.queued() == [out.body_path]
    header = spoke.sealed(out).header
    prefectures = spoke.directory.group("prefectures")
    assert prefectures is not None
    assert header.to == prefectures.members
    assert header.cc == ("jl.dept.health",)
    assert header.classification is Classification.INTERNAL
    assert header.copy_numbers == {}
    assert header.doc_number == "吉政办发〔2026〕12号"
    for recipient in (*header.to, *header.cc):
        assert spoke.open_as(world, out, recipient) == {"供暖通知.txt": BODY}
    # claimed: out of the outbox, waiting in the work area for the hub's answer
    assert names(spoke.outbox) == []
    assert names(out.work) == ["供暖通知.txt", "供暖通知.txt.meta.toml"]
    assert names(spoke.failed) == []


async def test_good_secret_folder_drop_to_the_state_council_gets_copy_numbers(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke()
    files = {"正文.txt": BODY, "附件1.pdf": b"%PDF-1.7 " + bytes(range(256)) * 40}
    spoke.drop(
        "请示",
        files,
        meta(
            主送="cn.gov",
            密级="机密★1年",
            紧急程度="特急",
            文种="请示",
            标题="（涉密）",
            签发人="李某",
        ),
    )

    await spoke.settle()

    [out] = spoke.outbound()
    assert (out.state, out.channel) == ("QUEUED", "classified")
    header = spoke.sealed(out).header
    assert header.to == ("cn.gov",)
    assert header.classification is Classification.SECRET
    assert header.secrecy_period == "1y"
    assert header.copy_numbers == {"cn.gov": "000001"}
    assert spoke.open_as(world, out, "cn.gov") == files
    assert names(spoke.outbox) == []
    assert names(spoke.failed) == []


async def test_secret_drop_to_a_group_numbers_one_copy_per_recipient(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke("cn.gov")
    reply = meta(
        主送="@channel.classified",
        密级="机密★6个月",
        文种="批复",
        标题="t",
        回复文件="0123456789abcdef0123456789abcdef",  # whether it is a 请示: the hub checks
    )
    spoke.drop("批复.txt", BODY, reply)

    await spoke.settle()

    [out] = spoke.outbound()
    header = spoke.sealed(out).header
    assert header.to == ("jl.gov",)  # the group, less the sender itself
    assert header.copy_numbers == {"jl.gov": "000001"}


# ------------------------------------------------------------------ a claim cut by a crash


async def test_claim_cut_between_its_two_renames_is_finished_at_start(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC)
    # the first rename of claim() happened, the crash came before the second
    work = spoke.work / "1795000000000-0badc0de"
    work.mkdir()
    (spoke.outbox / "report.txt").rename(work / "report.txt")
    spoke = offline_spoke_like(spoke)  # the restart

    await spoke.settle()

    [out] = spoke.outbound()
    assert out.work == work
    assert names(work) == ["report.txt", "report.txt.meta.toml"]
    assert spoke.open_as(world, out, "jl.cc") == {"report.txt": BODY}
    assert names(spoke.outbox) == []
    assert names(spoke.failed) == []


async def test_claim_cut_before_any_metadata_gives_the_document_back_to_the_outbox(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    (spoke.outbox / "report.txt").write_bytes(BODY)
    work = spoke.work / "1795000000000-0badc0de"
    work.mkdir()
    (spoke.outbox / "report.txt").rename(work / "report.txt")
    (spoke.work / "1795000000001-00000000").mkdir()  # cut before the first rename
    spoke = offline_spoke_like(spoke)  # the restart

    await spoke.sender.scan()

    assert names(spoke.work) == []
    assert names(spoke.outbox) == ["report.txt"]
    assert (spoke.outbox / "report.txt").read_bytes() == BODY
    spoke.write_meta("report.txt", TO_CC)  # the integrator finishes the drop
    await spoke.settle()
    assert len(spoke.outbound()) == 1
    assert names(spoke.failed) == []


async def test_drop_sealed_before_a_restart_is_not_sealed_again(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC)
    await spoke.settle()
    [out] = spoke.outbound()

    restarted = offline_spoke_like(spoke)
    await restarted.settle()

    assert restarted.outbound() == [out]
    assert restarted.queued() == [out.body_path]
    assert names(out.work) == ["report.txt", "report.txt.meta.toml"]


def offline_spoke_like(spoke: OfflineSpoke) -> OfflineSpoke:
    """The same folders and state with a fresh Sender, as after a restart."""
    sender = Sender(spoke.ctx)
    sender.recover()
    return OfflineSpoke(spoke.ctx, sender)


@pytest.mark.parametrize("limits", [Limits(stable_for=0.02, metadata_wait=0.15, max_files=2)])
async def test_folder_with_more_files_than_max_files_is_refused(
    offline_spoke: OfflineSpokeFactory, limits: Limits
) -> None:
    spoke = offline_spoke(limits=limits)
    spoke.drop("请示", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"}, TO_CC)
    await spoke.settle()
    data = json.loads((spoke.failed / "请示.error.json").read_text(encoding="utf-8"))
    assert data["rule"] == "drop.too_many_files"
    assert data["values"] == {"document": "请示", "files": 3, "limit": 2}
    assert spoke.outbound() == []


def test_outbox_reads_a_rewritten_declaration_again(tmp_path: Path) -> None:
    """A declaration is read once per version of the metadata file, not once per drop."""
    outbox = Outbox(
        tmp_path / "outbox",
        tmp_path / "work",
        stable_for=1.0,
        metadata_wait=600.0,
        stable_for_unordered=300.0,
    )
    outbox.folder.mkdir()
    (outbox.folder / "report.txt").write_bytes(BODY)
    meta_file = outbox.folder / "report.txt.meta.toml"
    wrong, right = "0" * 64, hashlib.sha256(BODY).hexdigest()
    meta_file.write_text(TO_CC + f'[[files]]\nname = "report.txt"\nsha256 = "{wrong}"\n', "utf-8")
    assert outbox.scan(now=0.0) == ([], [])
    assert outbox.scan(now=10.0) == ([], [])  # the declared digest does not match: it waits
    meta_file.write_text(TO_CC + f'[[files]]\nname = "report.txt"\nsha256 = "{right}"\n', "utf-8")
    assert outbox.scan(now=20.0) == ([], [])
    assert outbox.scan(now=21.0) == (
        [Ready("report.txt", ("report.txt.meta.toml",), Completeness.DECLARED)],
        [],
    )
