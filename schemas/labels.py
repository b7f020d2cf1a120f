"""Labels an official document carries: classification, secrecy period, precedence, type.

Every parser accepts the Chinese words as well as the English names (any case); every
label prints with both, so an operator and an integrator read the same line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Self, cast


def _norm(text: str) -> str:
    """Normalise user input: NFKC (full-width to half-width), trim, upper, '_' separators."""
    return re.sub(r"[\s\-]+", "_", unicodedata.normalize("NFKC", text).strip()).upper()


class _OrderedLabel(Enum):
    """An ordered label with a Chinese word; parse accepts either language.

    Not an IntEnum on purpose: labels of different kinds must never compare or hash
    equal (PUBLIC is not ROUTINE), and a label is never silently an int.
    """

    _value_: tuple[object, ...]
    _rank: int
    _hash: int

    def __init__(self, *value: object) -> None:
        # kept on the member: the hub compares labels several times a document, and an
        # enum's .value is a descriptor call each time
        self._rank = int(cast("int", value[0]))
        self._hash = hash((type(self).__name__, self._name_))

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def zh(self) -> str:
        return str(self.value[1])

    def aliases(self) -> tuple[str, ...]:
        """The Chinese words accepted for this label."""
        return tuple(self.value[1:])

    def __lt__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._rank < cast("Self", other)._rank

    def __le__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._rank <= cast("Self", other)._rank

    def __gt__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._rank > cast("Self", other)._rank

    def __ge__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._rank >= cast("Self", other)._rank

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.name} {self.zh}"

    @classmethod
    def parse(cls, text: str | Self) -> Self:
        """Parse an English name (any case) or a Chinese word; ValueError names the choices."""
        if isinstance(text, cls):
            return text
        if not isinstance(text, str):
            raise ValueError(f"{cls.__name__} must be text, not {type(text).__name__}")
        key = _norm(text)
        words = unicodedata.normalize("NFKC", text).strip()
        for member in cls:
            if key == member.name or words in member.aliases():
                return member
        choices = ", ".join(str(m) for m in cls)
        raise ValueError(f"{text!r} is not a {cls.__name__}; use one of: {choices}")

    @classmethod
    def from_wire(cls, value: object) -> Self:
        """The wire carries the exact English name and nothing else."""
        if isinstance(value, cls):
            return value
        # the enum's own name -> member map: __members__ builds a read-only copy per call,
        # and this runs for every label of every header the hub reads
        member = cls._member_map_.get(value) if isinstance(value, str) else None
        if member is None:
            raise ValueError(f"{value!r} is not a {cls.__name__} name")
        return cast("Self", member)


class Classification(_OrderedLabel):
    """密级. Ordered: PUBLIC < INTERNAL < CONFIDENTIAL < SECRET < TOP_SECRET."""

    PUBLIC = (0, "公开")
    INTERNAL = (1, "内部")
    CONFIDENTIAL = (2, "秘密")
    SECRET = (3, "机密")
    TOP_SECRET = (4, "绝密")

    @property
    def is_state_secret(self) -> bool:
        """秘密, 机密 and 绝密 are state secrets; they need a secrecy period and copy numbers."""
        return self >= Classification.CONFIDENTIAL


class Precedence(_OrderedLabel):
    """紧急程度. Ordered: ROUTINE < URGENT < EXTRA_URGENT < FLASH."""

    ROUTINE = (0, "平件", "普通", "常规")
    URGENT = (1, "加急")
    EXTRA_URGENT = (2, "特急")
    FLASH = (3, "特提")


class PeriodUnit(Enum):
    YEAR = "y"
    MONTH = "m"
    DAY = "d"


_UNIT_ZH = {PeriodUnit.YEAR: "年", PeriodUnit.MONTH: "个月", PeriodUnit.DAY: "天"}
_UNIT_WORDS = {
    "y": PeriodUnit.YEAR, "year": PeriodUnit.YEAR, "years": PeriodUnit.YEAR,
    "年": PeriodUnit.YEAR,
    "m": PeriodUnit.MONTH, "mo": PeriodUnit.MONTH, "month": PeriodUnit.MONTH,
    "months": PeriodUnit.MONTH, "个月": PeriodUnit.MONTH, "月": PeriodUnit.MONTH,
    "d": PeriodUnit.DAY, "day": PeriodUnit.DAY, "days": PeriodUnit.DAY,
    "天": PeriodUnit.DAY, "日": PeriodUnit.DAY,
}  # fmt: skip
_LONG_TERM_WORDS = ("长期", "long", "long_term", "long-term")
# Statutory maxima (保守国家秘密法: 绝密 <= 30 years, 机密 <= 20, 秘密 <= 10, unless the law
# provides otherwise). Not enforced at parse time: the document rules decide (issue 5).
_MAX_YEARS = {
    Classification.CONFIDENTIAL: 10,
    Classification.SECRET: 20,
    Classification.TOP_SECRET: 30,
}
_PERIOD_RE = re.compile(r"^(\d{1,3})\s*([a-z]+|年|个月|月|天|日)$")


@dataclass(frozen=True, slots=True)
class SecrecyPeriod:
    """保密期限: an amount of years, months or days, or long-term (长期)."""

    amount: int
    unit: PeriodUnit | None  # None means long-term

    @classmethod
    def long_term(cls) -> SecrecyPeriod:
        return cls(0, None)

    def __post_init__(self) -> None:
        if self.unit is not None and not 1 <= self.amount <= 999:
            raise ValueError(f"a secrecy period must be 1 to 999 units, not {self.amount}")

    @classmethod
    def parse(cls, text: str) -> SecrecyPeriod:
        """Parse ``1年``, ``6个月``, ``30天``, ``1y``, ``6m``, ``30d``, ``长期``."""
        raw = unicodedata.normalize("NFKC", text).strip().lower()
        if raw in _LONG_TERM_WORDS:
            return cls.long_term()
        match = _PERIOD_RE.fullmatch(raw)
        if match is None or match.group(2) not in _UNIT_WORDS:
            raise ValueError(
                f"{text!r} is not a secrecy period; "
                "write e.g. 1年, 6个月, 30天, 1y, 6m, 30d or 长期"
            )
        try:
            return cls(int(match.group(1)), _UNIT_WORDS[match.group(2)])
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid secrecy period: {exc}") from exc

    @property
    def wire(self) -> str:
        """Canonical wire form: ``1y``, ``6m``, ``30d`` or ``long``."""
        return "long" if self.unit is None else f"{self.amount}{self.unit.value}"

    @property
    def zh(self) -> str:
        return "长期" if self.unit is None else f"{self.amount}{_UNIT_ZH[self.unit]}"

    @classmethod
    def from_wire(cls, value: str) -> SecrecyPeriod:
        period = cls.parse(value)
        if period.wire != value:
            raise ValueError(f"{value!r} is not a canonical secrecy period (e.g. 1y, 6m, 30d)")
        return period

    def approx_days(self) -> int | None:
        """Length in days (365-day years, 30-day months); None for long-term."""
        if self.unit is None:
            return None
        return (
            self.amount * {PeriodUnit.YEAR: 365, PeriodUnit.MONTH: 30, PeriodUnit.DAY: 1}[self.unit]
        )

    def __str__(self) -> str:
        return self.zh


@dataclass(frozen=True, slots=True)
class SecrecyMark:
    """密级和保密期限 as printed on a document: ``机密★1年`` / ``SECRET★1y``."""

    classification: Classification
    period: SecrecyPeriod

    def __post_init__(self) -> None:
        if not self.classification.is_state_secret:
            raise ValueError(
                f"{self.classification} is not a state secret and carries no secrecy period; "
                "only 秘密 CONFIDENTIAL, 机密 SECRET and 绝密 TOP_SECRET do"
            )

    @classmethod
    def parse(cls, text: str) -> SecrecyMark:
        """Parse ``机密★1年``, ``秘密★6个月``, ``SECRET★1y``, ``绝密★长期`` (★ or *)."""
        norm = unicodedata.normalize("NFKC", text).strip()
        for star in ("★", "*"):
            if star in norm:
                label, _, period = norm.partition(star)
                return cls(Classification.parse(label), SecrecyPeriod.parse(period))
        raise ValueError(f"{text!r} is not a secrecy mark; write e.g. 机密★1年 or SECRET★1y")

    def exceeds_statutory_maximum(self) -> bool:
        """True when longer than the law's default maximum for this level.

        Compared in the period's own unit (years, months = 12 a year, days = 365.25 a
        year), so 120 months of 秘密 is at the limit and 121 months above it.
        """
        limit_years = _MAX_YEARS[self.classification]
        unit, amount = self.period.unit, self.period.amount
        if unit is None:
            return False
        if unit is PeriodUnit.YEAR:
            return amount > limit_years
        if unit is PeriodUnit.MONTH:
            return amount > limit_years * 12
        return amount > limit_years * 365.25

    def format(self, lang: str = "zh") -> str:
        if lang == "zh":
            return f"{self.classification.zh}★{self.period.zh}"
        return f"{self.classification.name}★{self.period.wire}"

    def __str__(self) -> str:
        return self.format("zh")


class Direction(Enum):
    """行文方向, derived from the organisation tree."""

    UPWARD = "upward"  # 上行: to an ancestor
    DOWNWARD = "downward"  # 下行: to a descendant
    LATERAL = "lateral"  # 平行: otherwise
    ANY = "any"  # a document type with no usual direction

    @property
    def zh(self) -> str:
        return {"upward": "上行", "downward": "下行", "lateral": "平行", "any": "不限"}[self.value]


class DocType(Enum):
    """文种: the 15 types of the 2012 条例 plus 信息, 信访件 and 应急.

    Each member's value is (Chinese name, usual direction).
    """

    RESOLUTION = ("决议", Direction.DOWNWARD)
    DECISION = ("决定", Direction.DOWNWARD)
    ORDER = ("命令", Direction.DOWNWARD)
    COMMUNIQUE = ("公报", Direction.DOWNWARD)
    ANNOUNCEMENT = ("公告", Direction.DOWNWARD)
    PUBLIC_NOTICE = ("通告", Direction.DOWNWARD)
    OPINION = ("意见", Direction.ANY)
    NOTICE = ("通知", Direction.DOWNWARD)
    CIRCULAR = ("通报", Direction.DOWNWARD)
    REPORT = ("报告", Direction.UPWARD)
    REQUEST = ("请示", Direction.UPWARD)
    REPLY = ("批复", Direction.DOWNWARD)
    MOTION = ("议案", Direction.LATERAL)
    LETTER = ("函", Direction.ANY)
    MINUTES = ("纪要", Direction.ANY)
    INFORMATION = ("信息", Direction.UPWARD)
    PETITION = ("信访件", Direction.ANY)
    EMERGENCY = ("应急", Direction.ANY)

    @property
    def zh(self) -> str:
        return self.value[0]

    @property
    def usual_direction(self) -> Direction:
        return self.value[1]

    def __str__(self) -> str:
        return f"{self.name} {self.zh}"

    @classmethod
    def parse(cls, text: str | DocType) -> DocType:
        if isinstance(text, cls):
            return text
        if not isinstance(text, str):
            raise ValueError(f"DocType must be text, not {type(text).__name__}")
        key = _norm(text)
        stripped = text.strip()
        if stripped == "令":  # 命令 is also written 令
            return cls.ORDER
        for member in cls:
            if key == member.name or stripped == member.zh:
                return member
        choices = ", ".join(str(m) for m in cls)
        raise ValueError(f"{text!r} is not a document type; use one of: {choices}")

    @classmethod
    def from_wire(cls, value: object) -> DocType:
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and value in cls.__members__:
            return cls[value]
        raise ValueError(f"{value!r} is not a DocType name")
