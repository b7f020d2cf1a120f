"""Canonical msgpack: one encoding per value, and a decoder that refuses everything else.

Non-canonical and hostile inputs are built by hand as bytes, so each test states exactly
which header or byte it is about. Memory bounds are measured with tracemalloc (a memory
figure, never a duration).
"""

from __future__ import annotations

import random
import tracemalloc
from collections import OrderedDict
from enum import IntEnum, StrEnum
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec, dirtree, ledger, slots, transport
from schemas.codec import Limits, decode, decode_map, encode
from schemas.errors import DecodeError, Reason, UsageError

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
MB = 1024 * 1024

# Every Limits constant the codec module defines, and those the schemas modules with
# records of their own define beside them, found rather than listed, so a new record kind
# is fuzzed without anyone remembering to add it here.
ALL_LIMITS = list(
    {
        id(value): value
        for module in (codec, dirtree, ledger, slots, transport)
        for value in vars(module).values()
        if isinstance(value, Limits)
    }.values()
)
LIMIT_IDS = [limits.name for limits in ALL_LIMITS]

# Small limits for boundary tests: every bound is easy to reach by hand.
TINY = Limits(
    "tiny record", max_size=100, max_str=3, max_bin=3, max_array=3, max_map=3, max_depth=4
)


# ---------------------------------------------------------------------------- strategies

SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT_MIN, max_value=INT_MAX),
    st.text(max_size=24),
    st.binary(max_size=48),
)


def wire_values(depth: int) -> st.SearchStrategy[Any]:
    """Values the wire allows, with at most ``depth`` levels of arrays and maps."""
    if depth == 0:
        return SCALARS
    inner = wire_values(depth - 1)
    return st.one_of(
        SCALARS,
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    )


# INNER_LIMITS allows 4 levels of nesting, 1024-byte bins and 64 KiB strs: room for these.
VALUES = wire_values(codec.INNER_LIMITS.max_depth)


