"""The integrator's edge (issue 10): drops as real tools write them, and names no one expects.

The real outbox pipeline (Sender.scan: watch, claim, check, seal) on real folders, with a
verified directory and no broker, as in test_bad_drops. Each test of the first part is a
defect found by trying the spoke with ordinary tools: it failed before the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from structlog.testing import capture_logs

import spoke.sealing as sealing_module
import spoke.sender as sender_module
from schemas.errors import Reason
from spoke.config import Limits, load_config
from spoke.failed import FailedFolder
from spoke.files import shown_name
from spoke.receiver import Receiver
from spoke.refusals import CATALOGUE, HUB_REASONS, hub_reason_zh, refuse
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory
from tests.spoke.procs import write_raw
from tests.world import REPO, World

BODY = "关于做好冬季供暖工作的通知。\n".encode()


def meta(**fields: object) -> str:
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}\n"
        for k, v in fields.items()
    )


TO_CC = meta(to="jl.cc", classification="内部", doc_type="通知", title="关于供暖的通知")
NOWHERE = meta(to="jl.nowhere", classification="内部", doc_type="函", title="t")


def names(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def errors(spoke: OfflineSpoke) -> dict[str, dict[str, Any]]:
    """Every NAME.error.json in failed/, by the name the drop had when it was dropped."""
    out = {}
    for path in spoke.failed.glob("*.error.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["original_name"]] = data
    return out


def has_chinese(text: str) -> bool:
    return re.search("[\u4e00-\u9fff]", text) is not None


async def scan_for(spoke: OfflineSpoke, seconds: float) -> None:
    """Scan again and again for ``seconds`` (the outbox must not take what is not complete)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await spoke.sender.scan()
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ complete, whatever the order

SLOW = Limits(stable_for=0.05, stable_for_unordered=2.0, metadata_wait=30.0, max_file_bytes=1 << 20)


