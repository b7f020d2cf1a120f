"""The document rules (行文规则) on the Jilin tree: one table per rule, modes, settings, texts."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

import pytest
from _pytest.mark import ParameterSet
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import rules as rules_module
from schemas.directory import verify_directory
from schemas.errors import ConfigError
from schemas.ids import msg_id_text
from schemas.labels import Classification, Direction, DocType
from schemas.metadata import DropMetadata
from schemas.receipts import REASON_PATTERN
from schemas.rules import (
    CLASSIFIED_MARKS,
    DEPARTMENT_DIRECTIVE,
    DOC_NUMBER_FORM,
    LETTER_DIRECTION,
    MOTION_RECIPIENT,
    REPLY_REQUEST,
    REQUEST_RECIPIENT,
    REQUEST_REPORT_MIXED,
    RULES,
    RULES_BY_ID,
    SKIP_LEVEL,
    SKIP_LEVEL_DOWN,
    TYPE_DIRECTION,
    UPWARD_SIGNATORY,
    Document,
    Evaluation,
    Mode,
    Referenced,
    Rule,
    RuleResult,
    Settings,
    Verdict,
    assign_copy_numbers,
    direction,
    doc_number_problem,
    evaluate,
    parse_settings,
    settings_of,
    skipped_organs,
    skipped_organs_down,
)
from schemas.topology import parse_topology
from tests.world import NOW, TOPOLOGY_PATH, World

# The Jilin tree (config/topology.toml): cn.gov > jl.gov > jl.cc > jl.cc.nongan, and the
# provincial departments jl.dept.* under jl.gov; jl.dept.health has directive_to = [jl.cc].
# Outside the tree, the standing committees of the provincial and Changchun people's
# congresses (congress_of jl.gov and jl.cc).
STATE_COUNCIL = "cn.gov"
PROVINCE = "jl.gov"
CHANGCHUN = "jl.cc"
JILIN_CITY = "jl.jl"
NONGAN = "jl.cc.nongan"  # a county under Changchun
YUSHU = "jl.cc.yushu"  # another county under Changchun
HUADIAN = "jl.jl.huadian"  # a county under Jilin City
HEALTH = "jl.dept.health"  # authorised to direct jl.cc
FINANCE = "jl.dept.finance"
SECURITY = "jl.dept.security"
PROVINCE_CONGRESS = "jl.congress"  # 吉林省人大常委会, congress_of jl.gov
CHANGCHUN_CONGRESS = "jl.cc.congress"  # 长春市人大常委会, congress_of jl.cc

PASS, FAIL, N = Verdict.PASS, Verdict.FAIL, Verdict.NOT_APPLICABLE
REQUEST_ID = bytes.fromhex("0123456789abcdef0123456789abcdef")


# ---------------------------------------------------------------- helpers


def row(*values: object) -> tuple[object, ...]:
    return values


def table(cases: dict[str, tuple[object, ...]]) -> list[ParameterSet]:
    """Parametrize rows keyed by the behaviour they show (the key is the test id)."""
    return [pytest.param(*values, id=name) for name, values in cases.items()]


def doc(
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...] = (),
    doc_type: DocType = DocType.LETTER,
    *,
    signatory: str | None = None,
    doc_number: str | None = None,
    directive: bool = False,
    in_reply_to: bytes | None = None,
    title: str | None = None,
) -> Document:
    """An INTERNAL document (classified_marks does not apply) with the fields a rule reads."""
    return Document(
        sender,
        to,
        cc,
        doc_type,
        Classification.INTERNAL,
        signatory=signatory,
        doc_number=doc_number,
        directive=directive,
        in_reply_to=in_reply_to,
        title=title,
    )


def judge(
    world: World,
    document: Document,
    rule: Rule,
    rule_settings: Settings | None = None,
    *,
    referenced: Referenced | None = None,
    looked_up: bool = True,
) -> tuple[RuleResult, Evaluation]:
    """``rule``'s result, and the whole evaluation, on the Jilin directory."""
    evaluation = evaluate(
        document, world.directory, rule_settings or {}, referenced=referenced, looked_up=looked_up
    )
    (result,) = [r for r in evaluation.results if r.rule is rule]
    return result, evaluation


def en(result: RuleResult) -> str:
    return " / ".join(f.en for f in result.findings)


def zh(result: RuleResult) -> str:
    return " / ".join(f.zh for f in result.findings)


def assert_verdict(result: RuleResult, verdict: Verdict, words: tuple[str, ...] = ()) -> None:
    assert result.verdict is verdict, (
        f"{result.rule.id}: {result.verdict} ({result.note})\n{en(result)}"
    )
    assert bool(result.findings) is (verdict is Verdict.FAIL)
    for word in words:
        assert word in en(result), f"{word!r} not in {en(result)!r}"


# ---------------------------------------------------------------- direction


@pytest.mark.parametrize(
    ("sender", "recipient", "expected"),
    table(
        {
            "county_to_its_prefecture_is_upward": row(NONGAN, CHANGCHUN, Direction.UPWARD),
            "county_to_state_council_is_upward": row(NONGAN, STATE_COUNCIL, Direction.UPWARD),
            "department_to_its_government_is_upward": row(HEALTH, PROVINCE, Direction.UPWARD),
            "province_to_a_county_is_downward": row(PROVINCE, NONGAN, Direction.DOWNWARD),
            "state_council_to_prefecture_is_down": row(
                STATE_COUNCIL, CHANGCHUN, Direction.DOWNWARD
            ),
            "prefecture_to_prefecture_is_lateral": row(CHANGCHUN, JILIN_CITY, Direction.LATERAL),
            "counties_of_two_prefectures_are_lateral": row(NONGAN, HUADIAN, Direction.LATERAL),
            "county_to_another_prefecture_is_lateral": row(NONGAN, JILIN_CITY, Direction.LATERAL),
            "department_to_prefecture_is_lateral": row(HEALTH, CHANGCHUN, Direction.LATERAL),
            "department_to_department_is_lateral": row(HEALTH, FINANCE, Direction.LATERAL),
            "an_organ_to_itself_is_lateral": row(CHANGCHUN, CHANGCHUN, Direction.LATERAL),
            "government_to_the_congress_of_its_level_is_lateral": row(
                PROVINCE, PROVINCE_CONGRESS, Direction.LATERAL
            ),
            "congress_to_the_government_of_its_level_is_lateral": row(
                PROVINCE_CONGRESS, PROVINCE, Direction.LATERAL
            ),
            "state_council_to_a_provincial_congress_is_lateral": row(
                STATE_COUNCIL, PROVINCE_CONGRESS, Direction.LATERAL
            ),
            "county_to_its_prefecture_congress_is_lateral": row(
                NONGAN, CHANGCHUN_CONGRESS, Direction.LATERAL
            ),
            "congress_to_congress_is_lateral": row(
                PROVINCE_CONGRESS, CHANGCHUN_CONGRESS, Direction.LATERAL
            ),
            "unknown_organ_is_lateral": row(CHANGCHUN, "xx.unknown", Direction.LATERAL),
        }
    ),
)
def test_direction_follows_the_organisation_tree(
    world: World, sender: str, recipient: str, expected: Direction
) -> None:
    assert direction(world.directory, sender, recipient) is expected


def test_skipped_organs_are_the_organs_between_sender_and_ancestor_nearest_first(
    world: World,
) -> None:
    assert skipped_organs(world.directory, NONGAN, STATE_COUNCIL) == (CHANGCHUN, PROVINCE)
    assert skipped_organs(world.directory, NONGAN, PROVINCE) == (CHANGCHUN,)
    assert skipped_organs(world.directory, NONGAN, CHANGCHUN) == ()
    assert skipped_organs(world.directory, PROVINCE, NONGAN) == ()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_upward_one_way_is_downward_the_other_and_lateral_is_symmetric(
    world: World, data: st.DataObject
) -> None:
    ids = st.sampled_from([o.id for o in world.directory.orgs] + ["xx.unknown"])
    a = data.draw(ids, label="a")
    b = data.draw(ids, label="b")
    there = direction(world.directory, a, b)
    back = direction(world.directory, b, a)

    assert (there is Direction.UPWARD) == (back is Direction.DOWNWARD)
    assert (there is Direction.DOWNWARD) == (back is Direction.UPWARD)
    assert (there is Direction.LATERAL) == (back is Direction.LATERAL)
    # only an ancestor beyond the parent is a skip
    skipped = skipped_organs(world.directory, a, b)
    entry = world.directory.org(a)
    parent = None if entry is None else entry.parent
    assert bool(skipped) == (there is Direction.UPWARD and b != parent)


# ---------------------------------------------------------------- skip_level