def as_wire(value: Any) -> Any:
    """What decode gives back for ``value``: arrays as tuples, all the way down."""
    if isinstance(value, list | tuple):
        return tuple(as_wire(item) for item in value)
    if isinstance(value, dict):
        return {key: as_wire(item) for key, item in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout (``True == 1`` does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return bool(a == b)


def reorder(value: Any, rnd: random.Random) -> Any:
    """The same value with every map's insertion order shuffled."""
    if isinstance(value, list | tuple):
        return type(value)(reorder(item, rnd) for item in value)
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {key: reorder(item, rnd) for key, item in items}
    return value


def refusal(data: bytes, limits: Limits = codec.INNER_LIMITS) -> Reason:
    with pytest.raises(DecodeError) as info:
        decode(data, limits)
    return info.value.reason


def decode_or_refuse(data: bytes, limits: Limits) -> None:
    """Decode must give a value or a DecodeError; anything it accepts is canonical."""
    try:
        value = decode(data, limits)
    except DecodeError:
        return
    assert encode(value) == data


def nested_arrays(levels: int) -> bytes:
    """``levels`` arrays of one element each, around a nil."""
    return b"\x91" * levels + b"\xc0"


def nested_maps(levels: int) -> bytes:
    """``levels`` maps of one entry ("k") each, around a nil."""
    return b"\x81\xa1k" * levels + b"\xc0"


def header32(first_byte: int, length: int) -> bytes:
    return bytes([first_byte]) + length.to_bytes(4, "big")


def peak_traced_memory_of_refusal(data: bytes, limits: Limits) -> tuple[Reason, int]:
    """The refusal's reason and the peak memory traced while decode ran."""
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            decode(data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return info.value.reason, peak


# ---------------------------------------------------------------------------- round trip


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_decode_of_encode_gives_back_the_value_with_arrays_as_tuples(value: Any) -> None:
    data = encode(value)
    decoded = decode(data, codec.INNER_LIMITS)
    assert same(decoded, as_wire(value))
    assert encode(decoded) == data


@settings(max_examples=200, deadline=None)
@given(VALUES, st.randoms(use_true_random=False))
def test_encode_is_the_same_whatever_the_dict_insertion_order(
    value: Any, rnd: random.Random
) -> None:
    assert encode(reorder(value, rnd)) == encode(value)


def test_encode_sorts_map_keys_by_their_utf8_bytes() -> None:
    expected = b"\x84\xa1a\x01\xa2aa\x02\xa1b\x03\xa2\xc3\xa9\x04"
    assert encode({"é": 4, "b": 3, "aa": 2, "a": 1}) == expected
    assert encode({"a": 1, "aa": 2, "b": 3, "é": 4}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"\xc0"),
        (False, b"\xc2"),
        (True, b"\xc3"),
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (256, b"\xcd\x01\x00"),
        (65536, b"\xce\x00\x01\x00\x00"),
        (2**32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        (INT_MAX, b"\xcf" + b"\xff" * 8),
        (-1, b"\xff"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (-129, b"\xd1\xff\x7f"),
        (INT_MIN, b"\xd3\x80" + b"\x00" * 7),
        ("abc", b"\xa3abc"),
        ("x" * 32, b"\xd9\x20" + b"x" * 32),
        (b"ab", b"\xc4\x02ab"),
        ((), b"\x90"),
        ([1, [2]], b"\x92\x01\x91\x02"),
        ({}, b"\x80"),
    ],
)
def test_encode_uses_the_shortest_header_and_decode_gives_the_value_back(
    value: Any, expected: bytes
) -> None:
    assert encode(value) == expected
    assert same(decode(expected, codec.INNER_LIMITS), as_wire(value))


@pytest.mark.parametrize(
    "value",
    [INT_MIN, INT_MIN + 1, -(2**31) - 1, -(2**15) - 1, -129, -33, -32, -1, 0, 127, 128, 255,
     256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, INT_MAX],
)  # fmt: skip
def test_int_at_every_header_boundary_round_trips(value: int) -> None:
    decoded = decode(encode(value), codec.INNER_LIMITS)
    assert decoded == value
    assert type(decoded) is int


# ---------------------------------------------------------------------------- canonical form


@pytest.mark.parametrize(
    ("non_canonical", "canonical"),
    [
        pytest.param(b"\x82\xa1b\x01\xa1a\x02", b"\x82\xa1a\x02\xa1b\x01", id="unsorted-keys"),
        pytest.param(b"\x82\xa2aa\x01\xa1a\x02", b"\x82\xa1a\x02\xa2aa\x01", id="prefix-key-after"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x02", b"\x81\xa1a\x02", id="duplicate-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x01", b"\x81\xa1a\x01", id="duplicate-keys-same-value"),
        pytest.param(b"\xcc\x01", b"\x01", id="uint8-for-1"),
        pytest.param(b"\xcd\x00\x01", b"\x01", id="uint16-for-1"),
        pytest.param(b"\xce\x00\x00\x00\x01", b"\x01", id="uint32-for-1"),
        pytest.param(b"\xcf" + b"\x00" * 7 + b"\x05", b"\x05", id="uint64-for-5"),
        pytest.param(b"\xcd\x00\xff", b"\xcc\xff", id="uint16-for-255"),
        pytest.param(b"\xd0\x05", b"\x05", id="int8-for-positive-5"),
        pytest.param(b"\xd3" + b"\x00" * 7 + b"\x01", b"\x01", id="int64-for-1"),
        pytest.param(b"\xd0\xff", b"\xff", id="int8-for-minus-1"),
        pytest.param(b"\xd1\xff\x9c", b"\xd0\x9c", id="int16-for-minus-100"),
        pytest.param(b"\xd9\x03abc", b"\xa3abc", id="str8-for-3-bytes"),
        pytest.param(b"\xda\x00\x03abc", b"\xa3abc", id="str16-for-3-bytes"),
        pytest.param(b"\xdb\x00\x00\x00\x03abc", b"\xa3abc", id="str32-for-3-bytes"),
        pytest.param(b"\xc5\x00\x01a", b"\xc4\x01a", id="bin16-for-1-byte"),
        pytest.param(b"\xc6\x00\x00\x00\x01a", b"\xc4\x01a", id="bin32-for-1-byte"),
        pytest.param(b"\xdc\x00\x01\x01", b"\x91\x01", id="array16-of-1"),
        pytest.param(b"\xdd\x00\x00\x00\x00", b"\x90", id="array32-of-0"),
        pytest.param(b"\xde\x00\x01\xa1a\x01", b"\x81\xa1a\x01", id="map16-of-1"),
        pytest.param(b"\xdf\x00\x00\x00\x00", b"\x80", id="map32-of-0"),
        pytest.param(b"\x91\xcd\x00\x01", b"\x91\x01", id="long-int-inside-array"),
        pytest.param(
            b"\x81\xa1m\x82\xa1b\x01\xa1a\x02",
            b"\x81\xa1m\x82\xa1a\x02\xa1b\x01",
            id="unsorted-keys-inside-map",
        ),
    ],
)
def test_valid_msgpack_in_non_canonical_form_is_refused_as_non_canonical(
    non_canonical: bytes, canonical: bytes
) -> None:
    # Both spell the same value in msgpack; only the canonical spelling is accepted.
    value = msgpack.unpackb(canonical, raw=False, use_list=False)
    assert msgpack.unpackb(non_canonical, raw=False, use_list=False) == value
    assert decode(canonical, codec.INNER_LIMITS) == value
    assert refusal(non_canonical) is Reason.DECODE_NON_CANONICAL


# ---------------------------------------------------------------------------- forbidden types

FLOAT32_ZERO = b"\xca\x00\x00\x00\x00"
FLOAT64_ONE = b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(FLOAT32_ZERO, id="float32"),
        pytest.param(FLOAT64_ONE, id="float64"),
        pytest.param(b"\x92\x01" + FLOAT64_ONE, id="float-in-array"),
        pytest.param(b"\x81\xa1f" + FLOAT32_ZERO, id="float-as-map-value"),
    ],
)
def test_float_is_refused_as_forbidden_type(data: bytes) -> None:
    assert refusal(data) is Reason.DECODE_FORBIDDEN_TYPE


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xd4\x05\x00", id="fixext1"),
        pytest.param(b"\xd5\x05\x00\x00", id="fixext2"),
        pytest.param(b"\xd6\x05" + b"\x00" * 4, id="fixext4"),
        pytest.param(b"\xd7\x05" + b"\x00" * 8, id="fixext8"),
        pytest.param(b"\xd8\x05" + b"\x00" * 16, id="fixext16"),
        pytest.param(b"\xc7\x03\x05abc", id="ext8"),
        pytest.param(b"\xc8\x00\x03\x05abc", id="ext16"),
        pytest.param(b"\xc9\x00\x00\x00\x03\x05abc", id="ext32"),
        pytest.param(b"\xd6\xff\x65\x00\x00\x00", id="timestamp32"),
        pytest.param(b"\xd7\xff" + b"\x00" * 4 + b"\x65\x00\x00\x00", id="timestamp64"),
        pytest.param(b"\xc7\x0c\xff" + b"\x00" * 4 + b"\x00" * 3 + b"\x01" + b"\x65" * 4,
                     id="timestamp96"),
        pytest.param(b"\x91\xd4\x05\x00", id="ext-in-array"),
        pytest.param(b"\x81\xa1t\xd6\xff\x65\x00\x00\x00", id="timestamp-as-map-value"),
        pytest.param(b"\x81\xd4\x05\x00\x01", id="ext-as-map-key"),
    ],
)  # fmt: skip
def test_ext_with_a_payload_is_refused_as_forbidden_type(data: bytes) -> None:
    # max_ext_len=0 makes msgpack refuse every ext that carries data, timestamps included;
    # the receipt must say the type is forbidden, not that a limit was exceeded.
    assert refusal(data) is Reason.DECODE_FORBIDDEN_TYPE


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc7\x00\x05", id="ext8-empty"),
        pytest.param(b"\xc8\x00\x00\x05", id="ext16-empty"),
        pytest.param(b"\xc9\x00\x00\x00\x00\x05", id="ext32-empty"),
        pytest.param(b"\x91\xc7\x00\x05", id="empty-ext-in-array"),
        pytest.param(b"\x81\xa1e\xc7\x00\x05", id="empty-ext-as-map-value"),
    ],
)
def test_ext_without_payload_is_refused_as_forbidden_type(data: bytes) -> None:
    # An empty ext passes max_ext_len=0 and decodes to msgpack.ExtType, a namedtuple; it
    # must be refused as the ext it is, not walked as if it were an array.
    assert refusal(data) is Reason.DECODE_FORBIDDEN_TYPE


