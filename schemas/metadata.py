"""What an integrator writes next to a document: ``NAME.meta.toml`` or ``NAME.meta.json``.

Every field has an English name and the Chinese name printed on official documents
(GB/T 9704): ``to``/``主送``, ``cc``/``抄送``, ``classification``/``密级``, ... Labels accept
either language. The JSON Schema published as ``schemas/metadata.schema.json`` is
generated from :class:`DropMetadata` (``python -m schemas.metadata``).

Pure: :func:`parse_metadata` takes the bytes and the file name; the spoke reads the file.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from datetime import date as Date  # noqa: N812 - the field is called date
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.clock import parse_duration
from schemas.errors import XchgError
from schemas.ids import parse_msg_id
from schemas.labels import Classification, DocType, Precedence, SecrecyMark, SecrecyPeriod
from schemas.terms import CASE_PATTERN, Terms

MAX_METADATA_BYTES = 64 * 1024
_BARE_CHINESE_KEY = re.compile(r"^\s*[^\x00-\x7f\"'\[\s][^=\n]*=", re.MULTILINE)
CHINA = timezone(timedelta(hours=8))  # a time without an offset is Beijing time


def _addresses(value: object) -> object:
    """``"jl.cc, jl.jl"`` or ``["jl.cc", "@prefectures"]`` -> a list of addresses."""
    if isinstance(value, str):
        for separator in ("，", "、", ";", "；"):
            value = value.replace(separator, ",")
        parts = value.split(",")
        return [p.strip() for p in parts if p.strip()]
    return value


Addresses = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=80)]], BeforeValidator(_addresses)
]


def _words(kind: Any, extra: list[dict[str, Any]] | None = None) -> WithJsonSchema:
    names = [m.name for m in kind] + [m.zh for m in kind]
    schema: dict[str, Any] = {"type": "string", "enum": names}
    if extra:
        schema = {"anyOf": [schema, *extra]}
    return WithJsonSchema(schema)


_MARK = {
    "type": "string",
    "pattern": (
        "^(秘密|机密|绝密|CONFIDENTIAL|SECRET|TOP_SECRET)\\s*[★*]\\s*"
        "(\\d{1,3}\\s*(年|个月|月|天|日|y|m|d)|长期)$"
    ),
    "description": "a secrecy mark: 密级★保密期限, e.g. 机密★1年",
}
_PERIOD = WithJsonSchema(
    {"type": "string", "pattern": "^(\\d{1,3}\\s*(年|个月|月|天|日|y|m|mo|d)|长期|long)$",
     "description": "保密期限, e.g. 1年, 6个月, 30天, 1y, 6m, 长期"}
)  # fmt: skip


def _alias(english: str, chinese: str) -> Any:
    return AliasChoices(english, chinese)


# A deadline: a date-time, or a span after sending (milliseconds once read).
Deadline = Annotated[int, Field(gt=0)] | datetime
_CHINESE_SPAN = re.compile(r"^\s*(\d+)\s*(分钟|小时|天|周)\s*$")
_CHINESE_UNIT = {"分钟": "m", "小时": "h", "天": "d", "周": "w"}


def _span_ms(text: str) -> int | None:
    """``30m``, ``2h``, ``3d``, ``1w`` (or 30分钟, 2小时, 3天, 1周) in ms; None if not a span."""
    match = _CHINESE_SPAN.match(text)
    value = f"{match.group(1)}{_CHINESE_UNIT[match.group(2)]}" if match else text
    try:
        return parse_duration(value, what="deadline") or None
    except ValueError:
        return None


FILE_ALIASES = {"name": "文件名", "size": "大小", "sha256": "SHA256"}  # keys of a declared file
MAX_DECLARED_FILES = 1000  # schemas.seal.MAX_FILES: no document holds more
EARLIEST_EXPIRY = datetime(1970, 1, 2, tzinfo=UTC)  # wire times are unsigned ms


def name_key(name: str) -> str:
    """How two file names are compared: Unicode NFC (a Mac writes NFD) and case folded
    (Windows does not tell 'A.pdf' from 'a.pdf')."""
    return unicodedata.normalize("NFC", name).casefold()


class DeclaredFile(BaseModel):
    """One file of the drop as the integrator declares it: its size, its SHA-256, or both.

    A declaration is the integrator's statement of what complete looks like: the spoke
    takes the drop as soon as every declared file has its declared size, and refuses it
    if the bytes do not match."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(
        validation_alias=_alias("name", FILE_ALIASES["name"]), min_length=1, max_length=255
    )
    size: Annotated[StrictInt, Field(ge=1, le=2**53)] | None = Field(
        default=None, validation_alias=_alias("size", FILE_ALIASES["size"])
    )
    sha256: Annotated[str, Field(pattern="^[0-9a-fA-F]{64}$")] | None = Field(
        default=None, validation_alias=_alias("sha256", FILE_ALIASES["sha256"])
    )

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _something_declared(self) -> Self:
        if self.size is None and self.sha256 is None:
            raise ValueError(
                f"the file {self.name!r} declares neither size nor sha256; give at least one"
            )
        return self