@pytest.mark.parametrize(
    ("sender", "to", "cc", "verdict", "add_cc"),
    table(
        {
            "county_to_province_refused": row(NONGAN, (PROVINCE,), (), FAIL, (CHANGCHUN,)),
            "county_to_province_with_prefecture_copied_passes": row(
                NONGAN, (PROVINCE,), (CHANGCHUN,), PASS, ()
            ),
            "county_to_province_and_prefecture_both_primary_passes": row(
                NONGAN, (PROVINCE, CHANGCHUN), (), PASS, ()
            ),
            "county_to_state_council_copying_both_skipped_passes": row(
                NONGAN, (STATE_COUNCIL,), (CHANGCHUN, PROVINCE), PASS, ()
            ),
            "county_to_state_council_without_province_refused_adding_province": row(
                NONGAN, (STATE_COUNCIL,), (CHANGCHUN,), FAIL, (PROVINCE,)
            ),
            "county_to_state_council_without_prefecture_refused_adding_prefecture": row(
                NONGAN, (STATE_COUNCIL,), (PROVINCE,), FAIL, (CHANGCHUN,)
            ),
            "county_to_state_council_copying_none_refused_adding_both_nearest_first": row(
                NONGAN, (STATE_COUNCIL,), (), FAIL, (CHANGCHUN, PROVINCE)
            ),
            "department_to_state_council_without_its_government_refused": row(
                HEALTH, (STATE_COUNCIL,), (), FAIL, (PROVINCE,)
            ),
            "copying_the_province_past_the_prefecture_is_skip_level_too": row(
                NONGAN, (YUSHU,), (PROVINCE,), FAIL, (CHANGCHUN,)
            ),
            "copying_the_province_with_the_prefecture_primary_passes": row(
                NONGAN, (CHANGCHUN,), (PROVINCE,), PASS, ()
            ),
            "prefecture_to_direct_parent_not_applicable": row(CHANGCHUN, (PROVINCE,), (), N, ()),
            "county_to_direct_parent_not_applicable": row(NONGAN, (CHANGCHUN,), (), N, ()),
            "downward_past_a_level_never_skip_level": row(PROVINCE, (NONGAN,), (), N, ()),
            "state_council_to_county_never_skip_level": row(STATE_COUNCIL, (NONGAN,), (), N, ()),
            "lateral_never_skip_level": row(NONGAN, (HUADIAN, JILIN_CITY), (), N, ()),
        }
    ),
)
def test_skip_level(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    verdict: Verdict,
    add_cc: tuple[str, ...],
) -> None:
    # skip_level_down off: a downward row's copies are its business (test_skip_level_down)
    only_up = {SKIP_LEVEL_DOWN.id: Mode.OFF}
    result, evaluation = judge(world, doc(sender, to, cc, DocType.REPORT), SKIP_LEVEL, only_up)

    assert_verdict(result, verdict, add_cc)
    assert evaluation.add_cc == add_cc
    if add_cc:
        assert {o for f in result.findings for o in f.add_cc} == set(add_cc)


def test_skip_level_report_is_accepted_once_auto_cc_copies_are_added(world: World) -> None:
    report = doc(NONGAN, (STATE_COUNCIL,), (), DocType.REPORT, signatory="李四")
    refused = evaluate(report, world.directory, {})
    assert [f.rule for f in refused.refusals] == [SKIP_LEVEL]

    again = evaluate(replace(report, cc=report.cc + refused.add_cc), world.directory, {})

    assert again.ok
    assert again.add_cc == ()


# ---------------------------------------------------------------- skip_level_down


def test_skipped_organs_down_are_the_organs_between_nearest_the_sender_first(
    world: World,
) -> None:
    assert skipped_organs_down(world.directory, STATE_COUNCIL, NONGAN) == (PROVINCE, CHANGCHUN)
    assert skipped_organs_down(world.directory, PROVINCE, NONGAN) == (CHANGCHUN,)
    assert skipped_organs_down(world.directory, CHANGCHUN, NONGAN) == ()
    assert skipped_organs_down(world.directory, NONGAN, PROVINCE) == ()
    assert skipped_organs_down(world.directory, HEALTH, NONGAN) == ()


@pytest.mark.parametrize(
    ("sender", "to", "cc", "verdict", "add_cc"),
    table(
        {
            "province_to_county_without_its_prefecture_warned": row(
                PROVINCE, (NONGAN,), (), FAIL, (CHANGCHUN,)
            ),
            "province_to_county_with_its_prefecture_copied_passes": row(
                PROVINCE, (NONGAN,), (CHANGCHUN,), PASS, ()
            ),
            "province_to_county_and_its_prefecture_both_primary_passes": row(
                PROVINCE, (CHANGCHUN, NONGAN), (), PASS, ()
            ),
            "state_council_to_county_adds_both_nearest_the_sender_first": row(
                STATE_COUNCIL, (NONGAN,), (), FAIL, (PROVINCE, CHANGCHUN)
            ),
            "state_council_to_county_with_the_province_copied_adds_the_prefecture": row(
                STATE_COUNCIL, (NONGAN,), (PROVINCE,), FAIL, (CHANGCHUN,)
            ),
            "copying_a_county_past_its_prefecture_counts_too": row(
                PROVINCE, (JILIN_CITY,), (NONGAN,), FAIL, (CHANGCHUN,)
            ),
            "two_counties_of_one_prefecture_add_it_once": row(
                PROVINCE, (NONGAN, YUSHU), (), FAIL, (CHANGCHUN,)
            ),
            "counties_of_two_prefectures_add_both": row(
                PROVINCE, (NONGAN, HUADIAN), (), FAIL, (CHANGCHUN, JILIN_CITY)
            ),
            "province_to_its_prefecture_not_applicable": row(PROVINCE, (CHANGCHUN,), (), N, ()),
            "prefecture_to_its_county_not_applicable": row(CHANGCHUN, (NONGAN,), (), N, ()),
            "upward_past_a_level_is_skip_level_not_this": row(NONGAN, (PROVINCE,), (), N, ()),
            "lateral_not_applicable": row(CHANGCHUN, (JILIN_CITY,), (), N, ()),
            "department_to_a_county_is_lateral_not_applicable": row(HEALTH, (NONGAN,), (), N, ()),
        }
    ),
)
def test_skip_level_down(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    verdict: Verdict,
    add_cc: tuple[str, ...],
) -> None:
    # skip_level off: an upward row's copies are its business (test_skip_level)
    only_down = {SKIP_LEVEL.id: Mode.OFF}
    result, evaluation = judge(
        world, doc(sender, to, cc, DocType.NOTICE), SKIP_LEVEL_DOWN, only_down
    )

    assert_verdict(result, verdict, add_cc)
    assert evaluation.add_cc == add_cc
    assert len(result.findings) == (1 if verdict is FAIL else 0)  # one per document
    assert result.mode is Mode.WARN  # warned by default, never refused
    assert SKIP_LEVEL_DOWN not in [f.rule for f in evaluation.refusals]
    assert (SKIP_LEVEL_DOWN in [f.rule for f in evaluation.warnings]) is (verdict is FAIL)


def test_skip_level_down_names_the_recipients_and_the_organs_missing_in_both_languages(
    world: World,
) -> None:
    notice = doc(STATE_COUNCIL, (NONGAN, CHANGCHUN), (), DocType.NOTICE)

    result, _ = judge(world, notice, SKIP_LEVEL_DOWN)

    assert en(result) == (
        "sending down to jl.cc.nongan, jl.cc passes over jl.gov, jl.cc, and jl.gov is not "
        "copied; "
        "copy every organ passed over (cc; spoke send --auto-cc adds them) or address the "
        "direct subordinate instead"
    )
    assert "农安县人民政府" in zh(result)
    assert "jl.gov（吉林省人民政府办公厅） 未被抄送" in zh(result)


def test_skip_level_down_leaves_a_request_to_request_recipient(world: World) -> None:
    # copying more subordinates would be the wrong advice: a 请示 copies none at all
    request = doc(PROVINCE, (STATE_COUNCIL,), (NONGAN,), DocType.REQUEST, signatory="李四")

    result, evaluation = judge(world, request, SKIP_LEVEL_DOWN)

    assert_verdict(result, N)
    assert evaluation.add_cc == ()
    assert [f.rule for f in evaluation.refusals] == [REQUEST_RECIPIENT]


def test_downward_skip_level_notice_passes_once_auto_cc_copies_are_added(world: World) -> None:
    notice = doc(STATE_COUNCIL, (NONGAN,), (), DocType.NOTICE)
    warned = evaluate(notice, world.directory, {})
    assert [f.rule for f in warned.warnings] == [SKIP_LEVEL_DOWN]

    again = evaluate(replace(notice, cc=notice.cc + warned.add_cc), world.directory, {})

    assert again.warnings == ()
    assert again.add_cc == ()


# ---------------------------------------------------------------- request_recipient


@pytest.mark.parametrize(
    ("sender", "to", "cc", "verdict", "words"),
    table(
        {
            "county_to_its_prefecture_passes": row(NONGAN, (CHANGCHUN,), (), PASS, ()),
            "prefecture_to_province_passes": row(CHANGCHUN, (PROVINCE,), (), PASS, ()),
            "department_to_its_government_passes": row(HEALTH, (PROVINCE,), (), PASS, ()),
            "copy_to_a_peer_allowed": row(CHANGCHUN, (PROVINCE,), (JILIN_CITY,), PASS, ()),
            "copy_to_another_superior_allowed": row(NONGAN, (CHANGCHUN,), (PROVINCE,), PASS, ()),
            "two_superiors_refused": row(
                CHANGCHUN,
                (PROVINCE, STATE_COUNCIL),
                (),
                FAIL,
                ("2 primary recipients", "exactly one superior"),
            ),
            "one_peer_refused": row(
                CHANGCHUN,
                (JILIN_CITY,),
                (),
                FAIL,
                ("jl.jl is not a superior of jl.cc", "letter 函"),
            ),
            "one_subordinate_refused": row(
                CHANGCHUN, (NONGAN,), (), FAIL, ("jl.cc.nongan is not a superior",)
            ),
            "no_primary_refused": row(CHANGCHUN, (), (PROVINCE,), FAIL, ("0 primary",)),
            "copy_to_a_subordinate_refused": row(
                CHANGCHUN, (PROVINCE,), (NONGAN,), FAIL, ("copies subordinate(s) jl.cc.nongan",)
            ),
        }
    ),
)
def test_request_recipient(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    verdict: Verdict,
    words: tuple[str, ...],
) -> None:
    result, _ = judge(world, doc(sender, to, cc, DocType.REQUEST), REQUEST_RECIPIENT)

    assert_verdict(result, verdict, words)


def test_request_recipient_does_not_apply_to_a_report_to_two_superiors(world: World) -> None:
    report = doc(CHANGCHUN, (PROVINCE, STATE_COUNCIL), (), DocType.REPORT)

    result, _ = judge(world, report, REQUEST_RECIPIENT)

    assert_verdict(result, N)


# ---------------------------------------------------------------- upward_signatory