async def test_folder_drop_is_not_taken_while_rsync_temporaries_are_inside(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """rsync writes NAME.meta.toml first (it sorts before the folder) and each file as
    .NAME.XXXXXX before renaming it; the spoke once sent one file of three."""
    spoke = offline_spoke(limits=SLOW)
    spoke.write_meta("吉政发4", TO_CC)
    folder = spoke.outbox / "吉政发4"
    folder.mkdir()
    (folder / "正文.txt").write_bytes(BODY)
    (folder / ".附件1.pdf.Xk3q9Z").write_bytes(b"%PDF half of it")
    (folder / ".附件2.pdf.Pq8m2A").write_bytes(b"%PDF")

    await scan_for(spoke, 3 * SLOW.stable_for_unordered / 2)  # longer than any quiet rule

    assert spoke.outbound() == []
    assert names(spoke.outbox) == ["吉政发4", "吉政发4.meta.toml"]
    (folder / ".附件1.pdf.Xk3q9Z").write_bytes(b"%PDF the whole attachment 1")
    (folder / ".附件1.pdf.Xk3q9Z").rename(folder / "附件1.pdf")
    (folder / ".附件2.pdf.Pq8m2A").write_bytes(b"%PDF the whole attachment 2")
    (folder / ".附件2.pdf.Pq8m2A").rename(folder / "附件2.pdf")
    await spoke.settle()

    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {
        "正文.txt": BODY,
        "附件1.pdf": b"%PDF the whole attachment 1",
        "附件2.pdf": b"%PDF the whole attachment 2",
    }


async def test_document_written_in_two_halves_after_its_metadata_is_sent_whole(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """Metadata first, then the document in two halves with a pause longer than
    stable_for: the spoke once sealed and sent the first half."""
    spoke = offline_spoke(limits=SLOW)
    spoke.write_meta("报告.txt", TO_CC)
    document = spoke.outbox / "报告.txt"
    half = "第一部分。".encode() * 200
    document.write_bytes(half)
    await scan_for(spoke, 6 * SLOW.stable_for)  # the writer pauses: stable_for passes
    assert spoke.outbound() == []
    with document.open("ab") as handle:
        handle.write("第二部分。".encode() * 200)
    whole = document.read_bytes()

    await spoke.settle()

    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"报告.txt": whole}


async def test_document_written_before_a_metadata_file_that_came_first_is_taken_whole(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """Metadata first, document later in one go: taken once quiet for stable_for_unordered."""
    spoke = offline_spoke(limits=SLOW)
    spoke.write_meta("报告.txt", TO_CC)
    await scan_for(spoke, 0.2)
    (spoke.outbox / "报告.txt").write_bytes(BODY)
    await spoke.settle()
    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"报告.txt": BODY}


async def test_document_held_open_in_word_is_not_taken_until_its_lock_file_goes(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke(limits=SLOW)
    spoke.drop("关于供暖的通知.docx", BODY, TO_CC)
    (spoke.outbox / "~$供暖的通知.docx").write_bytes(b"owner")  # Word's lock: ~$ + the end
    await scan_for(spoke, 3 * SLOW.stable_for_unordered / 2)
    assert spoke.outbound() == []
    (spoke.outbox / "~$供暖的通知.docx").unlink()
    await spoke.settle()
    assert len(spoke.outbound()) == 1


async def test_drop_whose_file_changes_while_it_is_sealed_goes_back_and_is_sent_whole(
    offline_spoke: OfflineSpokeFactory, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that still holds the file open writes more after the spoke checked it:
    the seal is thrown away and the drop waits in the outbox again, never sent partial."""
    spoke = offline_spoke()
    spoke.drop("报告.txt", b"first half\n", TO_CC)
    real_prepare = sender_module.prepare  # type: ignore[attr-defined]
    appended: list[bool] = []

    def prepare_then_write(*args: Any, **kwargs: Any) -> Any:
        prepared = real_prepare(*args, **kwargs)
        if not appended:  # the writer's second half lands while the spoke seals
            appended.append(True)
            with prepared.claimed.payload.open("ab") as handle:
                handle.write(b"second half\n")
        return prepared

    monkeypatch.setattr(sender_module, "prepare", prepare_then_write)
    with capture_logs() as logs:
        await spoke.settle()

    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"报告.txt": b"first half\nsecond half\n"}
    assert [e["event"] for e in logs].count("drop.changed_while_sealing") == 1
    assert spoke.queued() == [out.body_path]  # the first seal left nothing behind


# ------------------------------------------------------------------ metadata files


async def test_two_metadata_files_for_one_document_are_refused_together(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """two.txt.meta.toml and two.txt.meta.json naming different recipients: the JSON one
    once won silently, and the other failed with a false sentence."""
    spoke = offline_spoke()
    (spoke.outbox / "two.txt").write_bytes(BODY)
    spoke.write_meta("two.txt", TO_CC)
    spoke.write_meta(
        "two.txt",
        json.dumps({"to": "jl.jl", "classification": "内部", "doc_type": "函", "title": "t"}),
        ".meta.json",
    )

    await spoke.settle()

    assert spoke.outbound() == []
    assert names(spoke.failed) == [
        "two.txt",
        "two.txt.error.json",
        "two.txt.error.txt",
        "two.txt.meta.json",
        "two.txt.meta.toml",
    ]
    data = errors(spoke)["two.txt"]
    assert data["rule"] == "drop.two_metadata"
    assert "two.txt.meta.json" in data["message"]
    assert "two.txt.meta.toml" in data["message"]
    assert "not in the outbox" not in data["message"]


async def test_symlinked_metadata_file_is_refused_and_never_followed(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    elsewhere = spoke.ctx.config.spoke.root / "elsewhere.toml"
    elsewhere.write_text(TO_CC, encoding="utf-8")
    (spoke.outbox / "report.txt").write_bytes(BODY)
    (spoke.outbox / "report.txt.meta.toml").symlink_to(elsewhere)

    await spoke.settle()

    assert spoke.outbound() == []
    data = errors(spoke)["report.txt"]
    assert data["rule"] == "drop.symlink"
    assert data["values"] == {"file": "report.txt.meta.toml"}
    assert (spoke.failed / "report.txt.meta.toml").is_symlink()
    assert elsewhere.read_text(encoding="utf-8") == TO_CC


HOSTILE_METADATA = {
    "deep-json.txt": ("[" * 1000, ".meta.json", "nest more than"),
    "deep-toml.txt": ("x = " + "[" * 1000, ".meta.toml", "nest more than"),
    "huge-json.txt": ('{"to": ' + "1" * 5000 + "}", ".meta.json", "4300 digits"),
    "huge-toml.txt": ("to = " + "9" * 5000 + "\n", ".meta.toml", "4300 digits"),
    "before-1970.txt": (TO_CC + "expires = 1969-07-20T20:17:00Z\n", ".meta.toml", "before 1970"),
}


async def test_hostile_metadata_files_fail_their_drops_and_the_same_pass_goes_on(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """Deep nesting, huge integers and an expiry before 1970 once raised outside the
    spoke's error family: each drop sat in .spoke/work/ for ever and the rest of that
    scan pass was skipped."""
    spoke = offline_spoke()
    for name, (text, suffix, _) in HOSTILE_METADATA.items():
        (spoke.outbox / name).write_bytes(BODY)
        spoke.write_meta(name, text, suffix)
    spoke.drop("z-good.txt", BODY, TO_CC)  # sorts last: scanned after every hostile one

    await spoke.settle()

    [out] = spoke.outbound()
    assert out.name == "z-good.txt"
    found = errors(spoke)
    for name, (_, _, words) in HOSTILE_METADATA.items():
        assert found[name]["rule"] == "drop.bad_metadata", name
        assert words in found[name]["message"], name
        assert has_chinese(found[name]["message_zh"]), name
    assert names(spoke.work) == [out.work.name]


async def test_metadata_file_far_over_the_limit_is_refused_with_its_real_size(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("big-meta.txt", BODY, TO_CC + "# " + "x" * (1 << 20) + "\n")
    size = (spoke.outbox / "big-meta.txt.meta.toml").stat().st_size
    await spoke.settle()
    data = errors(spoke)["big-meta.txt"]
    assert data["rule"] == "drop.bad_metadata"
    assert f"the file is {size} bytes" in data["message"]


async def test_expiry_already_past_is_refused_before_sealing(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("late.txt", BODY, TO_CC + "expires = 2001-01-01T00:00:00+08:00\n")
    await spoke.settle()
    assert spoke.outbound() == []
    assert errors(spoke)["late.txt"]["rule"] == "drop.already_expired"


# ------------------------------------------------------------------ names


async def test_metadata_naming_a_temporary_is_answered_with_both_files_in_failed(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """report.part + report.part.meta.toml and 备份.tmp + 备份.tmp.meta.toml once sat in the
    outbox for ever with no word."""
    spoke = offline_spoke()
    for name in ("report.part", "备份.tmp"):
        (spoke.outbox / name).write_bytes(BODY)
        spoke.write_meta(name, TO_CC)

    await spoke.settle()

    assert names(spoke.outbox) == []
    assert spoke.outbound() == []
    found = errors(spoke)
    for name in ("report.part", "备份.tmp"):
        assert found[name]["rule"] == "drop.temporary_name"
        assert (spoke.failed / name).read_bytes() == BODY
        assert (spoke.failed / f"{name}.meta.toml").read_text(encoding="utf-8") == TO_CC


async def test_name_starting_with_two_dots_is_not_a_hidden_file_but_a_bad_name(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    (spoke.outbox / "..\\x").write_bytes(BODY)
    (spoke.outbox / "..报告.txt").write_bytes(BODY)
    spoke.write_meta("..报告.txt", TO_CC)

    await spoke.settle()

    assert names(spoke.outbox) == []
    found = errors(spoke)
    assert found["..\\x"]["rule"] == "drop.bad_name"
    assert found["..报告.txt"]["rule"] == "drop.bad_name"


@pytest.mark.parametrize("length", [230, 238, 245])
async def test_drop_with_a_long_name_lands_in_failed_with_its_explanation(
    offline_spoke: OfflineSpokeFactory, length: int
) -> None:
    """About 230 bytes of UTF-8 and more: the drop landed in failed/ with no error file
    (NAME.error.json was itself too long for the file system)."""
    spoke = offline_spoke()
    name = "关" * ((length - 4) // 3) + "x" * ((length - 4) % 3) + ".txt"
    assert len(name.encode()) == length
    for content in (b"first", b"second"):  # the second needs 'NAME (2)': longer still
        spoke.drop(name, content, NOWHERE)
        await spoke.settle()

    found = errors(spoke)
    assert set(found) == {name}  # both explained, under the original name
    explanations = sorted(spoke.failed.glob("*.error.json"))
    assert len(explanations) == 2
    for path in explanations:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["rule"] == "drop.unknown_recipient"
        assert data["original_name"] == name
        assert (spoke.failed / data["name"]).is_file()
        assert (spoke.failed / f"{data['name']}.meta.toml").is_file()
        assert len(os.fsencode(path.name)) <= 255
        text = path.with_suffix(".txt").read_text(encoding="utf-8")
        assert name in text
    contents = {
        (spoke.failed / json.loads(p.read_text("utf-8"))["name"]).read_bytes() for p in explanations
    }
    assert contents == {b"first", b"second"}
    assert names(spoke.outbox) == []
    assert names(spoke.work) == []


async def test_good_drop_with_a_long_name_is_sealed(offline_spoke: OfflineSpokeFactory) -> None:
    spoke = offline_spoke()
    name = "关" * 80 + ".txt"  # 244 bytes
    spoke.drop(name, BODY, TO_CC)
    await spoke.settle()
    [out] = spoke.outbound()
    assert out.name == name


GBK_NAME = "公文".encode("gbk") + b".txt"  # b'\xb9\xab\xce\xc4.txt'


async def test_name_that_is_not_utf8_is_shown_as_its_bytes_in_both_error_files(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """A GBK name from a Windows share was shown as \\udcb9...; people read \\xb9."""
    spoke = offline_spoke()
    write_raw(os.fsencode(spoke.outbox) + b"/" + GBK_NAME, BODY)
    write_raw(os.fsencode(spoke.outbox) + b"/" + GBK_NAME + b".meta.toml", TO_CC.encode())

    await spoke.settle()

    [data] = errors(spoke).values()
    assert data["rule"] == "drop.bad_name"
    assert data["original_name"] == "\\xb9\\xab\\xce\\xc4.txt"
    assert "\\xb9\\xab\\xce\\xc4.txt" in data["message"]
    assert "udcb9" not in json.dumps(data)
    text = next(spoke.failed.glob("*.error.txt")).read_text(encoding="utf-8")
    assert "\\xb9\\xab\\xce\\xc4.txt" in text
    assert "udcb9" not in text
    assert "GBK" in data["message_zh"]


async def test_metadata_in_another_unicode_normalisation_finds_its_document(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """A Mac writes names in NFD; a script writes the metadata file's name in NFC."""
    spoke = offline_spoke()
    nfd = unicodedata.normalize("NFD", "résumé.txt")
    (spoke.outbox / nfd).write_bytes(BODY)
    spoke.write_meta(unicodedata.normalize("NFC", "résumé.txt"), TO_CC)
    await spoke.settle()
    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {nfd: BODY}


# ------------------------------------------------------------------ declared sizes and digests


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_declared_digests_let_a_metadata_first_folder_go_as_soon_as_it_matches(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """With the files declared, the order and the pauses of the writer do not matter."""
    spoke = offline_spoke(limits=Limits(stable_for=0.05, stable_for_unordered=600.0))
    attachment = b"%PDF " + bytes(range(256)) * 8
    declared = (
        f'[[files]]\nname = "正文.txt"\nsize = {len(BODY)}\nsha256 = "{sha(BODY)}"\n'
        f'[[files]]\n"文件名" = "附件.pdf"\n"SHA256" = "{sha(attachment)}"\n'
    )
    spoke.write_meta("吉政发5", TO_CC + declared)
    folder = spoke.outbox / "吉政发5"
    folder.mkdir()
    (folder / "正文.txt").write_bytes(BODY)
    (folder / "附件.pdf").write_bytes(attachment[:100])
    await scan_for(spoke, 0.3)
    assert spoke.outbound() == []  # 附件.pdf does not have its declared digest yet
    with (folder / "附件.pdf").open("ab") as handle:
        handle.write(attachment[100:])

    async with asyncio.timeout(30):  # far less than stable_for_unordered
        await spoke.settle()

    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"正文.txt": BODY, "附件.pdf": attachment}
    status_notes = spoke.ctx.state.notes(out.msg_id)
    assert status_notes["completeness"] == "declared"
    assert status_notes["files"] == [
        {"name": "正文.txt", "size": len(BODY), "sha256": sha(BODY)},
        {"name": "附件.pdf", "size": len(attachment), "sha256": sha(attachment)},
    ]


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        (f'[[files]]\nname = "report.txt"\nsha256 = "{"0" * 64}"\n', "SHA-256 of 'report.txt'"),
        (f'[[files]]\nname = "report.txt"\nsize = {len(BODY) + 1}\n', "bytes,"),
        ('[[files]]\nname = "other.txt"\nsize = 1\n', "'other.txt' is declared but not"),
    ],
    ids=["wrong-digest", "wrong-size", "another-file"],
)
async def test_drop_that_does_not_match_its_declaration_is_refused_naming_the_file(
    offline_spoke: OfflineSpokeFactory, declared: str, words: str
) -> None:
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC + declared)
    await spoke.settle()
    assert spoke.outbound() == []
    data = errors(spoke)["report.txt"]
    assert data["rule"] == "drop.declared_mismatch"
    assert words in data["message"]
    assert has_chinese(data["message_zh"])