def test_empty_timestamp_ext_is_refused_as_malformed() -> None:
    # msgpack itself refuses a timestamp (ext -1) whose data is not 4, 8 or 12 bytes.
    assert refusal(b"\xc7\x00\xff") is Reason.DECODE_MALFORMED


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x81\xc4\x01k\x01", id="bin-key"),
        pytest.param(b"\x82\xa1a\x01\xc4\x01b\x02", id="bin-key-after-str-key"),
        pytest.param(b"\x91\x81\xc4\x01k\x01", id="bin-key-nested"),
    ],
)
def test_bin_map_key_is_refused_as_forbidden_type(data: bytes) -> None:
    assert refusal(data) is Reason.DECODE_FORBIDDEN_TYPE


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x81\x01\x01", id="int-key"),
        pytest.param(b"\x81\xc0\x01", id="nil-key"),
        pytest.param(b"\x81\xc3\x01", id="bool-key"),
        pytest.param(b"\x81\x90\x01", id="array-key"),
        pytest.param(b"\x81\x80\x01", id="map-key"),
        pytest.param(b"\x81" + FLOAT32_ZERO + b"\x01", id="float-key"),
        pytest.param(b"\x81\xc7\x00\x05\x01", id="empty-ext-key"),
    ],
)
def test_other_non_str_map_keys_are_refused_as_forbidden_type(data: bytes) -> None:
    # msgpack's strict_map_key refuses these itself; bin keys get through it and are
    # refused by the shape check. Both say the same thing: the key's type is forbidden.
    assert refusal(data) is Reason.DECODE_FORBIDDEN_TYPE


