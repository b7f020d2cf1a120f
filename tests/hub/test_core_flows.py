"""The hub's judgement of flow statements (hubd.core.flows), as tables: no store, no clock."""

from __future__ import annotations

import pytest

from hubd.core.deadlines import Handling, later
from hubd.core.flows import Document, Forward, Recall, Refuse, judge
from hubd.core.states import DeliveryState
from schemas.labels import Classification, DocType
from schemas.receipts import ReceiptEntry, ReceiptStatus

S = ReceiptStatus
D = DeliveryState
MSG = bytes(range(16))
FRAME = b"\x11" * 32
DOC = Document("jl.gov", "govnet", Classification.INTERNAL, FRAME, recalled=False)
RECALLED_DOC = Document("jl.gov", "govnet", Classification.INTERNAL, FRAME, recalled=True)


def said(
    status: ReceiptStatus,
    *,
    by: str = "jl.cc",
    subject: bytes = FRAME,
    label: Classification = Classification.INTERNAL,
) -> ReceiptEntry:
    return ReceiptEntry(
        msg_id=MSG,
        recipient=None if status.issued_by_sender else by,
        status=status,
        at=1,
        subject=subject,
        classification=label,
        reason=None,
        detail=None,
        retriable=False,
    )


def reason(judgement: object) -> str:
    assert isinstance(judgement, Refuse)
    return judgement.reason.value


def test_the_sender_recalls_its_document_first_and_then_repeats() -> None:
    assert judge(said(S.RECALL, by="jl.gov"), "jl.gov", DOC, None) == Recall(first=True)
    assert judge(said(S.RECALL, by="jl.gov"), "jl.gov", RECALLED_DOC, None) == Recall(first=False)


@pytest.mark.parametrize("issuer", ["jl.cc", "jl.jl", "cn.gov"])
def test_a_recall_by_anyone_but_the_sender_is_refused_naming_the_sender(issuer: str) -> None:
    judgement = judge(said(S.RECALL, by=issuer), issuer, DOC, D.DELIVERED)
    assert reason(judgement) == "flow.not_sender"
    assert isinstance(judgement, Refuse)
    assert "only its sender, jl.gov" in judgement.detail


@pytest.mark.parametrize("status", [S.RECALL, S.RETURNED, S.WITHDRAWN])
def test_a_statement_about_a_document_the_hub_never_held_is_refused(status: ReceiptStatus) -> None:
    assert reason(judge(said(status), "jl.cc", None, None)) == "flow.unknown_message"


@pytest.mark.parametrize("status", [S.RECALL, S.RETURNED, S.WITHDRAWN])
def test_an_outsider_learns_nothing_of_a_document_not_even_that_it_exists(
    status: ReceiptStatus,
) -> None:
    judgement = judge(said(status, by="jl.yb"), "jl.yb", DOC, None)
    assert judgement == judge(said(status, by="jl.yb"), "jl.yb", None, None)
    assert isinstance(judgement, Refuse)
    assert not judgement.disclose
    assert "jl.gov" not in judgement.detail


@pytest.mark.parametrize("status", [S.RECALL, S.RETURNED])
def test_a_statement_naming_another_frame_or_a_lower_label_is_refused(
    status: ReceiptStatus,
) -> None:
    issuer = "jl.gov" if status is S.RECALL else "jl.cc"
    other = said(status, by=issuer, subject=b"\x22" * 32)
    assert reason(judge(other, issuer, DOC, D.DELIVERED)) == "flow.wrong_subject"
    lower = said(status, by=issuer, label=Classification.PUBLIC)
    assert reason(judge(lower, issuer, DOC, D.DELIVERED)) == "flow.wrong_subject"
    higher = said(status, by=issuer, label=Classification.TOP_SECRET)  # above its channel
    assert reason(judge(higher, issuer, DOC, D.DELIVERED)) == "flow.wrong_subject"


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        (D.SENT, "forward"),
        (D.DELIVERED, "forward"),
        (D.SIGNED_FOR, "forward"),
        (D.PENDING, "flow.not_received"),
        (D.EXPIRED, "flow.not_received"),
        (D.DEAD, "flow.not_received"),
        (D.RECALLED, "flow.not_received"),
        (None, "flow.unknown_message"),  # an outsider: told nothing
    ],
)
def test_a_return_is_forwarded_only_from_a_recipient_that_holds_the_document(
    delivery: DeliveryState | None, expected: str
) -> None:
    judgement = judge(said(S.RETURNED), "jl.cc", DOC, delivery)
    if expected == "forward":
        assert judgement == Forward("jl.gov", "govnet")
    else:
        assert reason(judgement) == expected


