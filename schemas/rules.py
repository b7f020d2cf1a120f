"""The document rules (行文规则) and GB/T 9704 header checks, as pure code (ARCHITECTURE 3).

The same code runs at the sending spoke (before sealing, so an integrator learns at once)
and at the hub (authoritative; a spoke's check is never trusted). Nothing here does I/O:
:func:`evaluate` takes the document's routing fields (:class:`Document`), the directory,
the rule settings and, for a 批复, what the store knows of the 请示 it answers
(:class:`Referenced`), and returns every rule's verdict (:class:`Evaluation`).

Direction comes from the organisation tree of the directory: upward (上行) to an ancestor,
downward (下行) to a descendant, lateral (平行) otherwise. Each rule has a stable id (the
config key and, prefixed with ``rule.``, the reason code of a REJECTED receipt), a
one-line statement in Chinese and English, and the article it comes from. Each refusal
names the rule, the article, the values compared and what to do, in both languages.

Article numbers follow 《党政机关公文处理工作条例》 (中办发〔2012〕14号): 第八条 (the
document types), 第九条 (the header elements), 第十三条 (越级行文), 第十四条 (upward),
第十五条 (downward); and GB/T 9704-2012 section 7.2 (份号, 密级和保密期限, 发文字号, 签发人).
docs/rules.md explains each rule with examples.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, cast

from schemas.directory import Directory, OrgEntry, OrgLevel
from schemas.envelope import COPY_NUMBER_PATTERN, Header
from schemas.ids import msg_id_text
from schemas.labels import Classification, Direction, DocType
from schemas.metadata import DropMetadata

_TIAOLI = "《党政机关公文处理工作条例》"
_GB = "GB/T 9704-2012"


class Mode(StrEnum):
    """How a rule is applied: refuse the document, deliver it and log, or skip the rule."""

    ENFORCE = "enforce"
    WARN = "warn"
    OFF = "off"

    @classmethod
    def parse(cls, value: object) -> Mode:
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not a rule setting; use enforce, warn or off")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    statement_zh: str
    statement_en: str
    article: str
    default: Mode = Mode.ENFORCE  # the mode when [rules] does not name the rule

    @property
    def reason(self) -> str:
        """The reason code of a REJECTED receipt (matches receipts.REASON_PATTERN)."""
        return f"rule.{self.id}"


SKIP_LEVEL = Rule(
    "skip_level",
    "一般不得越级行文；越级行文的，应当同时抄送被越过的机关。",
    "No skip-level sending (越级行文) unless every skipped organ is copied (抄送).",
    f"{_TIAOLI}第十三条",
)
SKIP_LEVEL_DOWN = Rule(
    "skip_level_down",
    "向下级机关越级行文的，应当同时抄送被越过的机关。",
    "A document sent down past a level (越级下行) copies (抄送) every organ it passes over.",
    f"{_TIAOLI}第十三条",
    Mode.WARN,  # a superior addressing a far subordinate directly is common practice
)
REQUEST_RECIPIENT = Rule(
    "request_recipient",
    "请示只主送一个上级机关，不得抄送下级机关。",
    "A request (请示) has exactly one primary recipient, a superior, and is never copied to "
    "subordinates.",
    f"{_TIAOLI}第十四条（一）（四）",
)
UPWARD_SIGNATORY = Rule(
    "upward_signatory",
    "上行文应当标注签发人。",
    "An upward document names its signatory (签发人).",
    f"{_TIAOLI}第九条（六）；{_GB} 7.2.5",
)
REPLY_REQUEST = Rule(
    "reply_request",
    "批复用于答复下级机关的请示事项：下行，并注明所答复的请示。",
    "A reply (批复) goes downward and references (in_reply_to) the request (请示) that its "
    "recipient sent to the sender.",
    f"{_TIAOLI}第八条（十二）",
)
TYPE_DIRECTION = Rule(
    "type_direction",
    "命令、决定、决议为下行文；报告为上行文（请示、批复、函、议案另有规则）。",
    "Orders (命令), decisions (决定) and resolutions (决议) go downward; reports (报告) go "
    "upward (请示, 批复, 函 and 议案 have rules of their own).",
    f"{_TIAOLI}第八条",
)
LETTER_DIRECTION = Rule(
    "letter_direction",
    "函用于不相隶属机关之间：不主送本机关的上级机关或下级机关。",
    "A letter (函) goes between organs with no line of subordination (不相隶属), never to a "
    "superior or a subordinate of the sender.",
    f"{_TIAOLI}第八条（十四）",
)
MOTION_RECIPIENT = Rule(
    "motion_recipient",
    "议案由人民政府按照法律程序提请同级人民代表大会或其常务委员会审议。",
    "A motion (议案) goes from a people's government to the people's congress, or its "
    "standing committee, of the same level.",
    f"{_TIAOLI}第八条（十三）",
)
REQUEST_REPORT_MIXED = Rule(
    "request_report_mixed",
    "请示与报告不得混用：报告中不得夹带请示事项，不用“请示报告”。",
    "Requests (请示) and reports (报告) are not mixed: a report carries no request for "
    "approval, and no title says 请示报告.",
    f"{_TIAOLI}第十四条（四）",
    Mode.WARN,  # judged from the title only, which may name a 请示 without asking anything
)
DEPARTMENT_DIRECTIVE = Rule(
    "department_directive",
    "部门不得向下级人民政府发布指令性公文，经授权的除外。",
    "A department does not send directive documents (命令, 决定, or a 通知 marked directive) "
    "to a lower-level government unless the topology authorises it (directive_to).",
    f"{_TIAOLI}第十五条（二）",
)
CLASSIFIED_MARKS = Rule(
    "classified_marks",
    "涉密公文应当标注密级和保密期限，并标注份号（6位阿拉伯数字，每个收文机关一个）。",
    "A classified document carries its classification period (保密期限) and a copy number "
    "(份号: six digits, one per recipient).",
    f"{_TIAOLI}第九条（一）（二）；{_GB} 7.2.1、7.2.2",
)
DOC_NUMBER_FORM = Rule(
    "doc_number_form",
    "发文字号由发文机关代字、年份和发文顺序号组成，如“吉政发〔2002〕3号”。",
    "A document number (发文字号) has the form 机关代字〔年份〕序号号, e.g. 吉政发〔2002〕3号.",
    f"{_TIAOLI}第九条（五）；{_GB} 7.2.4",
)

RULES: Final[tuple[Rule, ...]] = (
    SKIP_LEVEL,
    SKIP_LEVEL_DOWN,
    REQUEST_RECIPIENT,
    UPWARD_SIGNATORY,
    REPLY_REQUEST,
    TYPE_DIRECTION,
    LETTER_DIRECTION,
    MOTION_RECIPIENT,
    REQUEST_REPORT_MIXED,
    DEPARTMENT_DIRECTIVE,
    CLASSIFIED_MARKS,
    DOC_NUMBER_FORM,
)
RULES_BY_ID: Final[dict[str, Rule]] = {r.id: r for r in RULES}

Settings = Mapping[str, Mode]


def parse_settings(raw: Mapping[str, object], *, where: str) -> dict[str, Mode]:
    """Settings from a config table; unknown rule ids and bad values name themselves."""
    out: dict[str, Mode] = {}
    for key, value in raw.items():
        if key not in RULES_BY_ID:
            raise ValueError(f"{where}.{key}: no such rule; the rules are {', '.join(RULES_BY_ID)}")
        try:
            out[key] = Mode.parse(value)
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from exc
    return out


def settings_of(directory: Directory) -> Mapping[str, Mode]:
    """The settings the signed directory carries (a rule this code does not know is skipped).

    Parsed once per directory (the hub asks for every message); do not modify the result.
    """
    cache = directory._rule_modes  # noqa: SLF001 - the directory keeps it for us
    settings = cache.get("settings")
    if not isinstance(settings, dict):
        settings = {k: Mode(v) for k, v in directory.rules.items() if k in RULES_BY_ID}
        cache["settings"] = settings
    return cast("dict[str, Mode]", settings)


def mode_of(settings: Settings, rule: Rule) -> Mode:
    """The rule's setting, or its default when the settings do not name it."""
    return settings.get(rule.id, rule.default)