# ---------------------------------------------------------------------------- sizes and limits


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
def test_input_above_max_size_is_refused_as_too_large_before_decoding(limits: Limits) -> None:
    # 0xc1 is never valid msgpack: TOO_LARGE rather than MALFORMED shows size comes first.
    with pytest.raises(DecodeError) as info:
        decode(b"\xc1" * (limits.max_size + 1), limits)
    assert info.value.reason is Reason.DECODE_TOO_LARGE
    assert str(limits.max_size + 1) in str(info.value)


def test_input_of_exactly_max_size_is_decoded_and_one_byte_more_is_too_large() -> None:
    at_limit = b"\xc4\x62" + b"x" * 98  # bin8 header + 98 bytes = 100 bytes
    roomy_bin = Limits("roomy", max_size=100, max_str=1000, max_bin=1000, max_array=3,
                       max_map=3, max_depth=4)  # fmt: skip
    assert decode(at_limit, roomy_bin) == b"x" * 98
    assert refusal(b"\xc4\x63" + b"x" * 99, roomy_bin) is Reason.DECODE_TOO_LARGE


@pytest.mark.parametrize(
    ("at_limit", "above_limit"),
    [
        pytest.param(b"\xa3abc", b"\xa4abcd", id="str"),
        pytest.param(b"\xc4\x03abc", b"\xc4\x04abcd", id="bin"),
        pytest.param(b"\x93\x01\x02\x03", b"\x94\x01\x02\x03\x04", id="array"),
        pytest.param(
            b"\x83\xa1a\x01\xa1b\x01\xa1c\x01",
            b"\x84\xa1a\x01\xa1b\x01\xa1c\x01\xa1d\x01",
            id="map",
        ),
    ],
)
def test_length_at_limit_is_accepted_and_one_more_is_refused_as_limit(
    at_limit: bytes, above_limit: bytes
) -> None:
    decode(at_limit, TINY)
    assert refusal(above_limit, TINY) is Reason.DECODE_LIMIT


