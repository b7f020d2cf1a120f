"""Identifiers that become MQTT topic levels and file names: org ids, msg ids, key ids."""

from __future__ import annotations

import os
import re
import string
from pathlib import PurePosixPath, PureWindowsPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas.ids import (
    MSG_ID_BYTES,
    ORG_ID_MAX,
    GroupId,
    KeyId,
    OrgId,
    check_key_id,
    check_org_id,
    is_org_id,
    msg_id_text,
    new_msg_id,
    org_id_problem,
    parse_msg_id,
)
from schemas.model import WireModel

SAFE_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-")


class Addressed(WireModel):
    """A strict wire record (as every real one is) with one OrgId field."""

    sender: OrgId


# ---------------------------------------------------------------------------- org ids


@pytest.mark.parametrize(
    "org_id",
    ["jl", "jl.cc", "jl.cc.nongan", "220100", "jl.dept-health", "a", "a" * 32, "a1.b-2.3c"],
)
def test_valid_org_id_is_returned_unchanged(org_id: str) -> None:
    assert check_org_id(org_id) == org_id
    assert is_org_id(org_id)
    assert Addressed(sender=org_id).sender == org_id


def test_org_id_of_exactly_64_characters_is_accepted() -> None:
    org_id = "a" * 32 + "." + "b" * 31
    assert len(org_id) == ORG_ID_MAX
    assert check_org_id(org_id) == org_id


@pytest.mark.parametrize(
    ("org_id", "named"),
    [
        pytest.param("jl/cc", "'/'", id="slash"),
        pytest.param("jl.+", "'+'", id="plus"),
        pytest.param("jl.#", "'#'", id="hash"),
        pytest.param("$sys", "'$'", id="dollar"),
        pytest.param("jl\x00cc", "NUL", id="nul"),
        pytest.param("jl\\cc", "'\\\\'", id="backslash"),
        pytest.param("jl..cc", "'..'", id="dot-dot"),
        pytest.param("..", "'..'", id="only-dot-dot"),
        pytest.param(".jl", "empty label", id="leading-dot"),
        pytest.param("jl.", "empty label", id="trailing-dot"),
        pytest.param(".", "empty label", id="only-dot"),
        pytest.param("jl cc", "whitespace", id="space"),
        pytest.param("jl\tcc", "whitespace", id="tab"),
        pytest.param("jl.cc\n", "whitespace", id="trailing-newline"),
        pytest.param("jl\u3000cc", "whitespace", id="ideographic-space"),
        pytest.param("jl\xa0cc", "whitespace", id="no-break-space"),
        pytest.param("jl\x07cc", "control character", id="bell"),
        pytest.param("jl\x1bcc", "control character", id="escape"),
        pytest.param("jl\x7fcc", "control character", id="delete"),
        pytest.param("jl\u200bcc", "control character", id="zero-width-space"),
        pytest.param("jl.\u0441\u0441", "non-ASCII character 'с'", id="cyrillic-es"),
        pytest.param("j\u0430l", "non-ASCII character 'а'", id="cyrillic-a"),
        pytest.param("\uff4a\uff4c", "non-ASCII character 'ｊ'", id="full-width"),
        pytest.param("jl.c\u0131", "non-ASCII character 'ı'", id="dotless-i"),
        pytest.param("JL.cc", "capital letters", id="uppercase"),
        pytest.param("jl.Cc", "capital letters", id="one-capital"),
        pytest.param("a" * 65, "65 characters", id="65-characters"),
        pytest.param("jl." + "b" * 33, "'" + "b" * 33 + "'", id="33-character-label"),
        pytest.param("", "empty", id="empty"),
        pytest.param("-leading", "'-leading'", id="leading-hyphen"),
        pytest.param("jl.-cc", "'-cc'", id="label-leading-hyphen"),
        pytest.param("jl.cc-", "'cc-'", id="trailing-hyphen"),
        pytest.param("jl_cc", "'jl_cc'", id="underscore"),
        pytest.param("jl:cc", "'jl:cc'", id="colon"),
        pytest.param("jl*", "'jl*'", id="star"),
    ],
)
def test_dangerous_org_id_is_refused_with_a_message_naming_the_problem(
    org_id: str, named: str
) -> None:
    with pytest.raises(ValueError, match="organisation id") as info:
        check_org_id(org_id)
    assert named in str(info.value)
    assert not is_org_id(org_id)
    with pytest.raises(ValidationError, match=re.escape(named)):
        Addressed(sender=org_id)


def test_33_character_label_message_gives_the_label_limit() -> None:
    with pytest.raises(ValueError, match="1-32 of a-z, 0-9 and '-'"):
        check_org_id("b" * 33)


