"""The spoke's file rules (spoke.files): names it accepts, names it writes, files it sends."""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from spoke.files import (
    MAX_NAME_BYTES,
    check_regular,
    is_clutter,
    is_ignored,
    is_temporary,
    meta_payload_name,
    name_problem,
    sanitise,
    temporary_of,
)
from spoke.refusals import Refusal

# ------------------------------------------------------------------ name_problem


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        (".", "dot name"),
        ("..", "dot name"),
        ("../etc/passwd", "path separator"),
        ("a/b.txt", "path separator"),
        ("/etc/passwd", "path separator"),
        ("..\\evil.txt", "path separator"),
        ("C:\\Windows\\evil.txt", "path separator"),
        ("..evil.txt", "starts with '..'"),
        ("bell\x07.txt", "control character"),
        ("nul\x00byte.txt", "control character"),
        ("line\nbreak.txt", "control character"),
        ("esc\x1b[31m.txt", "control character"),
        ("del\x7f.txt", "control character"),
        ("txt.exe\u202e.pdf", "control character"),  # right-to-left override
        ("soft\xadhyphen.txt", "control character"),  # format characters hide in names
        ("CON", "reserved device name CON"),
        ("con.txt", "reserved device name CON"),
        ("CON .txt", "reserved device name CON"),
        ("NUL", "reserved device name NUL"),
        ("nul.tar.gz", "reserved device name NUL"),
        ("PRN.pdf", "reserved device name PRN"),
        ("AUX", "reserved device name AUX"),
        ("COM1", "reserved device name COM1"),
        ("com1.log", "reserved device name COM1"),
        ("LPT9", "reserved device name LPT9"),
        ("LPT9.txt", "reserved device name LPT9"),
        ("report.", "ends with a space or a dot"),
        ("report ", "ends with a space or a dot"),
        ("a<b.txt", "Windows file systems refuse"),
        ("a>b.txt", "Windows file systems refuse"),
        ("a:b.txt", "Windows file systems refuse"),
        ('a"b.txt', "Windows file systems refuse"),
        ("a|b.txt", "Windows file systems refuse"),
        ("a?b.txt", "Windows file systems refuse"),
        ("a*b.txt", "Windows file systems refuse"),
        ("a" * (MAX_NAME_BYTES + 1), f"longer than {MAX_NAME_BYTES} bytes"),
        ("报" * 86, f"longer than {MAX_NAME_BYTES} bytes"),  # 258 bytes in UTF-8
        (os.fsdecode(b"\xff.txt"), "not valid UTF-8"),
        (os.fsdecode("报告".encode("gb18030") + b".doc"), "not valid UTF-8"),
    ],
)
def test_refused_name_gives_its_reason(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None, name
    assert reason in problem


@pytest.mark.parametrize(
    "name",
    [
        "关于做好冬季供暖工作的通知.docx",
        "report.pdf",
        "a" * MAX_NAME_BYTES,
        "报" * 85,  # 255 bytes
        "CONSOLE.txt",
        "con-notes.txt",
        "LPT0.txt",
        "COM10",
        "附件1 (扫描件).pdf",
        "家庭\u200d.txt",  # the zero-width joiner of emoji sequences
        "v1.2.3.tar.gz",
        "#1 & 2 [final].txt",
    ],
)
def test_ordinary_name_has_no_problem(name: str) -> None:
    assert name_problem(name) is None


# ------------------------------------------------------------------ sanitise


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("报告.docx", "报告.docx"),
        ("../../etc/passwd", "__._etc_passwd"),
        ("a\\b.txt", "a_b.txt"),
        ("a<b>:c.txt", "a_b__c.txt"),
        ("bell\x07.txt", "bell_.txt"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
        (".hidden", "_hidden"),
        ("  padded.txt . ", "padded.txt"),
        ("", "file"),
        ("...", "file"),
    ],
)
def test_sanitise_makes_a_safe_name(name: str, expected: str) -> None:
    assert sanitise(name, set()) == expected


def test_sanitise_makes_names_unique_ignoring_unicode_normalisation() -> None:
    """A Mac cannot hold both: NFC and NFD spellings of one name are the same file there."""
    nfc, nfd = (unicodedata.normalize(form, "附件é.pdf") for form in ("NFC", "NFD"))
    taken: set[str] = set()
    second = unicodedata.normalize("NFD", "附件é (2).pdf")
    assert [sanitise(n, taken) for n in (nfc, nfd)] == [nfc, second]


