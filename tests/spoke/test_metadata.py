"""NAME.meta.toml / NAME.meta.json: schemas.metadata.parse_metadata and the published schema.

Pure: bytes and a file name in, DropMetadata or MetadataError out.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import re
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from schemas.labels import Classification, DocType, PeriodUnit, Precedence, SecrecyPeriod
from schemas.metadata import (
    ALIASES,
    MAX_METADATA_BYTES,
    DeclaredFile,
    DropMetadata,
    MetadataError,
    json_schema,
    parse_metadata,
)
from spoke import demo
from tests.world import REPO

TOML = "x.txt.meta.toml"
JSON = "x.txt.meta.json"
MSG_ID = "0123456789abcdef0123456789abcdef"

# Every field with its English name, its Chinese name (GB/T 9704), a value in TOML and
# what it parses to.
FIELDS: list[tuple[str, str, str, object]] = [
    ("to", "主送", '"jl.cc, jl.jl"', ["jl.cc", "jl.jl"]),
    ("cc", "抄送", '["@prefectures"]', ["@prefectures"]),
    ("classification", "密级", '"机密"', Classification.SECRET),
    ("secrecy_period", "保密期限", '"6个月"', SecrecyPeriod(6, PeriodUnit.MONTH)),
    ("precedence", "紧急程度", '"特急"', Precedence.EXTRA_URGENT),
    ("doc_type", "文种", '"信访件"', DocType.PETITION),  # the one type with every term
    ("title", "标题", '"关于做好冬季供暖工作的通知"', "关于做好冬季供暖工作的通知"),
    ("doc_number", "发文字号", '"吉政办发〔2026〕12号"', "吉政办发〔2026〕12号"),
    ("signatory", "签发人", '"王某"', "王某"),
    ("date", "成文日期", "2026-11-01", dt.date(2026, 11, 1)),
    ("in_reply_to", "回复文件", f'"{MSG_ID}"', MSG_ID),
    ("expires", "失效时间", "2026-12-01T08:00:00+08:00", None),  # checked below
    ("directive", "指令性", "true", True),
    ("auto_cc", "自动抄送", "true", True),
    (
        "files",
        "文件",
        '[{"文件名" = "正文.pdf", "大小" = 12, "SHA256" = "' + "AB" * 32 + '"}]',
        (DeclaredFile(name="正文.pdf", size=12, sha256="ab" * 32),),
    ),
    ("resend", "重发", "true", True),
    ("sign_by", "签收时限", '"3天"', 3 * 86_400_000),
    ("done_by", "办理时限", '"60d"', 60 * 86_400_000),
    ("accept_by", "受理时限", "2026-12-20T18:00:00+08:00", None),  # a date-time, like expires
    ("case", "信访件编号", '"吉信〔2026〕0815号"', "吉信〔2026〕0815号"),
    ("drill", "演练", "true", True),  # an emergency's: parsed on its own below
]
EMERGENCY_ONLY = {"drill"}
REQUIRED = {"to": '"jl.cc"', "classification": '"INTERNAL"', "doc_type": '"NOTICE"', "title": '"t"'}


def toml(fields: dict[str, str]) -> bytes:
    """A TOML metadata file; keys quoted (bare TOML keys are ASCII only)."""
    return "".join(f'"{k}" = {v}\n' for k, v in fields.items()).encode()


def problems(data: bytes | str, source: str = TOML) -> list[tuple[str, str]]:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(MetadataError) as caught:
        parse_metadata(raw, source=source)
    assert caught.value.source == source
    assert str(caught.value)  # the sentence the spoke writes into NAME.error.txt
    return caught.value.problems


# ------------------------------------------------------------------ names in both languages


@pytest.mark.parametrize("language", ["english", "chinese"])
def test_every_field_parses_under_its_english_and_its_chinese_name(language: str) -> None:
    fields = {
        (en if language == "english" else zh): value
        for en, zh, value, _ in FIELDS
        if en not in EMERGENCY_ONLY
    }
    meta = parse_metadata(toml(fields), source=TOML)
    for english, _, _, expected in FIELDS:
        if expected is not None and english not in EMERGENCY_ONLY:
            assert getattr(meta, english) == expected, english
    assert meta.expires == dt.datetime(2026, 12, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_deadlines_are_spans_after_sending_or_date_times_and_drills_are_emergencies() -> None:
    meta = parse_metadata(
        toml({"主送": '"@departments"', "密级": '"内部"', "紧急程度": '"特提"', "文种": '"应急"',
              "标题": '"t"', "签收时限": '"30分钟"', "演练": "true"}),
        source=TOML,
    )  # fmt: skip
    terms = meta.terms(1_000)
    assert terms is not None
    assert (terms.sign_by, terms.drill) == (1_000 + 30 * 60_000, True)
    for bad, said in (
        ('"签收时限" = 30', "has no unit"),
        ('"签收时限" = "3600"', "has no unit"),  # not milliseconds, not a Unix time
        ('"签收时限" = "下周"', "date-time"),
        ('"演练" = true', "only an emergency notice"),
        ('"信访件编号" = "A1"', "belong to a petition"),
    ):
        base = toml(REQUIRED).decode() + bad + "\n"
        assert any(said in p for _, p in problems(base)), bad


def test_json_metadata_reads_like_toml_metadata() -> None:
    as_toml = parse_metadata(
        toml({"主送": '"jl.cc"', "密级": '"机密★1年"', "文种": '"报告"', "标题": '"t"'}),
        source=TOML,
    )
    as_json = parse_metadata(
        json.dumps(
            {"主送": ["jl.cc"], "密级": "机密★1年", "文种": "报告", "标题": "t"}, ensure_ascii=False
        ).encode(),
        source=JSON,
    )
    assert as_json == as_toml


def test_unquoted_chinese_key_in_toml_is_refused_as_invalid_toml() -> None:
    # TOML bare keys are A-Za-z0-9_-; the demo and the docs quote Chinese keys.
    [(field, problem)] = problems('主送 = "jl.cc"\n')
    assert field == ""
    assert "not valid TOML" in problem


def test_json_metadata_with_a_byte_order_mark_is_read() -> None:
    # Windows Notepad writes one; the file is still UTF-8.
    body = json.dumps({"to": "jl.cc", "classification": "内部", "doc_type": "函", "title": "t"})
    meta = parse_metadata("\ufeff".encode() + body.encode(), source=JSON)
    assert meta.to == ["jl.cc"]


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    ("mark", "classification", "period"),
    [
        ("机密★1年", Classification.SECRET, SecrecyPeriod(1, PeriodUnit.YEAR)),
        ("秘密★6个月", Classification.CONFIDENTIAL, SecrecyPeriod(6, PeriodUnit.MONTH)),
        ("绝密★长期", Classification.TOP_SECRET, SecrecyPeriod.long_term()),
        ("SECRET*30d", Classification.SECRET, SecrecyPeriod(30, PeriodUnit.DAY)),
    ],
)
def test_secrecy_mark_in_classification_sets_the_secrecy_period(
    mark: str, classification: Classification, period: SecrecyPeriod
) -> None:
    for key in ("classification", "密级"):
        fields = {**REQUIRED, key: f'"{mark}"'}
        if key != "classification":
            del fields["classification"]
        meta = parse_metadata(toml(fields), source=TOML)
        assert (meta.classification, meta.secrecy_period) == (classification, period), key


@pytest.mark.parametrize(
    ("word", "precedence"),
    [
        ("平件", Precedence.ROUTINE),
        ("普通", Precedence.ROUTINE),
        ("routine", Precedence.ROUTINE),
        ("加急", Precedence.URGENT),
        ("URGENT", Precedence.URGENT),
        ("特急", Precedence.EXTRA_URGENT),
        ("extra-urgent", Precedence.EXTRA_URGENT),
        ("特提", Precedence.FLASH),
        ("flash", Precedence.FLASH),
    ],
)
def test_precedence_is_read_in_both_languages(word: str, precedence: Precedence) -> None:
    meta = parse_metadata(toml({**REQUIRED, "紧急程度": f'"{word}"'}), source=TOML)
    assert meta.precedence is precedence


def test_precedence_defaults_to_routine() -> None:
    assert parse_metadata(toml(REQUIRED), source=TOML).precedence is Precedence.ROUTINE


@pytest.mark.parametrize(
    ("word", "doc_type"),
    [
        ("通知", DocType.NOTICE),
        ("notice", DocType.NOTICE),
        ("函", DocType.LETTER),
        ("LETTER", DocType.LETTER),
        ("请示", DocType.REQUEST),
        ("报告", DocType.REPORT),
        ("令", DocType.ORDER),
        ("public notice", DocType.PUBLIC_NOTICE),
    ],
)
def test_doc_type_is_read_in_both_languages(word: str, doc_type: DocType) -> None:
    fields = {**REQUIRED, "文种": f'"{word}"'}
    del fields["doc_type"]
    assert parse_metadata(toml(fields), source=TOML).doc_type is doc_type


def test_unknown_precedence_is_refused_naming_the_choices() -> None:
    [(field, problem)] = problems(toml({**REQUIRED, "precedence": '"fast"'}))
    assert field == "precedence"
    assert "'fast'" in problem
    assert "特急" in problem
    assert "EXTRA_URGENT" in problem


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    "value",
    [
        '"jl.cc, jl.jl"',
        '"jl.cc,jl.jl"',
        '"jl.cc、jl.jl"',
        '"jl.cc，jl.jl"',
        '"jl.cc; jl.jl"',
        '" jl.cc ,, jl.jl "',
        '["jl.cc", "jl.jl"]',
    ],
)
def test_addresses_are_a_list_or_a_string_separated_by_commas_or_enumeration_marks(
    value: str,
) -> None:
    for key in ("to", "cc", "主送", "抄送"):
        fields = {**REQUIRED, key: value}
        if key == "主送":
            del fields["to"]
        meta = parse_metadata(toml(fields), source=TOML)
        english = {"主送": "to", "抄送": "cc"}.get(key, key)
        assert getattr(meta, english) == ["jl.cc", "jl.jl"], key


def test_groups_are_allowed_in_to_and_cc() -> None:
    meta = parse_metadata(
        toml({**REQUIRED, "to": '"@prefectures、jl.gov"', "cc": '["@counties.jl.cc"]'}),
        source=TOML,
    )
    assert meta.to == ["@prefectures", "jl.gov"]
    assert meta.cc == ["@counties.jl.cc"]


def test_empty_address_list_is_refused_naming_to() -> None:
    [(field, _)] = problems(toml({**REQUIRED, "to": '" , "'}))
    assert field == "to"


# ------------------------------------------------------------------ dates


def test_date_is_read_from_toml_dates_and_json_strings() -> None:
    from_toml = parse_metadata(toml({**REQUIRED, "成文日期": "2026-11-01"}), source=TOML)
    body = {"to": "jl.cc", "classification": "内部", "doc_type": "函", "title": "t"}
    from_json = parse_metadata(json.dumps({**body, "date": "2026-11-01"}).encode(), source=JSON)
    assert from_toml.date == from_json.date == dt.date(2026, 11, 1)


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-12-01T08:00:00", dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)),  # Beijing time
        ('"2026-12-01T08:00:00"', dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)),
        ("2026-12-01T08:00:00Z", dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)),
        ("2026-12-01T08:00:00+09:00", dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)),
    ],
)
def test_expires_without_an_offset_is_beijing_time(value: str, utc: dt.datetime) -> None:
    meta = parse_metadata(toml({**REQUIRED, "失效时间": value}), source=TOML)
    assert meta.expires == utc
    assert meta.expires_ms == int(utc.timestamp() * 1000)


@pytest.mark.parametrize(("field", "value"), [("expires", '"tomorrow"'), ("date", '"2026-13-01"')])
def test_malformed_date_is_refused_naming_the_field(field: str, value: str) -> None:
    [(named, _)] = problems(toml({**REQUIRED, field: value}))
    assert named == field


def test_in_reply_to_must_be_a_msg_id() -> None:
    meta = parse_metadata(toml({**REQUIRED, "回复文件": f'"{MSG_ID}"'}), source=TOML)
    assert meta.in_reply_to_bytes == bytes.fromhex(MSG_ID)
    [(field, problem)] = problems(toml({**REQUIRED, "in_reply_to": '"last week"'}))
    assert field == "in_reply_to"
    assert "'last week'" in problem


# ------------------------------------------------------------------ refusals


def test_unknown_field_is_named_with_the_list_of_fields() -> None:
    [(field, problem)] = problems(toml({**REQUIRED, "colour": '"red"'}))
    assert field == "colour"
    assert "unknown field" in problem
    for english, chinese, _, _ in FIELDS:
        assert english in problem
        assert chinese in problem


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_field_is_named(missing: str) -> None:
    fields = dict(REQUIRED)
    del fields[missing]
    assert problems(toml(fields)) == [
        (missing, f"this field ({missing} / {ALIASES[missing]}) is required")
    ]


def test_every_missing_required_field_is_named_at_once() -> None:
    assert {field for field, _ in problems(b"")} == set(REQUIRED)


def test_field_given_under_both_its_names_is_refused_naming_it() -> None:
    fields = {**REQUIRED, "主送": '"jl.jl"'}
    assert "主送" in {field for field, _ in problems(toml(fields))}


@pytest.mark.parametrize(
    "fields",
    [
        {**REQUIRED, "secrecy_period": '"1年"'},
        {**REQUIRED, "classification": '"PUBLIC"', "保密期限": '"长期"'},
        {**REQUIRED, "classification": '"内部★1年"'},
    ],
    ids=["period-on-internal", "period-on-public", "mark-on-internal"],
)
def test_secrecy_period_on_a_non_secret_is_refused_with_a_sentence(
    fields: dict[str, str],
) -> None:
    [(_, problem)] = problems(toml(fields))
    assert "secrecy period" in problem
    assert re.search(r"INTERNAL|PUBLIC", problem)  # the label given
    assert "秘密" in problem  # what would carry a period
    assert "机密" in problem


@pytest.mark.parametrize(
    ("data", "source", "words"),
    [
        (b'to = "jl.cc\n', TOML, "not valid TOML"),
        (b"to = = 1\n", TOML, "not valid TOML"),
        (b'{"to": "jl.cc",', JSON, "not valid JSON"),
        (b'to = "jl.cc"', JSON, "not valid JSON"),  # the suffix decides the syntax
        (b'["jl.cc"]', JSON, "top level must be a table"),
        (b'"jl.cc"', JSON, "top level must be a table"),
        (b'to = "\xff\xfe"\n', TOML, "not UTF-8"),
        ("主送".encode("gb18030") + b' = "jl.cc"\n', TOML, "not UTF-8"),
    ],
    ids=["toml-unclosed", "toml-syntax", "json-truncated", "toml-as-json", "json-list",
         "json-string", "bytes", "gb18030"],
)  # fmt: skip
def test_unparseable_metadata_is_refused_naming_the_problem(
    data: bytes, source: str, words: str
) -> None:
    [(field, problem)] = problems(data, source)
    assert field == ""
    assert words in problem


def test_metadata_over_64_kib_is_refused_and_64_kib_is_read() -> None:
    head = toml(REQUIRED)
    filler = b"# " + b"x" * (MAX_METADATA_BYTES - len(head) - 3) + b"\n"
    at_limit = head + filler
    assert len(at_limit) == MAX_METADATA_BYTES
    assert parse_metadata(at_limit, source=TOML).title == "t"
    [(field, problem)] = problems(at_limit + b"\n")
    assert field == ""
    assert str(MAX_METADATA_BYTES + 1) in problem
    assert "64 KiB" in problem


# ------------------------------------------------------------------ the published JSON Schema

SCHEMA_PATH = REPO / "schemas" / "metadata.schema.json"
DEMO_SAMPLES = {
    "NOTICE": demo.NOTICE,
    "REPORT": demo.REPORT,
    "SECRET_REPORT": demo.SECRET_REPORT,
    "EMERGENCY": demo.EMERGENCY,
}


def test_published_schema_is_the_one_the_model_generates() -> None:
    published = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert published == json_schema(), "run: python -m schemas.metadata"


def test_schema_names_every_field_and_nothing_else() -> None:
    properties = set(json_schema()["properties"])
    english = set(DropMetadata.model_fields)
    chinese = {zh for _, zh, _, _ in FIELDS}
    assert english <= properties
    assert properties - english <= chinese
    assert json_schema()["additionalProperties"] is False


GOOD = {"to": ["jl.cc"], "classification": "机密★1年", "doc_type": "通知", "title": "t"}


@pytest.mark.parametrize("field", sorted(DropMetadata.model_fields))
def test_schema_requires_exactly_the_fields_the_parser_requires(field: str) -> None:
    schema = json_schema()
    full = {**GOOD, "signatory": "王某", "date": "2026-11-01"}
    without = {k: v for k, v in full.items() if k != field}
    required = DropMetadata.model_fields[field].is_required()
    assert bool(validation_errors(schema, without)) is required


def test_schema_description_gives_every_chinese_field_name() -> None:
    description = json_schema()["description"]
    for _, chinese, _, _ in FIELDS:
        assert chinese in description


def test_demo_samples_parse() -> None:
    for name, sample in DEMO_SAMPLES.items():
        assert parse_metadata(sample.encode(), source=f"{name}.meta.toml").title, name


@pytest.mark.parametrize("sample", sorted(DEMO_SAMPLES))
def test_published_schema_accepts_the_demo_metadata_as_written(sample: str) -> None:
    instance = _as_json(tomllib.loads(DEMO_SAMPLES[sample]))
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert validation_errors(schema, instance) == []


def test_every_default_in_the_schema_is_valid_for_its_property() -> None:
    schema = json_schema()
    wrong = {
        name: prop["default"]
        for name, prop in schema["properties"].items()
        if "default" in prop and _errors(prop, prop["default"], name, schema)
    }
    assert wrong == {}


def test_schema_uses_only_keywords_the_checker_here_knows() -> None:
    """The structural checker below must not skip a keyword it does not understand."""
    unknown: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            unknown.update(set(node) - _KEYWORDS - _ANNOTATIONS)
            for key, value in node.items():
                if key in ("properties", "$defs"):
                    for prop in value.values():
                        walk(prop)
                elif key not in _ANNOTATIONS:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json_schema())
    assert unknown == set()


def test_schema_checker_here_refuses_what_the_parser_refuses() -> None:
    """The checker can fail: it refuses a missing field, an unknown one, a bad label."""
    schema = json_schema()
    good = dict(GOOD)
    assert validation_errors(schema, good) == []
    assert validation_errors(schema, {k: v for k, v in good.items() if k != "title"})
    assert validation_errors(schema, {**good, "colour": "red"})
    assert validation_errors(schema, {**good, "classification": "very secret"})
    assert validation_errors(schema, {**good, "to": []})
    assert validation_errors(schema, {**good, "date": "yesterday"})


# A small JSON Schema checker for the keywords pydantic emits, used when the jsonschema
# package (not a dependency) is not installed.
_ANNOTATIONS = {"title", "description", "default", "$schema", "$id", "examples"}
_KEYWORDS = {
    "type", "enum", "const", "pattern", "anyOf", "allOf", "oneOf", "$ref", "items",
    "minItems", "maxItems", "minLength", "maxLength", "format", "properties", "required",
    "additionalProperties", "$defs", "minimum", "maximum",
}  # fmt: skip
_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}
_FORMATS: dict[str, Callable[[str], object]] = {
    "date": dt.date.fromisoformat,
    "date-time": dt.datetime.fromisoformat,
}


def validation_errors(schema: dict[str, Any], instance: object) -> list[str]:
    if importlib.util.find_spec("jsonschema") is not None:
        jsonschema = importlib.import_module("jsonschema")
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(instance)]
    return _errors(schema, instance, "", schema)


def _errors(
    schema: dict[str, Any], value: object, at: str, root: dict[str, Any] | None = None
) -> list[str]:
    root = schema if root is None else root
    out: list[str] = []
    if "$ref" in schema:  # local references only: "#/properties/to", "#/$defs/..."
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        out += _errors(target, value, at, root)
    for sub in schema.get("allOf", []):
        out += _errors(sub, value, at, root)
    if "anyOf" in schema and all(_errors(s, value, at, root) for s in schema["anyOf"]):
        out.append(f"{at}: {value!r} matches none of anyOf")
    if "oneOf" in schema and sum(not _errors(s, value, at, root) for s in schema["oneOf"]) != 1:
        out.append(f"{at}: {value!r} matches not exactly one of oneOf")
    if "type" in schema and not _TYPES[schema["type"]](value):
        return [*out, f"{at}: {value!r} is not of type {schema['type']}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r} is not one of the enum")
    if "const" in schema and value != schema["const"]:
        out.append(f"{at}: {value!r} is not {schema['const']!r}")
    number = isinstance(value, int) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        out.append(f"{at}: {value} is out of bounds")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            out.append(f"{at}: {value!r} has the wrong length")
        if "format" in schema:
            try:
                _FORMATS[schema["format"]](value)
            except ValueError:
                out.append(f"{at}: {value!r} is not a {schema['format']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1e9):
            out.append(f"{at}: {len(value)} items is out of bounds")
        for i, item in enumerate(value):
            out += _errors(schema.get("items", {}), item, f"{at}[{i}]", root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{at}.{r}: required" for r in schema.get("required", []) if r not in value]
        for key, item in value.items():
            if key in props:
                out += _errors(props[key], item, f"{at}.{key}", root)
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{at}.{key}: not allowed (additionalProperties is false)")
    return out


def _as_json(value: object) -> object:
    """TOML values as JSON would carry them (dates as ISO strings)."""
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return value


# ------------------------------------------------------------------ declared files


def test_declared_file_may_give_size_or_sha256_or_both() -> None:
    digest = "0f" * 32
    meta = parse_metadata(
        toml(
            {
                **REQUIRED,
                "files": f'[{{name = "a.pdf", size = 3}}, {{name = "b.pdf", sha256 = "{digest}"}}]',
            }
        ),
        source=TOML,
    )
    assert meta.files == (
        DeclaredFile(name="a.pdf", size=3),
        DeclaredFile(name="b.pdf", sha256=digest),
    )


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ('[{name = "a.pdf"}]', "neither size nor sha256"),
        ('[{name = "a.pdf", size = 0}]', "greater than or equal to 1"),
        ('[{name = "a.pdf", size = "12"}]', "valid integer"),
        ('[{name = "a.pdf", sha256 = "abc"}]', "pattern"),
        ('[{name = "a.pdf", size = 1, colour = "red"}]', "unknown key"),
        ('[{name = "a.pdf", size = 1}, {name = "A.PDF", size = 2}]', "more than once"),
    ],
    ids=["nothing-declared", "size-zero", "size-as-text", "short-digest", "unknown-key",
         "same-name-twice-ignoring-case"],
)  # fmt: skip
def test_bad_file_declaration_is_refused_in_both_languages(files: str, words: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(toml({**REQUIRED, "files": files}), source=TOML)
    [(field, problem)] = caught.value.problems
    assert field.startswith("files"), field
    assert words in problem
    [zh] = caught.value.problems_zh
    assert re.search("[\u4e00-\u9fff]", zh), zh


# ------------------------------------------------------------------ hostile metadata files
# Each once escaped the spoke's error family (RecursionError, a plain ValueError, a
# pydantic ValidationError while sealing) and stranded its drop in .spoke/work/.


@pytest.mark.parametrize(
    ("data", "source", "words"),
    [
        (b"[" * 1000, JSON, "nest more than"),
        (b'{"to": ' + b"[" * 1000 + b"]" * 1000 + b"}", JSON, "nest more than"),
        (b"to = " + b"[" * 1000, TOML, "nest more than"),
        (b"x = " + b"{a = " * 1000 + b"1" + b"}" * 1000, TOML, "nest more than"),
        (b'{"to": ' + b"1" * 5000 + b"}", JSON, "more than 4300 digits"),
        (b"to = " + b"1" * 5000 + b"\n", TOML, "more than 4300 digits"),
    ],
    ids=["json-arrays", "json-arrays-in-a-field", "toml-arrays", "toml-inline-tables",
         "json-huge-integer", "toml-huge-integer"],
)  # fmt: skip
def test_hostile_metadata_is_a_metadata_error_naming_the_problem(
    data: bytes, source: str, words: str
) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(data, source=source)
    [(_, problem)] = caught.value.problems
    assert words in problem
    assert "sys." not in problem  # no advice meant for Python programmers


def test_brackets_inside_strings_and_comments_do_not_count_as_nesting() -> None:
    title = "[" * 100 + "关于【报告】的通知" + "{" * 100
    meta = parse_metadata(
        toml({**REQUIRED, "title": json.dumps(title)})
        + b"# it's [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        source=TOML,
    )
    assert meta.title == title


@pytest.mark.parametrize("value", ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00+08:00"])
def test_expires_before_1970_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(toml({**REQUIRED, "expires": value}), source=TOML)
    [(field, problem)] = caught.value.problems
    assert field == "expires"
    assert "before 1970" in problem


def test_metadata_in_gbk_is_told_to_be_saved_as_utf8_in_both_languages() -> None:
    data = ('"主送" = "jl.cc"\n"标题" = "关于供暖的通知"\n').encode("gbk")
    with pytest.raises(MetadataError) as caught:
        parse_metadata(data, source=TOML)
    [(_, problem)] = caught.value.problems
    assert "save the file as UTF-8" in problem
    assert "UTF-8 编码保存" in caught.value.problems_zh[0]


@pytest.mark.parametrize("problem_data", [toml({**REQUIRED, "colour": '"red"'}), b"", b"to = ["])
def test_every_problem_has_a_chinese_sentence(problem_data: bytes) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(problem_data, source=TOML)
    assert len(caught.value.problems_zh) == len(caught.value.problems)
    for zh in caught.value.problems_zh:
        assert re.search("[\u4e00-\u9fff]", zh), zh