class DropMetadata(BaseModel):
    """The metadata of one drop. Unknown keys are refused, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: Addresses = Field(validation_alias=_alias("to", "主送"), min_length=1)
    cc: Addresses = Field(default_factory=list, validation_alias=_alias("cc", "抄送"))
    classification: Annotated[Classification, _words(Classification, [_MARK])] = Field(
        validation_alias=_alias("classification", "密级")
    )
    secrecy_period: Annotated[SecrecyPeriod, _PERIOD] | None = Field(
        default=None, validation_alias=_alias("secrecy_period", "保密期限")
    )
    precedence: Annotated[Precedence, _words(Precedence)] = Field(
        default=Precedence.ROUTINE, validation_alias=_alias("precedence", "紧急程度")
    )
    doc_type: Annotated[DocType, _words(DocType)] = Field(
        validation_alias=_alias("doc_type", "文种")
    )
    title: str = Field(validation_alias=_alias("title", "标题"), min_length=1, max_length=1000)
    doc_number: str | None = Field(
        default=None, validation_alias=_alias("doc_number", "发文字号"), max_length=64
    )
    signatory: str | None = Field(
        default=None, validation_alias=_alias("signatory", "签发人"), max_length=64
    )
    date: Date | None = Field(default=None, validation_alias=_alias("date", "成文日期"))
    in_reply_to: str | None = Field(
        default=None, validation_alias=_alias("in_reply_to", "回复文件")
    )
    expires: datetime | None = Field(default=None, validation_alias=_alias("expires", "失效时间"))
    directive: bool = Field(default=False, validation_alias=_alias("directive", "指令性"))
    auto_cc: bool = Field(
        default=False,
        validation_alias=_alias("auto_cc", "自动抄送"),
        description="copy (抄送) every organ a skip-level document skips (越级行文) going up, "
        "or passes over going down, as the skip_level and skip_level_down rules ask; the "
        "spoke adds them before sealing",
    )
    files: tuple[DeclaredFile, ...] = Field(
        default=(),
        validation_alias=_alias("files", "文件"),
        max_length=MAX_DECLARED_FILES,
        description="every file of the drop with its size and/or SHA-256: the spoke takes the "
        "drop once they match and refuses it if they do not (docs/integrators.md)",
    )
    sign_by: Deadline | None = Field(
        default=None,
        validation_alias=_alias("sign_by", "签收时限"),
        description="签收时限: every recipient signs for it by then; a date-time, or a span "
        "from sending such as 30m, 2h, 3d (30分钟, 2小时, 3天). The hub reminds those late",
    )
    done_by: Deadline | None = Field(
        default=None,
        validation_alias=_alias("done_by", "办理时限"),
        description="办理时限: every recipient reports it handled (办结) by then; a 请示: its "
        "批复. A date-time or a span, as sign_by",
    )
    accept_by: Deadline | None = Field(
        default=None,
        validation_alias=_alias("accept_by", "受理时限"),
        description="受理时限 of a petition (信访件): the organ decides whether to accept it by "
        "then (the 信访工作条例 gives 15 days). A date-time or a span, as sign_by",
    )
    case: str | None = Field(
        default=None,
        validation_alias=_alias("case", "信访件编号"),
        pattern=CASE_PATTERN,
        description="a petition's case number (信访件编号), kept when it is transferred down",
    )
    drill: bool = Field(
        default=False,
        validation_alias=_alias("drill", "演练"),
        description="演练: an emergency notice (应急) sent as an exercise, marked as such "
        "everywhere",
    )
    resend: bool = Field(
        default=False,
        validation_alias=_alias("resend", "重发"),
        description="send it although the same document (same bytes and metadata, or the same "
        "发文字号) was sent within [limits] duplicate_window",
    )

    @field_validator("classification", mode="before")
    @classmethod
    def _classification(cls, value: object) -> object:
        if isinstance(value, str) and ("★" in value or "*" in value):
            return SecrecyMark.parse(value).classification  # the period is read below
        return Classification.parse(value) if isinstance(value, str) else value

    @field_validator("precedence", mode="before")
    @classmethod
    def _precedence(cls, value: object) -> object:
        return Precedence.parse(value) if isinstance(value, str) else value

    @field_validator("doc_type", mode="before")
    @classmethod
    def _doc_type(cls, value: object) -> object:
        return DocType.parse(value) if isinstance(value, str) else value

    @field_validator("secrecy_period", mode="before")
    @classmethod
    def _period(cls, value: object) -> object:
        return SecrecyPeriod.parse(value) if isinstance(value, str) else value

    @field_validator("in_reply_to")
    @classmethod
    def _reply(cls, value: str | None) -> str | None:
        if value is not None:
            parse_msg_id(value)
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=CHINA)
        if value is not None and value < EARLIEST_EXPIRY:
            raise ValueError(
                f"{value.isoformat()} is before 1970; write the date-time after which the hub "
                "stops trying, e.g. 2026-12-31T18:00:00+08:00"
            )
        return value

    @field_validator("files")
    @classmethod
    def _unique_files(cls, files: tuple[DeclaredFile, ...]) -> tuple[DeclaredFile, ...]:
        keys = [name_key(f.name) for f in files]
        twice = sorted({f.name for f, k in zip(files, keys, strict=True) if keys.count(k) > 1})
        if twice:
            raise ValueError(f"files declares {', '.join(map(repr, twice))} more than once")
        return files

    @model_validator(mode="before")
    @classmethod
    def _mark(cls, data: object) -> object:
        """``密级 = "机密★1年"`` also sets the secrecy period (unless given separately)."""
        if isinstance(data, dict):
            for key in ("classification", "密级"):
                value = data.get(key)
                if isinstance(value, str) and ("★" in value or "*" in value):
                    mark = SecrecyMark.parse(value)
                    given = next(
                        (data[k] for k in ("secrecy_period", "保密期限") if k in data), None
                    )
                    if given is None:
                        data = {**data, "secrecy_period": mark.period.wire}
                    elif isinstance(given, str) and SecrecyPeriod.parse(given) != mark.period:
                        raise ValueError(
                            f"the secrecy mark {value!r} says {mark.period}, but the secrecy "
                            f"period (保密期限) says {given!r}; give one of them"
                        )
        return data

    @model_validator(mode="after")
    def _period_only_for_secrets(self) -> Self:
        if self.secrecy_period is not None and not self.classification.is_state_secret:
            raise ValueError(
                f"{self.classification} carries no secrecy period (保密期限); remove it, or "
                "use 秘密, 机密 or 绝密 if the document is a state secret"
            )
        return self

    @field_validator("sign_by", "done_by", "accept_by", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f"{value!r} has no unit: write a span such as 30m, 2h, 3d (30分钟, 2小时, 3天) "
                "or a date-time such as 2026-12-31T18:00:00+08:00"
            )
        if isinstance(value, str):
            span = _span_ms(value)
            if span is not None:
                return span
            if value.strip().isdigit():  # not read as milliseconds, nor as a Unix time
                raise ValueError(
                    f"{value!r} has no unit: write a span such as 30m, 2h, 3d (30分钟, 2小时, "
                    "3天) or a date-time such as 2026-12-31T18:00:00+08:00"
                )
        return value

    @field_validator("sign_by", "done_by", "accept_by")
    @classmethod
    def _deadline_time(cls, value: Deadline | None) -> Deadline | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=CHINA)
        return value

    @model_validator(mode="after")
    def _terms_fit_the_type(self) -> Self:
        if (self.case is not None or self.accept_by is not None) and (
            self.doc_type is not DocType.PETITION
        ):
            raise ValueError(
                "a case number (信访件编号) and accept_by (受理时限) belong to a petition "
                f"(信访件), not to a {self.doc_type.zh}; remove them or set 文种 to 信访件"
            )
        if self.drill and self.doc_type is not DocType.EMERGENCY:
            raise ValueError(
                f"only an emergency notice (应急) is a drill (演练), not a {self.doc_type.zh}"
            )
        return self

    def terms(self, created_at: int) -> Terms | None:
        """The header's terms for a document sealed at ``created_at`` (None: none set)."""

        def at(value: Deadline | None) -> int | None:
            if value is None:
                return None
            if isinstance(value, int):
                return created_at + value
            return int(value.timestamp() * 1000)

        sign_by, done_by, accept_by = at(self.sign_by), at(self.done_by), at(self.accept_by)
        if (sign_by, done_by, accept_by, self.case, self.drill) == (None,) * 4 + (False,):
            return None
        return Terms(
            sign_by=sign_by, done_by=done_by, case=self.case, accept_by=accept_by, drill=self.drill
        )

    @property
    def expires_ms(self) -> int | None:
        return None if self.expires is None else int(self.expires.timestamp() * 1000)

    @property
    def in_reply_to_bytes(self) -> bytes | None:
        return None if self.in_reply_to is None else parse_msg_id(self.in_reply_to)


