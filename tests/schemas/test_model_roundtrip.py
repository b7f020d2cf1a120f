"""Every wire record survives canonical encode and decode unchanged, and encodes one way.

The strategies build valid records of every :class:`WireModel` in ``schemas``: ids per
``schemas.ids``, labels from their enums, times over the whole wire range, text with
Chinese characters. Headers and directories are also consistent (they pass
``check_header`` and ``check_consistent``), so the strategies can serve other tests.
A test enumerates the WireModel subclasses, so a new wire record cannot be added
without a round-trip strategy here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from schemas import codec
from schemas.codec import Limits
from schemas.directory import (
    ChannelEntry,
    Directory,
    GroupEntry,
    HubEntry,
    HubRole,
    KeyEntry,
    OrgEntry,
    OrgLevel,
)
from schemas.dirtree import (
    DELTA_LIMITS,
    ENTRY_LIMITS,
    ROOT_LIMITS,
    DirDelta,
    DirectoryTree,
    DirRoot,
    GroupPage,
    derive_root,
)
from schemas.envelope import (
    CHUNK_OVERHEAD,
    CHUNK_PLAIN,
    SEALED_KEY_BYTES,
    STREAM_HEADER_BYTES,
    BodyDescriptor,
    Header,
    RecipientKey,
    check_header,
)
from schemas.errors import Reason
from schemas.ids import MSG_ID_BYTES, ORG_ID_MAX, check_org_id
from schemas.keys import KeyKind, key_id
from schemas.labels import Classification, DocType, PeriodUnit, Precedence, SecrecyPeriod
from schemas.model import MAX_WIRE_INT, WireModel
from schemas.notes import MAX_NOTE_BYTES
from schemas.receipts import NOTED, REASON_PATTERN, ReceiptBatch, ReceiptEntry, ReceiptStatus
from schemas.seal import MAX_FILE_NAME_BYTES, FileEntry, Inner, check_file_name
from schemas.slots import INLINE_MAX, MAX_SLOTS, SLOT_LIMITS, Slot, SlotsRef
from schemas.terms import Terms

# ---------------------------------------------------------------------------- scalars

millis = st.integers(min_value=0, max_value=MAX_WIRE_INT)
msg_ids = st.binary(min_size=MSG_ID_BYTES, max_size=MSG_ID_BYTES)
sha256s = st.binary(min_size=32, max_size=32)
public_keys = st.binary(min_size=32, max_size=32)
key_ids = st.text("0123456789abcdef", min_size=16, max_size=16)
classifications = st.sampled_from(Classification)
precedences = st.sampled_from(Precedence)
doc_types = st.sampled_from(DocType)
six_digits = st.text("0123456789", min_size=6, max_size=6)

# Any character UTF-8 can carry (no lone surrogates), with Chinese and its punctuation
# drawn often rather than by luck.
_CHINESE = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
_CHARS = st.one_of(
    st.characters(codec="utf-8"),
    _CHINESE,
    st.sampled_from("〔〕，、。：；《》（）★　"),
)


def texts(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(_CHARS, min_size=min_size, max_size=max_size)


# A label: 1-32 of [a-z0-9-], not starting or ending with '-'.
_ORG_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)


@st.composite
def org_ids(draw: st.DrawFn) -> str:
    """Dotted lowercase ids of at most ORG_ID_MAX characters, built to fit (no filtering)."""
    labels = [draw(_ORG_LABEL)]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        room = ORG_ID_MAX - len(".".join(labels)) - 1
        if room < 1:
            break
        labels.append(draw(_ORG_LABEL)[:room].rstrip("-"))  # first char is never '-'
    return check_org_id(".".join(labels))


def org_id_lists(min_size: int = 0, max_size: int = 3) -> st.SearchStrategy[list[str]]:
    return st.lists(org_ids(), min_size=min_size, max_size=max_size, unique=True)


secrecy_periods = st.one_of(
    st.just(SecrecyPeriod.long_term()),
    st.builds(SecrecyPeriod, st.integers(min_value=1, max_value=999), st.sampled_from(PeriodUnit)),
).map(lambda period: period.wire)

# A Reason value or a document-rule id, both matching REASON_PATTERN (at most 64 chars).
reasons = st.one_of(
    st.sampled_from([reason.value for reason in Reason]),
    st.builds(
        lambda head, tail: ".".join([head, *tail]),
        st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
        st.lists(st.from_regex(r"[a-z0-9_]{1,10}", fullmatch=True), min_size=1, max_size=3),
    ),
).filter(lambda reason: len(reason) <= 64 and re.fullmatch(REASON_PATTERN, reason) is not None)

file_names = (
    st.text(
        st.characters(codec="utf-8", exclude_characters="/\\\x00").filter(str.isprintable)
        | _CHINESE,
        min_size=1,
        max_size=90,
    )
    .filter(lambda name: name not in {".", ".."})
    .filter(lambda name: len(name.encode("utf-8")) <= MAX_FILE_NAME_BYTES)
    .map(check_file_name)
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int]:
    """A key validity window: not_before < not_after, anywhere in the wire range."""
    not_before = draw(st.integers(min_value=0, max_value=MAX_WIRE_INT - 1))
    return not_before, draw(st.integers(min_value=not_before + 1, max_value=MAX_WIRE_INT))


# ---------------------------------------------------------------------------- envelope


recipient_keys = st.builds(
    RecipientKey,
    kid=key_ids,
    box=st.binary(min_size=SEALED_KEY_BYTES, max_size=SEALED_KEY_BYTES),
)


@st.composite
def body_descriptors(draw: st.DrawFn) -> BodyDescriptor:
    """The descriptor of a real chunk stream of 1 or more plaintext bytes."""
    plain = draw(st.integers(min_value=1, max_value=2**62))
    chunks = -(-plain // CHUNK_PLAIN)
    size = STREAM_HEADER_BYTES + plain + CHUNK_OVERHEAD * chunks
    return BodyDescriptor(size=size, chunk=CHUNK_PLAIN, sha256=draw(sha256s))


@st.composite
def headers(draw: st.DrawFn) -> Header:
    """A header check_header accepts: distinct recipients, a sealed key for each, labels
    that fit the classification, copy numbers only for recipients and never shared."""
    sender, *recipients = draw(org_id_lists(min_size=2, max_size=6))
    split = draw(st.integers(min_value=1, max_value=len(recipients)))
    classification = draw(classifications)
    created_at = draw(millis)
    numbered = draw(st.lists(st.sampled_from(recipients), unique=True))
    numbers = draw(
        st.lists(six_digits, min_size=len(numbered), max_size=len(numbered), unique=True)
    )
    expires_after = st.integers(min_value=created_at + 1, max_value=MAX_WIRE_INT)
    doc_type = draw(doc_types)
    return Header(
        v=1,
        msg_id=draw(msg_ids),
        sender=sender,
        sender_kid=draw(key_ids),
        to=tuple(recipients[:split]),
        cc=tuple(recipients[split:]),
        classification=classification,
        precedence=draw(precedences),
        doc_type=doc_type,
        created_at=created_at,
        expires_at=draw(st.none() | expires_after) if created_at < MAX_WIRE_INT else None,
        in_reply_to=draw(st.none() | msg_ids),
        dir_version=draw(st.integers(min_value=1, max_value=MAX_WIRE_INT)),
        doc_number=draw(st.none() | texts(1, 64)),
        signatory=draw(st.none() | texts(1, 64)),
        secrecy_period=(
            draw(st.none() | secrecy_periods) if classification.is_state_secret else None
        ),
        copy_numbers=dict(zip(numbered, numbers, strict=True)),
        directive=draw(st.booleans()),
        keys={org: draw(recipient_keys) for org in recipients},
        terms=draw(st.none() | terms_for(doc_type, created_at))
        if created_at < MAX_WIRE_INT - 10
        else None,
    )


@st.composite
def terms_for(draw: st.DrawFn, doc_type: DocType, created_at: int) -> Terms:
    """Terms check_header accepts for a document of ``doc_type`` sealed at ``created_at``:
    deadlines after it, a petition's case and accept_by, an emergency's drill."""
    later = st.integers(min_value=created_at + 1, max_value=MAX_WIRE_INT)
    petition = doc_type is DocType.PETITION
    done_by = draw(st.none() | later)
    accept_by = None
    if petition:
        top = MAX_WIRE_INT if done_by is None else done_by
        accept_by = draw(st.none() | st.integers(min_value=created_at + 1, max_value=top))
    sign_by = draw(st.none() | later)
    case = draw(st.none() | st.from_regex(r"[0-9A-Z]{1,20}", fullmatch=True)) if petition else None
    drill = doc_type is DocType.EMERGENCY and draw(st.booleans())
    if (sign_by, done_by, case, accept_by, drill) == (None, None, None, None, False):
        sign_by = created_at + 1  # terms that set nothing are left out of the header
    return Terms(sign_by=sign_by, done_by=done_by, case=case, accept_by=accept_by, drill=drill)


slots = st.builds(
    Slot,
    org=org_ids(),
    role=st.sampled_from(["to", "cc"]),
    copy_no=st.none() | six_digits,
    kid=key_ids,
    box=st.binary(min_size=SEALED_KEY_BYTES, max_size=SEALED_KEY_BYTES),
)
slots_refs = st.builds(
    SlotsRef, root=sha256s, count=st.integers(min_value=INLINE_MAX + 1, max_value=MAX_SLOTS)
)


# ---------------------------------------------------------------------------- seal

file_entries = st.builds(
    FileEntry,
    name=file_names,
    type=texts(1, 127),
    size=st.integers(min_value=0, max_value=2**53),
    sha256=sha256s,
)

inners = st.builds(
    Inner,
    v=st.just(1),
    msg_id=msg_ids,
    sender=org_ids(),
    to=org_id_lists(min_size=1).map(tuple),
    cc=org_id_lists().map(tuple),
    classification=classifications,
    title=texts(1, 1000),
    date=st.none() | st.dates(min_value=date(1, 1, 1)).map(date.isoformat),
    files=st.lists(file_entries, min_size=1, max_size=4, unique_by=lambda f: f.name).map(tuple),
)


# ---------------------------------------------------------------------------- receipts


@st.composite
def receipt_entries(draw: st.DrawFn) -> ReceiptEntry:
    """REJECTED, DEAD and REFUSED always explain themselves; other statuses may or may not;
    a RECALL speaks of no recipient; a flow statement may carry a note."""
    status = draw(st.sampled_from(ReceiptStatus))
    explained = status in {
        ReceiptStatus.REJECTED,
        ReceiptStatus.DEAD,
        ReceiptStatus.REFUSED,
        ReceiptStatus.REMINDED,
    } or draw(st.booleans())
    noted = status in NOTED and draw(st.booleans())
    return ReceiptEntry(
        msg_id=draw(st.none() | msg_ids),
        recipient=None if status.issued_by_sender else draw(st.none() | org_ids()),
        status=status,
        at=draw(millis),
        subject=draw(sha256s),
        classification=draw(classifications),
        reason=draw(reasons) if explained else None,
        detail=draw(texts(1, 2000)) if explained else None,
        retriable=draw(st.booleans()),
        note=draw(st.binary(min_size=41, max_size=MAX_NOTE_BYTES)) if noted else None,
    )


@st.composite
def receipt_batches(draw: st.DrawFn) -> ReceiptBatch:
    """Version 2 exactly when an entry has a flow status or a note."""
    entries = tuple(draw(st.lists(receipt_entries(), min_size=1, max_size=4)))
    flows = any(e.status.flow or e.note is not None for e in entries)
    return ReceiptBatch(
        v=2 if flows else 1,
        issuer=draw(org_ids()),
        issuer_kid=draw(key_ids),
        at=draw(millis),
        entries=entries,
    )


# ---------------------------------------------------------------------------- directory

short_texts = texts(1, 200)
org_levels = st.sampled_from(OrgLevel)
admin_codes = st.none() | six_digits


@st.composite
def key_entries(
    draw: st.DrawFn, kind: KeyKind | None = None, public: bytes | None = None
) -> KeyEntry:
    """A key entry whose kid names its public key (as check_consistent demands)."""
    kind = draw(st.sampled_from(KeyKind)) if kind is None else kind
    public = draw(public_keys) if public is None else public
    not_before, not_after = draw(windows())
    return KeyEntry(
        kid=key_id(kind, public), public=public, not_before=not_before, not_after=not_after
    )


channel_entries = st.builds(ChannelEntry, id=org_ids(), name=short_texts, ceiling=classifications)

org_entries = st.builds(
    OrgEntry,
    id=org_ids(),
    name_zh=short_texts,
    name_en=short_texts,
    level=org_levels,
    parent=st.none() | org_ids(),
    code=admin_codes,
    clearance=classifications,
    channels=org_id_lists().map(tuple),
    sign_keys=st.lists(key_entries(KeyKind.SIGN), max_size=2).map(tuple),
    enc_keys=st.lists(key_entries(KeyKind.ENCRYPT), max_size=2).map(tuple),
    directive_to=org_id_lists().map(tuple),
    congress_of=st.none() | org_ids(),
    via=st.none() | org_ids(),
)

group_entries = st.builds(
    GroupEntry,
    id=org_ids(),
    name_zh=short_texts,
    name_en=short_texts,
    members=org_id_lists().map(tuple),
)


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    """A small directory check_consistent accepts: every reference resolves, parents form
    a forest (a parent is listed before its child), every kid names its key, no kid twice."""
    hub_id, upstream_id, *ids = draw(org_id_lists(min_size=2, max_size=6))
    federated = draw(st.booleans())  # a member hub: an upstream, some organisations through it
    channel_ids = draw(org_id_lists(max_size=3))
    channels = tuple(
        ChannelEntry(id=c, name=draw(short_texts), ceiling=draw(classifications))
        for c in channel_ids
    )
    key_counts = [
        (draw(st.integers(min_value=0, max_value=2)), draw(st.integers(min_value=0, max_value=2)))
        for _ in ids
    ]
    hub_key_count = draw(st.integers(min_value=1, max_value=2))
    total = 1 + hub_key_count + sum(signs + encs for signs, encs in key_counts)
    publics = iter(draw(st.lists(public_keys, min_size=total, max_size=total, unique=True)))
    hub_keys = tuple(draw(key_entries(KeyKind.SIGN, next(publics))) for _ in range(hub_key_count))
    orgs: list[OrgEntry] = []
    for org_id, (signs, encs) in zip(ids, key_counts, strict=True):
        # a congress has no parent and is no one's parent; it names a government before it
        governments = [o.id for o in orgs if o.level.is_government]
        others = [o.id for o in orgs if o.level is not OrgLevel.CONGRESS]
        level = draw(st.sampled_from([v for v in OrgLevel if governments or v.is_government]))
        congress = level is OrgLevel.CONGRESS
        parents = st.none() if congress or not others else st.none() | st.sampled_from(others)
        orgs.append(
            OrgEntry(
                id=org_id,
                name_zh=draw(short_texts),
                name_en=draw(short_texts),
                level=level,
                parent=draw(parents),
                code=draw(admin_codes),
                clearance=draw(classifications),
                channels=tuple(draw(st.lists(st.sampled_from(channel_ids), unique=True)))
                if channel_ids
                else (),
                sign_keys=tuple(
                    draw(key_entries(KeyKind.SIGN, next(publics))) for _ in range(signs)
                ),
                enc_keys=tuple(
                    draw(key_entries(KeyKind.ENCRYPT, next(publics))) for _ in range(encs)
                ),
                directive_to=tuple(draw(st.lists(st.sampled_from(ids), unique=True, max_size=2))),
                congress_of=draw(st.sampled_from(governments)) if congress else None,
                via=upstream_id if federated and draw(st.booleans()) else None,
            )
        )
    members = st.lists(st.sampled_from(ids), unique=True, max_size=3) if ids else st.just([])
    groups = tuple(
        GroupEntry(
            id=g,
            name_zh=draw(short_texts),
            name_en=draw(short_texts),
            members=tuple(draw(members)),
        )
        for g in draw(org_id_lists(max_size=2))
    )
    listed = [k.kid for k in hub_keys] + [k.kid for o in orgs for k in (*o.sign_keys, *o.enc_keys)]
    revoked = draw(st.lists(key_ids | st.sampled_from(listed), max_size=2, unique=True))
    issued_at = draw(st.integers(min_value=0, max_value=MAX_WIRE_INT - 1))
    return Directory(
        v=1,
        hub_id=hub_id,
        version=draw(st.integers(min_value=1, max_value=MAX_WIRE_INT)),
        issued_at=issued_at,
        expires_at=draw(st.integers(min_value=issued_at + 1, max_value=MAX_WIRE_INT)),
        hub_keys=hub_keys,
        channels=channels,
        orgs=tuple(orgs),
        revoked=tuple(revoked),
        groups=groups,
        hubs=(
            HubEntry(
                id=upstream_id,
                name_zh=draw(short_texts),
                name_en=draw(short_texts),
                role=HubRole.UPSTREAM,
                prefixes=(),
                channels=tuple(channel_ids),
                keys=(draw(key_entries(KeyKind.SIGN, next(publics))),),
                via=None,
            ),
        )
        if federated
        else (),
    )


hub_entries = st.builds(
    HubEntry,
    id=org_ids(),
    name_zh=short_texts,
    name_en=short_texts,
    role=st.sampled_from(HubRole),
    prefixes=org_id_lists().map(tuple),
    channels=org_id_lists().map(tuple),
    keys=st.lists(key_entries(KeyKind.SIGN), max_size=2).map(tuple),
    via=st.none() | org_ids(),
)


dir_roots = directories().map(
    lambda d: derive_root(d, bytes(32), DirectoryTree.of(d))
)  # a root is a function of its directory
dir_deltas = st.builds(
    DirDelta,
    v=st.just(1),
    version=st.integers(min_value=2, max_value=MAX_WIRE_INT),
    prior=st.integers(min_value=1, max_value=MAX_WIRE_INT),
    prior_root=sha256s,
    root=sha256s,
    changed=org_id_lists().map(tuple),
)
group_pages = st.builds(
    GroupPage,
    id=org_ids(),
    name_zh=short_texts,
    name_en=short_texts,
    page=st.integers(min_value=0, max_value=999_999),
    pages=st.integers(min_value=1, max_value=1_000_000),
    members=org_id_lists().map(tuple),
)


# ---------------------------------------------------------------------------- the table

# Every wire record, a strategy for valid instances and the limits of the record that
# carries it on the wire (nested records are decoded within their parent's limits).
ROUND_TRIPS: dict[type[WireModel], tuple[st.SearchStrategy[WireModel], Limits]] = {
    Header: (headers(), codec.HEADER_LIMITS),
    Terms: (terms_for(DocType.PETITION, 0), codec.HEADER_LIMITS),
    RecipientKey: (recipient_keys, codec.HEADER_LIMITS),
    BodyDescriptor: (body_descriptors(), codec.HDR_LIMITS),
    FileEntry: (file_entries, codec.INNER_LIMITS),
    Inner: (inners, codec.INNER_LIMITS),
    ReceiptEntry: (receipt_entries(), codec.RECEIPT_LIMITS),
    ReceiptBatch: (receipt_batches(), codec.RECEIPT_LIMITS),
    KeyEntry: (key_entries(), codec.DIRECTORY_LIMITS),
    ChannelEntry: (channel_entries, codec.DIRECTORY_LIMITS),
    OrgEntry: (org_entries, codec.DIRECTORY_LIMITS),
    GroupEntry: (group_entries, codec.DIRECTORY_LIMITS),
    HubEntry: (hub_entries, codec.DIRECTORY_LIMITS),
    Directory: (directories(), codec.DIRECTORY_LIMITS),
    DirRoot: (dir_roots, ROOT_LIMITS),
    DirDelta: (dir_deltas, DELTA_LIMITS),
    GroupPage: (group_pages, ENTRY_LIMITS),
    Slot: (slots, SLOT_LIMITS),
    SlotsRef: (slots_refs, codec.HEADER_LIMITS),
}
MODELS = list(ROUND_TRIPS)
MODEL_IDS = [model.__name__ for model in MODELS]

ROUND_TRIP_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _schemas_wire_models() -> set[type[WireModel]]:
    """Every WireModel subclass defined in the schemas package, at any depth."""
    for module in pkgutil.iter_modules(schemas.__path__, prefix="schemas."):
        importlib.import_module(module.name)
    found: set[type[WireModel]] = set()
    pending = list(WireModel.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    # Tests define their own records (test_ids.Addressed); only the wire contract counts.
    return {cls for cls in found if cls.__module__.split(".")[0] == "schemas"}


# ---------------------------------------------------------------------------- tests


def test_every_wire_record_in_schemas_has_a_round_trip_strategy() -> None:
    defined = _schemas_wire_models()
    missing = sorted(cls.__qualname__ for cls in defined - set(ROUND_TRIPS))
    assert not missing, f"add a strategy to ROUND_TRIPS for: {', '.join(missing)}"
    stale = sorted(cls.__qualname__ for cls in set(ROUND_TRIPS) - defined)
    assert not stale, f"ROUND_TRIPS lists records schemas no longer defines: {stale}"


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@ROUND_TRIP_SETTINGS
@given(data=st.data())
def test_every_wire_record_survives_encode_and_decode_unchanged(
    model: type[WireModel], data: st.DataObject
) -> None:
    strategy, limits = ROUND_TRIPS[model]
    record = data.draw(strategy, label=model.__name__)
    assert type(record) is model

    decoded = model.from_wire(codec.decode_map(codec.encode(record.to_wire()), limits), what="x")

    assert type(decoded) is model
    assert decoded == record


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
@ROUND_TRIP_SETTINGS
@given(data=st.data())
def test_every_wire_record_has_exactly_one_encoding(
    model: type[WireModel], data: st.DataObject
) -> None:
    strategy, limits = ROUND_TRIPS[model]
    record = data.draw(strategy, label=model.__name__)

    encoded = codec.encode(record.to_wire())

    assert codec.encode(record.to_wire()) == encoded
    assert codec.encode(model.model_validate(record.to_wire()).to_wire()) == encoded
    decoded = model.from_wire(codec.decode_map(encoded, limits), what="x")
    assert codec.encode(decoded.to_wire()) == encoded


@settings(max_examples=50, deadline=None)
@given(header=headers(), body=body_descriptors())
def test_generated_headers_and_bodies_pass_the_envelope_consistency_checks(
    header: Header, body: BodyDescriptor
) -> None:
    check_header(header, body)  # raises EnvelopeError if the strategies drifted


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(directory=directories())
def test_generated_directories_pass_the_consistency_check(directory: Directory) -> None:
    directory.check_consistent()  # raises DirectoryError if the strategy drifted


# A fixed header whose labels the next test replaces one at a time.
_PLAIN_HEADER = Header(
    v=1,
    msg_id=bytes(MSG_ID_BYTES),
    sender="jl.gov",
    sender_kid="0123456789abcdef",
    to=("jl.cc",),
    cc=(),
    classification=Classification.PUBLIC,
    precedence=Precedence.ROUTINE,
    doc_type=DocType.NOTICE,
    created_at=0,
    expires_at=None,
    in_reply_to=None,
    dir_version=1,
    doc_number="吉政发〔2026〕1号",
    signatory=None,
    secrecy_period=None,
    copy_numbers={},
    directive=False,
    keys={"jl.cc": RecipientKey(kid="fedcba9876543210", box=bytes(SEALED_KEY_BYTES))},
)


@pytest.mark.parametrize(
    ("field", "label"),
    [
        *(("classification", label) for label in Classification),
        *(("precedence", label) for label in Precedence),
        *(("doc_type", label) for label in DocType),
    ],
    ids=str,
)
def test_every_label_travels_as_its_exact_english_name_and_comes_back_as_itself(
    field: str, label: Classification | Precedence | DocType
) -> None:
    header = Header.model_validate({**_PLAIN_HEADER.to_wire(), field: label.name})

    wire = codec.decode_map(codec.encode(header.to_wire()), codec.HEADER_LIMITS)

    assert wire[field] == label.name
    assert getattr(Header.from_wire(wire, what="header"), field) is label