def test_sanitise_makes_names_unique_ignoring_case() -> None:
    taken = {"meta.json"}
    names = [sanitise(n, taken) for n in ["a.txt", "A.TXT", "a.txt", "a (2).txt", "META.JSON"]]
    assert len({n.lower() for n in names} | {"meta.json"}) == len(names) + 1
    assert names[:3] == ["a.txt", "A (2).TXT", "a (3).txt"]
    assert taken == {"meta.json", *names}


@pytest.mark.parametrize(
    "name",
    [
        "CON .txt",  # a reserved device name before the space
        "x" * 199 + ". and more words to cut.pdf",  # cut to 200 bytes, it ends with a dot
        "x" * 199 + "  and more words to cut.pdf",  # ... or with a space
        "txt.exe\u202e.pdf",  # format characters (Cf) pass through
        "soft\xadhyphen.txt",
        os.fsdecode(b"\xff.txt"),  # undecodable bytes: UnicodeEncodeError
    ],
    ids=["reserved-before-space", "cut-ends-in-dot", "cut-ends-in-space", "bidi-override",
         "soft-hyphen", "undecodable"],
)  # fmt: skip
def test_sanitised_name_passes_name_problem(name: str) -> None:
    assert name_problem(sanitise(name, set())) is None


@given(st.text())
@example("CON .txt")
@example("x" * 199 + ". tail")
@example("a\u202eb")
def test_any_text_sanitises_to_a_name_without_problems(name: str) -> None:
    assert name_problem(sanitise(name, set())) is None


@given(st.binary(min_size=1, max_size=300))
def test_any_file_system_name_sanitises_to_a_name_without_problems(raw: bytes) -> None:
    assert name_problem(sanitise(os.fsdecode(raw), set())) is None


@given(st.lists(st.text(alphabet="aAbB. (2)<", max_size=6), max_size=30))
def test_sanitised_names_are_unique_ignoring_case(names: list[str]) -> None:
    taken: set[str] = set()
    out = [sanitise(n, taken) for n in names]
    assert len({n.lower() for n in out}) == len(out)


# ------------------------------------------------------------------ check_regular

LIMIT = 1024


def refusal(path: Path, max_bytes: int = LIMIT) -> Refusal:
    with pytest.raises(Refusal) as caught:
        check_regular(path, max_bytes=max_bytes)
    return caught.value


def test_regular_file_within_the_limit_passes_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "report.txt"
    path.write_bytes(b"x" * LIMIT)
    assert check_regular(path, max_bytes=LIMIT).st_size == LIMIT


def test_symlink_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_bytes(b"content")
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "real.txt")
    found = refusal(link)
    assert found.rule == "drop.symlink"
    assert found.values == {"file": "link.txt"}


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "nowhere.txt")
    assert refusal(link).rule == "drop.symlink"


def test_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    found = refusal(fifo)
    assert found.rule == "drop.not_a_file"
    assert "pipe.txt" in found.message


def test_device_file_is_refused(tmp_path: Path) -> None:
    device = tmp_path / "null.txt"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device file needs CAP_MKNOD")
    assert refusal(device).rule == "drop.not_a_file"


def test_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    assert refusal(tmp_path).rule == "drop.not_a_file"


def test_hard_linked_file_is_refused_with_its_link_count(tmp_path: Path) -> None:
    original = tmp_path / "original.txt"
    original.write_bytes(b"content")
    linked = tmp_path / "linked.txt"
    os.link(original, linked)
    found = refusal(linked)
    assert found.rule == "drop.hard_link"
    assert found.values == {"file": "linked.txt", "links": 2}
    assert refusal(original).rule == "drop.hard_link"  # both names are the same file


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.touch()
    found = refusal(path)
    assert found.rule == "drop.empty_file"
    assert "0 bytes" in found.message


def test_file_over_the_limit_is_refused_with_size_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (LIMIT + 1))
    found = refusal(path)
    assert found.rule == "drop.file_too_large"
    assert found.values == {"file": "big.bin", "size": LIMIT + 1, "limit": LIMIT}
    assert str(LIMIT + 1) in found.message
    assert str(LIMIT) in found.message
    assert "max_file_bytes" in found.hint