@pytest.mark.parametrize(
    ("sender", "to", "cc", "signatory", "verdict"),
    table(
        {
            "upward_without_signatory_refused": row(NONGAN, (CHANGCHUN,), (), None, FAIL),
            "upward_empty_signatory_refused": row(NONGAN, (CHANGCHUN,), (), "", FAIL),
            "upward_blank_signatory_refused": row(NONGAN, (CHANGCHUN,), (), "  ", FAIL),
            "upward_ideographic_space_signatory_refused": row(
                NONGAN, (CHANGCHUN,), (), "\u3000", FAIL
            ),
            "upward_with_signatory_passes": row(NONGAN, (CHANGCHUN,), (), "张三", PASS),
            "one_upward_primary_among_others_needs_signatory": row(
                CHANGCHUN, (JILIN_CITY, PROVINCE), (), None, FAIL
            ),
            "downward_without_signatory_not_applicable": row(PROVINCE, (CHANGCHUN,), (), None, N),
            "lateral_without_signatory_not_applicable": row(CHANGCHUN, (JILIN_CITY,), (), None, N),
            "superior_only_copied_not_applicable": row(
                CHANGCHUN, (JILIN_CITY,), (PROVINCE,), None, N
            ),
        }
    ),
)
def test_upward_signatory(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    signatory: str | None,
    verdict: Verdict,
) -> None:
    document = doc(sender, to, cc, DocType.LETTER, signatory=signatory)

    result, _ = judge(world, document, UPWARD_SIGNATORY)

    assert_verdict(result, verdict, ("names no signatory",) if verdict is Verdict.FAIL else ())
    if verdict is Verdict.FAIL:
        assert "jl.jl" not in en(result)  # only the superior is named


# ---------------------------------------------------------------- reply_request

GOOD_REQUEST = Referenced(REQUEST_ID, CHANGCHUN, DocType.REQUEST, (PROVINCE,))


@pytest.mark.parametrize(
    ("sender", "to", "in_reply_to", "referenced", "looked_up", "verdict", "words"),
    table(
        {
            "downward_reply_to_the_request_the_recipient_sent_passes": row(
                PROVINCE, (CHANGCHUN,), REQUEST_ID, GOOD_REQUEST, True, PASS, ()
            ),
            "no_in_reply_to_refused": row(
                PROVINCE, (CHANGCHUN,), None, None, True, FAIL, ("names no request", "in_reply_to")
            ),
            "reference_unknown_to_the_store_refused": row(
                PROVINCE,
                (CHANGCHUN,),
                REQUEST_ID,
                None,
                True,
                FAIL,
                ("holds no message", msg_id_text(REQUEST_ID)),
            ),
            "reference_to_a_report_refused": row(
                PROVINCE,
                (CHANGCHUN,),
                REQUEST_ID,
                replace(GOOD_REQUEST, doc_type=DocType.REPORT),
                True,
                FAIL,
                ("is of type REPORT 报告, not a request",),
            ),
            "request_sent_by_someone_else_refused": row(
                PROVINCE,
                (CHANGCHUN,),
                REQUEST_ID,
                replace(GOOD_REQUEST, sender=JILIN_CITY),
                True,
                FAIL,
                ("was sent by jl.jl to jl.gov", "go to jl.jl"),
            ),
            # Someone else's correspondence: refused exactly as an unknown msg_id, so that
            # in_reply_to cannot probe what the hub holds.
            "request_between_others_refused_as_if_unknown": row(
                PROVINCE,
                (CHANGCHUN,),
                REQUEST_ID,
                replace(GOOD_REQUEST, to=(STATE_COUNCIL,)),
                True,
                FAIL,
                ("holds no message", "addressed to jl.gov"),
            ),
            "lateral_reply_refused_even_to_a_matching_request": row(
                CHANGCHUN,
                (JILIN_CITY,),
                REQUEST_ID,
                Referenced(REQUEST_ID, JILIN_CITY, DocType.REQUEST, (CHANGCHUN,)),
                True,
                FAIL,
                ("jl.jl is not below jl.cc", "letter 函"),
            ),
            "upward_reply_refused": row(
                CHANGCHUN,
                (PROVINCE,),
                REQUEST_ID,
                Referenced(REQUEST_ID, PROVINCE, DocType.REQUEST, (CHANGCHUN,)),
                True,
                FAIL,
                ("jl.gov is not below jl.cc",),
            ),
            "not_looked_up_and_otherwise_fine_is_unchecked": row(
                PROVINCE, (CHANGCHUN,), REQUEST_ID, None, False, Verdict.UNCHECKED, ()
            ),
            "not_looked_up_but_lateral_refused": row(
                CHANGCHUN, (JILIN_CITY,), REQUEST_ID, None, False, FAIL, ("not below",)
            ),
            "not_looked_up_but_no_in_reply_to_refused": row(
                PROVINCE, (CHANGCHUN,), None, None, False, FAIL, ("names no request",)
            ),
        }
    ),
)
def test_reply_request(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    in_reply_to: bytes | None,
    referenced: Referenced | None,
    looked_up: bool,
    verdict: Verdict,
    words: tuple[str, ...],
) -> None:
    reply = doc(sender, to, (), DocType.REPLY, in_reply_to=in_reply_to)

    result, _ = judge(world, reply, REPLY_REQUEST, referenced=referenced, looked_up=looked_up)

    assert_verdict(result, verdict, words)


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.WARN])
def test_unchecked_reply_is_neither_refused_nor_warned_and_says_the_hub_checks(
    world: World, mode: Mode
) -> None:
    reply = doc(PROVINCE, (CHANGCHUN,), (), DocType.REPLY, in_reply_to=REQUEST_ID)

    result, evaluation = judge(
        world, reply, REPLY_REQUEST, {REPLY_REQUEST.id: mode}, looked_up=False
    )

    assert result.verdict is Verdict.UNCHECKED
    assert result.mode is mode
    assert "hub" in result.note
    assert msg_id_text(REQUEST_ID) in result.note
    assert evaluation.ok
    assert evaluation.warnings == ()


def test_reply_request_does_not_apply_to_other_types(world: World) -> None:
    result, _ = judge(world, doc(CHANGCHUN, (JILIN_CITY,)), REPLY_REQUEST)

    assert_verdict(result, N)


# ---------------------------------------------------------------- type_direction


@pytest.mark.parametrize(
    ("doc_type", "sender", "to", "verdict", "words"),
    table(
        {
            "order_to_child_passes": row(DocType.ORDER, PROVINCE, (CHANGCHUN,), PASS, ()),
            "decision_to_grandchild_passes": row(DocType.DECISION, PROVINCE, (NONGAN,), PASS, ()),
            "resolution_to_a_descendant_passes": row(
                DocType.RESOLUTION, STATE_COUNCIL, (NONGAN,), PASS, ()
            ),
            "order_to_peer_refused": row(
                DocType.ORDER,
                CHANGCHUN,
                (JILIN_CITY,),
                FAIL,
                ("ORDER 命令 documents go downward", "jl.jl (lateral)"),
            ),
            "decision_to_superior_refused": row(
                DocType.DECISION, CHANGCHUN, (PROVINCE,), FAIL, ("jl.gov (upward)",)
            ),
            "resolution_to_superior_refused": row(
                DocType.RESOLUTION, NONGAN, (CHANGCHUN,), FAIL, ("jl.cc (upward)",)
            ),
            "order_with_one_superior_among_children_refused": row(
                DocType.ORDER, PROVINCE, (CHANGCHUN, STATE_COUNCIL), FAIL, ("cn.gov (upward)",)
            ),
            "report_upward_passes": row(DocType.REPORT, NONGAN, (CHANGCHUN,), PASS, ()),
            "report_to_a_far_ancestor_passes": row(
                DocType.REPORT, NONGAN, (STATE_COUNCIL,), PASS, ()
            ),
            "report_downward_refused": row(
                DocType.REPORT,
                PROVINCE,
                (CHANGCHUN,),
                FAIL,
                ("REPORT 报告 documents go upward", "jl.cc (downward)"),
            ),
            "report_lateral_refused": row(
                DocType.REPORT, CHANGCHUN, (JILIN_CITY,), FAIL, ("jl.jl (lateral)",)
            ),
            "decision_by_department_to_authorised_prefecture_passes": row(
                DocType.DECISION, HEALTH, (CHANGCHUN,), PASS, ()
            ),
            "decision_by_department_to_unauthorised_prefecture_refused": row(
                DocType.DECISION, HEALTH, (JILIN_CITY,), FAIL, ("jl.jl (lateral)",)
            ),
            "authorisation_belongs_to_the_authorised_department_only": row(
                DocType.DECISION, FINANCE, (CHANGCHUN,), FAIL, ("jl.cc (lateral)",)
            ),
            "directive_to_does_not_make_a_report_upward": row(
                DocType.REPORT, HEALTH, (CHANGCHUN,), FAIL, ("jl.cc (lateral)",)
            ),
            "letter_upward_not_applicable": row(DocType.LETTER, NONGAN, (STATE_COUNCIL,), N, ()),
            "letter_downward_not_applicable": row(DocType.LETTER, PROVINCE, (NONGAN,), N, ()),
            "letter_lateral_not_applicable": row(DocType.LETTER, CHANGCHUN, (JILIN_CITY,), N, ()),
            "opinion_upward_not_applicable": row(DocType.OPINION, NONGAN, (PROVINCE,), N, ()),
            "opinion_downward_not_applicable": row(DocType.OPINION, PROVINCE, (CHANGCHUN,), N, ()),
            "request_is_left_to_its_own_rule": row(
                DocType.REQUEST, CHANGCHUN, (JILIN_CITY,), N, ()
            ),
            "reply_is_left_to_its_own_rule": row(DocType.REPLY, CHANGCHUN, (PROVINCE,), N, ()),
        }
    ),
)
def test_type_direction(
    world: World,
    *,
    doc_type: DocType,
    sender: str,
    to: tuple[str, ...],
    verdict: Verdict,
    words: tuple[str, ...],
) -> None:
    result, _ = judge(world, doc(sender, to, (), doc_type), TYPE_DIRECTION)

    assert_verdict(result, verdict, words)