ALIASES = {
    "to": "主送", "cc": "抄送", "classification": "密级", "secrecy_period": "保密期限",
    "precedence": "紧急程度", "doc_type": "文种", "title": "标题", "doc_number": "发文字号",
    "signatory": "签发人", "date": "成文日期", "in_reply_to": "回复文件", "expires": "失效时间",
    "directive": "指令性", "auto_cc": "自动抄送", "files": "文件", "resend": "重发",
    "sign_by": "签收时限", "done_by": "办理时限", "accept_by": "受理时限", "case": "信访件编号",
    "drill": "演练",
}  # fmt: skip
_DATE = ("write a date as 2026-11-25", "日期请写作 2026-11-25")
_DATETIME = (
    "write a date-time as 2026-12-31T18:00:00+08:00",
    "时间请写作 2026-12-31T18:00:00+08:00",
)
_FRIENDLY = {
    "date_from_datetime_parsing": _DATE,
    "date_parsing": _DATE,
    "date_type": _DATE,
    "datetime_from_date_parsing": _DATETIME,
    "datetime_parsing": _DATETIME,
    "datetime_type": _DATETIME,
    "too_short": ("name at least one", "至少填写一项"),
}
# What a field holds, in Chinese, for a value the English sentence explains in detail.
_FIELD_ZH = {
    "to": "主送机关：机关代码或 @分组，如 jl.cc、@prefectures",
    "cc": "抄送机关：机关代码或 @分组，如 jl.cc、@prefectures",
    "classification": "密级：公开、内部、秘密、机密、绝密 之一（可写 机密★1年）",
    "secrecy_period": "保密期限：如 1年、6个月、30天、长期，仅用于秘密、机密、绝密",
    "precedence": "紧急程度：平件、加急、特急、特提 之一",
    "doc_type": "文种：决议 决定 命令 公报 公告 通告 意见 通知 通报 报告 请示 批复 议案 函 纪要 "
    "信息 信访件 应急 之一",
    "title": "标题：1 至 1000 个字符的文本",
    "doc_number": "发文字号：至多 64 个字符的文本，如 吉政发〔2026〕3号",
    "signatory": "签发人：至多 64 个字符的文本",
    "date": "成文日期：如 2026-11-25",
    "in_reply_to": "回复文件：所答复文件的 msg_id（32 位十六进制）",
    "expires": "失效时间：1970 年以后的时间，如 2026-12-31T18:00:00+08:00",
    "directive": "指令性：true 或 false",
    "auto_cc": "自动抄送：true 或 false",
    "files": "文件：每个文件的 name（文件名）及 size（大小，字节）和/或 sha256，每个文件只写一次",
    "resend": "重发：true 或 false",
    "sign_by": "签收时限：时间（如 2026-12-31T18:00:00+08:00）或发出后的时长"
    "（如 30分钟、2小时、3天）",
    "done_by": "办理时限：时间或发出后的时长（如 15天）",
    "accept_by": "受理时限：时间或发出后的时长（如 15天），仅用于信访件",
    "case": "信访件编号：至多 64 个字母、数字或汉字",
    "drill": "演练：true 或 false，仅用于应急",
}