def test_refusal_reads_as_rule_sentence_and_hint_in_both_languages() -> None:
    found = Refusal(
        "drop.empty_file",
        "'a.txt' is empty (0 bytes).",
        "Check it.",
        {"file": "a"},
        message_zh="“a.txt”是空文件。",
        hint_zh="请检查。",
    )
    assert str(found) == "[drop.empty_file] 'a.txt' is empty (0 bytes). Check it."
    assert found.as_json() == {
        "rule": "drop.empty_file",
        "message": "'a.txt' is empty (0 bytes).",
        "hint": "Check it.",
        "message_zh": "“a.txt”是空文件。",
        "hint_zh": "请检查。",
        "values": {"file": "a"},
    }


# ------------------------------------------------------------------ is_ignored, meta names


@pytest.mark.parametrize(
    "name",
    [
        ".draft.docx",
        ".report.txt.meta.toml",
        ".~lock.report.docx#",
        "report.docx.part",
        "report.txt.meta.toml.part",
        "upload.tmp",
        "report.txt.meta.json.tmp",
        "report.txt.error.txt",
        "report.txt.error.json",
    ],
)
def test_dot_files_part_and_tmp_files_are_ignored(name: str) -> None:
    assert is_ignored(name)


@pytest.mark.parametrize(
    "name",
    ["report.txt", "report.txt.meta.toml", "party.docx", "temp.txt", "template.tmpl", "请示"],
)
def test_ordinary_names_are_not_ignored(name: str) -> None:
    assert not is_ignored(name)


@pytest.mark.parametrize(
    ("meta", "payload"),
    [
        ("report.txt.meta.toml", "report.txt"),
        ("report.txt.meta.json", "report.txt"),
        ("请示.meta.toml", "请示"),
        ("a.meta.toml.meta.json", "a.meta.toml"),
        (".meta.toml", None),
        (".meta.json", None),
        ("report.txt", None),
        ("report.meta.yaml", None),
        ("report.txt.meta.toml.part", None),
    ],
)
def test_meta_payload_name_is_the_document_the_metadata_file_names(
    meta: str, payload: str | None
) -> None:
    assert meta_payload_name(meta) == payload


# ------------------------------------------------------------------ temporaries and clutter


@pytest.mark.parametrize(
    ("temporary", "name"),
    [
        (".正文.pdf.Xk3q9Z", "正文.pdf"),  # rsync
        (".report.txt.tmp", "report.txt"),
        ("report.txt.part", "report.txt"),
        ("REPORT.TXT.PART", "report.txt"),
        ("report.txt.tmp", "report.txt"),
        (".~lock.通知.docx#", "通知.docx"),  # LibreOffice
        ("~$通知.docx", "通知.docx"),  # Word, a short name
        ("~$供暖的通知.docx", "关于供暖的通知.docx"),  # Word, a long name: less two characters
    ],
)
def test_temporary_of_a_document_is_recognised(temporary: str, name: str) -> None:
    assert is_temporary(temporary)
    assert temporary_of(temporary, name)


@pytest.mark.parametrize(
    ("temporary", "name"),
    [
        (".report.txt-notes", "report.txt"),  # no dot after the name: another file's
        (".abc.txt.Xk3q9Z", "a"),  # rsync copying abc.txt, not a
        ("~$.txt", "a.txt"),
        ("~$x.docx", "关于供暖的通知.docx"),
        ("report.part", "report.txt"),
    ],
)
def test_temporary_of_another_document_is_not_this_ones(temporary: str, name: str) -> None:
    assert not temporary_of(temporary, name)


@pytest.mark.parametrize(
    ("name", "siblings", "clutter"),
    [
        (".DS_Store", set(), True),
        ("Thumbs.db", set(), True),
        ("DESKTOP.INI", set(), True),
        ("._正文.pdf", {"正文.pdf"}, True),  # a Mac's AppleDouble beside its file
        ("._附件.pdf.Xk3q9Z", {"附件.pdf"}, False),  # rsync copying _附件.pdf...
        ("._附件.pdf", set(), False),
    ],
)
def test_clutter_is_told_from_temporaries(name: str, siblings: set[str], clutter: bool) -> None:
    assert is_clutter(name, siblings) is clutter
    assert is_temporary(name, siblings) is not clutter


def test_two_dots_make_no_hidden_file() -> None:
    assert not is_temporary("..\\x")
    assert not is_ignored("..报告.txt")