def test_type_direction_judges_primary_recipients_only(world: World) -> None:
    order = doc(PROVINCE, (CHANGCHUN,), (STATE_COUNCIL, JILIN_CITY), DocType.ORDER)

    result, _ = judge(world, order, TYPE_DIRECTION)

    assert_verdict(result, Verdict.PASS)


# ---------------------------------------------------------------- letter_direction


@pytest.mark.parametrize(
    ("sender", "to", "cc", "verdict", "words"),
    table(
        {
            "prefecture_to_prefecture_passes": row(CHANGCHUN, (JILIN_CITY,), (), PASS, ()),
            "county_to_another_prefecture_passes": row(NONGAN, (JILIN_CITY,), (), PASS, ()),
            # the 函's own case: asking an organ that is not one's superior for approval
            "county_to_a_provincial_department_passes": row(NONGAN, (FINANCE,), (), PASS, ()),
            "department_to_a_prefecture_passes": row(HEALTH, (CHANGCHUN,), (), PASS, ()),
            "department_to_department_passes": row(HEALTH, (FINANCE,), (), PASS, ()),
            "government_to_the_congress_of_its_level_passes": row(
                PROVINCE, (PROVINCE_CONGRESS,), (), PASS, ()
            ),
            "a_superior_only_copied_passes": row(CHANGCHUN, (JILIN_CITY,), (PROVINCE,), PASS, ()),
            "county_to_its_prefecture_refused": row(
                NONGAN,
                (CHANGCHUN,),
                (),
                FAIL,
                ("addressed to jl.cc (upward)", "use a report 报告 or a request 请示"),
            ),
            "county_to_the_state_council_refused": row(
                NONGAN, (STATE_COUNCIL,), (), FAIL, ("cn.gov (upward)",)
            ),
            "department_to_its_government_refused": row(
                HEALTH, (PROVINCE,), (), FAIL, ("jl.gov (upward)",)
            ),
            "province_to_its_prefecture_refused": row(
                PROVINCE,
                (CHANGCHUN,),
                (),
                FAIL,
                ("addressed to jl.cc (downward)", "use a notice 通知", "批复 answers a 请示"),
            ),
            "province_to_a_county_refused": row(
                PROVINCE, (NONGAN,), (), FAIL, ("jl.cc.nongan (downward)",)
            ),
            "one_superior_among_peers_refused": row(
                CHANGCHUN, (JILIN_CITY, PROVINCE), (), FAIL, ("addressed to jl.gov (upward),",)
            ),
        }
    ),
)
def test_letter_direction(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    verdict: Verdict,
    words: tuple[str, ...],
) -> None:
    result, evaluation = judge(world, doc(sender, to, cc, DocType.LETTER), LETTER_DIRECTION)

    assert_verdict(result, verdict, words)
    if verdict is FAIL:
        assert "jl.jl" not in en(result)  # only the organs in the sender's line are named
        assert [f.rule for f in evaluation.refusals].count(LETTER_DIRECTION) == 1


def test_letter_direction_does_not_apply_to_other_types(world: World) -> None:
    result, _ = judge(world, doc(PROVINCE, (CHANGCHUN,), (), DocType.NOTICE), LETTER_DIRECTION)

    assert_verdict(result, N)


# Documents that go the wrong way for their type: the advice fits the direction they go,
# and recommends a letter 函 only towards an organ outside the sender's line.
@pytest.mark.parametrize(
    ("document", "rule", "advice"),
    table(
        {
            "order_to_a_superior_is_told_report_or_request": row(
                doc(CHANGCHUN, (PROVINCE,), (), DocType.ORDER),
                TYPE_DIRECTION,
                "to a superior, use a report 报告 or a request 请示",
            ),
            "report_to_a_subordinate_is_told_notice": row(
                doc(PROVINCE, (CHANGCHUN,), (), DocType.REPORT),
                TYPE_DIRECTION,
                "to a subordinate, use a notice 通知",
            ),
            "reply_to_a_superior_is_told_report_or_request": row(
                doc(CHANGCHUN, (PROVINCE,), (), DocType.REPLY, in_reply_to=REQUEST_ID),
                REPLY_REQUEST,
                "to a superior, use a report 报告 or a request 请示",
            ),
            "request_to_a_subordinate_is_told_notice": row(
                doc(CHANGCHUN, (NONGAN,), (), DocType.REQUEST),
                REQUEST_RECIPIENT,
                "to a subordinate, use a notice 通知",
            ),
            "letter_up_is_told_report_or_request": row(
                doc(NONGAN, (CHANGCHUN,), (), DocType.LETTER),
                LETTER_DIRECTION,
                "to a superior, use a report 报告 or a request 请示",
            ),
        }
    ),
)
def test_advice_for_a_document_up_or_down_never_recommends_a_letter(
    world: World, document: Document, rule: Rule, advice: str
) -> None:
    result, _ = judge(world, document, rule, looked_up=False)

    assert result.verdict is FAIL
    assert advice in en(result)
    assert "use a letter 函" not in en(result)
    assert "“函”" not in zh(result)


@pytest.mark.parametrize(
    ("document", "rule"),
    table(
        {
            "order_to_a_peer": row(
                doc(CHANGCHUN, (JILIN_CITY,), (), DocType.ORDER), TYPE_DIRECTION
            ),
            "report_to_a_peer": row(
                doc(CHANGCHUN, (JILIN_CITY,), (), DocType.REPORT), TYPE_DIRECTION
            ),
            "reply_to_a_peer": row(
                doc(CHANGCHUN, (JILIN_CITY,), (), DocType.REPLY, in_reply_to=REQUEST_ID),
                REPLY_REQUEST,
            ),
            "request_to_a_peer": row(
                doc(CHANGCHUN, (JILIN_CITY,), (), DocType.REQUEST), REQUEST_RECIPIENT
            ),
        }
    ),
)
def test_advice_for_a_document_to_a_peer_is_a_letter(
    world: World, document: Document, rule: Rule
) -> None:
    result, _ = judge(world, document, rule, looked_up=False)

    assert result.verdict is FAIL
    assert "to an organ outside your line (不相隶属), use a letter 函" in en(result)
    assert "向不相隶属的机关请用“函”" in zh(result)


# ---------------------------------------------------------------- motion_recipient


@pytest.mark.parametrize(
    ("sender", "to", "cc", "verdict", "words"),
    table(
        {
            "province_to_its_congress_passes": row(PROVINCE, (PROVINCE_CONGRESS,), (), PASS, ()),
            "prefecture_to_its_congress_passes": row(
                CHANGCHUN, (CHANGCHUN_CONGRESS,), (), PASS, ()
            ),
            "copies_are_not_judged": row(
                PROVINCE, (PROVINCE_CONGRESS,), (STATE_COUNCIL, CHANGCHUN), PASS, ()
            ),
            "province_to_a_prefecture_refused": row(
                PROVINCE,
                (CHANGCHUN,),
                (),
                FAIL,
                ("jl.cc is not", "address it to jl.congress"),
            ),
            "prefecture_to_peer_refused": row(
                CHANGCHUN, (JILIN_CITY,), (), FAIL, ("address it to jl.cc.congress",)
            ),
            "prefecture_to_the_provincial_congress_refused": row(
                CHANGCHUN,
                (PROVINCE_CONGRESS,),
                (),
                FAIL,
                ("level of jl.cc, and jl.congress is not", "address it to jl.cc.congress"),
            ),
            "province_to_a_prefecture_congress_refused": row(
                PROVINCE,
                (CHANGCHUN_CONGRESS,),
                (),
                FAIL,
                ("jl.cc.congress is not", "address it to jl.congress"),
            ),
            "province_to_its_superior_refused": row(
                PROVINCE, (STATE_COUNCIL,), (), FAIL, ("cn.gov is not",)
            ),
            "its_congress_and_another_organ_refused_naming_the_other": row(
                PROVINCE,
                (PROVINCE_CONGRESS, CHANGCHUN),
                (),
                FAIL,
                ("and jl.cc is not; address it to jl.congress",),
            ),
            "department_to_its_governments_congress_refused": row(
                HEALTH,
                (PROVINCE_CONGRESS,),
                (),
                FAIL,
                ("jl.dept.health is a department", "have its government jl.gov submit it to "),
            ),
            "no_congress_of_that_level_in_the_directory_refused_saying_so": row(
                JILIN_CITY,
                (PROVINCE_CONGRESS,),
                (),
                FAIL,
                ("lists no people's congress or standing committee of the level of jl.jl",),
            ),
            "county_without_a_congress_refused_saying_so": row(
                NONGAN,
                (CHANGCHUN_CONGRESS,),
                (),
                FAIL,
                ("no people's congress or standing committee of the level of jl.cc.nongan",),
            ),
            "state_council_without_a_congress_refused_saying_so": row(
                STATE_COUNCIL,
                (PROVINCE_CONGRESS,),
                (),
                FAIL,
                ("of the level of cn.gov", "add that congress to the topology"),
            ),
            "congress_sending_a_motion_refused": row(
                PROVINCE_CONGRESS, (PROVINCE,), (), FAIL, ("jl.congress is a congress",)
            ),
        }
    ),
)
def test_motion_recipient(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    verdict: Verdict,
    words: tuple[str, ...],
) -> None:
    result, evaluation = judge(world, doc(sender, to, cc, DocType.MOTION), MOTION_RECIPIENT)

    assert_verdict(result, verdict, words)
    assert evaluation.ok is (verdict is not FAIL)


def test_motion_finding_names_the_congress_in_chinese(world: World) -> None:
    result, _ = judge(
        world, doc(CHANGCHUN, (PROVINCE_CONGRESS,), (), DocType.MOTION), MOTION_RECIPIENT
    )

    assert zh(result) == (
        "议案主送 jl.congress（吉林省人民代表大会常务委员会），议案只能提请与 "
        "jl.cc（长春市人民政府） 同级的人民代表大会或其常务委员会审议；请主送 "
        "jl.cc.congress（长春市人民代表大会常务委员会）"
    )