HUNDRED_MB = 100 * MB
HUGE_CLAIMS = [
    pytest.param(header32(0xDB, HUNDRED_MB), id="str32"),
    pytest.param(header32(0xC6, HUNDRED_MB), id="bin32"),
    pytest.param(header32(0xDD, HUNDRED_MB), id="array32"),
    pytest.param(header32(0xDF, HUNDRED_MB), id="map32"),
    pytest.param(b"\x81\xa1k" + header32(0xDB, HUNDRED_MB), id="str32-as-map-value"),
    pytest.param(b"\x91" + header32(0xDD, HUNDRED_MB), id="array32-in-array"),
]


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("header", HUGE_CLAIMS)
def test_hundred_byte_input_claiming_100mb_is_refused_before_allocation(
    header: bytes, limits: Limits
) -> None:
    data = (header + b"\x01" * 100)[:100]
    reason, peak = peak_traced_memory_of_refusal(data, limits)
    assert reason in {Reason.DECODE_LIMIT, Reason.DECODE_MALFORMED}
    assert peak < MB, f"decoding 100 bytes that claim 100 MB traced {peak} bytes at peak"


def test_tracemalloc_sees_what_decode_allocates_for_an_honest_large_bin() -> None:
    # The control for the test above: an honest 2 MB bin is seen at >= 2 MB, so a decoder
    # that allocated what a header claims would be caught.
    data = header32(0xC6, 2 * MB) + b"x" * (2 * MB)
    tracemalloc.start()
    try:
        assert decode(data, codec.DIRECTORY_FRAME_LIMITS) == b"x" * (2 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= 2 * MB


# ---------------------------------------------------------------------------- nesting


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
def test_hundred_thousand_nested_arrays_are_refused_as_too_deep(limits: Limits) -> None:
    # as many as the size limit lets through to the decoder (some records are small),
    # closed by an empty array so that a small one is complete, only too deep
    levels = min(100_000, limits.max_size)
    assert refusal(b"\x91" * (levels - 1) + b"\x90", limits) is Reason.DECODE_TOO_DEEP


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
@pytest.mark.parametrize("nested", [nested_arrays, nested_maps])
def test_nesting_at_max_depth_is_accepted_and_one_level_more_is_too_deep(
    nested: Any, limits: Limits
) -> None:
    decode(nested(limits.max_depth), limits)
    assert refusal(nested(limits.max_depth + 1), limits) is Reason.DECODE_TOO_DEEP


def test_scalars_one_level_below_the_deepest_container_do_not_count_as_depth() -> None:
    # max_depth counts arrays and maps; the nil inside the innermost array is no level.
    assert decode(nested_arrays(TINY.max_depth), TINY) == ((((None,),),),)


@pytest.mark.parametrize("max_depth", [0, codec.MAX_DEPTH + 1, 100])
def test_limits_cannot_allow_nesting_that_encode_would_refuse(max_depth: int) -> None:
    # decode re-encodes what it read; limits deeper than encode allows would let encode's
    # UsageError escape decode instead of a DecodeError.
    with pytest.raises(UsageError, match="max_depth"):
        Limits("deep record", max_size=1024, max_str=16, max_bin=16, max_array=16,
               max_map=16, max_depth=max_depth)  # fmt: skip


def test_decode_at_the_deepest_allowed_limits_refuses_one_more_level_as_too_deep() -> None:
    deepest = Limits("deep record", max_size=1024, max_str=16, max_bin=16, max_array=16,
                     max_map=16, max_depth=codec.MAX_DEPTH)  # fmt: skip
    at_limit = nested_arrays(codec.MAX_DEPTH)
    assert encode(decode(at_limit, deepest)) == at_limit
    assert refusal(nested_arrays(codec.MAX_DEPTH + 1), deepest) is Reason.DECODE_TOO_DEEP


# ---------------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x01\x01", id="two-ints"),
        pytest.param(b"\xc0\xc0", id="two-nils"),
        pytest.param(b"\x81\xa1a\x01\x00", id="map-then-zero"),
        pytest.param(b"\x01\xc1", id="int-then-never-used-byte"),
        pytest.param(b"\x90" + b"\x00" * 50, id="array-then-padding"),
    ],
)
def test_bytes_after_the_single_value_are_refused_as_trailing(data: bytes) -> None:
    assert refusal(data) is Reason.DECODE_TRAILING_BYTES


