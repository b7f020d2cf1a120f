"""The plan for a receipt batch (hubd.core.receipts), as tables: synchronous, no store.

The status -> event mapping is written out here, one row per status, so a swapped row (a
SIGNED_FOR recorded as DELIVERED once passed every delivery test) fails here.
"""

from __future__ import annotations

import pytest

from hubd.core.receipts import (
    Confirm,
    NeedOrigins,
    Origin,
    ReceiptPlan,
    plan_receipts,
    receipt_event,
)
from hubd.core.states import DeliveryState, Event, next_state
from schemas.ids import new_msg_id
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus

NOW = 1_795_000_000_000
SUBJECT = bytes(32)
FROM_GOV = Origin("jl.gov", "govnet", Classification.INTERNAL)
FROM_CN = Origin("cn.gov", "classified", Classification.INTERNAL)

# status -> (the event it gives a delivery, the state a SENT delivery reaches)
EXPECTED: dict[ReceiptStatus, tuple[Event | None, DeliveryState | None]] = {
    ReceiptStatus.DELIVERED: (Event.DELIVERED, DeliveryState.DELIVERED),
    ReceiptStatus.SIGNED_FOR: (Event.SIGNED_FOR, DeliveryState.SIGNED_FOR),
    ReceiptStatus.ACCEPTED: (None, None),  # the hub's own statuses move no delivery
    ReceiptStatus.REJECTED: (None, None),
    ReceiptStatus.EXPIRED: (None, None),
    ReceiptStatus.DEAD: (None, None),
    ReceiptStatus.RECALLED: (None, None),
    ReceiptStatus.REFUSED: (None, None),
    # flow statements are judged by hubd.core.flows (tests/hub/test_core_flows.py)
    ReceiptStatus.RECALL: (None, None),
    ReceiptStatus.WITHDRAWN: (None, None),
    ReceiptStatus.RECALL_ACCEPTED: (None, None),
    ReceiptStatus.RECALL_REFUSED: (None, None),
    ReceiptStatus.RETURNED: (None, None),
    ReceiptStatus.READ: (None, None),  # reports of handling: judged by hubd.core.flows too
    ReceiptStatus.HANDLING: (None, None),
    ReceiptStatus.DONE: (None, None),
    ReceiptStatus.CASE_ACCEPTED: (None, None),
    ReceiptStatus.CASE_DECLINED: (None, None),
    ReceiptStatus.REMINDED: (None, None),  # the hub's own
}


def entry(
    status: ReceiptStatus = ReceiptStatus.DELIVERED,
    msg_id: bytes | None = None,
    recipient: str | None = "jl.cc",
    classification: Classification = Classification.INTERNAL,
) -> ReceiptEntry:
    refusal = status in {
        ReceiptStatus.REJECTED,
        ReceiptStatus.DEAD,
        ReceiptStatus.REFUSED,
        ReceiptStatus.REMINDED,
    }
    return ReceiptEntry(
        msg_id=new_msg_id() if msg_id is None else msg_id,
        recipient=None if status.issued_by_sender else recipient,
        status=status,
        at=NOW,
        subject=SUBJECT,
        classification=classification,
        reason="delivery.gave_up" if refusal else None,
        detail="a sentence that says why" if refusal else None,
        retriable=False,
    )


def planned(entries: list[ReceiptEntry], origins: dict[bytes, Origin]) -> ReceiptPlan:
    plan = plan_receipts(entries, origins, looked_up=True)
    assert isinstance(plan, ReceiptPlan)
    return plan


# ---------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize("status", list(ReceiptStatus), ids=str)
def test_each_receipt_status_gives_its_own_event_and_moves_a_sent_delivery_to_its_state(
    status: ReceiptStatus,
) -> None:
    event, reached = EXPECTED[status]
    assert receipt_event(status) is event
    if event is not None:
        assert next_state(DeliveryState.SENT, event) is reached


def test_the_mapping_table_has_a_row_for_every_receipt_status() -> None:
    assert set(EXPECTED) == set(ReceiptStatus)
    assert {receipt_event(s) for s in ReceiptStatus} == {Event.DELIVERED, Event.SIGNED_FOR, None}


