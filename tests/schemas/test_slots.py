"""Envelopes to large groups: recipients in slots under a signed root (schemas.slots).

The hub reads every slot against the root the sender signed; a recipient reads only its own
slot with its inclusion proof; anything altered, reordered, swapped or missing is refused
with ``envelope.bad_slots`` (or ``envelope.not_a_recipient`` for another's part)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec, transport
from schemas.envelope import verify_envelope
from schemas.errors import DecodeError, EnvelopeError, Reason
from schemas.seal import open_bytes
from schemas.slots import INLINE_MAX, MAX_SLOTS, PART_MAX_BYTES, Recipients, Slot, read_part
from tests.world import World, make_world


@pytest.fixture(scope="module")
def crowd() -> World:
    return make_world().crowded(300)


def counties(world: World, n: int) -> list[str]:
    return [o.id for o in world.directory.orgs if o.id.startswith("jl.cc.c")][:n]


def test_an_envelope_to_at_most_the_inline_limit_keeps_its_recipients_in_the_header(
    crowd: World,
) -> None:
    sealed, _ = crowd.seal(to=counties(crowd, INLINE_MAX))
    assert sealed.slots is None
    envelope = verify_envelope(sealed.frame, crowd.directory)
    assert envelope.header.v == 1
    assert len(envelope.header.to) == INLINE_MAX
    assert "slots" not in codec.decode_map(envelope.core, codec.HEADER_LIMITS)


def test_one_more_recipient_moves_them_all_into_slots_the_header_signs(crowd: World) -> None:
    to = counties(crowd, INLINE_MAX + 1)
    sealed, _ = crowd.seal(to=to)
    assert sealed.slots is not None
    hub = verify_envelope(sealed.frame, crowd.directory, slots=sealed.slots)
    assert hub.header.v == 2
    assert hub.header.slots is not None
    assert hub.header.slots.count == INLINE_MAX + 1
    assert sorted(hub.header.to) == sorted(to)
    assert set(hub.header.keys) == set(to)
    core = codec.decode_map(hub.core, codec.HEADER_LIMITS)
    assert core["to"] == ()
    assert core["keys"] == {}


def test_each_recipient_opens_with_only_its_own_part_and_sees_only_itself(crowd: World) -> None:
    to = counties(crowd, 100)
    sealed, body = crowd.seal(to=to, cc=["jl.jl"], copy_numbers={to[7]: "000007"})
    hub = verify_envelope(sealed.frame, crowd.directory, slots=sealed.slots)
    for me in (to[7], "jl.jl"):
        part = hub.part_for(me)
        assert part is not None
        assert len(part) <= PART_MAX_BYTES
        mine = verify_envelope(sealed.frame, crowd.directory, recipient=me, slots=part)
        assert mine.header.recipients == (me,)
        assert mine.header.recipient_count == 101
        inner, files = open_bytes(mine, me, crowd.keys[me].encryption, body)
        assert files == [b"document body"]
        assert inner.to == ()
        assert inner.slots is not None
    assert verify_envelope(
        sealed.frame, crowd.directory, recipient=to[7], slots=hub.part_for(to[7])
    ).header.copy_numbers == {to[7]: "000007"}
    cc_view = verify_envelope(
        sealed.frame, crowd.directory, recipient="jl.jl", slots=hub.part_for("jl.jl")
    )
    assert cc_view.header.cc == ("jl.jl",)
    assert cc_view.header.to == ()


def test_bytes_a_recipient_receives_grow_with_the_log_of_the_group_not_the_group(
    crowd: World,
) -> None:
    def delivered(n: int) -> int:
        sealed, body = crowd.seal(to=counties(crowd, n))
        hub = verify_envelope(sealed.frame, crowd.directory, slots=sealed.slots)
        part = hub.part_for(hub.header.to[0])
        return len(transport.encode(transport.EnvelopeMsg(sealed.frame, body, part)))

    small, large = delivered(40), delivered(300)
    assert large - small <= 3 * 32 + 8  # 40 -> 300 recipients: three more proof hashes


def test_another_recipients_part_is_refused_as_not_for_this_recipient(crowd: World) -> None:
    to = counties(crowd, 40)
    sealed, _ = crowd.seal(to=to)
    hub = verify_envelope(sealed.frame, crowd.directory, slots=sealed.slots)
    with pytest.raises(EnvelopeError) as caught:
        verify_envelope(sealed.frame, crowd.directory, recipient=to[1], slots=hub.part_for(to[0]))
    assert caught.value.reason is Reason.ENV_NOT_A_RECIPIENT


def test_a_slot_from_another_envelope_does_not_prove_into_this_root(crowd: World) -> None:
    to = counties(crowd, 40)
    first, _ = crowd.seal(to=to)
    second, _ = crowd.seal(to=to)
    other = verify_envelope(second.frame, crowd.directory, slots=second.slots)
    with pytest.raises(EnvelopeError) as caught:
        verify_envelope(first.frame, crowd.directory, recipient=to[0], slots=other.part_for(to[0]))
    assert caught.value.reason is Reason.ENV_BAD_SLOTS


def _slots(blob: bytes) -> list[bytes]:
    return list(codec.decode(blob, codec.Limits("t", 10**7, 1, 512, 10**5, 1, 1)))


@pytest.mark.parametrize("how", ["drop one", "swap two", "alter a box", "add one", "twice"])
def test_the_hub_refuses_slots_that_are_not_exactly_the_signed_ones(crowd: World, how: str) -> None:
    sealed, _ = crowd.seal(to=counties(crowd, 40))
    assert sealed.slots is not None
    raw = _slots(sealed.slots)
    if how == "drop one":
        raw = raw[1:]
    elif how == "swap two":
        raw[3], raw[4] = raw[4], raw[3]
    elif how == "alter a box":
        slot = codec.decode_map(raw[5], codec.Limits("t", 512, 64, 80, 1, 5, 1))
        raw[5] = codec.encode({**slot, "box": bytes(80)})
    elif how == "add one":
        raw.append(raw[-1])
    else:
        raw[6] = raw[5]
    with pytest.raises(EnvelopeError) as caught:
        verify_envelope(sealed.frame, crowd.directory, slots=codec.encode(raw))
    assert caught.value.reason is Reason.ENV_BAD_SLOTS


def test_a_v2_header_without_its_slots_and_a_v1_header_with_slots_are_refused(
    crowd: World,
) -> None:
    large, _ = crowd.seal(to=counties(crowd, 40))
    small, _ = crowd.seal(to=counties(crowd, 2))
    for frame, slots in ((large.frame, None), (small.frame, large.slots)):
        with pytest.raises(EnvelopeError) as caught:
            verify_envelope(frame, crowd.directory, slots=slots)
        assert caught.value.reason is Reason.ENV_BAD_SLOTS


def test_a_sealed_recipient_twice_is_refused_before_anything_is_signed() -> None:
    slot = Slot(org="jl.cc", role="to", copy_no=None, kid="0" * 16, box=bytes(80))
    with pytest.raises(EnvelopeError) as caught:
        Recipients.seal([slot] * (INLINE_MAX + 1))
    assert caught.value.reason is Reason.ENV_DUPLICATE_RECIPIENT


def test_the_slots_of_the_largest_group_fit_one_transport_message() -> None:
    longest = "a" * 32 + "." + "b" * 31  # a 64-character organisation id
    slot = Slot(org=longest, role="cc", copy_no="123456", kid="f" * 16, box=bytes(80))
    raw = codec.encode(slot.to_wire())
    blob = codec.encode([raw] * MAX_SLOTS)
    assert len(blob) <= transport.TRANSPORT_LIMITS.max_bin
    message = transport.encode(transport.EnvelopeMsg(b"f" * 1000, b"b" * 1000, blob))
    assert transport.decode(message) == transport.EnvelopeMsg(b"f" * 1000, b"b" * 1000, blob)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=INLINE_MAX + 1, max_value=200), pick=st.integers(min_value=0))
def test_every_slot_of_any_group_proves_into_its_root(n: int, pick: int) -> None:
    slots = [
        Slot(org=f"x.o{i:04d}", role="to", copy_no=None, kid="0" * 16, box=bytes([i % 256]) * 80)
        for i in range(n)
    ]
    recipients = Recipients.seal(reversed(slots))  # the sender sorts them
    me = slots[pick % n].org
    assert read_part(recipients.part(me), recipients.ref, me).org == me
    again = Recipients.read(recipients.blob(), recipients.ref)
    assert hashlib.sha256(again.blob()).digest() == hashlib.sha256(recipients.blob()).digest()


@pytest.mark.parametrize("where", ["frame", "body", "chunk"])
def test_only_a_large_groups_slots_may_exceed_what_a_frame_and_an_inline_body_take(
    where: str,
) -> None:
    big = b"x" * (transport.BIN_MAX + 1)
    messages: dict[str, transport.TransportMsg] = {
        "frame": transport.EnvelopeMsg(big, b"body"),
        "body": transport.EnvelopeMsg(b"frame", big, b"slots"),
        "chunk": transport.ChunkMsg(bytes(16), 0, big),
    }
    message = messages[where]
    with pytest.raises(DecodeError) as caught:
        transport.decode(transport.encode(message))
    assert caught.value.reason is Reason.DECODE_TOO_LARGE
    fits = transport.EnvelopeMsg(b"frame", b"body", big)  # slots: SLOTS_LIMITS, checked later
    assert transport.decode(transport.encode(fits)) == fits


@pytest.mark.parametrize("n", [2, INLINE_MAX + 4])
def test_a_draft_naming_a_recipient_in_to_and_cc_is_refused_at_sealing_inline_or_in_slots(
    crowd: World, n: int
) -> None:
    to = counties(crowd, n)
    with pytest.raises(EnvelopeError) as caught:
        crowd.seal(to=to, cc=[to[1]])
    assert caught.value.reason is Reason.ENV_DUPLICATE_RECIPIENT
    assert to[1] in caught.value.message