class MetadataError(XchgError, ValueError):
    """A metadata file that cannot be used: ``problems`` are (field, English sentence)
    pairs, ``problems_zh`` the same problems in Chinese, in the same order."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        self.source = source
        self.problems = [(field, en) for field, en, _ in problems]
        self.problems_zh = [zh for _, _, zh in problems]
        super().__init__("; ".join(f"{f}: {p}" if f else p for f, p in self.problems))

    @property
    def text_zh(self) -> str:
        return "；".join(
            f"{field}：{zh}" if field else zh
            for (field, _), zh in zip(self.problems, self.problems_zh, strict=True)
        )


def too_large(source: str, size: int) -> MetadataError:
    """The refusal of a metadata file of ``size`` bytes, over the 64 KiB limit."""
    return MetadataError(
        source,
        [
            (
                "",
                f"the file is {size} bytes; the limit is 64 KiB",
                f"文件大小为 {size} 字节，超过 64 KiB 的上限",
            )
        ],
    )


MAX_NESTING = 32  # tables and arrays within each other; the metadata needs three


def _nesting(text: str) -> int:
    """How deep brackets nest outside quoted strings (close enough for TOML and JSON to
    refuse a bomb before the parsers recurse into it)."""
    depth = deepest = 0
    quote = ""
    escaped = comment = False
    for c in text:
        if comment:
            comment = c != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif c == "\\" and quote == '"':
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#":  # a TOML comment: its apostrophes open no string
            comment = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
    return deepest


def parse_metadata(data: bytes, *, source: str) -> DropMetadata:
    """Parse ``NAME.meta.toml`` / ``NAME.meta.json`` bytes (the suffix of ``source`` decides).

    Whatever the bytes, the outcome is a DropMetadata or a MetadataError, never another
    exception: the spoke moves the drop to failed/ with the sentence."""
    if len(data) > MAX_METADATA_BYTES:
        raise too_large(source, len(data))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(
            source,
            [
                (
                    "",
                    (
                        f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as "
                        "UTF-8 (in Notepad: Save As, Encoding UTF-8), not GBK or GB 18030"
                    ),
                    (
                        f"不是 UTF-8 编码的文本（第 {exc.start} 字节）；请以 UTF-8 编码保存该文件"
                        "（记事本：另存为，编码选 UTF-8），不要用 GBK 或 GB 18030"
                    ),
                )
            ],
        ) from exc
    kind = "JSON" if source.endswith(".json") else "TOML"
    if _nesting(text) > MAX_NESTING:
        raise MetadataError(
            source,
            [
                (
                    "",
                    f"not usable {kind}: tables and arrays nest more than {MAX_NESTING} deep",
                    f"{kind} 中的表或数组嵌套超过 {MAX_NESTING} 层，无法使用",
                )
            ],
        )
    try:
        doc = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # the decode errors, and ints of >4300 digits
        problem = f"not valid {kind}: {exc}"
        problem_zh = f"不是有效的 {kind}：{exc}"
        if isinstance(exc, ValueError) and str(exc).startswith("Exceeds the limit"):
            problem = f"not usable {kind}: a number has more than 4300 digits"
            problem_zh = f"{kind} 中有超过 4300 位的数字，无法使用"
        if kind == "TOML" and _BARE_CHINESE_KEY.search(text):
            problem += '; in TOML, Chinese field names must be quoted: "主送" = "jl.cc"'
            problem_zh += '；TOML 中的中文字段名必须加引号，如 "主送" = "jl.cc"'
        raise MetadataError(source, [("", problem, problem_zh)]) from exc
    if not isinstance(doc, dict):
        raise MetadataError(
            source,
            [("", "the top level must be a table of fields", "最外层必须是由字段组成的表（对象）")],
        )
    both = [
        (
            z,
            f"given twice, as {e} and as {z}; give it once, by either name",
            f"重复填写：{e} 与 {z} 是同一字段，请只填写一次",
        )
        for e, z in ALIASES.items()
        if e in doc and z in doc
    ]
    if both:
        raise MetadataError(source, both)
    try:
        return DropMetadata.model_validate(doc)
    except ValidationError as exc:
        raise MetadataError(source, [_problem(err) for err in exc.errors()]) from exc


def _problem(err: Any) -> tuple[str, str, str]:
    """(field, English, Chinese) for one of pydantic's errors."""
    field = ".".join(str(p) for p in err["loc"])
    top = str(err["loc"][0]) if err["loc"] else ""
    english_top = next((e for e, z in ALIASES.items() if top in (e, z)), top)
    if err["type"] == "extra_forbidden":
        if len(err["loc"]) > 1:
            return (
                field,
                "unknown key; a declared file has name, size and sha256",
                "未知的键；声明的文件只有 name（文件名）、size（大小）和 sha256",
            )
        known = ", ".join(_FIELD_NAMES)
        return (field, f"unknown field; the fields are {known}", f"未知字段；可用字段为 {known}")
    if err["type"] == "missing":
        if len(err["loc"]) > 1:
            return (field, "this key is required", "缺少此项，必须填写")
        return (
            field,
            f"this field ({field} / {ALIASES.get(field, '')}) is required",
            f"缺少必填字段 {field}（{ALIASES.get(field, '')}）",
        )
    if err["type"] in _FRIENDLY:
        en, zh = _FRIENDLY[err["type"]]
        shown = repr(err.get("input"))[:200]
        return (field, f"{en} (got {shown})", f"{zh}（收到 {shown}）")
    en = err["msg"].removeprefix("Value error, ")
    zh = _FIELD_ZH.get(english_top, "请按 docs/integrators.md 填写此字段")
    return (field, en, f"取值不符合要求，应为 {zh}")


