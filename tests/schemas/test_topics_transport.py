"""The MQTT topic layout (schemas.topics) and the payload framing (schemas.transport).

Topics: the documented layout, ids refused before they become a topic level, and a parser
that only ever recognises what the module itself produces. Transport: every kind of
message round-trips, and anything else (hand-made or fuzzed) is a DecodeError, never
another exception.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas import codec, topics, transport
from schemas.errors import DecodeError, Reason
from schemas.transport import (
    TRANSPORT_LIMITS,
    ChunkMsg,
    EnvelopeMsg,
    HelloMsg,
    ReceiptsMsg,
    ResumeMsg,
    TransportMsg,
)

# ============================================================================ topics

MAKERS: dict[topics.Kind, Callable[[str, str], str]] = {
    topics.Kind.UP: topics.up,
    topics.Kind.DOWN: topics.down,
    topics.Kind.PRESENCE: topics.presence,
}
BAD_IDS = [
    "jl/cc",
    "jl.cc/#",
    "+",
    "jl+cc",
    "#",
    "jl#",
    "..",
    "jl..cc",
    "../jl",
    "",
    "$SYS",
    "JL.cc",
    "jl cc",
    "jl\x00",
    "a" * 65,
]

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
IDS = st.lists(LABEL, min_size=1, max_size=3).map(".".join)


def test_topics_have_the_documented_layout() -> None:
    assert topics.up("govnet", "jl.cc") == "xchg/v1/govnet/up/jl.cc"
    assert topics.down("classified", "cn.gov") == "xchg/v1/classified/down/cn.gov"
    assert topics.presence("internet", "jl.gov") == "xchg/v1/internet/presence/jl.gov"
    assert topics.directory("core") == "xchg/v1/core/directory"


@pytest.mark.parametrize("kind", list(topics.Kind), ids=str)
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_org_id_is_refused_before_it_becomes_a_topic(kind: topics.Kind, bad: str) -> None:
    with pytest.raises(ValueError, match="organisation id"):
        MAKERS[kind]("govnet", bad)


def directory_topic(channel: str, _org: str) -> str:
    return topics.directory(channel)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_channel_id_is_refused_in_every_topic(bad: str) -> None:
    for make in (*MAKERS.values(), directory_topic):
        with pytest.raises(ValueError, match="channel id"):
            make(bad, "jl.cc")
    with pytest.raises(ValueError, match="channel id"):
        topics.hub_subscriptions(bad)


def test_hub_subscribes_to_exactly_the_up_presence_and_directory_topics_of_its_channel() -> None:
    assert topics.hub_subscriptions("govnet") == (
        "xchg/v1/govnet/up/+",
        "xchg/v1/govnet/presence/+",
        "xchg/v1/govnet/directory",
    )


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 topic-filter matching (section 4.7), for '+' and a trailing '#'."""
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level not in ("+", have[i])):
            return False
    return len(want) == len(have)


@settings(max_examples=100)
@given(channel=IDS, other=IDS, org=IDS)
def test_hub_subscriptions_match_up_presence_and_its_directory_only(
    channel: str, other: str, org: str
) -> None:
    subscriptions = topics.hub_subscriptions(channel)

    def heard(topic: str) -> bool:
        return any(mqtt_matches(f, topic) for f in subscriptions)

    assert heard(topics.up(channel, org))
    assert heard(topics.presence(channel, org))
    assert not heard(topics.down(channel, org))  # the hub never reads its own publishes
    assert heard(topics.directory(channel))  # to notice it replaced
    assert not heard(topics.ledger(channel))
    if other != channel:
        assert not heard(topics.up(other, org))


@settings(max_examples=200)
@given(kind=st.sampled_from(list(topics.Kind)), channel=IDS, org=IDS)
def test_parse_round_trips_every_topic_the_module_produces(
    kind: topics.Kind, channel: str, org: str
) -> None:
    topic = MAKERS[kind](channel, org)

    assert topics.parse(topic) == topics.Parsed(channel, kind, org)


@pytest.mark.parametrize(
    "topic",
    [
        "xchg/v2/govnet/up/jl.cc",  # wrong root
        "xchg/govnet/up/jl.cc/x",
        "other/v1/govnet/up/jl.cc",
        "/xchg/v1/govnet/up/jl.cc",
        "XCHG/v1/govnet/up/jl.cc",
        "xchg/v1/govnet/sideways/jl.cc",  # bad kind
        "xchg/v1/govnet/UP/jl.cc",
        "xchg/v1/govnet/directory/jl.cc",
        "xchg/v1/govnet/+/jl.cc",
        "xchg/v1/govnet/up/+",  # bad org
        "xchg/v1/govnet/up/#",
        "xchg/v1/govnet/up/JL.cc",
        "xchg/v1/govnet/up/jl..cc",
        "xchg/v1/govnet/up/",
        "xchg/v1/govnet/up/$sys",
        "xchg/v1/+/up/jl.cc",  # bad channel
        "xchg/v1//up/jl.cc",
        "xchg/v1/Gov/up/jl.cc",
        "xchg/v1/govnet/up",  # wrong depth
        "xchg/v1/govnet/up/jl.cc/",
        "xchg/v1/govnet/up/jl/cc",
        "xchg/v1/govnet/directory",  # the hub's own topic, not an organisation's
        "xchg/v1",
        "",
    ],
)
def test_parse_returns_none_for_anything_the_module_would_not_produce(topic: str) -> None:
    assert topics.parse(topic) is None