def test_motion_from_a_department_to_a_prefecture_names_sender_and_recipient(
    world: World,
) -> None:
    result, _ = judge(world, doc(FINANCE, (CHANGCHUN,), (), DocType.MOTION), MOTION_RECIPIENT)

    assert [f.en for f in result.findings] == [
        (
            "a motion is submitted by a people's government, and jl.dept.finance is a "
            "department; have its government jl.gov submit it to jl.congress"
        ),
        (
            "a motion goes to the people's congress (or its standing committee) of the level "
            "of jl.gov, and jl.cc is not; address it to jl.congress"
        ),
    ]


def test_motion_recipient_does_not_apply_to_other_types(world: World) -> None:
    result, _ = judge(world, doc(CHANGCHUN, (JILIN_CITY,)), MOTION_RECIPIENT)

    assert_verdict(result, N)


# ---------------------------------------------------------------- the other rules and a congress


@pytest.mark.parametrize(
    ("document", "rule", "verdict"),
    table(
        {
            # 宪法: the government reports its work to the congress of its level
            "report_from_the_government_to_its_congress_passes": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.REPORT), TYPE_DIRECTION, PASS
            ),
            "report_to_another_levels_congress_refused": row(
                doc(CHANGCHUN, (PROVINCE_CONGRESS,), (), DocType.REPORT), TYPE_DIRECTION, FAIL
            ),
            "report_from_a_department_to_the_congress_refused": row(
                doc(HEALTH, (PROVINCE_CONGRESS,), (), DocType.REPORT), TYPE_DIRECTION, FAIL
            ),
            "resolution_from_the_congress_to_its_government_passes": row(
                doc(PROVINCE_CONGRESS, (PROVINCE,), (), DocType.RESOLUTION), TYPE_DIRECTION, PASS
            ),
            "decision_from_the_congress_to_its_government_passes": row(
                doc(CHANGCHUN_CONGRESS, (CHANGCHUN,), (), DocType.DECISION), TYPE_DIRECTION, PASS
            ),
            "decision_from_the_congress_to_another_government_refused": row(
                doc(PROVINCE_CONGRESS, (CHANGCHUN,), (), DocType.DECISION), TYPE_DIRECTION, FAIL
            ),
            "order_from_the_government_to_its_congress_refused": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.ORDER), TYPE_DIRECTION, FAIL
            ),
            "decision_from_the_government_to_its_congress_refused": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.DECISION), TYPE_DIRECTION, FAIL
            ),
            "request_to_the_congress_refused_it_is_no_superior": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.REQUEST), REQUEST_RECIPIENT, FAIL
            ),
            "reply_to_the_congress_refused_it_is_no_subordinate": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.REPLY, in_reply_to=REQUEST_ID),
                REPLY_REQUEST,
                FAIL,
            ),
            "report_to_the_congress_needs_no_signatory_it_is_not_upward": row(
                doc(PROVINCE, (PROVINCE_CONGRESS,), (), DocType.REPORT), UPWARD_SIGNATORY, N
            ),
            "county_copying_the_congress_is_no_skip_level": row(
                doc(NONGAN, (CHANGCHUN,), (PROVINCE_CONGRESS,), DocType.REPORT), SKIP_LEVEL, N
            ),
            "province_copying_a_prefecture_congress_is_no_skip_level_down": row(
                doc(PROVINCE, (CHANGCHUN,), (CHANGCHUN_CONGRESS,), DocType.NOTICE),
                SKIP_LEVEL_DOWN,
                N,
            ),
            "department_directive_to_the_congress_is_not_to_a_lower_government": row(
                doc(FINANCE, (PROVINCE_CONGRESS,), (), DocType.NOTICE, directive=True),
                DEPARTMENT_DIRECTIVE,
                PASS,
            ),
        }
    ),
)
def test_a_congress_is_outside_the_reporting_line_in_every_rule(
    world: World, document: Document, rule: Rule, verdict: Verdict
) -> None:
    result, _ = judge(world, document, rule, looked_up=False)

    assert_verdict(result, verdict)


# ---------------------------------------------------------------- request_report_mixed


@pytest.mark.parametrize(
    ("doc_type", "title", "verdict", "words"),
    table(
        {
            "plain_report_passes": row(
                DocType.REPORT, "关于2026年冬季供暖工作情况的报告", PASS, ()
            ),
            "plain_request_passes": row(DocType.REQUEST, "关于拨付防汛专项资金的请示", PASS, ()),
            "report_asking_for_approval_warned": row(
                DocType.REPORT,
                "关于防汛工作情况的报告并请批准追加经费",
                FAIL,
                ("contains 请批准", "a report carries no request for approval"),
            ),
            "report_asking_for_instructions_warned": row(
                DocType.REPORT, "关于机构改革情况的报告（请批示）", FAIL, ("contains 请批示",)
            ),
            "report_asking_for_examination_warned": row(
                DocType.REPORT, "关于调整编制的报告，请审批", FAIL, ("contains 请审批",)
            ),
            "report_asking_to_be_approved_warned": row(
                DocType.REPORT, "关于增设机构的报告（请予批准）", FAIL, ("contains 请予批准",)
            ),
            "report_carrying_a_request_warned": row(
                DocType.REPORT,
                "关于申请资金的请示和有关情况的报告",
                FAIL,
                ("contains 请示",),
            ),
            "spaces_do_not_hide_the_words": row(
                DocType.REPORT, "关于经费情况的报告 请　批准", FAIL, ("contains 请批准",)
            ),
            "request_report_in_a_report_warned": row(
                DocType.REPORT, "关于增设机构的请示报告", FAIL, ("says 请示报告", "choose one")
            ),
            "request_report_in_a_request_warned_once": row(
                DocType.REQUEST, "关于增设机构的请示报告", FAIL, ("says 请示报告",)
            ),
            "request_report_in_a_notice_warned": row(
                DocType.NOTICE, "关于报送2026年度请示报告的通知", FAIL, ("请示报告",)
            ),
            # 重大事项请示报告制度 is an institution, not a mix of two types
            "notice_on_the_reporting_system_passes": row(
                DocType.NOTICE, "关于严格执行重大事项请示报告制度的通知", PASS, ()
            ),
            "report_on_the_reporting_system_passes": row(
                DocType.REPORT, "关于落实重大事项请示报告制度情况的报告", PASS, ()
            ),
            "request_ending_in_report_warned": row(
                DocType.REQUEST,
                "关于增加编制的报告",
                FAIL,
                ("ends in 报告", "a request's title ends in 请示"),
            ),
            "request_ending_in_report_and_a_space_warned": row(
                DocType.REQUEST, "关于增加编制的报告\u3000", FAIL, ("ends in 报告",)
            ),
            "request_naming_a_lecture_hall_passes": row(
                DocType.REQUEST, "关于报告厅维修经费的请示", PASS, ()
            ),
            "notice_about_a_request_passes": row(
                DocType.NOTICE, "关于办理市县请示事项的通知", PASS, ()
            ),
            # 函 may ask for approval between organs outside each other's line (第八条（十四）)
            "letter_asking_for_approval_passes": row(
                DocType.LETTER, "关于商请批准使用场地的函（请予批准）", PASS, ()
            ),
        }
    ),
)
def test_request_report_mixed(
    world: World, doc_type: DocType, title: str, verdict: Verdict, words: tuple[str, ...]
) -> None:
    document = doc(CHANGCHUN, (PROVINCE,), (), doc_type, signatory="李四", title=title)

    result, evaluation = judge(world, document, REQUEST_REPORT_MIXED)

    assert_verdict(result, verdict, words)
    assert len(result.findings) == (1 if verdict is FAIL else 0)
    assert result.mode is Mode.WARN
    assert REQUEST_REPORT_MIXED not in [f.rule for f in evaluation.refusals]
    for finding in result.findings:
        assert title.strip() not in finding.sentence()  # the words, never the title


def test_request_report_mixed_is_not_applicable_where_the_title_is_unknown(world: World) -> None:
    result, _ = judge(world, doc(CHANGCHUN, (PROVINCE,), (), DocType.REPORT), REQUEST_REPORT_MIXED)

    assert_verdict(result, N)
    assert result.note == "the title travels encrypted: only the sending spoke checks it"


def test_hub_cannot_judge_the_title_that_the_sending_spoke_judges(world: World) -> None:
    title = "关于防汛工作情况的报告并请批准追加经费"
    metadata = DropMetadata.model_validate(
        {"to": [PROVINCE], "classification": "内部", "doc_type": "报告", "title": title}
    )
    at_spoke = Document.from_metadata(metadata, CHANGCHUN, (PROVINCE,), ())
    sealed, _ = world.seal(CHANGCHUN, (PROVINCE,), doc_type=DocType.REPORT, title=title)
    at_hub = Document.from_header(sealed.header)

    spoke_result, _ = judge(world, at_spoke, REQUEST_REPORT_MIXED)
    hub_result, _ = judge(world, at_hub, REQUEST_REPORT_MIXED)

    assert at_spoke.title == title
    assert at_hub.title is None
    assert spoke_result.verdict is FAIL
    assert hub_result.verdict is N
    assert "title travels encrypted" in hub_result.note


# ---------------------------------------------------------------- department_directive