_FIELD_NAMES = [
    "to 主送", "cc 抄送", "classification 密级", "secrecy_period 保密期限", "precedence 紧急程度",
    "doc_type 文种", "title 标题", "doc_number 发文字号", "signatory 签发人", "date 成文日期",
    "in_reply_to 回复文件", "expires 失效时间", "directive 指令性", "auto_cc 自动抄送",
    "files 文件", "resend 重发", "sign_by 签收时限", "done_by 办理时限", "accept_by 受理时限",
    "case 信访件编号", "drill 演练",
]  # fmt: skip


def json_schema() -> dict[str, Any]:
    """The JSON Schema integrators validate against: English or Chinese field names."""
    schema = DropMetadata.model_json_schema(mode="validation")
    props: dict[str, Any] = schema["properties"]
    addresses = {"type": "string", "minLength": 1, "maxLength": 80}
    for name in ("to", "cc"):
        listed: dict[str, Any] = {"type": "array", "items": addresses}
        if name == "to":
            listed["minItems"] = 1
        props[name] = {
            "title": props[name].get("title", name),
            "description": (
                "organisation ids or @groups: a list, or one string separated by , ，、 ; ；"
            ),
            "anyOf": [addresses, listed],
        }
    props["precedence"]["default"] = "ROUTINE"
    for english, chinese in ALIASES.items():
        props[chinese] = {"$ref": f"#/properties/{english}", "description": f"= {english}"}
    required = schema.pop("required", [])
    schema["allOf"] = [
        {"anyOf": [{"required": [name]}, {"required": [ALIASES[name]]}]} for name in required
    ]
    declared: dict[str, Any] = schema["$defs"]["DeclaredFile"]
    declared["description"] = (
        "one file of the drop: its name and its size in bytes and/or its SHA-256 (hex); "
        "each key also by its Chinese name: "
        + ", ".join(f"{e} {z}" for e, z in FILE_ALIASES.items())
    )
    for english, chinese in FILE_ALIASES.items():
        declared["properties"][chinese] = {
            "$ref": f"#/$defs/DeclaredFile/properties/{english}",
            "description": f"= {english}",
        }
    declared.pop("required", None)
    declared["allOf"] = [
        {"anyOf": [{"required": ["name"]}, {"required": [FILE_ALIASES["name"]]}]},
        {"anyOf": [{"required": [key]} for pair in FILE_ALIASES.items() for key in pair][2:]},
    ]
    for name in ("sign_by", "done_by", "accept_by"):  # a span or a date-time, both text
        props[name] = {
            "description": props[name].get("description", ""),
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": r"^\s*\d+\s*([wdhms]|分钟|小时|天|周)\s*$"},
            ],
        }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://govxchg.example/schemas/metadata.schema.json"
    schema["description"] = (
        "Metadata of a document dropped into a govxchg spoke's outbox: NAME.meta.json "
        "(or the same fields in NAME.meta.toml). Every field may be written by its English "
        "or its Chinese name (not both): "
        + ", ".join(f"{e} {z}" for e, z in ALIASES.items())
        + ". Label words are accepted in either language, English names in any case."
    )
    return schema


def write_json_schema(path: Path) -> None:
    path.write_text(
        json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    write_json_schema(Path(__file__).with_name("metadata.schema.json"))