# --- the input ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """The fields the rules read: a header's routing fields, or a drop about to be sealed."""

    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    doc_type: DocType
    classification: Classification
    secrecy_period: str | None = None
    copy_numbers: Mapping[str, str] = field(default_factory=dict)
    signatory: str | None = None
    doc_number: str | None = None
    directive: bool = False
    in_reply_to: bytes | None = None
    # 标题: known to the sending spoke only; the header never carries it (it travels
    # encrypted), so at the hub it is None and request_report_mixed does not apply.
    title: str | None = None

    @classmethod
    def from_header(cls, header: Header) -> Document:
        """The routing fields the hub verified; the title is not among them."""
        return cls(
            sender=header.sender,
            to=header.to,
            cc=header.cc,
            doc_type=header.doc_type,
            classification=header.classification,
            secrecy_period=header.secrecy_period,
            copy_numbers=header.copy_numbers,
            signatory=header.signatory,
            doc_number=header.doc_number,
            directive=header.directive,
            in_reply_to=header.in_reply_to,
        )

    @classmethod
    def from_metadata(
        cls, metadata: DropMetadata, sender: str, to: Sequence[str], cc: Sequence[str]
    ) -> Document:
        """What a spoke of ``sender`` seals from a drop's metadata, its groups expanded into
        ``to`` and ``cc``; a state secret gets its 份号 here (GB/T 9704 7.2.1)."""
        secret = metadata.classification.is_state_secret
        period = metadata.secrecy_period
        return cls(
            sender=sender,
            to=tuple(to),
            cc=tuple(cc),
            doc_type=metadata.doc_type,
            classification=metadata.classification,
            secrecy_period=None if period is None else period.wire,
            copy_numbers=assign_copy_numbers((*to, *cc)) if secret else {},
            signatory=metadata.signatory,
            doc_number=metadata.doc_number,
            directive=metadata.directive,
            in_reply_to=metadata.in_reply_to_bytes,
            title=metadata.title,
        )

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc


@dataclass(frozen=True, slots=True)
class Referenced:
    """What the store knows of the message a 批复's in_reply_to names."""

    msg_id: bytes
    sender: str
    doc_type: DocType
    to: tuple[str, ...]


def assign_copy_numbers(recipients: Iterable[str]) -> dict[str, str]:
    """份号 for a classified document: 000001, 000002, ... in recipient order."""
    return {r: f"{i:06d}" for i, r in enumerate(recipients, 1)}


# --- the tree ---------------------------------------------------------------------------

_GOVERNMENT_RANK: Final = {
    OrgLevel.NATIONAL: 0,
    OrgLevel.PROVINCE: 1,
    OrgLevel.PREFECTURE: 2,
    OrgLevel.COUNTY: 3,
}


def direction(directory: Directory, sender: str, recipient: str) -> Direction:
    """上行 to an ancestor, 下行 to a descendant, 平行 otherwise.

    A congress (人大及其常委会) has no parent and no children, so it is lateral to every
    organisation: it is in no government's reporting line.
    """
    if recipient in directory.ancestors(sender):
        return Direction.UPWARD
    if sender in directory.ancestors(recipient):
        return Direction.DOWNWARD
    return Direction.LATERAL


def skipped_organs(directory: Directory, sender: str, recipient: str) -> tuple[str, ...]:
    """The organs between ``sender`` and an ancestor ``recipient`` (nearest first)."""
    chain = directory.ancestors(sender)
    if recipient not in chain:
        return ()
    return chain[: chain.index(recipient)]