@pytest.mark.parametrize(
    ("sender", "to", "cc", "doc_type", "directive", "verdict"),
    table(
        {
            "department_decision_to_prefecture_refused": row(
                FINANCE, (CHANGCHUN,), (), DocType.DECISION, False, FAIL
            ),
            "department_order_to_county_refused": row(
                FINANCE, (NONGAN,), (), DocType.ORDER, False, FAIL
            ),
            "department_directive_notice_to_prefecture_refused": row(
                FINANCE, (CHANGCHUN,), (), DocType.NOTICE, True, FAIL
            ),
            "lower_government_only_copied_refused": row(
                FINANCE, (SECURITY,), (JILIN_CITY,), DocType.DECISION, False, FAIL
            ),
            "any_document_marked_directive_counts": row(
                FINANCE, (CHANGCHUN,), (), DocType.LETTER, True, FAIL
            ),
            "authorised_department_to_its_prefecture_passes": row(
                HEALTH, (CHANGCHUN,), (), DocType.DECISION, False, PASS
            ),
            "authorised_department_directive_notice_passes": row(
                HEALTH, (CHANGCHUN,), (), DocType.NOTICE, True, PASS
            ),
            "authorised_department_to_another_prefecture_refused": row(
                HEALTH, (JILIN_CITY,), (), DocType.DECISION, False, FAIL
            ),
            "authorisation_does_not_reach_the_counties_below": row(
                HEALTH, (NONGAN,), (), DocType.DECISION, False, FAIL
            ),
            "department_to_another_department_passes": row(
                FINANCE, (SECURITY,), (), DocType.DECISION, False, PASS
            ),
            "governments_at_or_above_its_own_level_are_not_lower": row(
                FINANCE, (PROVINCE,), (STATE_COUNCIL,), DocType.DECISION, False, PASS
            ),
            "non_directive_notice_not_applicable": row(
                FINANCE, (CHANGCHUN,), (), DocType.NOTICE, False, N
            ),
            "a_government_is_not_a_department": row(
                PROVINCE, (CHANGCHUN,), (), DocType.DECISION, False, N
            ),
        }
    ),
)
def test_department_directive(
    world: World,
    *,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    doc_type: DocType,
    directive: bool,
    verdict: Verdict,
) -> None:
    document = doc(sender, to, cc, doc_type, directive=directive)

    result, _ = judge(world, document, DEPARTMENT_DIRECTIVE)

    assert_verdict(result, verdict, ("does not authorise",) if verdict is Verdict.FAIL else ())


def test_department_directive_names_only_the_lower_governments(world: World) -> None:
    decision = doc(FINANCE, (CHANGCHUN, SECURITY), (PROVINCE, NONGAN), DocType.DECISION)

    result, _ = judge(world, decision, DEPARTMENT_DIRECTIVE)

    assert "government(s) jl.cc, jl.cc.nongan," in en(result)
    assert "长春市人民政府" in zh(result)


# ---------------------------------------------------------------- classified_marks

TWO = {PROVINCE: "000001", CHANGCHUN: "000002"}


def classified(
    label: Classification = Classification.CONFIDENTIAL,
    period: str | None = "1y",
    numbers: dict[str, str] | None = None,
) -> Document:
    return Document(
        STATE_COUNCIL,
        (PROVINCE,),
        (CHANGCHUN,),
        DocType.NOTICE,
        label,
        secrecy_period=period,
        copy_numbers=TWO if numbers is None else numbers,
    )


@pytest.mark.parametrize(
    ("document", "verdict", "words"),
    table(
        {
            "confidential_with_period_and_numbers_passes": row(classified(), PASS, ()),
            "secret_fully_marked_passes": row(classified(Classification.SECRET), PASS, ()),
            "top_secret_marked_passes": row(classified(Classification.TOP_SECRET), PASS, ()),
            "no_period_refused": row(
                classified(period=None),
                FAIL,
                ("CONFIDENTIAL but carries no classification period",),
            ),
            "empty_period_refused": row(
                classified(Classification.TOP_SECRET, period=""),
                FAIL,
                ("no classification period",),
            ),
            "missing_copy_number_refused": row(
                classified(numbers={PROVINCE: "000001"}), FAIL, ("no copy number for jl.cc",)
            ),
            "copy_number_for_a_non_recipient_refused": row(
                classified(numbers={**TWO, JILIN_CITY: "000003"}),
                FAIL,
                ("copy numbers for non-recipients jl.jl",),
            ),
            "one_digit_copy_number_refused": row(
                classified(numbers={PROVINCE: "1", CHANGCHUN: "000002"}),
                FAIL,
                ("not six digits: jl.gov='1'",),
            ),
            "seven_digit_copy_number_refused": row(
                classified(numbers={PROVINCE: "0000001", CHANGCHUN: "000002"}),
                FAIL,
                ("jl.gov='0000001'",),
            ),
            "full_width_copy_number_refused": row(
                classified(numbers={PROVINCE: "\uff10" * 5 + "\uff11", CHANGCHUN: "000002"}),
                FAIL,
                ("not six digits",),
            ),
            "repeated_copy_number_refused": row(
                classified(numbers={PROVINCE: "000001", CHANGCHUN: "000001"}),
                FAIL,
                ("repeated copy numbers: 000001 (jl.gov, jl.cc)",),
            ),
            "public_not_applicable": row(classified(Classification.PUBLIC, None, {}), N, ()),
            "internal_not_applicable": row(classified(Classification.INTERNAL, None, {}), N, ()),
        }
    ),
)
def test_classified_marks(
    world: World, document: Document, verdict: Verdict, words: tuple[str, ...]
) -> None:
    result, _ = judge(world, document, CLASSIFIED_MARKS)

    assert_verdict(result, verdict, words)


def test_assign_copy_numbers_counts_from_000001_in_recipient_order() -> None:
    assert assign_copy_numbers([CHANGCHUN, PROVINCE, NONGAN]) == {
        CHANGCHUN: "000001",
        PROVINCE: "000002",
        NONGAN: "000003",
    }
    assert assign_copy_numbers([]) == {}


def test_assigned_copy_numbers_satisfy_the_rule(world: World) -> None:
    document = classified(numbers={})
    document = replace(document, copy_numbers=assign_copy_numbers(document.recipients))

    result, _ = judge(world, document, CLASSIFIED_MARKS)

    assert_verdict(result, Verdict.PASS)


# ---------------------------------------------------------------- doc_number_form


@pytest.mark.parametrize(
    ("number", "verdict", "en_words", "zh_words"),
    table(
        {
            "standard_form_passes": row("吉政发〔2002〕3号", PASS, (), ()),
            "long_code_passes": row("国办发明电〔2020〕12号", PASS, (), ()),
            "six_digit_sequence_passes": row("吉政发〔2002〕100000号", PASS, (), ()),
            "square_brackets_refused": row(
                "吉政发[2002]3号", FAIL, ("hexagonal brackets",), ("六角括号",)
            ),
            "full_width_parentheses_refused": row(
                "吉政发（2002）3号", FAIL, ("hexagonal brackets",), ("六角括号",)
            ),
            "ascii_parentheses_refused": row(
                "吉政发(2002)3号", FAIL, ("hexagonal brackets",), ("六角括号",)
            ),
            "lenticular_brackets_refused": row(
                "吉政发【2002】3号", FAIL, ("hexagonal brackets",), ("六角括号",)
            ),
            "two_digit_year_refused": row("吉政发〔02〕3号", FAIL, ("four digits",), ("4位",)),
            "di_before_the_number_refused": row(
                "吉政发〔2002〕第3号", FAIL, ("takes no 第",), ("不加“第”字",)
            ),
            "leading_zero_refused": row("吉政发〔2002〕03号", FAIL, ("leading zeros",), ("虚位",)),
            "full_width_digits_refused": row(
                "吉政发〔２００２〕３号", FAIL, ("full-width digits",), ("全角数字",)
            ),
            "full_width_year_alone_refused": row(
                "吉政发〔２００２〕3号", FAIL, ("full-width digits",), ("全角数字",)
            ),
            "full_width_digits_and_parentheses_both_named": row(
                "吉政发（２００２）３号",
                FAIL,
                ("full-width digits", "hexagonal brackets"),
                ("全角数字", "六角括号"),
            ),
            "missing_hao_refused": row("吉政发〔2002〕3", FAIL, ("ends with 号",), ("“号”字结尾",)),
            "no_prefix_refused": row(
                "〔2002〕3号", FAIL, ("abbreviation in Chinese characters",), ("机关代字",)
            ),
            "latin_prefix_refused": row(
                "JZF〔2002〕3号", FAIL, ("abbreviation in Chinese characters",), ("机关代字",)
            ),
            "other_script_digits_refused": row(
                "吉政发〔\u0662\u0660\u0660\u0662〕3号", FAIL, ("not of the form",), ()
            ),
        }
    ),
)
def test_doc_number_form(
    world: World,
    number: str,
    verdict: Verdict,
    en_words: tuple[str, ...],
    zh_words: tuple[str, ...],
) -> None:
    result, _ = judge(world, doc(PROVINCE, (CHANGCHUN,), doc_number=number), DOC_NUMBER_FORM)

    assert_verdict(result, verdict, en_words)
    for word in zh_words:
        assert word in zh(result)
    if verdict is Verdict.FAIL:
        assert repr(number) in en(result)
        assert "吉政发〔2002〕3号" in en(result)


def test_doc_number_form_does_not_apply_without_a_number(world: World) -> None:
    result, _ = judge(world, doc(PROVINCE, (CHANGCHUN,)), DOC_NUMBER_FORM)

    assert_verdict(result, N)


def reasons(number: str) -> tuple[list[str], list[str]]:
    """The faults doc_number_problem names, one string each, in English and in Chinese."""
    problem = doc_number_problem(number)
    assert problem is not None, number
    zh_text, en_text = problem
    en_part = en_text.removeprefix(f"document number {number!r}: ")
    zh_part = zh_text.removeprefix(f"发文字号 {number!r}：")
    return (
        en_part.removesuffix(". Write it like 吉政发〔2002〕3号").split("; "),
        zh_part.removesuffix("。应如 吉政发〔2002〕3号").split("；"),
    )


START_AT_1 = ("the sequence number starts at 1, never 0", "发文顺序号从1开始（不编为0）")
NO_ZEROS = (
    "no leading zeros in the sequence number (1, not 01)",
    "发文顺序号不编虚位（1 不编为 01）",
)
NO_DI = ("the sequence number takes no 第", "发文顺序号不加“第”字")
BRACKETS = ("the year goes in hexagonal brackets 〔〕", "年份应用六角括号“〔〕”括入")
FULL_YEAR = ("the year is written in full (four digits)", "年份应标全称（4位）")
FULL_WIDTH = ("full-width digits or variant characters", "含全角数字或变体字符")
NO_CODE = (
    "it starts with the issuing organ's abbreviation in Chinese characters",
    "应以发文机关代字（汉字）开头",
)
NO_HAO = ("it ends with 号", "应以“号”字结尾")
NOT_THE_FORM = (
    "it is not of the form 机关代字〔年份〕序号号",
    "不是“机关代字〔年份〕序号号”的形式",
)