def test_a_signed_for_receipt_is_never_recorded_as_delivered() -> None:
    signed = entry(ReceiptStatus.SIGNED_FOR)
    assert signed.msg_id is not None
    plan = planned([signed], {signed.msg_id: FROM_GOV})
    (confirm,) = plan.confirm
    assert confirm.event is Event.SIGNED_FOR
    # a delivery already DELIVERED moves on to SIGNED_FOR, not back to DELIVERED
    assert next_state(DeliveryState.DELIVERED, confirm.event) is DeliveryState.SIGNED_FOR


# ---------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("status", list(ReceiptStatus), ids=str)
def test_a_batch_entry_of_each_status_is_confirmed_or_ignored_as_the_mapping_says(
    status: ReceiptStatus,
) -> None:
    one = entry(status)
    assert one.msg_id is not None
    plan = planned([one], {one.msg_id: FROM_GOV})
    event, _ = EXPECTED[status]
    if event is None:
        assert plan.confirm == ()
        assert plan.ignored == (one,)
        assert not plan.records
        assert plan.forward is None
    else:
        assert plan.confirm == (Confirm(one, one.msg_id, "jl.cc", event, FROM_GOV),)
        assert plan.records
        assert plan.forward == ("jl.gov", "govnet")
        assert plan.senders == 1


def test_entries_without_msg_id_or_recipient_are_ignored() -> None:
    no_recipient = entry(recipient=None)
    plan = planned([no_recipient], {})
    assert plan.ignored == (no_recipient,)
    assert not plan.records


def test_a_message_not_in_memory_is_looked_up_once_per_msg_id() -> None:
    known, unknown = entry(), entry()
    assert known.msg_id is not None
    assert unknown.msg_id is not None
    again = entry(ReceiptStatus.SIGNED_FOR, msg_id=unknown.msg_id)
    ask = plan_receipts([known, unknown, again], {known.msg_id: FROM_GOV}, looked_up=False)
    assert ask == NeedOrigins((unknown.msg_id,))


def test_a_batch_about_messages_the_hub_holds_needs_no_look_up() -> None:
    one = entry()
    assert one.msg_id is not None
    plan = plan_receipts([one], {one.msg_id: FROM_GOV}, looked_up=False)
    assert isinstance(plan, ReceiptPlan)
    assert len(plan.confirm) == 1


def test_a_message_the_store_does_not_know_either_is_dropped() -> None:
    known, unknown = entry(), entry()
    assert known.msg_id is not None
    assert unknown.msg_id is not None
    plan = planned([known, unknown], {known.msg_id: FROM_GOV})
    assert [c.msg_id for c in plan.confirm] == [known.msg_id]
    assert plan.unknown == (unknown.msg_id,)


def test_a_receipt_labelled_below_its_message_is_refused() -> None:
    low = entry(classification=Classification.PUBLIC)
    assert low.msg_id is not None
    plan = planned([low], {low.msg_id: FROM_GOV})
    assert plan.confirm == ()
    assert [(d.msg_id, d.origin) for d in plan.downgraded] == [(low.msg_id, FROM_GOV)]
    assert not plan.records


def test_a_receipt_labelled_above_its_message_is_taken() -> None:
    high = entry(classification=Classification.CONFIDENTIAL)
    assert high.msg_id is not None
    assert planned([high], {high.msg_id: FROM_GOV}).records


def test_a_batch_speaking_to_one_sender_is_forwarded_to_it() -> None:
    first, second = entry(), entry(ReceiptStatus.SIGNED_FOR)
    assert first.msg_id is not None
    assert second.msg_id is not None
    plan = planned([first, second], {first.msg_id: FROM_GOV, second.msg_id: FROM_GOV})
    assert plan.forward == ("jl.gov", "govnet")
    assert plan.senders == 1


def test_a_batch_mixing_senders_is_recorded_but_forwarded_to_none() -> None:
    first, second = entry(), entry()
    assert first.msg_id is not None
    assert second.msg_id is not None
    plan = planned([first, second], {first.msg_id: FROM_GOV, second.msg_id: FROM_CN})
    assert len(plan.confirm) == 2
    assert plan.forward is None
    assert plan.senders == 2