def skipped_organs_down(directory: Directory, sender: str, recipient: str) -> tuple[str, ...]:
    """The organs between ``sender`` and a descendant ``recipient`` (nearest the sender
    first): jl.gov to jl.cc.nongan passes over jl.cc."""
    chain = directory.ancestors(recipient)
    if sender not in chain:
        return ()
    return tuple(reversed(chain[: chain.index(sender)]))


def own_government(directory: Directory, org_id: str) -> str | None:
    """The people's government an organisation speaks for or belongs to: itself if it is
    one, else its nearest ancestor that is one (a department's); None for a congress."""
    entry = directory.org(org_id)
    if entry is None or entry.level is OrgLevel.CONGRESS:
        return None
    if entry.level.is_government:
        return org_id
    for ancestor in directory.ancestors(org_id):
        found = directory.org(ancestor)
        if found is not None and found.level.is_government:
            return ancestor
    return None


def congresses_of(directory: Directory, government: str) -> tuple[str, ...]:
    """The people's congresses and standing committees of ``government``'s level."""
    return tuple(
        o.id for o in directory.orgs if o.level is OrgLevel.CONGRESS and o.congress_of == government
    )


def _is_congress_of(directory: Directory, congress: str, government: str) -> bool:
    entry = directory.org(congress)
    return (
        entry is not None and entry.level is OrgLevel.CONGRESS and entry.congress_of == government
    )


def _government_rank(directory: Directory, org: OrgEntry) -> int | None:
    """A government's rank; a department ranks with the government it belongs to."""
    if org.level in _GOVERNMENT_RANK:
        return _GOVERNMENT_RANK[org.level]
    for ancestor in directory.ancestors(org.id):
        entry = directory.org(ancestor)
        if entry is not None and entry.level in _GOVERNMENT_RANK:
            return _GOVERNMENT_RANK[entry.level]
    return None


def _name(directory: Directory, org_id: str) -> str:
    entry = directory.org(org_id)
    return org_id if entry is None else f"{org_id}（{entry.name_zh}）"


def _names(directory: Directory, org_ids: Iterable[str]) -> str:
    return "、".join(_name(directory, o) for o in org_ids) or "—"


def _are(items: Sequence[object]) -> str:
    return "is" if len(items) == 1 else "are"


# What to send instead, by the direction a document actually goes (条例 第八条).
_ADVICE: Final = {
    Direction.UPWARD: (
        "向上级机关请用“报告”或“请示”",
        "to a superior, use a report 报告 or a request 请示",
    ),
    Direction.DOWNWARD: (
        "向下级机关请用“通知”“通报”或“意见”（答复请示用“批复”）",
        (
            "to a subordinate, use a notice 通知, a circular 通报 or an opinion 意见 (a reply "
            "批复 answers a 请示)"
        ),
    ),
    Direction.LATERAL: (
        "向不相隶属的机关请用“函”",
        "to an organ outside your line (不相隶属), use a letter 函",
    ),
}


def _advice(directions: Iterable[Direction]) -> tuple[str, str]:
    """The document types that fit each direction named, in Chinese and English."""
    present = set(directions)
    chosen = [advice for d, advice in _ADVICE.items() if d in present]
    return "；".join(zh for zh, _ in chosen), "; ".join(en for _, en in chosen)


# --- the output -------------------------------------------------------------------------


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    NOT_APPLICABLE = "not applicable"
    UNCHECKED = "unchecked here"  # needs the hub's store (a 批复's 请示, at a spoke)
    OFF = "off"  # the settings switch the rule off


@dataclass(frozen=True, slots=True)
class Finding:
    """One way a document breaks one rule, with the values and what to do."""

    rule: Rule
    zh: str  # the values compared and what to do, in Chinese
    en: str  # the same in English
    add_cc: tuple[str, ...] = ()  # copies that would satisfy the rule (skip-level)

    def sentence(self) -> str:
        """Rule id, article, values and what to do, Chinese then English."""
        return f"[{self.rule.id}] {self.rule.article}：{self.zh} / {self.en}"

    def as_dict(self, mode: Mode) -> dict[str, object]:
        return {
            "rule": self.rule.id,
            "reason": self.rule.reason,
            "article": self.rule.article,
            "statement_zh": self.rule.statement_zh,
            "statement_en": self.rule.statement_en,
            "mode": mode.value,
            "zh": self.zh,
            "en": self.en,
            "add_cc": list(self.add_cc),
        }


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: Rule
    mode: Mode
    verdict: Verdict
    findings: tuple[Finding, ...] = ()
    note: str = ""  # why not applicable / unchecked


@dataclass(frozen=True, slots=True)
class Evaluation:
    directions: dict[str, Direction]  # per recipient
    results: tuple[RuleResult, ...]

    def _findings(self, mode: Mode) -> tuple[tuple[Finding, Mode], ...]:
        return tuple(
            (f, r.mode)
            for r in self.results
            if r.mode is mode and r.verdict is Verdict.FAIL
            for f in r.findings
        )

    @property
    def refusals(self) -> tuple[Finding, ...]:
        return tuple(f for f, _ in self._findings(Mode.ENFORCE))

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f, _ in self._findings(Mode.WARN))

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def add_cc(self) -> tuple[str, ...]:
        """Organs a sender's --auto-cc would copy so the skip-level rules (up and down)
        hold: every finding's add_cc, of rules that are not off."""
        out: dict[str, None] = {}
        for result in self.results:
            if result.verdict is Verdict.FAIL and result.mode is not Mode.OFF:
                for finding in result.findings:
                    out.update(dict.fromkeys(finding.add_cc))
        return tuple(out)

    def refusal_text(self, limit: int = 2000) -> str:
        """Every refusal as one text that fits a REJECTED receipt's detail."""
        text = " | ".join(f.sentence() for f in self.refusals)
        return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the rules --------------------------------------------------------------------------