@pytest.mark.parametrize(
    ("number", "expected"),
    table(
        {
            "sequence_zero_starts_at_one": row("吉政发〔2026〕0号", (START_AT_1,)),
            "sequence_all_zeros_starts_at_one": row("吉政发〔2026〕000号", (START_AT_1,)),
            "sequence_zero_with_di": row("吉政发〔2026〕第0号", (NO_DI, START_AT_1)),
            "full_width_zero_starts_at_one": row("吉政发〔2026〕０号", (FULL_WIDTH, START_AT_1)),
            "leading_zero": row("吉政发〔2026〕03号", (NO_ZEROS,)),
            "leading_zeros_before_ten": row("吉政发〔2026〕0010号", (NO_ZEROS,)),
            "di": row("吉政发〔2026〕第3号", (NO_DI,)),
            "square_brackets": row("吉政发[2026]3号", (BRACKETS,)),
            "two_digit_year": row("吉政发〔26〕3号", (FULL_YEAR,)),
            "full_width_digits": row("吉政发〔２０２６〕３号", (FULL_WIDTH,)),
            "no_code": row("〔2026〕3号", (NO_CODE,)),
            "no_hao": row("吉政发〔2026〕3", (NO_HAO,)),
            "seven_digit_sequence": row("吉政发〔2026〕1234567号", (NOT_THE_FORM,)),
            "every_fault_at_once": row("[26]第03", (BRACKETS, NO_DI, FULL_YEAR, NO_CODE, NO_HAO)),
        }
    ),
)
def test_doc_number_problem_names_exactly_the_faults_it_finds(
    number: str, expected: tuple[tuple[str, str], ...]
) -> None:
    en_reasons, zh_reasons = reasons(number)

    assert en_reasons == [e for e, _ in expected]
    assert zh_reasons == [z for _, z in expected]


# ---------------------------------------------------------------- modes and settings

SKIP_LEVEL_REPORT = doc(NONGAN, (PROVINCE,), (), DocType.REPORT, signatory="李四")


@pytest.mark.parametrize(
    ("rule_settings", "verdict", "refused", "warned", "add_cc"),
    table(
        {
            "absent_setting_means_enforce_refuses": row({}, FAIL, True, False, (CHANGCHUN,)),
            "enforce_refuses": row({"skip_level": Mode.ENFORCE}, FAIL, True, False, (CHANGCHUN,)),
            "warn_delivers_and_warns": row(
                {"skip_level": Mode.WARN}, FAIL, False, True, (CHANGCHUN,)
            ),
            "off_skips_the_rule": row({"skip_level": Mode.OFF}, Verdict.OFF, False, False, ()),
        }
    ),
)
def test_mode_decides_between_refusal_warning_and_nothing(
    world: World,
    *,
    rule_settings: dict[str, Mode],
    verdict: Verdict,
    refused: bool,
    warned: bool,
    add_cc: tuple[str, ...],
) -> None:
    result, evaluation = judge(world, SKIP_LEVEL_REPORT, SKIP_LEVEL, rule_settings)

    assert result.verdict is verdict
    assert result.mode is rule_settings.get("skip_level", Mode.ENFORCE)
    assert (SKIP_LEVEL in [f.rule for f in evaluation.refusals]) is refused
    assert (SKIP_LEVEL in [f.rule for f in evaluation.warnings]) is warned
    assert evaluation.ok is not refused
    assert evaluation.add_cc == add_cc
    assert (evaluation.refusal_text() != "") is refused


def test_one_rule_off_leaves_the_others_enforced(world: World) -> None:
    report = doc(NONGAN, (PROVINCE,), (), DocType.REPORT)  # skip-level and no signatory

    evaluation = evaluate(report, world.directory, {"skip_level": Mode.OFF})

    assert [f.rule for f in evaluation.refusals] == [UPWARD_SIGNATORY]


def test_evaluation_reports_every_rule_once_in_order_and_every_direction(world: World) -> None:
    report = doc(NONGAN, (PROVINCE,), (CHANGCHUN, YUSHU), DocType.REPORT)

    evaluation = evaluate(report, world.directory, {})

    assert [r.rule for r in evaluation.results] == list(RULES)
    assert evaluation.directions == {
        PROVINCE: Direction.UPWARD,
        CHANGCHUN: Direction.UPWARD,
        YUSHU: Direction.LATERAL,
    }


def test_parse_settings_accepts_each_rule_in_any_case_and_spacing() -> None:
    raw = {"skip_level": "warn", "doc_number_form": " OFF ", "reply_request": "Enforce"}

    assert parse_settings(raw, where="rules") == {
        "skip_level": Mode.WARN,
        "doc_number_form": Mode.OFF,
        "reply_request": Mode.ENFORCE,
    }


@pytest.mark.parametrize(
    ("raw", "words"),
    table(
        {
            "misspelt_rule_id_refused": row(
                {"skip_levels": "warn"}, ("rules.skip_levels", "no such rule", "skip_level")
            ),
            "rule_ids_are_lowercase": row(
                {"Skip_Level": "warn"}, ("rules.Skip_Level", "no such rule")
            ),
            "unknown_value_refused": row(
                {"skip_level": "sometimes"},
                ("rules.skip_level", "'sometimes'", "enforce, warn or off"),
            ),
            "boolean_value_refused": row(
                {"skip_level": True}, ("rules.skip_level", "True", "enforce, warn or off")
            ),
            "empty_value_refused": row({"skip_level": ""}, ("rules.skip_level", "''")),
        }
    ),
)
def test_parse_settings_refuses_naming_key_and_value(
    raw: dict[str, object], words: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=re.escape(words[0])) as info:
        parse_settings(raw, where="rules")

    for word in words:
        assert word in str(info.value)


def test_settings_of_skips_rule_ids_this_code_does_not_know(world: World) -> None:
    directory = world.directory.model_copy(
        update={"rules": {"skip_level": "warn", "future_rule": "off"}}
    )

    assert settings_of(directory) == {"skip_level": Mode.WARN}


def test_every_rule_enforces_by_default_but_skip_level_down_and_request_report_mixed() -> None:
    # 越级下行 to a far subordinate is common practice; a title may name a 请示 harmlessly
    assert {r.id: r.default for r in RULES} == {
        **dict.fromkeys(RULES_BY_ID, Mode.ENFORCE),
        SKIP_LEVEL_DOWN.id: Mode.WARN,
        REQUEST_REPORT_MIXED.id: Mode.WARN,
    }


def test_jilin_directory_sets_every_rule_to_its_default(world: World) -> None:
    defaults = {r.id: r.default for r in RULES}

    assert world.topology.rules == defaults
    assert settings_of(world.directory) == defaults


@pytest.mark.parametrize(
    ("rule", "document", "rule_settings", "refused", "warned"),
    table(
        {
            "downward_skip_absent_setting_warns": row(
                SKIP_LEVEL_DOWN, doc(PROVINCE, (NONGAN,), (), DocType.NOTICE), {}, False, True
            ),
            "downward_skip_enforced_refuses": row(
                SKIP_LEVEL_DOWN,
                doc(PROVINCE, (NONGAN,), (), DocType.NOTICE),
                {"skip_level_down": Mode.ENFORCE},
                True,
                False,
            ),
            "mixed_title_absent_setting_warns": row(
                REQUEST_REPORT_MIXED,
                doc(NONGAN, (CHANGCHUN,), (), DocType.REPORT, signatory="李四", title="请示报告"),
                {},
                False,
                True,
            ),
            "mixed_title_enforced_refuses": row(
                REQUEST_REPORT_MIXED,
                doc(NONGAN, (CHANGCHUN,), (), DocType.REPORT, signatory="李四", title="请示报告"),
                {"request_report_mixed": Mode.ENFORCE},
                True,
                False,
            ),
            "letter_up_absent_setting_refuses": row(
                LETTER_DIRECTION,
                doc(NONGAN, (CHANGCHUN,), (), DocType.LETTER, signatory="李四"),
                {},
                True,
                False,
            ),
            "motion_to_a_peer_absent_setting_refuses": row(
                MOTION_RECIPIENT, doc(CHANGCHUN, (JILIN_CITY,), (), DocType.MOTION), {}, True, False
            ),
        }
    ),
)
def test_a_rule_not_named_in_the_settings_takes_its_default(
    world: World,
    *,
    rule: Rule,
    document: Document,
    rule_settings: dict[str, Mode],
    refused: bool,
    warned: bool,
) -> None:
    result, evaluation = judge(world, document, rule, rule_settings)

    assert result.verdict is Verdict.FAIL
    assert result.mode is rule_settings.get(rule.id, rule.default)
    assert (rule in [f.rule for f in evaluation.refusals]) is refused
    assert (rule in [f.rule for f in evaluation.warnings]) is warned
    assert evaluation.ok is not refused


# ---------------------------------------------------------------- topology and directory


def jilin_text(old: str = "", new: str = "") -> str:
    text = TOPOLOGY_PATH.read_text(encoding="utf-8")
    if old:
        assert old in text, f"{old!r} is not in the topology"
        text = text.replace(old, new, 1)
    return text


def test_rules_table_travels_from_topology_through_the_signed_directory(world: World) -> None:
    topology = parse_topology(
        jilin_text('skip_level = "enforce"', 'skip_level = "warn"'), source="topology.toml"
    )
    assert topology.rules["skip_level"] is Mode.WARN

    directory = replace(world, topology=topology).rebuild(version=2)
    assert directory.rules["skip_level"] == "warn"

    verified = verify_directory(
        world.signed_directory(directory), world.hub_key.public, now=NOW
    ).directory
    assert verified.rules == directory.rules
    rule_settings = settings_of(verified)
    assert rule_settings["skip_level"] is Mode.WARN
    evaluation = evaluate(SKIP_LEVEL_REPORT, verified, rule_settings)
    assert evaluation.ok
    assert [f.rule for f in evaluation.warnings] == [SKIP_LEVEL]