TOPIC_PARTS = st.sampled_from(
    ["xchg", "v1", "v2", "govnet", "up", "down", "presence", "directory", "jl.cc", "+", "#", "..",
     "JL", "", "$SYS", "a/b", "jl..cc", " "]
)  # fmt: skip


@settings(max_examples=300)
@given(st.one_of(st.lists(TOPIC_PARTS | st.text(max_size=6), max_size=7).map("/".join), st.text()))
@example("xchg/v1/govnet/up/jl.cc")
def test_whatever_parse_recognises_is_exactly_what_the_module_produces(topic: str) -> None:
    parsed = topics.parse(topic)

    if parsed is not None:
        assert MAKERS[parsed.kind](parsed.channel, parsed.org) == topic


# ============================================================================ transport

MSG_IDS = st.binary(min_size=16, max_size=16)
OFFSETS = st.integers(min_value=0, max_value=2**53 - 1)
SMALL = st.binary(max_size=256)

MESSAGES: st.SearchStrategy[TransportMsg] = st.one_of(
    st.builds(EnvelopeMsg, SMALL, st.none() | SMALL),
    st.builds(ChunkMsg, MSG_IDS, OFFSETS, st.binary(min_size=1, max_size=256)),
    st.builds(ReceiptsMsg, SMALL, OFFSETS),
    st.builds(ResumeMsg, MSG_IDS, OFFSETS),
    st.builds(HelloMsg, OFFSETS),
)
MID = bytes(range(16))


@settings(max_examples=300)
@given(MESSAGES)
def test_every_message_kind_round_trips(message: TransportMsg) -> None:
    payload = transport.encode(message)

    assert transport.decode(payload) == message
    assert codec.encode(codec.decode(payload, TRANSPORT_LIMITS)) == payload  # canonical


@pytest.mark.parametrize(
    "message",
    [
        EnvelopeMsg(b"", b""),
        EnvelopeMsg(b"f" * codec.FRAME_LIMITS.max_size, b"b" * transport.INLINE_BODY_MAX),
        ChunkMsg(MID, 2**53 - 1, b"x"),
        ChunkMsg(MID, 0, b"c" * transport.CHUNK_BYTES),
        ReceiptsMsg(b"r"),
        ResumeMsg(MID, 0),
        HelloMsg(0),
        HelloMsg(2**53 - 1),
    ],
    ids=lambda m: type(m).__name__,
)
def test_boundary_messages_round_trip(message: TransportMsg) -> None:
    assert transport.decode(transport.encode(message)) == message


def test_receipts_sent_by_a_spoke_carry_sequence_zero() -> None:
    assert transport.decode(transport.encode(ReceiptsMsg(b"batch"))) == ReceiptsMsg(b"batch", 0)


def wire(*items: object) -> bytes:
    return codec.encode(list(items))


