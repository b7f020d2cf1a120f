"""The base of every wire record: frozen, strict, no extra fields; errors become PeerErrors."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationError

from schemas.errors import Reason, SchemaError
from schemas.labels import Classification, DocType, Precedence

MAX_WIRE_INT = 2**63 - 1


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a version is an integer, not a boolean")
    return value


# pydantic's strict Literal[1] accepts True (True == 1); the wire does not.
Version1 = Annotated[Literal[1], BeforeValidator(_not_bool)]
# An envelope header: 1 names its recipients, 2 signs the root of their slots (schemas.slots).
HeaderVersion = Annotated[Literal[1, 2], BeforeValidator(_not_bool)]
# A receipt batch: 1 the six transport statuses, 2 the flows' too, with notes (schemas.receipts).
ReceiptVersion = Annotated[Literal[1, 2], BeforeValidator(_not_bool)]


class WireModel(BaseModel):
    """A record that travels as a canonical msgpack map with exactly these keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, what: str) -> Self:
        """Validate a decoded map; any problem is a SchemaError naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SchemaError(Reason.SCHEMA_INVALID, f"{what}: {describe(exc)}") from exc

    def to_wire(self) -> dict[str, Any]:
        """The map to encode; every field is present (None travels as nil)."""
        return self.model_dump(mode="python")


def describe(exc: ValidationError, *, limit: int = 3) -> str:
    """A compact one-line account of a pydantic error: 'field.path: problem; ...'."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"])
        parts.append(f"{loc.replace('.[', '[') or '(record)'}: {err['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


# Labels travel as their exact English names; models hold the enum members.
WireClassification = Annotated[
    Classification,
    BeforeValidator(Classification.from_wire),
    PlainSerializer(lambda c: c.name, return_type=str),
]
WirePrecedence = Annotated[
    Precedence,
    BeforeValidator(Precedence.from_wire),
    PlainSerializer(lambda p: p.name, return_type=str),
]
WireDocType = Annotated[
    DocType,
    BeforeValidator(DocType.from_wire),
    PlainSerializer(lambda d: d.name, return_type=str),
]