def test_topology_without_rules_table_takes_every_default(world: World) -> None:
    text = re.sub(r"\[rules\]\n(?:[a-z_]+ += .*\n)+", "", jilin_text())
    topology = parse_topology(text, source="topology.toml")

    directory = replace(world, topology=topology).rebuild(version=2)

    assert topology.rules == {}
    assert directory.rules == {}
    assert not evaluate(SKIP_LEVEL_REPORT, directory, settings_of(directory)).ok
    downward = evaluate(doc(PROVINCE, (NONGAN,), (), DocType.NOTICE), directory, {})
    assert downward.ok
    assert [f.rule for f in downward.warnings] == [SKIP_LEVEL_DOWN]


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    table(
        {
            "unknown_value_names_the_key": row(
                'skip_level = "enforce"',
                'skip_level = "sometimes"',
                "rules.skip_level",
                ("'sometimes'", "enforce, warn or off"),
            ),
            "number_value_names_the_key": row(
                'skip_level = "enforce"',
                "skip_level = 1",
                "rules.skip_level",
                ("1 is not a rule setting",),
            ),
            "unknown_rule_id_names_the_key": row(
                'doc_number_form = "enforce"',
                'doc_number_format = "enforce"',
                "rules.doc_number_format",
                ("no such rule", "doc_number_form"),
            ),
        }
    ),
)
def test_bad_rules_table_is_a_config_error_naming_the_key(
    old: str, new: str, path: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_topology(jilin_text(old, new), source="topology.toml")

    lines = [line for line in str(info.value).splitlines() if f"topology.toml: {path}: " in line]
    assert lines, str(info.value)
    for word in words:
        assert word in lines[0]


# ---------------------------------------------------------------- texts

# One document that breaks each rule; the texts below are checked on all of them.
REFUSED_EXAMPLES = {
    SKIP_LEVEL.id: doc(NONGAN, (PROVINCE,), (), DocType.REPORT, signatory="李四"),
    SKIP_LEVEL_DOWN.id: doc(PROVINCE, (NONGAN,), (), DocType.NOTICE),
    REQUEST_RECIPIENT.id: doc(CHANGCHUN, (PROVINCE, STATE_COUNCIL), (), DocType.REQUEST),
    UPWARD_SIGNATORY.id: doc(NONGAN, (CHANGCHUN,), (), DocType.REPORT),
    REPLY_REQUEST.id: doc(PROVINCE, (CHANGCHUN,), (), DocType.REPLY),
    TYPE_DIRECTION.id: doc(CHANGCHUN, (JILIN_CITY,), (), DocType.ORDER),
    LETTER_DIRECTION.id: doc(PROVINCE, (CHANGCHUN,), (), DocType.LETTER),
    MOTION_RECIPIENT.id: doc(JILIN_CITY, (PROVINCE_CONGRESS,), (), DocType.MOTION),
    REQUEST_REPORT_MIXED.id: doc(
        NONGAN, (CHANGCHUN,), (), DocType.REPORT, signatory="李四", title="关于增设机构的请示报告"
    ),
    DEPARTMENT_DIRECTIVE.id: doc(FINANCE, (CHANGCHUN,), (), DocType.NOTICE, directive=True),
    CLASSIFIED_MARKS.id: classified(period=None, numbers={}),
    DOC_NUMBER_FORM.id: doc(PROVINCE, (CHANGCHUN,), doc_number="吉政发[02]第03"),
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_rule_has_a_refused_example() -> None:
    assert set(REFUSED_EXAMPLES) == set(RULES_BY_ID)


@pytest.mark.parametrize("rule_id", list(REFUSED_EXAMPLES))
def test_each_finding_sentence_names_rule_article_and_both_languages(
    world: World, rule_id: str
) -> None:
    rule = RULES_BY_ID[rule_id]
    enforced = dict.fromkeys(RULES_BY_ID, Mode.ENFORCE)  # a warn-default rule refuses too
    result, evaluation = judge(world, REFUSED_EXAMPLES[rule_id], rule, enforced)

    assert result.verdict is Verdict.FAIL
    for finding in result.findings:
        sentence = finding.sentence()
        assert f"[{rule.id}]" in sentence
        assert rule.article in sentence
        assert finding.zh in sentence
        assert finding.en in sentence
        assert CJK.search(finding.zh)
        assert re.search(r"[A-Za-z]{3,} [A-Za-z]{2,}", finding.en)
        assert sentence in evaluation.refusal_text()
        assert finding.as_dict(Mode.ENFORCE)["reason"] == f"rule.{rule.id}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_rule_reason_is_a_receipt_reason_code_and_statements_are_bilingual(rule: Rule) -> None:
    assert re.fullmatch(REASON_PATTERN, rule.reason)
    assert len(rule.reason) <= 64
    assert CJK.search(rule.statement_zh)
    assert re.search(r"[A-Za-z]{3,}", rule.statement_en)
    assert "条" in rule.article or "GB/T 9704" in rule.article


def test_refusal_text_joins_every_refusal_when_short(world: World) -> None:
    report = doc(NONGAN, (PROVINCE,), (), DocType.REPORT)  # skip-level and no signatory

    evaluation = evaluate(report, world.directory, {})

    sentences = [f.sentence() for f in evaluation.refusals]
    assert len(sentences) == 2
    assert evaluation.refusal_text() == " | ".join(sentences)


def test_refusal_text_fits_a_receipt_even_with_300_recipients(world: World) -> None:
    # copied organs the directory does not know still get named in the findings; the hub's
    # gate refuses them separately, which is not what this test is about
    many = tuple(f"jl.x{i:03d}" for i in range(300))
    document = Document(
        NONGAN,
        (STATE_COUNCIL, JILIN_CITY),
        many,
        DocType.ORDER,
        Classification.SECRET,
        copy_numbers=dict.fromkeys(many, "1"),
        doc_number="吉政发[02]第03",
    )
    evaluation = evaluate(document, world.directory, {})
    assert len(evaluation.refusals) >= 4

    text = evaluation.refusal_text()

    assert len(text) <= 2000
    assert text.endswith("…")
    assert text.startswith(evaluation.refusals[0].sentence()[:100])
    assert len(evaluation.refusal_text(limit=300)) <= 300


def test_sealed_header_is_judged_like_the_document_it_came_from(world: World) -> None:
    sealed, _ = world.seal(
        NONGAN,
        (PROVINCE,),
        doc_type=DocType.REQUEST,
        signatory="李四",
        doc_number="农政〔2026〕7号",
    )

    from_header = evaluate(Document.from_header(sealed.header), world.directory, {})
    direct = evaluate(
        doc(
            NONGAN, (PROVINCE,), (), DocType.REQUEST, signatory="李四", doc_number="农政〔2026〕7号"
        ),
        world.directory,
        {},
    )

    assert from_header == direct
    assert [f.rule for f in from_header.refusals] == [SKIP_LEVEL]


# ---------------------------------------------------------------- the memo


def test_the_memo_key_changes_with_every_document_field_but_the_number() -> None:
    """A field the memoized rules read but the key leaves out would hand one document
    another's verdicts: every Document field must be in the key but doc_number."""
    base = Document(PROVINCE, (CHANGCHUN,), (), DocType.NOTICE, Classification.INTERNAL)
    other: dict[str, Any] = {
        "sender": HEALTH,
        "to": (JILIN_CITY,),
        "cc": (NONGAN,),
        "doc_type": DocType.LETTER,
        "classification": Classification.SECRET,
        "secrecy_period": "5年",
        "copy_numbers": {CHANGCHUN: "000001"},
        "signatory": "张三",
        "directive": True,
        "in_reply_to": REQUEST_ID,
        "title": "关于印发的通知",
    }
    names = {f.name for f in fields(Document)}
    assert set(other) == names - {rules_module._PER_DOCUMENT}  # a new field: add it here
    key = rules_module._routing_key(base, None, looked_up=True)
    for name, value in other.items():
        assert (
            rules_module._routing_key(replace(base, **{name: value}), None, looked_up=True) != key
        ), name
    numbered = replace(base, doc_number="吉政发〔2026〕1号")
    assert rules_module._routing_key(numbered, None, looked_up=True) == key
    referenced = Referenced(REQUEST_ID, CHANGCHUN, DocType.REQUEST, (PROVINCE,))
    assert rules_module._routing_key(base, referenced, looked_up=True) != key
    assert rules_module._routing_key(base, None, looked_up=False) != key


_memo_docs = st.builds(
    doc,
    sender=st.sampled_from([PROVINCE, CHANGCHUN, NONGAN, HEALTH, PROVINCE_CONGRESS]),
    to=st.lists(
        st.sampled_from([STATE_COUNCIL, PROVINCE, CHANGCHUN, NONGAN, YUSHU, HUADIAN, FINANCE]),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(tuple),
    cc=st.lists(st.sampled_from([CHANGCHUN, JILIN_CITY, SECURITY]), max_size=2, unique=True).map(
        tuple
    ),
    doc_type=st.sampled_from(list(DocType)),
    signatory=st.sampled_from([None, "李四"]),
    doc_number=st.sampled_from([None, "吉政发〔2026〕3号", "吉政发[2026]第03号"]),
    directive=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(first=_memo_docs, second=_memo_docs)
def test_memoized_verdicts_equal_fresh_ones_whatever_came_before(
    world: World, first: Document, second: Document
) -> None:
    """The directory's own settings use the memo; a copy of them does not."""
    directory = world.directory
    own = settings_of(directory)
    for document in (first, second, first, replace(second, doc_number="吉政发〔2026〕01号")):
        memoized = evaluate(document, directory, own)
        fresh = evaluate(document, directory, dict(own))
        assert memoized == fresh