def _skip_level(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    named = set(doc.recipients)
    findings = []
    for recipient in doc.recipients:
        skipped = skipped_organs(directory, doc.sender, recipient)
        missing = tuple(o for o in skipped if o not in named)
        if missing:
            findings.append(
                Finding(
                    SKIP_LEVEL,
                    f"发往 {_name(directory, recipient)} 越过了 {_names(directory, skipped)}，"
                    f"其中 {_names(directory, missing)} 未被抄送；请抄送被越过的机关"
                    "（spoke send --auto-cc 可自动添加），或改为主送直接上级",
                    f"sending to {recipient} skips {', '.join(skipped)}, and "
                    f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not copied; "
                    "copy every skipped organ (cc; spoke send --auto-cc adds them) or address "
                    "the direct superior instead",
                    add_cc=missing,
                )
            )
    if not any(skipped_organs(directory, doc.sender, r) for r in doc.recipients):
        return RuleResult(
            SKIP_LEVEL, Mode.ENFORCE, Verdict.NOT_APPLICABLE, note="no recipient skips a level"
        )
    return findings


def _skip_level_down(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if doc.doc_type is DocType.REQUEST:
        # a 请示 goes to no subordinate at all, and copying more would be the wrong advice
        return _not_applicable(SKIP_LEVEL_DOWN, "请示: see request_recipient")
    named = set(doc.recipients)
    far: list[str] = []  # recipients below a level the document passes over
    skipped: dict[str, None] = {}
    missing: dict[str, None] = {}
    for recipient in doc.recipients:
        between = skipped_organs_down(directory, doc.sender, recipient)
        gaps = [o for o in between if o not in named]
        if gaps:
            far.append(recipient)
            skipped.update(dict.fromkeys(between))
            missing.update(dict.fromkeys(gaps))
    if not far:
        if any(skipped_organs_down(directory, doc.sender, r) for r in doc.recipients):
            return []
        return _not_applicable(SKIP_LEVEL_DOWN, "no recipient is below a level passed over")
    # One finding for the document: a province-wide notice may name dozens of counties.
    return [
        Finding(
            SKIP_LEVEL_DOWN,
            f"发往 {_names(directory, far)} 越过了 {_names(directory, skipped)}，其中 "
            f"{_names(directory, missing)} 未被抄送；请抄送被越过的机关"
            "（spoke send --auto-cc 可自动添加），或改为主送直接下级机关",
            f"sending down to {', '.join(far)} passes over {', '.join(skipped)}, and "
            f"{', '.join(missing)} {_are(list(missing))} not copied; copy every organ passed "
            "over (cc; spoke send --auto-cc adds them) or address the direct subordinate "
            "instead",
            add_cc=tuple(missing),
        )
    ]


def _request_recipient(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if doc.doc_type is not DocType.REQUEST:
        return _not_applicable(REQUEST_RECIPIENT, "not a 请示")
    findings = []
    if len(doc.to) != 1:
        findings.append(
            Finding(
                REQUEST_RECIPIENT,
                f"该请示主送 {len(doc.to)} 个机关（{_names(directory, doc.to)}）；请示只能主送一个"
                "上级机关，其他机关请用抄送",
                f"this 请示 has {len(doc.to)} primary recipients ({', '.join(doc.to)}); a "
                "request goes to exactly one superior, and others may only be copied (cc)",
            )
        )
    not_superior = {
        r: d for r in doc.to if (d := direction(directory, doc.sender, r)) is not Direction.UPWARD
    }
    if not_superior:
        advice_zh, advice_en = _advice(not_superior.values())
        findings.append(
            Finding(
                REQUEST_RECIPIENT,
                f"主送机关 {_names(directory, not_superior)} 不是本机关的上级机关；"
                f"请示只能主送上级机关；{advice_zh}",
                f"{', '.join(not_superior)} {_are(list(not_superior))} not a superior of "
                f"{doc.sender}; a request goes to a superior; {advice_en}",
            )
        )
    subordinates = [r for r in doc.cc if direction(directory, doc.sender, r) is Direction.DOWNWARD]
    if subordinates:
        findings.append(
            Finding(
                REQUEST_RECIPIENT,
                f"请示抄送了下级机关 {_names(directory, subordinates)}；请示不得抄送下级机关，"
                "请删去这些抄送",
                f"the request copies subordinate(s) {', '.join(subordinates)}; a request is never "
                "copied to subordinates: remove them from cc",
            )
        )
    return findings


def _upward_signatory(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    upward = [r for r in doc.to if direction(directory, doc.sender, r) is Direction.UPWARD]
    if not upward:
        return _not_applicable(UPWARD_SIGNATORY, "no primary recipient is a superior")
    if doc.signatory is not None and doc.signatory.strip():
        return []
    return [
        Finding(
            UPWARD_SIGNATORY,
            f"主送上级机关 {_names(directory, upward)}，但未标注签发人；请在元数据中填写“签发人”",
            f"the document goes up to {', '.join(upward)} but names no signatory; fill in "
            "signatory (签发人) in the metadata",
        )
    ]


def _reply_request(
    doc: Document, directory: Directory, referenced: Referenced | None, *, looked_up: bool
) -> RuleResult | list[Finding]:
    if doc.doc_type is not DocType.REPLY:
        return _not_applicable(REPLY_REQUEST, "not a 批复")
    findings = []
    not_down = {
        r: d for r in doc.to if (d := direction(directory, doc.sender, r)) is not Direction.DOWNWARD
    }
    if not_down:
        advice_zh, advice_en = _advice(not_down.values())
        findings.append(
            Finding(
                REPLY_REQUEST,
                f"批复主送 {_names(directory, not_down)}，不是本机关的下级机关；批复只答复下级机关"
                f"的请示；{advice_zh}",
                f"a reply goes downward, and {', '.join(not_down)} {_are(list(not_down))} not "
                f"below {doc.sender}; {advice_en}",
            )
        )
    if doc.in_reply_to is None:
        findings.append(
            Finding(
                REPLY_REQUEST,
                "批复未注明所答复的请示；请在元数据“回复文件”（in_reply_to）中填写该请示的 msg_id",
                "the reply names no request; set in_reply_to (回复文件) to the msg_id of the "
                "请示 it answers",
            )
        )
        return findings
    ref_text = msg_id_text(doc.in_reply_to)
    if not looked_up:
        if findings:
            return findings
        return RuleResult(
            REPLY_REQUEST,
            Mode.ENFORCE,
            Verdict.UNCHECKED,
            note=f"whether {ref_text} is a 请示 to {doc.sender} is checked by the hub",
        )
    if referenced is not None and doc.sender not in (referenced.sender, *referenced.to):
        # Not the replier's own correspondence: answer exactly as for a msg_id the hub does
        # not hold, or in_reply_to would let anyone probe what the hub holds (type, sender,
        # recipients), even of a message above the reply's own label.
        referenced = None
    if referenced is None:
        findings.append(
            Finding(
                REPLY_REQUEST,
                f"交换中心没有发给 {doc.sender} 的、msg_id 为 {ref_text} 的公文；"
                "请核对“回复文件”是否为所答复请示的 msg_id",
                f"the hub holds no message {ref_text} addressed to {doc.sender}; check that "
                "in_reply_to is the msg_id of the 请示 being answered",
            )
        )
        return findings
    if referenced.doc_type is not DocType.REQUEST:
        findings.append(
            Finding(
                REPLY_REQUEST,
                f"{ref_text} 是{referenced.doc_type.zh}，不是请示；批复只答复请示",
                f"{ref_text} is of type {referenced.doc_type}, not a request (请示); a reply "
                "answers a request",
            )
        )
    if referenced.sender not in doc.to or doc.sender not in referenced.to:
        findings.append(
            Finding(
                REPLY_REQUEST,
                f"{ref_text} 由 {_name(directory, referenced.sender)} 主送 "
                f"{_names(directory, referenced.to)}；批复应由其主送机关发给请示机关",
                f"{ref_text} was sent by {referenced.sender} to {', '.join(referenced.to)}; the "
                f"reply must come from its primary recipient and go to {referenced.sender} "
                f"(it comes from {doc.sender} and goes to {', '.join(doc.to)})",
            )
        )
    return findings


_DOWN_ONLY: Final = {DocType.ORDER, DocType.DECISION, DocType.RESOLUTION}
_UP_ONLY: Final = {DocType.REPORT}


def _type_direction(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if doc.doc_type in _DOWN_ONLY:
        wanted = Direction.DOWNWARD
    elif doc.doc_type in _UP_ONLY:
        wanted = Direction.UPWARD
    else:
        why = {
            DocType.REQUEST: "请示: see request_recipient",
            DocType.REPLY: "批复: see reply_request",
            DocType.LETTER: "函: see letter_direction",
            DocType.MOTION: "议案: see motion_recipient",
        }.get(doc.doc_type, f"a {doc.doc_type.zh} may go any way")
        return _not_applicable(TYPE_DIRECTION, why)
    sender = directory.org(doc.sender)
    authorised = () if sender is None else sender.directive_to
    wrong = {
        r: d
        for r in doc.to
        if (d := direction(directory, doc.sender, r)) is not wanted
        # directive_to: the topology lets this organ direct that one (条例 第十五条（二）)
        and not (wanted is Direction.DOWNWARD and r in authorised)
        and not _congress_exchange(directory, doc, r)
    }
    if not wrong:
        return []
    listed_zh = "、".join(f"{_name(directory, r)}（{d.zh}）" for r, d in wrong.items())
    listed_en = ", ".join(f"{r} ({d.value})" for r, d in wrong.items())
    advice_zh, advice_en = _advice(wrong.values())
    return [
        Finding(
            TYPE_DIRECTION,
            f"{doc.doc_type.zh}应为{wanted.zh}文，但主送 {listed_zh}；{advice_zh}",
            f"{doc.doc_type} documents go {wanted.value}, but this one is addressed to "
            f"{listed_en}; {advice_en}",
        )
    ]


def _congress_exchange(directory: Directory, doc: Document, recipient: str) -> bool:
    """A government reports (报告) to the congress of its level, which it answers to; the
    congress sends that government its 决定 and 决议. Lateral in the tree, yet in the
    direction of the document type (宪法 第一百一十条: 地方各级人民政府对本级人大负责并报告工作)."""
    if doc.doc_type is DocType.REPORT:
        return _is_congress_of(directory, recipient, doc.sender)
    if doc.doc_type in (DocType.DECISION, DocType.RESOLUTION):
        return _is_congress_of(directory, doc.sender, recipient)
    return False


def _letter_direction(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if doc.doc_type is not DocType.LETTER:
        return _not_applicable(LETTER_DIRECTION, "not a 函")
    in_line = {
        r: d
        for r in doc.to
        if (d := direction(directory, doc.sender, r)) in (Direction.UPWARD, Direction.DOWNWARD)
    }
    if not in_line:
        return []
    listed_zh = "、".join(f"{_name(directory, r)}（{d.zh}）" for r, d in in_line.items())
    listed_en = ", ".join(f"{r} ({d.value})" for r, d in in_line.items())
    advice_zh, advice_en = _advice(in_line.values())
    return [
        Finding(
            LETTER_DIRECTION,
            f"函主送 {listed_zh}，与本机关有隶属关系；函用于不相隶属机关之间，{advice_zh}",
            f"a letter 函 goes between organs outside each other's line, but this one is "
            f"addressed to {listed_en}, in the line of {doc.sender}; {advice_en}",
        )
    ]


def _motion_recipient(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if doc.doc_type is not DocType.MOTION:
        return _not_applicable(MOTION_RECIPIENT, "not a 议案")
    findings = []
    sender = directory.org(doc.sender)
    government = own_government(directory, doc.sender)
    congresses = congresses_of(directory, government) if government is not None else ()
    if sender is None or not sender.level.is_government:
        kind_zh = "不在目录中" if sender is None else f"是{sender.level.zh}"
        kind_en = "is not in the directory" if sender is None else f"is a {sender.level.value}"
        if government is not None:
            to_zh = f"向 {_names(directory, congresses)} " if congresses else ""
            to_en = f" to {', '.join(congresses)}" if congresses else ""
            instead_zh = f"请由本级人民政府 {_name(directory, government)} {to_zh}提请"
            instead_en = f"have its government {government} submit it{to_en}"
        else:
            instead_zh = "议案是人民政府向同级人大或其常委会提请审议事项的文种，请改用其他文种"
            instead_en = (
                "a motion is how a government puts a matter to the congress of its level; "
                "use another document type"
            )
        findings.append(
            Finding(
                MOTION_RECIPIENT,
                f"议案只能由人民政府提请，{_name(directory, doc.sender)} {kind_zh}；{instead_zh}",
                f"a motion is submitted by a people's government, and {doc.sender} {kind_en}; "
                f"{instead_en}",
            )
        )
    if government is None:
        return findings
    wrong = [r for r in doc.to if r not in congresses]
    if not wrong and doc.to:
        return findings
    if not congresses:
        findings.append(
            Finding(
                MOTION_RECIPIENT,
                f"目录中没有与 {_name(directory, government)} 同级的人民代表大会或其常务委员会，"
                "议案无处提请；议案只能提请同级人大或其常委会审议。请改用其他文种，或请交换中心"
                '运营方在拓扑中加入该人大常委会（level = "congress"，congress_of）',
                f"the directory lists no people's congress or standing committee of the level "
                f"of {government}, so there is nowhere to submit a motion to (a motion goes only "
                "to the congress of the same level); use another document type, or ask the hub "
                'operator to add that congress to the topology (level = "congress", congress_of)',
            )
        )
        return findings
    addressed_zh = f"议案主送 {_names(directory, wrong)}，" if wrong else "议案没有主送机关，"
    addressed_en = (
        f"and {', '.join(wrong)} {_are(wrong)} not"
        if wrong
        else "and it names no primary recipient"
    )
    findings.append(
        Finding(
            MOTION_RECIPIENT,
            f"{addressed_zh}议案只能提请与 {_name(directory, government)} 同级的人民代表大会"
            f"或其常务委员会审议；请主送 {_names(directory, congresses)}",
            f"a motion goes to the people's congress (or its standing committee) of the level "
            f"of {government}, {addressed_en}; address it to {', '.join(congresses)}",
        )
    )
    return findings


# 请示 words a 报告 must not carry (第十四条（四）: 不得在报告等非请示性公文中夹带请示事项).
_REQUEST_WORDS: Final = (
    "请示",
    "请批示",
    "请予批示",
    "请审批",
    "请予审批",
    "请批准",
    "请予批准",
)


# The Party's 重大事项请示报告制度 (and its 条例) is an institution, not a document type: a
# notice or a report about it names 请示报告 without mixing anything.
_REPORTING_SYSTEM: Final = ("请示报告制度", "请示报告条例")


def _request_report_mixed(doc: Document) -> RuleResult | list[Finding]:
    if doc.title is None:
        return _not_applicable(
            REQUEST_REPORT_MIXED, "the title travels encrypted: only the sending spoke checks it"
        )
    # Whitespace (the ideographic space too) does not hide a word. The finding names the
    # words, never the title: warnings are kept in the spoke's state and status.json.
    title = re.sub(r"\s+", "", unicodedata.normalize("NFKC", doc.title))
    for name in _REPORTING_SYSTEM:
        title = title.replace(name, "")
    if "请示报告" in title:
        return [
            Finding(
                REQUEST_REPORT_MIXED,
                f"{doc.doc_type.zh}的标题含“请示报告”；请示和报告是两个文种：请示用于请求指示、"
                "批准，报告用于汇报工作、反映情况，请选定其一",
                f"the title of this {doc.doc_type} says 请示报告; a request (请示, asking for "
                "instructions or approval) and a report (报告, on work done) are two document "
                "types: choose one",
            )
        ]
    if doc.doc_type is DocType.REPORT:
        words = [w for w in _REQUEST_WORDS if w in title]
        if words:
            listed = "、".join(f"“{w}”" for w in words)
            return [
                Finding(
                    REQUEST_REPORT_MIXED,
                    f"报告的标题含{listed}；报告中不得夹带请示事项，需要批准的事项请另行请示"
                    "（一文一事）",
                    f"the title of this report contains {', '.join(words)}: a report carries no "
                    "request for approval; send what needs approval as a separate request "
                    "(请示), one matter each",
                )
            ]
    if doc.doc_type is DocType.REQUEST and title.endswith("报告"):
        return [
            Finding(
                REQUEST_REPORT_MIXED,
                "请示的标题以“报告”结尾；请示的标题以“请示”结尾（如“关于……的请示”），"
                "汇报工作请另用报告",
                "the title of this request ends in 报告; a request's title ends in 请示 "
                "(关于……的请示), and work done is reported in a separate report (报告)",
            )
        ]
    return []


_DIRECTIVE_TYPES: Final = {DocType.ORDER, DocType.DECISION}


def _department_directive(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    sender = directory.org(doc.sender)
    if sender is None or sender.level is not OrgLevel.DEPARTMENT:
        return _not_applicable(DEPARTMENT_DIRECTIVE, "the sender is not a department")
    if doc.doc_type not in _DIRECTIVE_TYPES and not doc.directive:
        return _not_applicable(DEPARTMENT_DIRECTIVE, "not a directive document")
    own = _government_rank(directory, sender)
    lower = []
    for recipient in doc.recipients:
        entry = directory.org(recipient)
        if entry is None or entry.level not in _GOVERNMENT_RANK or recipient in sender.directive_to:
            continue
        if own is not None and _GOVERNMENT_RANK[entry.level] > own:
            lower.append(recipient)
    if not lower:
        return []
    kind_zh = doc.doc_type.zh if doc.doc_type in _DIRECTIVE_TYPES else f"指令性{doc.doc_type.zh}"
    kind_en = str(doc.doc_type) if doc.doc_type in _DIRECTIVE_TYPES else f"directive {doc.doc_type}"
    return [
        Finding(
            DEPARTMENT_DIRECTIVE,
            f"部门 {_name(directory, doc.sender)} 向下级人民政府 {_names(directory, lower)} "
            f"发送{kind_zh}，拓扑未授权（directive_to）；请经本级政府同意后由政府（办公厅）行文，"
            "或改为非指令性公文",
            f"department {doc.sender} sends a {kind_en} to lower-level government(s) "
            f"{', '.join(lower)}, which the topology does not authorise (directive_to); have "
            "the government (its general office) issue it, or send a non-directive document",
        )
    ]


_COPY_NUMBER = re.compile(COPY_NUMBER_PATTERN)


def _classified_marks(doc: Document, directory: Directory) -> RuleResult | list[Finding]:
    if not doc.classification.is_state_secret:
        return _not_applicable(CLASSIFIED_MARKS, f"{doc.classification} is not a state secret")
    findings = []
    if not doc.secrecy_period:
        findings.append(
            Finding(
                CLASSIFIED_MARKS,
                f"密级为{doc.classification.zh}，但未标注保密期限；请填写“保密期限”，"
                f"如 {doc.classification.zh}★1年",
                f"the document is {doc.classification.name} but carries no classification "
                f"period; set secrecy_period (保密期限), e.g. {doc.classification.name}★1y",
            )
        )
    missing = [r for r in doc.recipients if r not in doc.copy_numbers]
    extra = [r for r in doc.copy_numbers if r not in doc.recipients]
    malformed = {r: n for r, n in doc.copy_numbers.items() if not _COPY_NUMBER.fullmatch(n)}
    seen: dict[str, str] = {}
    repeated = []
    for recipient, number in doc.copy_numbers.items():
        if number in seen:
            repeated.append(f"{number} ({seen[number]}, {recipient})")
        seen[number] = recipient
    if missing or extra or malformed or repeated:
        problems_zh = []
        problems_en = []
        if missing:
            problems_zh.append(f"{_names(directory, missing)} 没有份号")
            problems_en.append(f"no copy number for {', '.join(missing)}")
        if extra:
            problems_zh.append(f"份号给了非收文机关 {'、'.join(extra)}")
            problems_en.append(f"copy numbers for non-recipients {', '.join(extra)}")
        if malformed:
            listed = ", ".join(f"{r}={n!r}" for r, n in malformed.items())
            problems_zh.append(f"份号不是6位阿拉伯数字：{listed}")
            problems_en.append(f"copy numbers that are not six digits: {listed}")
        if repeated:
            problems_zh.append(f"份号重复：{'；'.join(repeated)}")
            problems_en.append(f"repeated copy numbers: {'; '.join(repeated)}")
        findings.append(
            Finding(
                CLASSIFIED_MARKS,
                "；".join(problems_zh) + "。涉密公文每个收文机关一个份号（6位数字），"
                "由发文端交换程序自动编排",
                "; ".join(problems_en) + ". A classified document carries one six-digit copy "
                "number per recipient, which the sending spoke assigns",
            )
        )
    return findings


# 机关代字〔年份〕序号号: the 机关代字 is Chinese characters; the year is four digits in
# 六角括号; the number has no leading zero and no 第.
_DOC_NUMBER = re.compile(
    r"(?P<code>[\u4e00-\u9fff]{1,20})〔(?P<year>[0-9]{4})〕(?P<seq>[1-9][0-9]{0,5})号"
)
_BRACKETS = str.maketrans({"[": "〔", "]": "〕", "【": "〔", "】": "〕", "（": "〔", "）": "〕"})


def doc_number_problem(text: str) -> tuple[str, str] | None:
    """None if ``text`` has the standard form; else (Chinese, English) naming each fault."""
    if _DOC_NUMBER.fullmatch(text):
        return None
    zh: list[str] = []
    en: list[str] = []
    normal = unicodedata.normalize("NFKC", text)
    # full-width brackets are named by the bracket check below, not as variants
    if any(unicodedata.normalize("NFKC", c) not in (c, "[", "]", "(", ")") for c in text):
        zh.append("含全角数字或变体字符")
        en.append("full-width digits or variant characters")
    if text.translate(_BRACKETS) != text or not ("〔" in text and "〕" in text):
        zh.append("年份应用六角括号“〔〕”括入")
        en.append("the year goes in hexagonal brackets 〔〕")
    if "第" in text:
        zh.append("发文顺序号不加“第”字")
        en.append("the sequence number takes no 第")
    year = re.search(r"[〔\[【（(]\s*(\d+)\s*[〕\]】）)]", normal)
    if year is not None and len(year.group(1)) != 4:
        zh.append("年份应标全称（4位）")
        en.append("the year is written in full (four digits)")
    sequence = re.search(r"[〕\]】）)]第?(\d+)号$", normal)
    if sequence is not None and int(sequence.group(1)) == 0:
        zh.append("发文顺序号从1开始（不编为0）")
        en.append("the sequence number starts at 1, never 0")
    elif sequence is not None and sequence.group(1).startswith("0"):
        zh.append("发文顺序号不编虚位（1 不编为 01）")
        en.append("no leading zeros in the sequence number (1, not 01)")
    if not re.match(r"[\u4e00-\u9fff]", text):
        zh.append("应以发文机关代字（汉字）开头")
        en.append("it starts with the issuing organ's abbreviation in Chinese characters")
    if not text.endswith("号"):
        zh.append("应以“号”字结尾")
        en.append("it ends with 号")
    if not zh:
        zh.append("不是“机关代字〔年份〕序号号”的形式")
        en.append("it is not of the form 机关代字〔年份〕序号号")
    return (
        f"发文字号 {text!r}：{'；'.join(zh)}。应如 吉政发〔2002〕3号",
        f"document number {text!r}: {'; '.join(en)}. Write it like 吉政发〔2002〕3号",
    )


def _doc_number_form(doc: Document) -> RuleResult | list[Finding]:
    if doc.doc_number is None:
        return _not_applicable(DOC_NUMBER_FORM, "no document number")
    problem = doc_number_problem(doc.doc_number)
    if problem is None:
        return []
    return [Finding(DOC_NUMBER_FORM, problem[0], problem[1])]


def _not_applicable(rule: Rule, why: str) -> RuleResult:
    return RuleResult(rule, Mode.ENFORCE, Verdict.NOT_APPLICABLE, note=why)


# Every rule but the document number's reads only fields that repeat from one document to
# the next (sender, addressees, type, labels, ...), and the directory: a hub judges the same
# routing thousands of times. Those verdicts are kept per directory (dropped with it) for the
# fields below; the number, unique to each document, is judged every time.
MEMO_SIZE: Final = 1024
_PER_DOCUMENT: Final = "doc_number"  # the only Document field no memoized rule reads


def _routing_key(
    doc: Document, referenced: Referenced | None, *, looked_up: bool
) -> tuple[object, ...]:
    """Every input of the memoized rules: each Document field but ``doc_number`` (a test
    holds this list to the dataclass's fields)."""
    return (
        doc.sender,
        doc.to,
        doc.cc,
        doc.doc_type,
        doc.classification,
        doc.secrecy_period,
        tuple(doc.copy_numbers.items()),
        doc.signatory,
        doc.directive,
        doc.in_reply_to,
        doc.title,
        referenced,
        looked_up,
    )


def _judge(
    rule: Rule, settings: Settings, check: Callable[[], RuleResult | list[Finding]]
) -> RuleResult:
    mode = mode_of(settings, rule)
    if mode is Mode.OFF:
        return RuleResult(rule, mode, Verdict.OFF, note="off in the settings")
    outcome = check()
    if isinstance(outcome, RuleResult):
        return RuleResult(rule, mode, outcome.verdict, note=outcome.note)
    if outcome:
        return RuleResult(rule, mode, Verdict.FAIL, tuple(outcome))
    return RuleResult(rule, mode, Verdict.PASS)


def _routing(
    doc: Document,
    directory: Directory,
    settings: Settings,
    referenced: Referenced | None,
    *,
    looked_up: bool,
) -> Evaluation:
    """The verdicts of every rule but the document number's, and the directions."""
    checks: dict[Rule, Callable[[], RuleResult | list[Finding]]] = {
        SKIP_LEVEL: lambda: _skip_level(doc, directory),
        SKIP_LEVEL_DOWN: lambda: _skip_level_down(doc, directory),
        REQUEST_RECIPIENT: lambda: _request_recipient(doc, directory),
        UPWARD_SIGNATORY: lambda: _upward_signatory(doc, directory),
        REPLY_REQUEST: lambda: _reply_request(doc, directory, referenced, looked_up=looked_up),
        TYPE_DIRECTION: lambda: _type_direction(doc, directory),
        LETTER_DIRECTION: lambda: _letter_direction(doc, directory),
        MOTION_RECIPIENT: lambda: _motion_recipient(doc, directory),
        REQUEST_REPORT_MIXED: lambda: _request_report_mixed(doc),
        DEPARTMENT_DIRECTIVE: lambda: _department_directive(doc, directory),
        CLASSIFIED_MARKS: lambda: _classified_marks(doc, directory),
    }
    results = tuple(_judge(rule, settings, check) for rule, check in checks.items())
    directions = {r: direction(directory, doc.sender, r) for r in doc.recipients}
    return Evaluation(directions, results)


def evaluate(
    doc: Document,
    directory: Directory,
    settings: Settings,
    *,
    referenced: Referenced | None = None,
    looked_up: bool = True,
) -> Evaluation:
    """Every rule's verdict on ``doc``.

    ``referenced`` is what the store holds under ``doc.in_reply_to`` (None if nothing);
    ``looked_up`` is False where no store can say (at a spoke), and the 批复's reference
    is then left to the hub.

    With the directory's own settings (:func:`settings_of`) the verdicts that do not
    depend on the document number are kept per directory; the result is shared, so do
    not modify its ``directions``.
    """
    cache = directory._rule_modes  # noqa: SLF001 - the directory keeps it for us
    shared: Evaluation | None = None
    if settings is cache.get("settings"):
        memo = cast("dict[tuple[object, ...], Evaluation]", cache.setdefault("memo", {}))
        key = _routing_key(doc, referenced, looked_up=looked_up)
        shared = memo.get(key)
        if shared is None:
            shared = _routing(doc, directory, settings, referenced, looked_up=looked_up)
            if len(memo) >= MEMO_SIZE:
                memo.clear()  # atomic, unlike evicting one (a worker thread may judge too)
            memo[key] = shared
    else:
        shared = _routing(doc, directory, settings, referenced, looked_up=looked_up)
    number = _judge(DOC_NUMBER_FORM, settings, lambda: _doc_number_form(doc))
    return Evaluation(shared.directions, (*shared.results, number))
