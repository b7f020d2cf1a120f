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
from datetime import date as Date  # noqa: N812 - the field is called date
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas.ids import parse_msg_id
from schemas.labels import Classification, DocType, Precedence, SecrecyMark, SecrecyPeriod

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
            return value.replace(tzinfo=CHINA)
        return value

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
    "directive": "指令性", "auto_cc": "自动抄送",
}  # fmt: skip
_FRIENDLY = {
    "date_from_datetime_parsing": "write a date as 2026-11-25",
    "date_parsing": "write a date as 2026-11-25",
    "date_type": "write a date as 2026-11-25",
    "datetime_from_date_parsing": "write a date-time as 2026-12-31T18:00:00+08:00",
    "datetime_parsing": "write a date-time as 2026-12-31T18:00:00+08:00",
    "datetime_type": "write a date-time as 2026-12-31T18:00:00+08:00",
    "too_short": "name at least one",
}


class MetadataError(ValueError):
    """A metadata file that cannot be used; ``problems`` are (field, sentence) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("; ".join(f"{f}: {p}" if f else p for f, p in problems))


def parse_metadata(data: bytes, *, source: str) -> DropMetadata:
    """Parse ``NAME.meta.toml`` / ``NAME.meta.json`` bytes (the suffix of ``source`` decides)."""
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(source, [("", f"the file is {len(data)} bytes; the limit is 64 KiB")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(
            source, [("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from exc
    try:
        doc = json.loads(text) if source.endswith(".json") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if source.endswith(".json") else "TOML"
        problem = f"not valid {kind}: {exc}"
        if kind == "TOML" and _BARE_CHINESE_KEY.search(text):
            problem += '; in TOML, Chinese field names must be quoted: "主送" = "jl.cc"'
        raise MetadataError(source, [("", problem)]) from exc
    if not isinstance(doc, dict):
        raise MetadataError(source, [("", "the top level must be a table of fields")])
    both = [
        (z, f"given twice, as {e} and as {z}; give it once, by either name")
        for e, z in ALIASES.items()
        if e in doc and z in doc
    ]
    if both:
        raise MetadataError(source, both)
    try:
        return DropMetadata.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                known = ", ".join(_FIELD_NAMES)
                problems.append((field, f"unknown field; the fields are {known}"))
            elif err["type"] == "missing":
                problems.append(
                    (field, f"this field ({field} / {ALIASES.get(field, '')}) is required")
                )
            elif err["type"] in _FRIENDLY:
                problems.append((field, f"{_FRIENDLY[err['type']]} (got {err.get('input')!r})"))
            else:
                problems.append((field, err["msg"].removeprefix("Value error, ")))
        raise MetadataError(source, problems) from exc


_FIELD_NAMES = [
    "to 主送", "cc 抄送", "classification 密级", "secrecy_period 保密期限", "precedence 紧急程度",
    "doc_type 文种", "title 标题", "doc_number 发文字号", "signatory 签发人", "date 成文日期",
    "in_reply_to 回复文件", "expires 失效时间", "directive 指令性", "auto_cc 自动抄送",
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