def test_a_return_after_the_sender_recalled_the_document_is_refused() -> None:
    assert reason(judge(said(S.RETURNED), "jl.cc", RECALLED_DOC, D.DELIVERED)) == (
        "flow.not_received"
    )


@pytest.mark.parametrize("status", [S.WITHDRAWN, S.RECALL_ACCEPTED, S.RECALL_REFUSED])
def test_an_answer_to_a_recall_is_forwarded_only_after_a_recall(status: ReceiptStatus) -> None:
    assert judge(said(status), "jl.cc", RECALLED_DOC, D.SIGNED_FOR) == Forward("jl.gov", "govnet")
    assert judge(said(status), "jl.cc", RECALLED_DOC, D.RECALLED) == Forward("jl.gov", "govnet")
    assert reason(judge(said(status), "jl.cc", DOC, D.DELIVERED)) == "flow.not_recalled"
    assert reason(judge(said(status), "jl.jl", RECALLED_DOC, None)) == "flow.unknown_message"
    by_sender = said(status, by="jl.gov")
    assert reason(judge(by_sender, "jl.gov", RECALLED_DOC, None)) == "flow.not_a_recipient"


PETITION = Document(
    "jl.gov", "govnet", Classification.INTERNAL, FRAME, recalled=False, doc_type=DocType.PETITION
)


@pytest.mark.parametrize(
    ("status", "handling"),
    [
        (S.READ, Handling.READ),
        (S.HANDLING, Handling.HANDLING),
        (S.DONE, Handling.DONE),
    ],
)
def test_a_report_of_handling_is_forwarded_and_kept_from_a_recipient_that_holds_it(
    status: ReceiptStatus, handling: Handling
) -> None:
    assert judge(said(status), "jl.cc", DOC, D.SIGNED_FOR) == Forward("jl.gov", "govnet", handling)
    assert reason(judge(said(status), "jl.cc", DOC, D.PENDING)) == "flow.not_received"
    assert reason(judge(said(status), "jl.cc", RECALLED_DOC, D.DELIVERED)) == "flow.not_received"


@pytest.mark.parametrize("status", [S.CASE_ACCEPTED, S.CASE_DECLINED])
def test_accepting_or_declining_is_said_of_a_petition_only(status: ReceiptStatus) -> None:
    assert judge(said(status), "jl.cc", PETITION, D.DELIVERED) == Forward(
        "jl.gov", "govnet", Handling(status.value)
    )
    assert reason(judge(said(status), "jl.cc", DOC, D.DELIVERED)) == "flow.not_a_petition"


@pytest.mark.parametrize(
    ("held", "reported", "kept"),
    [
        (None, Handling.READ, Handling.READ),
        (Handling.READ, Handling.HANDLING, Handling.HANDLING),
        (Handling.DONE, Handling.READ, Handling.DONE),  # a late 已阅 takes nothing back
        (Handling.CASE_ACCEPTED, Handling.DONE, Handling.DONE),
        (Handling.CASE_DECLINED, Handling.HANDLING, Handling.CASE_DECLINED),
    ],
)
def test_a_report_never_takes_the_handling_back(
    held: Handling | None, reported: Handling, kept: Handling
) -> None:
    assert later(held, reported) is kept
