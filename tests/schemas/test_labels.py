"""Labels on an official document: classification, precedence, secrecy period, type."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.labels import (
    Classification,
    Direction,
    DocType,
    PeriodUnit,
    Precedence,
    SecrecyMark,
    SecrecyPeriod,
)

C = Classification
P = Precedence
STATE_SECRETS = [C.CONFIDENTIAL, C.SECRET, C.TOP_SECRET]
ORDERINGS: list[Callable[[Any, Any], Any]] = [
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
]


def years(amount: int) -> SecrecyPeriod:
    return SecrecyPeriod(amount, PeriodUnit.YEAR)


# ---------------------------------------------------------------------------- ordering


@pytest.mark.parametrize(
    "ascending",
    [
        pytest.param([C.PUBLIC, C.INTERNAL, C.CONFIDENTIAL, C.SECRET, C.TOP_SECRET], id="cls"),
        pytest.param([P.ROUTINE, P.URGENT, P.EXTRA_URGENT, P.FLASH], id="precedence"),
    ],
)
def test_labels_are_ordered_from_lowest_to_highest(ascending: list[C] | list[P]) -> None:
    rotated = ascending[2:] + ascending[:2]
    assert sorted(rotated) == ascending
    assert max(rotated) is ascending[-1]
    assert min(rotated) is ascending[0]
    for low, high in itertools.combinations(ascending, 2):
        assert low < high
        assert low <= high
        assert high > low
        assert high >= low
        assert not high < low
        assert not low >= high


def test_classification_and_precedence_never_compare_or_hash_equal() -> None:
    # Regression: as IntEnums PUBLIC == ROUTINE == 0, so a dict keyed by one found the other.
    for classification, precedence in itertools.product(Classification, Precedence):
        other: object = precedence
        assert classification != other
        assert hash(classification) != hash(precedence)
        assert len({classification, precedence}) == 2
        assert {classification: "label"}.get(precedence) is None  # type: ignore[call-overload]


@pytest.mark.parametrize("label", [*Classification, *Precedence], ids=str)
def test_a_label_is_not_its_rank(label: C | P) -> None:
    rank: object = label.rank
    assert label != rank
    assert {label.rank: "rank"}.get(label) is None  # type: ignore[call-overload]


@pytest.mark.parametrize("compare", ORDERINGS, ids=lambda op: op.__name__)
def test_ordering_labels_of_different_kinds_raises_type_error(
    compare: Callable[[Any, Any], Any],
) -> None:
    for classification, precedence in itertools.product(Classification, Precedence):
        with pytest.raises(TypeError):
            compare(classification, precedence)
        with pytest.raises(TypeError):
            compare(precedence, classification)


@pytest.mark.parametrize("compare", ORDERINGS, ids=lambda op: op.__name__)
def test_ordering_a_label_against_an_int_raises_type_error(
    compare: Callable[[Any, Any], Any],
) -> None:
    with pytest.raises(TypeError):
        compare(C.SECRET, 1)


# ---------------------------------------------------------------------------- parse and print


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("公开", C.PUBLIC),
        ("内部", C.INTERNAL),
        ("秘密", C.CONFIDENTIAL),
        ("机密", C.SECRET),
        ("绝密", C.TOP_SECRET),
        (" 机密 ", C.SECRET),
        ("PUBLIC", C.PUBLIC),
        ("internal", C.INTERNAL),
        ("Confidential", C.CONFIDENTIAL),
        ("sEcReT", C.SECRET),
        ("TOP_SECRET", C.TOP_SECRET),
        ("top secret", C.TOP_SECRET),
        ("Top-Secret", C.TOP_SECRET),
        ("TOP  SECRET", C.TOP_SECRET),
        ("\ttop - secret\n", C.TOP_SECRET),
        ("ＳＥＣＲＥＴ", C.SECRET),  # full-width letters
        ("ｔｏｐ－ｓｅｃｒｅｔ", C.TOP_SECRET),  # full-width hyphen too
        ("top\u3000secret", C.TOP_SECRET),  # ideographic space
    ],
)
def test_classification_parses_chinese_and_english_in_any_case_and_spacing(
    text: str, expected: C
) -> None:
    assert Classification.parse(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("平件", P.ROUTINE),
        ("普通", P.ROUTINE),
        ("常规", P.ROUTINE),
        ("加急", P.URGENT),
        ("特急", P.EXTRA_URGENT),
        ("特提", P.FLASH),
        ("routine", P.ROUTINE),
        ("Urgent", P.URGENT),
        ("extra urgent", P.EXTRA_URGENT),
        ("Extra-Urgent", P.EXTRA_URGENT),
        ("ＦＬＡＳＨ", P.FLASH),
    ],
)
def test_precedence_parses_chinese_and_english_in_any_case_and_spacing(
    text: str, expected: P
) -> None:
    assert Precedence.parse(text) is expected


def test_parse_passes_a_label_of_its_own_kind_through() -> None:
    for classification in Classification:
        assert Classification.parse(classification) is classification
    for precedence in Precedence:
        assert Precedence.parse(precedence) is precedence


@pytest.mark.parametrize(
    ("label", "printed"),
    [
        (C.PUBLIC, "PUBLIC 公开"),
        (C.INTERNAL, "INTERNAL 内部"),
        (C.CONFIDENTIAL, "CONFIDENTIAL 秘密"),
        (C.SECRET, "SECRET 机密"),
        (C.TOP_SECRET, "TOP_SECRET 绝密"),
        (P.ROUTINE, "ROUTINE 平件"),
        (P.URGENT, "URGENT 加急"),
        (P.EXTRA_URGENT, "EXTRA_URGENT 特急"),
        (P.FLASH, "FLASH 特提"),
    ],
)
def test_label_prints_english_name_and_chinese_word(label: C | P, printed: str) -> None:
    assert str(label) == printed
    assert type(label).parse(printed.split()[1]) is label


@pytest.mark.parametrize("kind", [Classification, Precedence], ids=lambda k: k.__name__)
@pytest.mark.parametrize(
    "text", ["bogus", "", "   ", "机 密", "3", "SECRETS", "top secret!", "SECRET 机密"]
)
def test_unknown_label_raises_value_error_listing_every_choice(
    kind: type[C] | type[P], text: str
) -> None:
    with pytest.raises(ValueError, match=kind.__name__) as info:
        kind.parse(text)
    message = str(info.value)
    assert repr(text) in message
    for member in kind:
        assert str(member) in message


def test_parse_of_a_non_str_raises_value_error() -> None:
    with pytest.raises(ValueError, match="must be text"):
        Classification.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", [*Classification, *Precedence], ids=str)
def test_from_wire_accepts_the_exact_english_name(label: C | P) -> None:
    assert type(label).from_wire(label.name) is label
    assert type(label).from_wire(label) is label


@pytest.mark.parametrize(
    "value",
    ["secret", "Secret", "机密", "Top-Secret", "TOP SECRET", " SECRET", "SECRET\n", "ROUTINE",
     "", 3, None, b"SECRET", P.ROUTINE],
)  # fmt: skip
def test_classification_from_wire_refuses_anything_but_an_exact_english_name(
    value: object,
) -> None:
    with pytest.raises(ValueError, match="is not a Classification name"):
        Classification.from_wire(value)


def test_only_confidential_secret_and_top_secret_are_state_secrets() -> None:
    assert [c for c in Classification if c.is_state_secret] == STATE_SECRETS


# ---------------------------------------------------------------------------- secrecy marks


@pytest.mark.parametrize(
    ("text", "classification", "wire", "zh", "en"),
    [
        ("机密★1年", C.SECRET, "1y", "机密★1年", "SECRET★1y"),
        ("秘密★6个月", C.CONFIDENTIAL, "6m", "秘密★6个月", "CONFIDENTIAL★6m"),
        ("SECRET★1y", C.SECRET, "1y", "机密★1年", "SECRET★1y"),
        ("绝密★长期", C.TOP_SECRET, "long", "绝密★长期", "TOP_SECRET★long"),
        ("TOP_SECRET★long", C.TOP_SECRET, "long", "绝密★长期", "TOP_SECRET★long"),
        ("秘密★30天", C.CONFIDENTIAL, "30d", "秘密★30天", "CONFIDENTIAL★30d"),
        ("机密★6月", C.SECRET, "6m", "机密★6个月", "SECRET★6m"),
        ("机密*1年", C.SECRET, "1y", "机密★1年", "SECRET★1y"),
        ("机密＊1年", C.SECRET, "1y", "机密★1年", "SECRET★1y"),  # full-width asterisk
        (" secret * 1y ", C.SECRET, "1y", "机密★1年", "SECRET★1y"),
        ("top-secret*30y", C.TOP_SECRET, "30y", "绝密★30年", "TOP_SECRET★30y"),
    ],
)
def test_secrecy_mark_parses_and_formats_in_both_languages(
    text: str, classification: C, wire: str, zh: str, en: str
) -> None:
    mark = SecrecyMark.parse(text)
    assert mark.classification is classification
    assert mark.period.wire == wire
    assert mark.format("zh") == zh
    assert str(mark) == zh
    assert mark.format("en") == en
    assert SecrecyMark.parse(zh) == mark
    assert SecrecyMark.parse(en) == mark


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=999),
    unit=st.sampled_from(PeriodUnit),
    classification=st.sampled_from(STATE_SECRETS),
)
def test_secrecy_period_wire_form_round_trips(
    amount: int, unit: PeriodUnit, classification: C
) -> None:
    period = SecrecyPeriod(amount, unit)
    assert period.wire == f"{amount}{unit.value}"
    assert SecrecyPeriod.from_wire(period.wire) == period
    assert SecrecyPeriod.parse(period.zh) == period
    mark = SecrecyMark(classification, period)
    assert SecrecyMark.parse(mark.format("en")) == mark
    assert SecrecyMark.parse(mark.format("zh")) == mark


def test_long_term_period_round_trips_as_long_and_prints_as_changqi() -> None:
    long_term = SecrecyPeriod.long_term()
    assert long_term.wire == "long"
    assert str(long_term) == "长期"
    assert SecrecyPeriod.from_wire("long") == long_term
    assert SecrecyPeriod.parse("长期") == long_term


@pytest.mark.parametrize(
    "text", ["01y", "1Y", "1年", "长期", " 1y", "1y ", "1 y", "1year", "6个月"]
)
def test_period_from_wire_refuses_anything_but_the_canonical_form(text: str) -> None:
    with pytest.raises(ValueError, match="secrecy period") as info:
        SecrecyPeriod.from_wire(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("classification", [C.PUBLIC, C.INTERNAL])
@pytest.mark.parametrize("period", [years(1), SecrecyPeriod.long_term()], ids=str)
def test_public_and_internal_carry_no_secrecy_period(
    classification: C, period: SecrecyPeriod
) -> None:
    with pytest.raises(ValueError, match="not a state secret") as info:
        SecrecyMark(classification, period)
    assert str(classification) in str(info.value)
    with pytest.raises(ValueError, match="not a state secret"):
        SecrecyMark.parse(f"{classification.zh}★{period.zh}")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("0年", "not 0"),  # the range check names the amount, not the text
        ("0d", "not 0"),
        ("1000y", "'1000y'"),
        ("1000年", "'1000年'"),
        ("abc", "'abc'"),
        ("1 week", "'1 week'"),
        ("1.5y", "'1.5y'"),
        ("-1y", "'-1y'"),
        ("", "''"),
    ],
)
def test_bad_period_is_refused_with_a_message_naming_the_value(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="secrecy period") as info:
        SecrecyPeriod.parse(text)
    assert named in str(info.value)
    with pytest.raises(ValueError, match="secrecy period"):
        SecrecyMark.parse(f"机密★{text}")


@pytest.mark.parametrize("amount", [0, -1, 1000])
def test_period_of_zero_or_more_than_999_units_cannot_be_built(amount: int) -> None:
    with pytest.raises(ValueError, match=f"1 to 999 units, not {amount}"):
        SecrecyPeriod(amount, PeriodUnit.MONTH)


@pytest.mark.parametrize("text", ["机密1年", "机密☆1年", "SECRET", "★1年", "机密★"])
def test_mark_without_a_star_or_a_part_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)secre"):
        SecrecyMark.parse(text)


STATUTORY_MAXIMA = [(C.CONFIDENTIAL, 10), (C.SECRET, 20), (C.TOP_SECRET, 30)]


@pytest.mark.parametrize(("classification", "max_years"), STATUTORY_MAXIMA)
def test_statutory_maximum_in_years_is_exceeded_just_above_the_limit_and_not_at_it(
    classification: C, max_years: int
) -> None:
    assert not SecrecyMark(classification, years(max_years)).exceeds_statutory_maximum()
    assert SecrecyMark(classification, years(max_years + 1)).exceeds_statutory_maximum()


@pytest.mark.parametrize(("classification", "max_years"), STATUTORY_MAXIMA)
def test_statutory_maximum_in_months_is_exceeded_one_month_above_the_limit(
    classification: C, max_years: int
) -> None:
    at_limit = SecrecyPeriod(max_years * 12, PeriodUnit.MONTH)
    one_month_more = SecrecyPeriod(max_years * 12 + 1, PeriodUnit.MONTH)
    assert not SecrecyMark(classification, at_limit).exceeds_statutory_maximum()
    assert SecrecyMark(classification, one_month_more).exceeds_statutory_maximum()


@pytest.mark.parametrize("classification", STATE_SECRETS)
def test_periods_in_days_and_long_term_never_exceed_the_statutory_maximum(
    classification: C,
) -> None:
    # 999 days, the longest period in days, is under 10 years; 长期 is for the rules to judge.
    longest_in_days = SecrecyPeriod(999, PeriodUnit.DAY)
    assert not SecrecyMark(classification, longest_in_days).exceeds_statutory_maximum()
    assert not SecrecyMark(classification, SecrecyPeriod.long_term()).exceeds_statutory_maximum()


# ---------------------------------------------------------------------------- document types

DOC_TYPE_WORDS = [
    # the 15 of the 2012 党政机关公文处理工作条例
    "决议", "决定", "命令", "公报", "公告", "通告", "意见", "通知", "通报", "报告", "请示",
    "批复", "议案", "函", "纪要",
    # and three for this exchange
    "信息", "信访件", "应急",
]  # fmt: skip


def test_doc_types_are_exactly_the_fifteen_statutory_ones_plus_three() -> None:
    assert len(DocType) == 18
    assert sorted(d.zh for d in DocType) == sorted(DOC_TYPE_WORDS)


@pytest.mark.parametrize("word", DOC_TYPE_WORDS)
def test_doc_type_parses_from_its_chinese_name(word: str) -> None:
    doc_type = DocType.parse(word)
    assert doc_type.zh == word
    assert DocType.parse(f" {word} ") is doc_type


def test_ling_parses_as_order() -> None:
    assert DocType.parse("令") is DocType.ORDER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOTICE", DocType.NOTICE),
        ("notice", DocType.NOTICE),
        ("Public Notice", DocType.PUBLIC_NOTICE),
        ("public-notice", DocType.PUBLIC_NOTICE),
        ("ｌｅｔｔｅｒ", DocType.LETTER),
        ("Minutes", DocType.MINUTES),
        ("emergency", DocType.EMERGENCY),
    ],
)
def test_doc_type_parses_from_its_english_name_in_any_case(text: str, expected: DocType) -> None:
    assert DocType.parse(text) is expected


@pytest.mark.parametrize("doc_type", DocType, ids=lambda d: d.name)
def test_doc_type_parses_its_own_name_and_passes_itself_through(doc_type: DocType) -> None:
    assert DocType.parse(doc_type.name) is doc_type
    assert DocType.parse(doc_type.name.lower().replace("_", " ")) is doc_type
    assert DocType.parse(doc_type) is doc_type
    assert DocType.from_wire(doc_type.name) is doc_type


@pytest.mark.parametrize("text", ["短信", "", "orders", "通知书", "NOTICE 通知"])
def test_unknown_doc_type_raises_value_error_listing_every_choice(text: str) -> None:
    with pytest.raises(ValueError, match="not a document type") as info:
        DocType.parse(text)
    for doc_type in DocType:
        assert str(doc_type) in str(info.value)


@pytest.mark.parametrize("value", ["notice", "通知", "Notice", " NOTICE", 7, None])
def test_doc_type_from_wire_refuses_anything_but_an_exact_english_name(value: object) -> None:
    with pytest.raises(ValueError, match="is not a DocType name"):
        DocType.from_wire(value)


@pytest.mark.parametrize(
    ("doc_type", "direction"),
    [
        (DocType.REPORT, Direction.UPWARD),
        (DocType.REQUEST, Direction.UPWARD),
        (DocType.ORDER, Direction.DOWNWARD),
        (DocType.DECISION, Direction.DOWNWARD),
        (DocType.RESOLUTION, Direction.DOWNWARD),
        (DocType.REPLY, Direction.DOWNWARD),
        (DocType.LETTER, Direction.ANY),
    ],
)
def test_doc_type_has_its_usual_direction(doc_type: DocType, direction: Direction) -> None:
    assert doc_type.usual_direction is direction


@pytest.mark.parametrize(
    ("doc_type", "printed"),
    [
        (DocType.NOTICE, "NOTICE 通知"),
        (DocType.ORDER, "ORDER 命令"),
        (DocType.LETTER, "LETTER 函"),
        (DocType.PETITION, "PETITION 信访件"),
    ],
)
def test_doc_type_prints_english_name_and_chinese_word(doc_type: DocType, printed: str) -> None:
    assert str(doc_type) == printed


def test_every_doc_type_prints_its_name_and_its_chinese_word() -> None:
    for doc_type in DocType:
        assert str(doc_type) == f"{doc_type.name} {doc_type.zh}"


@pytest.mark.parametrize(
    ("direction", "zh"),
    [
        (Direction.UPWARD, "上行"),
        (Direction.DOWNWARD, "下行"),
        (Direction.LATERAL, "平行"),
        (Direction.ANY, "不限"),
    ],
)
def test_direction_has_its_chinese_word(direction: Direction, zh: str) -> None:
    assert direction.zh == zh