async def test_folder_file_that_is_not_declared_is_refused(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    declared = f'[[files]]\nname = "正文.txt"\nsize = {len(BODY)}\n'
    spoke.drop("请示", {"正文.txt": BODY, "附件.pdf": b"%PDF"}, TO_CC + declared)
    await spoke.settle()
    assert "'附件.pdf' is in the drop but not declared" in errors(spoke)["请示"]["message"]


# ------------------------------------------------------------------ duplicates


async def test_same_document_dropped_twice_is_refused_as_a_duplicate_naming_the_first(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC)
    await spoke.settle()
    [first] = spoke.outbound()
    # the same bytes and the same metadata, in JSON with Chinese field names this time
    (spoke.outbox / "report.txt").write_bytes(BODY)
    spoke.write_meta(
        "report.txt",
        json.dumps(
            {"主送": "jl.cc", "密级": "INTERNAL", "文种": "通知", "标题": "关于供暖的通知"},
            ensure_ascii=False,
        ),
        ".meta.json",
    )
    await spoke.settle()

    assert spoke.outbound() == [first]
    data = errors(spoke)["report.txt"]
    assert data["rule"] == "drop.duplicate"
    assert first.msg_id.hex() in data["message"]
    assert "resend = true" in data["hint"]


async def test_same_document_number_twice_is_refused_and_resend_sends_it_again(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    numbered = TO_CC + 'doc_number = "吉政发〔2026〕4号"\n'
    spoke.drop("v1.txt", b"first version", numbered)
    await spoke.settle()
    spoke.drop("v2.txt", b"corrected version", numbered)
    await spoke.settle()
    assert len(spoke.outbound()) == 1
    data = errors(spoke)["v2.txt"]
    assert data["rule"] == "drop.duplicate_doc_number"
    assert "吉政发〔2026〕4号" in data["message"]

    spoke.drop("v3.txt", b"corrected version", numbered + "resend = true\n")
    await spoke.settle()
    assert len(spoke.outbound()) == 2


async def test_a_refused_send_does_not_count_as_sent(offline_spoke: OfflineSpokeFactory) -> None:
    """The hub refused the first (disk low, say): dropping it again must go."""
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC)
    await spoke.settle()
    [first] = spoke.outbound()
    spoke.ctx.state.set_outbound_state(first.msg_id, "REJECTED", 0)
    spoke.drop("report.txt (again)", BODY, TO_CC)
    (spoke.outbox / "report.txt (again)").rename(spoke.outbox / "report.txt")
    (spoke.outbox / "report.txt (again).meta.toml").rename(spoke.outbox / "report.txt.meta.toml")
    await spoke.settle()
    assert len(spoke.outbound()) == 2


async def test_duplicate_check_is_off_with_a_window_of_zero(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke(limits=Limits(stable_for=0.02, metadata_wait=0.15, duplicate_window=0))
    for name in ("a.txt", "b.txt"):
        spoke.drop(name, BODY, TO_CC)
    (spoke.outbox / "b.txt").rename(spoke.outbox / "c.txt")
    (spoke.outbox / "b.txt.meta.toml").rename(spoke.outbox / "c.txt.meta.toml")
    (spoke.outbox / "a.txt").rename(spoke.outbox / "d.txt")
    (spoke.outbox / "a.txt.meta.toml").rename(spoke.outbox / "d.txt.meta.toml")
    await spoke.settle()
    assert len(spoke.outbound()) == 2


# ------------------------------------------------------------------ every refusal in two languages


def test_every_refusal_of_the_spoke_has_both_languages_and_says_what_to_do() -> None:
    for rule, texts in CATALOGUE.items():
        assert rule.startswith("drop."), rule
        assert has_chinese(texts.zh), rule
        assert has_chinese(texts.hint_zh), rule
        assert texts.en.endswith("."), rule
        assert texts.hint_en.endswith("."), rule


def test_every_reason_the_hub_can_give_is_explained_in_chinese() -> None:
    assert {r.value for r in Reason} <= set(HUB_REASONS)
    for reason in (*(r.value for r in Reason), "rule.skip_level", "something.new"):
        what, todo = hub_reason_zh(reason, retriable=False)
        assert has_chinese(what), reason
        assert has_chinese(todo), reason


def test_every_refusal_is_in_the_integrators_guide_as_written() -> None:
    guide = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    for rule, texts in CATALOGUE.items():
        row = next((line for line in guide.splitlines() if line.startswith(f"| `{rule}` |")), None)
        assert row is not None, f"docs/integrators.md has no row for {rule}"
        for text in (texts.zh, texts.hint_zh, texts.en, texts.hint_en):
            assert text.replace("|", "\\|") in row, (rule, text)


def test_every_hub_reason_is_in_the_integrators_guide() -> None:
    guide = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    for reason, (what, todo) in HUB_REASONS.items():
        assert f"| `{reason}` | {what} | {todo} |" in guide, reason


def test_error_file_shown_in_the_integrators_guide_is_what_the_spoke_writes(
    tmp_path: Path,
) -> None:
    guide = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    shown = guide.split("### What the spoke checks before anything leaves")[1]
    shown = shown.split("```text\n")[1].split("```")[0]
    (tmp_path / "吉政发4").mkdir()
    folder = FailedFolder(tmp_path / "failed")
    failed = folder.take(tmp_path / "吉政发4", [], "吉政发4")
    refusal = refuse(
        "drop.incomplete",
        document="吉政发4",
        temporaries="'.附件1.pdf.Xk3q9Z'",
        waited_s=300.0,
    )
    tracked = bytes.fromhex("3d0c7e5ab1f94e2c8a6d0b7f5e9c2a41")  # the guide's tracking id
    folder.explain(failed, refusal, original="吉政发4", at=0, msg_id=tracked)
    written = (tmp_path / "failed" / "吉政发4.error.txt").read_text(encoding="utf-8")
    when = re.compile(r"^时间 When: .*$", re.MULTILINE)
    assert when.sub("时间 When: …", written) == when.sub("时间 When: …", shown)


def test_example_configuration_shows_every_limit(tmp_path: Path) -> None:
    example = load_config(REPO / "config" / "spoke.example.toml")
    assert example.limits == Limits()  # the example states the defaults
    text = (REPO / "config" / "spoke.example.toml").read_text(encoding="utf-8")
    for name in Limits.model_fields:
        assert re.search(rf"^{name} = ", text, re.MULTILINE), name


def test_spokes_code_raises_only_refusals_the_catalogue_knows() -> None:
    raised = set()
    for path in (REPO / "spoke").glob("*.py"):
        raised |= set(re.findall(r'refuse\(\s*"(drop\.[a-z_]+)"', path.read_text("utf-8")))
    assert raised, "the pattern must find the spoke's refusals"
    assert raised == set(CATALOGUE), raised ^ set(CATALOGUE)


async def test_sender_clearance_refusal_does_not_talk_about_recipients(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke("jl.cc")
    spoke.drop(
        "report.txt",
        BODY,
        meta(to="jl.gov", classification="机密★1年", doc_type="报告", title="t", signatory="王某"),
    )
    await spoke.settle()
    data = errors(spoke)["report.txt"]
    assert data["rule"] == "drop.sender_clearance"
    assert "recipient" not in data["hint"].lower()
    assert "收文" not in data["hint_zh"]


def test_shown_name_escapes_bytes_and_control_characters() -> None:
    assert shown_name(os.fsdecode(GBK_NAME)) == "\\xb9\\xab\\xce\\xc4.txt"
    assert shown_name("通知\x1b[2J.txt") == "通知\\x1b[2J.txt"


# ------------------------------------------------------ the hub's answer overtakes a resend


async def test_resend_of_an_envelope_the_hub_answered_meanwhile_sends_nothing_and_raises_nothing(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """The resend loop read the QUEUED rows, then the hub's ACCEPTED removed a sealed body
    before the loop reached it: FileNotFoundError stopped the resend loop, and with it the
    agent (found by test_crash under load)."""
    spoke = offline_spoke()
    spoke.drop("report.txt", BODY, TO_CC)
    await spoke.settle()
    [out] = spoke.outbound()
    out.body_path.unlink()  # as _accepted() does, between the read of the rows and the publish

    await spoke.sender.republish()
    await spoke.sender.publish(out)


# ------------------------------------------------------------------ found in review


def declared(**file: object) -> str:
    return TO_CC + "[[files]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in file.items())


async def test_size_only_declaration_does_not_take_a_file_written_to_its_final_size_first(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    """Windows over a share sets the end of file first, then writes: a size that matches
    proves nothing, and a stalled writer's zeros were once sealed."""
    spoke = offline_spoke(limits=SLOW)
    whole = b"A" * 4000 + b"B" * 4000
    document = spoke.outbox / "report.pdf"
    spoke.write_meta("report.pdf", declared(name="report.pdf", size=len(whole)))
    with document.open("wb") as writer:  # the writer holds the file open throughout
        writer.truncate(len(whole))
        writer.write(whole[:4000])
        writer.flush()
        await scan_for(spoke, 10 * SLOW.stable_for)  # the network stalls
        assert spoke.outbound() == []
        writer.write(whole[4000:])
    await spoke.settle()
    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"report.pdf": whole}


async def test_digest_only_declaration_waits_for_a_slow_writer_and_takes_it_when_whole(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    spoke = offline_spoke(limits=SLOW)
    whole = b"A" * 4000 + b"B" * 4000
    spoke.write_meta("report.pdf", declared(name="report.pdf", sha256=sha(whole)))
    document = spoke.outbox / "report.pdf"
    document.write_bytes(whole[:4000])
    await scan_for(spoke, 10 * SLOW.stable_for)  # far below stable_for_unordered
    assert errors(spoke) == {}
    assert spoke.outbound() == []
    with document.open("ab") as writer:
        writer.write(whole[4000:])
    await spoke.settle()
    [out] = spoke.outbound()
    assert spoke.open_as(world, out, "jl.cc") == {"report.pdf": whole}
    assert spoke.ctx.state.notes(out.msg_id)["completeness"] == "declared"


async def test_document_and_metadata_renamed_into_place_at_once_are_taken_after_stable_for(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """The pattern the guide recommends (write under a temporary name, rename; the metadata
    the same way, last) gives both the same change time when done quickly: that is no
    sign of a metadata file written first, and the drop must not wait stable_for_unordered."""
    spoke = offline_spoke(limits=Limits(stable_for=0.05, stable_for_unordered=600.0))
    (spoke.outbox / ".report.txt.tmp").write_bytes(BODY)
    (spoke.outbox / ".report.txt.meta.toml.tmp").write_text(TO_CC, encoding="utf-8")
    (spoke.outbox / ".report.txt.tmp").rename(spoke.outbox / "report.txt")
    (spoke.outbox / ".report.txt.meta.toml.tmp").rename(spoke.outbox / "report.txt.meta.toml")
    async with asyncio.timeout(30):  # far less than stable_for_unordered
        await spoke.settle()
    [out] = spoke.outbound()
    assert spoke.ctx.state.notes(out.msg_id)["completeness"] == "metadata_last"


async def test_incomplete_one_file_drop_is_refused_with_its_temporaries_and_not_called_a_folder(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("report.pdf", BODY, TO_CC)
    (spoke.outbox / "report.pdf.part").write_bytes(b"an interrupted copy")

    await spoke.settle()

    data = errors(spoke)["report.pdf"]
    assert data["rule"] == "drop.incomplete"
    assert "'report.pdf.part'" in data["message"]
    assert "folder" not in data["message"]
    assert "文件夹" not in data["message_zh"]
    assert (spoke.failed / "report.pdf.part").read_bytes() == b"an interrupted copy"
    assert names(spoke.outbox) == []  # dropping it again is not refused for the old .part


async def test_a_refusal_that_quotes_the_document_number_keeps_it_out_of_the_log(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    number = "吉政发〔2026〕77号"
    numbered = TO_CC + f'doc_number = "{number}"\n'
    spoke.drop("a.txt", b"one", numbered)
    await spoke.settle()
    spoke.drop("b.txt", b"two", numbered)
    with capture_logs() as logs:
        await spoke.settle()
    [failed] = [e for e in logs if e["event"] == "drop.failed"]
    assert failed["rule"] == "drop.duplicate_doc_number"
    assert number not in json.dumps(logs, ensure_ascii=False, default=str)
    assert number in errors(spoke)["b.txt"]["message"]  # the integrator is told, of course


def immutable(path: Path) -> contextlib.AbstractContextManager[None]:
    """``path`` made immutable (chattr +i) for the block: not even root may move it, as
    the spoke's user may not move a folder it cannot write."""

    @contextlib.contextmanager
    def block() -> Iterator[None]:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)  # noqa: S603, S607
        if done.returncode != 0:
            pytest.skip(f"chattr +i refused here: {done.stderr.decode(errors='replace')}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: S603, S607

    return block()


async def test_drop_the_spoke_may_not_move_is_explained_beside_it_and_taken_once_it_changes(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    spoke = offline_spoke()
    spoke.drop("吉政发9", {"正文.txt": BODY}, TO_CC)
    folder = spoke.outbox / "吉政发9"
    with immutable(folder), capture_logs() as logs:
        await scan_for(spoke, 0.5)  # many passes
        assert names(spoke.work) == []  # nothing left behind, however often it was tried
        stuck = [e for e in logs if e["event"] == "drop.stuck"]
        assert len(stuck) == 1  # said once, not once a pass
        data = json.loads((spoke.outbox / "吉政发9.error.json").read_text(encoding="utf-8"))
        assert data["rule"] == "drop.cannot_move"
        assert has_chinese(data["hint_zh"])
    folder.chmod(0o775)  # what the operator does: the change lets the spoke try again
    await spoke.settle()
    assert len(spoke.outbound()) == 1
    assert names(spoke.outbox) == []  # the explanation went with the problem


async def test_sign_for_request_that_cannot_be_removed_is_answered_once(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """Rewriting its error file every pass woke the agent's own watch of signfor/ forever."""
    spoke = offline_spoke()
    signfor = spoke.ctx.config.folder("signfor")
    request = signfor / "not-a-msg-id"
    request.write_bytes(b"")
    receiver = Receiver(spoke.ctx)
    with immutable(request), capture_logs() as logs:
        await receiver.sign_for_requests(signfor)
        error = signfor / "not-a-msg-id.error.txt"
        first = error.stat()
        for _ in range(5):
            await receiver.sign_for_requests(signfor)
        assert error.stat().st_mtime_ns == first.st_mtime_ns  # not rewritten
        assert error.stat().st_ino == first.st_ino
    assert [e["event"] for e in logs].count("signfor.failed") == 1


async def test_metadata_file_without_its_document_that_may_not_be_moved_is_explained_once(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """An orphan the spoke cannot move is left alone once explained: its explanation,
    written into the watched outbox every pass, would otherwise wake the agent for ever."""
    spoke = offline_spoke()
    spoke.write_meta("ghost.txt", TO_CC)
    with immutable(spoke.outbox / "ghost.txt.meta.toml"), capture_logs() as logs:
        await scan_for(spoke, 1.0)  # metadata_wait is 0.15 s: many passes after it
        explanation = spoke.outbox / "ghost.txt.meta.toml.error.json"
        written = explanation.stat().st_ino
        await scan_for(spoke, 0.3)
        assert explanation.stat().st_ino == written  # not written again
    assert [e["event"] for e in logs].count("drop.stuck") == 1
    data = json.loads(explanation.read_text(encoding="utf-8"))
    assert data["rule"] == "drop.cannot_move"


async def test_an_unexpected_validation_error_while_sealing_never_puts_a_title_in_the_log(
    offline_spoke: OfflineSpokeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic's own text quotes the values it refused: a defect of ours there must not
    carry a classified title into the log, nor into the error file."""
    spoke = offline_spoke()
    title = "（涉密标题）关于某某的报告"

    class Inner(pydantic.BaseModel):
        title: pydantic.constr(max_length=3)  # type: ignore[valid-type]

    def seal_fails(*_: object, **__: object) -> None:
        Inner(title=title)

    monkeypatch.setattr(sealing_module, "seal_drop", seal_fails)
    spoke.drop(
        "report.txt", BODY, meta(to="jl.cc", classification="内部", doc_type="通知", title=title)
    )
    with capture_logs() as logs:
        await spoke.settle()
    data = errors(spoke)["report.txt"]
    assert data["rule"] == "drop.internal_error"
    assert "title" in data["message"]  # which field, for whoever reports the defect
    assert title not in json.dumps(data, ensure_ascii=False)
    assert title not in json.dumps(logs, ensure_ascii=False, default=str)