MALFORMED = {
    "unknown kind": wire("nope", b"x"),
    "kind in capitals": wire("ENV", b"f", None),
    "kind not a str": wire(1, b"f", None),
    "empty array": wire(),
    "a map": codec.encode({"env": b"f"}),
    "a bare int": codec.encode(5),
    "nil": codec.encode(None),
    "a bare str": codec.encode("hello"),
    "env short": wire("env", b"f"),
    "env long": wire("env", b"f", None, b"x", b"y"),
    "env empty slots": wire("env", b"f", None, b""),
    "env frame str": wire("env", "frame", None),
    "env frame nil": wire("env", None, None),
    "env body int": wire("env", b"f", 0),
    "env body bool": wire("env", b"f", False),
    "chunk short": wire("chunk", MID, 0),
    "chunk long": wire("chunk", MID, 0, b"d", b"e"),
    "chunk offset bool": wire("chunk", MID, True, b"d"),
    "chunk offset negative": wire("chunk", MID, -1, b"d"),
    "chunk offset 2**53": wire("chunk", MID, 2**53, b"d"),
    "chunk empty data": wire("chunk", MID, 0, b""),
    "chunk data str": wire("chunk", MID, 0, "d"),
    "chunk msg_id 15 bytes": wire("chunk", MID[:15], 0, b"d"),
    "chunk msg_id 17 bytes": wire("chunk", MID + b"\x00", 0, b"d"),
    "chunk msg_id hex str": wire("chunk", MID.hex(), 0, b"d"),
    "rcpt short": wire("rcpt", b"f"),
    "rcpt seq bool": wire("rcpt", b"f", True),
    "rcpt seq negative": wire("rcpt", b"f", -1),
    "rcpt frame str": wire("rcpt", "f", 0),
    "resume short": wire("resume", MID),
    "resume offset bool": wire("resume", MID, False),
    "resume offset negative": wire("resume", MID, -5),
    "resume msg_id 15 bytes": wire("resume", MID[:15], 0),
    "hello short": wire("hello"),
    "hello long": wire("hello", 1, 2),
    "hello bool": wire("hello", True),
    "hello negative": wire("hello", -1),
    "hello str": wire("hello", "1"),
    "hello huge": wire("hello", 2**64 - 1),
    "nested too deep": wire("env", [[b"f"]], None),
    "oversize": b"\x90" * (TRANSPORT_LIMITS.max_size + 1),
    "oversize frame": wire("env", b"f" * (TRANSPORT_LIMITS.max_bin + 1), None),
    "long kind": wire("k" * 17, b"f"),
    "trailing bytes": wire("hello", 1) + b"\x00",
    "truncated": wire("env", b"frame", b"body")[:-1],
    "non-canonical int": b"\x92\xa5hello\xcc\x01",  # 1 written in two bytes
    "float": b"\x92\xa5hello\xcb" + b"\x00" * 8,
    "ext": b"\x92\xa5hello\xd4\x01\x00",
    "empty": b"",
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_payload_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        transport.decode(payload)
    assert isinstance(caught.value.reason, Reason)


def test_refusal_of_a_wrong_shape_names_the_kind_and_says_schema_invalid() -> None:
    with pytest.raises(DecodeError) as caught:
        transport.decode(wire("chunk", MID[:15], 0, b"d"))

    assert caught.value.reason is Reason.SCHEMA_INVALID
    assert "'chunk'" in caught.value.message


def test_oversize_payload_is_refused_before_it_is_parsed() -> None:
    payload = b"\xc6\xff\xff\xff\xff" + b"\x00" * TRANSPORT_LIMITS.max_size  # claims 4 GiB

    with pytest.raises(DecodeError) as caught:
        transport.decode(payload)
    assert caught.value.reason is Reason.DECODE_TOO_LARGE


def decode_or_refuse(payload: bytes) -> None:
    """decode either returns a message that encodes back to ``payload`` or refuses it."""
    try:
        message = transport.decode(payload)
    except DecodeError:
        return
    assert isinstance(message, EnvelopeMsg | ChunkMsg | ReceiptsMsg | ResumeMsg | HelloMsg)
    assert transport.encode(message) == payload


@settings(max_examples=500)
@given(st.binary(max_size=64))
@example(b"\x93\xa5chunk\xc4\x10" + MID)
@example(b"\x92\xa5hello\xc3")
def test_arbitrary_bytes_are_a_message_or_a_decode_error(payload: bytes) -> None:
    decode_or_refuse(payload)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
KINDS = st.sampled_from(["env", "chunk", "rcpt", "resume", "hello", "x", ""])


@settings(max_examples=150)
@given(KINDS, st.lists(VALUES, max_size=5))
def test_arbitrary_arrays_starting_with_a_kind_are_a_message_or_a_decode_error(
    kind: str, rest: list[object]
) -> None:
    decode_or_refuse(codec.encode([kind, *rest]))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    payload = bytearray(transport.encode(draw(MESSAGES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
        at = draw(st.integers(min_value=0, max_value=max(len(payload) - 1, 0)))
        if how == "flip" and payload:
            payload[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif how == "insert":
            payload.insert(at, draw(st.integers(min_value=0, max_value=255)))
        elif how == "delete" and payload:
            del payload[at]
        elif how == "truncate":
            del payload[at:]
        else:
            payload += draw(st.binary(min_size=1, max_size=4))
    return bytes(payload)


@settings(max_examples=300)
@given(mutated())
def test_mutated_valid_payloads_are_a_message_or_a_decode_error(payload: bytes) -> None:
    decode_or_refuse(payload)


def test_an_envelope_is_told_from_its_first_bytes_and_nothing_else_is_taken_for_one() -> None:
    envelopes = [
        transport.encode(transport.EnvelopeMsg(b"frame", b"body")),
        transport.encode(transport.EnvelopeMsg(b"frame", None)),
        transport.encode(transport.EnvelopeMsg(b"frame", None, b"slots")),
    ]
    assert all(transport.is_envelope(p) for p in envelopes)
    others = [
        transport.encode(transport.ChunkMsg(bytes(16), 262_144, b"env" * 100)),
        transport.encode(transport.HelloMsg(3)),
        transport.encode(transport.ReceiptsMsg(b"env", 1)),
        b"",
        b"\x93\xa3en",
        b"\x92\xa3env",
    ]
    assert not any(transport.is_envelope(p) for p in others)