RICH = encode(
    {
        "id": b"\x00" * 16,
        "n": [0, -1, 200, -200, 70000, -70000, 2**40, -(2**40), INT_MAX, INT_MIN],
        "s": "通知 " * 20,
        "t": [None, True, False, {"k": [b"", "", 0]}],
        "u": (),
    }
)


def test_every_truncation_of_a_rich_record_is_a_decode_error() -> None:
    decode(RICH, codec.INNER_LIMITS)
    for length in range(len(RICH)):
        with pytest.raises(DecodeError):
            decode(RICH[:length], codec.INNER_LIMITS)


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_every_truncation_of_any_valid_encoding_is_a_decode_error(value: Any) -> None:
    data = encode(value)
    for length in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:length], codec.INNER_LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xa1\xff", id="ff-byte"),
        pytest.param(b"\xa2\xc3\x28", id="bad-continuation"),
        pytest.param(b"\xa2\xc0\xaf", id="overlong-slash"),
        pytest.param(b"\xa3\xed\xa0\x80", id="surrogate"),
        pytest.param(b"\xa2\xe6\x9c", id="cut-multibyte"),
        pytest.param(b"\xa4\xf4\x90\x80\x80", id="above-u10ffff"),
        pytest.param(b"\x81\xa1\xff\x01", id="in-map-key"),
        pytest.param(b"\x91\xa1\x80", id="in-array"),
    ],
)
def test_str_that_is_not_utf8_is_refused_as_malformed(data: bytes) -> None:
    assert refusal(data) is Reason.DECODE_MALFORMED


@pytest.mark.parametrize(
    "data", [pytest.param(b"", id="empty"), pytest.param(b"\xc1", id="never-used-0xc1")]
)
def test_empty_input_and_the_never_used_byte_are_refused_as_malformed(data: bytes) -> None:
    assert refusal(data) is Reason.DECODE_MALFORMED


# ---------------------------------------------------------------------------- fuzz

# Headers that claim lengths, containers and forbidden types, so fuzzed input reaches
# the interesting paths more often than uniformly random bytes would.
HEADER_BYTES = [0x80, 0x81, 0x90, 0x91, 0x92, 0xA1, 0xC0, 0xC1, 0xC4, 0xC5, 0xC6, 0xC7,
                0xC9, 0xCA, 0xCB, 0xCD, 0xCF, 0xD3, 0xD4, 0xD6, 0xD7, 0xD9, 0xDB, 0xDC,
                0xDD, 0xDE, 0xDF, 0xFF]  # fmt: skip
