"""Request files of the flows on a document (recall, its answers, return, reports): how
they are named and read, and how one that cannot be done is refused.

A request is a file in its folder named after the document's msg_id (``recall/<msg_id>``,
``return/<msg_id>``), with a suffix where the name says more
(``recall-answers/<msg_id>.accept``, ``reports/<msg_id>.done``); its content is the words
that go with it (a reason, a comment), checked as a note's (schemas.notes). One that cannot
be done is answered with ``NAME.error.txt`` (:meth:`RequestRefusedError.text`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from schemas.errors import UsageError, XchgError
from schemas.notes import check_text
from schemas.receipts import REPORTS, ReceiptStatus
from spoke.files import shown_name

REQUEST_MAX = 64 * 1024  # bytes of a request file read (a note is at most 2000 characters)
# a report (办理) by name: its status in English (any case) or its Chinese word
REPORT_ORDER = (
    ReceiptStatus.READ,
    ReceiptStatus.HANDLING,
    ReceiptStatus.DONE,
    ReceiptStatus.CASE_ACCEPTED,
    ReceiptStatus.CASE_DECLINED,
)
assert frozenset(REPORT_ORDER) == REPORTS  # noqa: S101 - every report has its words
REPORT_WORDS = {
    **{s.value.lower(): s for s in REPORT_ORDER},
    **{s.zh: s for s in REPORT_ORDER},
}
REPORT_WORDS_EN = ", ".join(s.value.lower() for s in REPORT_ORDER)
REPORT_WORDS_ZH = "、".join(s.zh for s in REPORT_ORDER)


class RequestRefusedError(XchgError):
    """A request that cannot be done: its rule, and what to do in both languages."""

    def __init__(self, rule: str, zh: str, en: str) -> None:
        super().__init__(f"{rule}: {en}")
        self.rule, self.zh, self.en = rule, zh, en

    def text(self) -> str:
        return f"{self.zh}（{self.rule}）\n{self.en} ({self.rule})\n"

    def line(self) -> str:
        """The same as one line (a command's expected error)."""
        return f"{self.zh} / {self.rule}: {self.en}"


class NotNowError(XchgError):
    """A request that cannot be done while the spoke may not send: left for a later scan."""


def request_msg_id(name: str, kind: str) -> bytes:
    """The msg_id a request file is named after (``recall-answers/`` and ``reports/``
    with their suffix)."""
    stem = name
    if kind == "reports":
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            raise RequestRefusedError(
                "flow.bad_request",
                f"“{shown_name(name)}”应命名为 msg_id.状态，如 msg_id.done 或 msg_id.办结"
                f"（状态：{REPORT_WORDS_ZH}）",
                f"'{shown_name(name)}' must be named MSG_ID.STATUS, e.g. MSG_ID.done "
                f"(STATUS: {REPORT_WORDS_EN}, or the Chinese word)",
            )
        report_status(suffix)  # refused here if the suffix says no report
    elif kind == "recall-answers":
        stem, dot, suffix = name.rpartition(".")
        if not dot or suffix not in ("accept", "refuse"):
            raise RequestRefusedError(
                "flow.bad_request",
                f"“{shown_name(name)}”应命名为 msg_id.accept（同意撤回）或 msg_id.refuse（不同意）",
                f"'{shown_name(name)}' must be named MSG_ID.accept (agree to the recall) or "
                "MSG_ID.refuse (keep the document)",
            )
    msg_id = b""
    if len(stem) == 32 and stem == stem.lower():
        with contextlib.suppress(ValueError):
            msg_id = bytes.fromhex(stem)
    if len(msg_id) != 16:
        raise RequestRefusedError(
            "flow.bad_request",
            f"“{shown_name(name)}”不是文件的 msg_id：请求文件应以 msg_id（32 位小写十六进制）命名",
            f"'{shown_name(name)}' is not a document's msg_id: name the request file after "
            "the msg_id (32 lowercase hex digits)",
        )
    return msg_id


def read_request(path: Path, kind: str) -> tuple[str, str]:
    """The request's name and its words (stripped; '' if none), checked as a note's."""
    with path.open("rb") as handle:
        data = handle.read(REQUEST_MAX + 1)
    try:
        text = data.decode("utf-8").strip()
        if len(data) > REQUEST_MAX:
            raise UsageError(f"the file has more than {REQUEST_MAX} bytes")
        if text:
            check_text(text)
    except (UnicodeDecodeError, UsageError) as exc:
        said = "the file is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        what_zh, what_en = ("说明", "comment") if kind == "reports" else ("理由", "reason")
        raise RequestRefusedError(
            "flow.bad_note",
            f"{kind}/{shown_name(path.name)} 的内容（{what_zh}）不可用："
            "须为 UTF-8 文字，1 至 2000 字",
            f"the {what_en} in {kind}/{shown_name(path.name)} cannot be used: {said}; write 1 "
            "to 2000 characters of UTF-8 text",
        ) from exc
    return path.name, text


def report_status(word: str) -> ReceiptStatus:
    """The report a word names: READ, HANDLING, DONE, CASE_ACCEPTED or CASE_DECLINED in
    any case, or 已阅, 办理中, 办结, 受理, 不予受理."""
    status = REPORT_WORDS.get(word.strip().lower())
    if status is None:
        raise RequestRefusedError(
            "flow.bad_request",
            f"“{shown_name(word)}”不是办理状态：请用 {REPORT_WORDS_ZH}（或 {REPORT_WORDS_EN}）",
            f"'{shown_name(word)}' is not a report of handling: use {REPORT_WORDS_EN} "
            "(any case), or the Chinese word",
        )
    return status