@pytest.mark.parametrize("value", [None, 5, b"jl", ["jl"]])
def test_org_id_that_is_not_text_is_refused(value: object) -> None:
    assert not is_org_id(value)
    with pytest.raises(ValueError, match="must be text"):
        check_org_id(value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Addressed.model_validate({"sender": value})


def test_group_id_uses_the_same_validator_and_names_itself() -> None:
    adapter = TypeAdapter(GroupId)
    assert adapter.validate_python("jl.all-counties") == "jl.all-counties"
    with pytest.raises(ValidationError, match="group id 'jl/all' contains '/'"):
        adapter.validate_python("jl/all")


# Characters that are dangerous in topics or paths, look-alikes, and the safe ones, so
# generated ids hit the validator's edges far more often than uniform text would.
EDGY_ALPHABET = st.sampled_from(
    list("abcz09-.") + list("/+#$\\\x00 \t\n\r\x0b\x0c\x7f\x85\u3000\u200b\u0430\uff41A_*:~")
)
CANDIDATE_IDS = st.one_of(
    st.text(EDGY_ALPHABET, max_size=70),
    st.text(max_size=70),
    st.from_regex(r"[a-z0-9.\-]{1,70}", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(CANDIDATE_IDS)
def test_every_accepted_org_id_is_a_safe_topic_level_and_file_name(candidate: str) -> None:
    if not is_org_id(candidate):
        with pytest.raises(ValueError, match="organisation id"):
            check_org_id(candidate)
        return
    assert check_org_id(candidate) == candidate
    assert set(candidate) <= SAFE_CHARS
    assert ".." not in candidate
    assert all(candidate.split("."))
    assert 1 <= len(candidate) <= ORG_ID_MAX
    # a single MQTT topic level, with no wildcard or system-topic marker
    assert "/" not in candidate
    assert not set(candidate) & set("+#$\x00")
    # a single file name that cannot climb
    assert os.path.basename(candidate) == candidate  # noqa: PTH119 - the check file code relies on
    assert PurePosixPath(candidate).name == candidate
    assert PureWindowsPath(candidate).name == candidate
    assert candidate not in {".", ".."}


@settings(max_examples=800, deadline=None)
@given(CANDIDATE_IDS)
def test_the_quick_check_and_the_explaining_checks_agree_on_every_id(candidate: str) -> None:
    """check_org_id accepts by one expression and explains a refusal by the detailed checks:
    both must draw the line in the same place, or a refusal would have no sentence (or an
    id the sentences allow would be refused)."""
    problem = org_id_problem(candidate)
    if problem is None:
        assert check_org_id(candidate) == candidate
    else:
        with pytest.raises(ValueError, match="organisation id") as refused:
            check_org_id(candidate)
        assert str(refused.value) == problem


LABELS = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,30}[a-z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(LABELS, min_size=1, max_size=6).map(".".join).filter(lambda s: len(s) <= 64))
def test_every_well_formed_dotted_name_is_accepted(org_id: str) -> None:
    assert check_org_id(org_id) == org_id


# ---------------------------------------------------------------------------- msg ids


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=MSG_ID_BYTES, max_size=MSG_ID_BYTES))
def test_msg_id_text_and_parse_round_trip(msg_id: bytes) -> None:
    text = msg_id_text(msg_id)
    assert re.fullmatch(r"[0-9a-f]{32}", text)
    assert parse_msg_id(text) == msg_id


def test_new_msg_id_is_16_bytes_that_round_trip() -> None:
    msg_id = new_msg_id()
    assert len(msg_id) == MSG_ID_BYTES
    assert parse_msg_id(msg_id_text(msg_id)) == msg_id
    assert new_msg_id() != msg_id


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("A" * 32, id="uppercase"),
        pytest.param("0123456789ABCDEF0123456789abcdef", id="some-uppercase"),
        pytest.param("a" * 31, id="31-digits"),
        pytest.param("a" * 33, id="33-digits"),
        pytest.param("", id="empty"),
        pytest.param("g" * 32, id="non-hex"),
        pytest.param("0x" + "a" * 30, id="0x-prefix"),
        pytest.param("../" + "a" * 30, id="dot-dot-slash"),
        pytest.param("a" * 16 + "/" + "a" * 15, id="slash"),
        pytest.param(" " + "a" * 31, id="leading-space"),
        pytest.param("a" * 32 + "\n", id="trailing-newline"),
        pytest.param("\uff10" * 32, id="full-width-digits"),
        pytest.param("\u0661" * 32, id="arabic-indic-digits"),
    ],
)
def test_parse_msg_id_refuses_anything_but_32_lowercase_hex_digits(text: str) -> None:
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        parse_msg_id(text)


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_msg_id_text_refuses_a_msg_id_of_the_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=f"16 bytes, not {length}"):
        msg_id_text(b"\x00" * length)


# ---------------------------------------------------------------------------- key ids


def test_key_id_of_16_lowercase_hex_digits_is_accepted() -> None:
    assert check_key_id("0123456789abcdef") == "0123456789abcdef"
    assert TypeAdapter(KeyId).validate_python("fedcba9876543210") == "fedcba9876543210"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0123456789ABCDEF", id="uppercase"),
        pytest.param("0123456789abcde", id="15-digits"),
        pytest.param("0123456789abcdef0", id="17-digits"),
        pytest.param("0123456789abcdeg", id="non-hex"),
        pytest.param("", id="empty"),
        pytest.param("../456789abcdef", id="path"),
        pytest.param("0123456789abcdef\n", id="trailing-newline"),
        pytest.param(" 0123456789abcdef", id="leading-space"),
        pytest.param(5, id="int"),
        pytest.param(None, id="none"),
    ],
)
def test_key_id_refuses_anything_but_16_lowercase_hex_digits(value: object) -> None:
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        check_key_id(value)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(st.sampled_from("0123456789abcdefABCDEFg \n/."), min_size=14, max_size=18),
        st.text(max_size=20),
    )
)
def test_key_id_is_accepted_exactly_when_it_is_16_lowercase_hex_digits(value: str) -> None:
    if re.fullmatch(r"[0-9a-f]{16}", value):
        assert check_key_id(value) == value
    else:
        with pytest.raises(ValueError, match="16 lowercase hex digits"):
            check_key_id(value)