HOSTILE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.one_of(st.sampled_from(HEADER_BYTES).map(lambda b: bytes([b])), st.binary(max_size=5)),
        max_size=40,
    ).map(b"".join),
)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes flipped, inserted, deleted or replaced."""
    data = bytearray(encode(draw(VALUES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        if operation == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
            continue
        position = draw(st.integers(0, len(data) - 1))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "delete":
            del data[position]
        else:
            data[position] = draw(st.sampled_from(HEADER_BYTES))
    return bytes(data)


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
@settings(max_examples=150, deadline=None)
@given(data=HOSTILE_BYTES)
def test_arbitrary_bytes_give_a_value_or_a_decode_error(data: bytes, limits: Limits) -> None:
    decode_or_refuse(data, limits)


@pytest.mark.parametrize("limits", ALL_LIMITS, ids=LIMIT_IDS)
@settings(max_examples=150, deadline=None)
@given(data=mutated_encodings())
def test_mutated_valid_encodings_give_a_value_or_a_decode_error(
    data: bytes, limits: Limits
) -> None:
    decode_or_refuse(data, limits)


def test_codec_defines_the_limits_the_fuzz_tests_cover() -> None:
    assert {limits.name for limits in ALL_LIMITS} >= {
        "envelope frame",
        "header",
        "inner record",
        "directory frame",
        "directory",
        "receipt frame",
        "receipt batch",
        "directory root frame",
        "directory root",
        "directory change frame",
        "directory change",
        "directory publication",
        "directory entry",
        "directory request",
        "directory answer",
    }


# ---------------------------------------------------------------------------- decode_map


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x90", id="array"),
        pytest.param(b"\x91\x80", id="array-holding-a-map"),
        pytest.param(b"\x01", id="int"),
        pytest.param(b"\xc0", id="nil"),
        pytest.param(b"\xa1a", id="str"),
        pytest.param(b"\xc4\x00", id="bin"),
    ],
)
def test_decode_map_refuses_a_top_level_that_is_not_a_map(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_map(data, codec.INNER_LIMITS)
    assert info.value.reason is Reason.DECODE_MALFORMED
    assert "must be a msgpack map" in str(info.value)


def test_decode_map_returns_a_top_level_map() -> None:
    assert decode_map(b"\x81\xa1a\x91\x01", codec.INNER_LIMITS) == {"a": (1,)}


# ---------------------------------------------------------------------------- encode refusals


def nested_lists(levels: int) -> Any:
    value: Any = None
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "named"),
    [
        pytest.param(1.5, "float", id="float"),
        pytest.param(float("nan"), "float", id="nan"),
        pytest.param({1, 2}, "set", id="set"),
        pytest.param(frozenset(), "frozenset", id="frozenset"),
        pytest.param(object(), "object", id="object"),
        pytest.param(bytearray(b"x"), "bytearray", id="bytearray"),
        pytest.param(INT_MAX + 1, str(INT_MAX + 1), id="int-above-uint64"),
        pytest.param(INT_MIN - 1, str(INT_MIN - 1), id="int-below-int64"),
        pytest.param({1: "a"}, "1", id="int-key"),
        pytest.param({b"k": 1}, "b'k'", id="bytes-key"),
        pytest.param({None: 1}, "None", id="none-key"),
        pytest.param({"a": {("t",): 1}}, "('t',)", id="tuple-key-nested"),
        pytest.param([1, [2.5]], "float", id="float-nested"),
        pytest.param(nested_lists(65), "64", id="deeper-than-64"),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry_with_usage_error(value: Any, named: str) -> None:
    with pytest.raises(UsageError) as info:
        encode(value)
    assert named in str(info.value)


def test_encode_accepts_64_levels_of_nesting() -> None:
    assert codec.MAX_DEPTH == 64
    assert encode(nested_lists(64)) == b"\x91" * 64 + b"\xc0"


def test_encode_refuses_a_lone_surrogate_with_usage_error() -> None:
    # A str the wire cannot carry (not UTF-8 encodable: os.fsdecode gives these for
    # non-UTF-8 file names) is our misuse like an int out of range, not a UnicodeError.
    with pytest.raises(UsageError):
        encode({"name": "report\udcff.txt"})


def test_encode_writes_subclasses_of_the_wire_types_as_their_base_type() -> None:
    """The encoder's fast path is by exact type; a StrEnum, an IntEnum, a dict or tuple
    subclass still encode exactly as the plain value (and a nested one counts its depth)."""

    class Word(StrEnum):
        A = "a"

    class Number(IntEnum):
        SEVEN = 7

    class Ordered(OrderedDict[str, Any]):
        pass

    plain = {"w": "a", "n": 7, "t": [1, [True, None]], "m": {"b": 1, "a": 2}}
    subclassed = {"w": Word.A, "n": Number.SEVEN, "t": (1, (True, None)), "m": Ordered(b=1, a=2)}
    assert encode(subclassed) == encode(plain)
    assert encode(Ordered(z=nested_lists(63))) == encode({"z": nested_lists(63)})
    with pytest.raises(UsageError):
        encode(Ordered(z=nested_lists(64)))
