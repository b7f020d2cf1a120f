"""Canonical msgpack: one encoding per value, strict limits on every decode.

Canonical form (docs/wire-format.md, "Canonical msgpack"):

- allowed types: nil, bool, int (-2**63 .. 2**64-1), str (UTF-8), bin, array, map;
  no float, no ext (msgpack's timestamp included);
- every int, str, bin, array and map uses the shortest header that fits its value
  (what msgpack-python emits);
- map keys are str, unique, sorted by their UTF-8 bytes.

A decoder accepts bytes only if re-encoding what it decoded gives the same bytes, so two
implementations that agree on values agree on bytes, and a signature over bytes is a
signature over values.

Every decode checks the total size before anything else, then passes explicit limits to
msgpack (``max_bin_len``, ``max_str_len``, ``max_array_len``, ``max_map_len``,
``max_ext_len=0``), then checks nesting depth. A 100-byte input claiming a 100 MB string
is refused before any allocation; any failure is a :class:`DecodeError` with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from schemas.errors import DecodeError, Reason, SchemaError, UsageError

_SCALARS = (bool, int, str, bytes)
MAX_DEPTH = 64  # deepest nesting encode() produces; Limits may only ask for less
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Decode limits for one kind of record. Every field is an upper bound."""

    name: str
    max_size: int
    max_str: int
    max_bin: int
    max_array: int
    max_map: int
    max_depth: int

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= MAX_DEPTH:
            raise UsageError(f"max_depth must be 1..{MAX_DEPTH}, not {self.max_depth}")


# One set of limits per record kind; callers pick the one for what they expect.
FRAME_LIMITS = Limits("envelope frame", 512 * 1024, 256, 512 * 1024, 16, 16, 2)
HDR_LIMITS = Limits("signed header", 512 * 1024, 256, 512 * 1024, 16, 16, 2)  # {core, body}
HEADER_LIMITS = Limits("header", 512 * 1024, 4096, 1024, 4096, 4096, 4)  # the core
INNER_LIMITS = Limits("inner record", 1024 * 1024, 64 * 1024, 1024, 10_000, 10_000, 4)
DIRECTORY_FRAME_LIMITS = Limits("directory frame", 8 * 1024 * 1024, 256, 8 * 1024 * 1024, 16, 16, 2)
DIRECTORY_LIMITS = Limits("directory", 8 * 1024 * 1024, 4096, 1024, 100_000, 100_000, 6)
# The whole directory as the hub reads its own file (spokes take its root and entries,
# schemas.dirtree): a national one, with room to grow.
DIRECTORY_FILE_FRAME_LIMITS = Limits(
    "directory file", 256 * 1024 * 1024, 256, 256 * 1024 * 1024, 16, 16, 2
)
DIRECTORY_FILE_LIMITS = Limits(
    "directory file's directory", 256 * 1024 * 1024, 4096, 1024, 1_000_000, 1_000_000, 6
)
RECEIPT_FRAME_LIMITS = Limits("receipt frame", 2 * 1024 * 1024, 256, 2 * 1024 * 1024, 16, 16, 2)
RECEIPT_LIMITS = Limits("receipt batch", 2 * 1024 * 1024, 8192, 8192, 10_000, 10_000, 4)


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically. Raises UsageError for a type the wire forbids."""
    try:
        return msgpack.packb(_canonical(value, 0), use_bin_type=True)  # type: ignore[no-any-return]
    except UnicodeEncodeError as exc:
        raise UsageError(f"a str is not encodable as UTF-8 ({exc.reason}); clean it first") from exc


_AS_IS = frozenset({str, bytes, bool, type(None)})


def _canonical(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _AS_IS:  # the common case first, by exact type (the isinstance chain below
        return value  # is for subclasses: a StrEnum is a str)
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise UsageError(f"integer {value} does not fit msgpack's 64-bit range")
        return value
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise UsageError(f"value nests deeper than {MAX_DEPTH} levels")
        if kind is dict:
            return _canonical_map(value, depth)
        return [_canonical(v, depth + 1) for v in value]
    # bool before int: bool is an int subclass and must stay a msgpack bool.
    if isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise UsageError(f"integer {value} does not fit msgpack's 64-bit range")
        return value
    if depth >= MAX_DEPTH:
        raise UsageError(f"value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return _canonical_map(value, depth)
    raise UsageError(f"type {type(value).__name__} is not allowed on the wire")


def _canonical_map(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    for k in value:
        if not isinstance(k, str):
            raise UsageError(f"map key {k!r} is not a str; the wire allows only str keys")
    return {k: _canonical(value[k], depth + 1) for k in sorted(value)}


def decode(data: bytes, limits: Limits) -> Any:
    """Decode one canonical msgpack value from ``data`` within ``limits``."""
    what = limits.name
    if len(data) > limits.max_size:
        raise DecodeError(
            Reason.DECODE_TOO_LARGE,
            f"{what} is {len(data)} bytes; the limit is {limits.max_size} bytes",
        )
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,  # arrays become tuples: immutable, and strict models take them
            strict_map_key=True,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(
            Reason.DECODE_TRAILING_BYTES, f"{what} has bytes after its single value"
        ) from exc
    except msgpack.StackError as exc:
        raise DecodeError(Reason.DECODE_TOO_DEEP, f"{what} nests too deeply") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError(Reason.DECODE_MALFORMED, f"{what} has a str that is not UTF-8") from exc
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        text = str(exc)
        if "max_ext_len" in text or "not allowed for map key" in text:
            raise DecodeError(
                Reason.DECODE_FORBIDDEN_TYPE,
                f"{what} contains an ext value or a map key that is not a str "
                f"({text}); only nil, bool, int, str, bin, array and str-keyed maps are allowed",
            ) from exc
        if "exceeds max" in text:
            raise DecodeError(Reason.DECODE_LIMIT, f"{what}: {text}") from exc
        if "incomplete input" in text:
            raise DecodeError(
                Reason.DECODE_MALFORMED,
                f"{what} is truncated: a length in it claims more than the {len(data)} bytes given",
            ) from exc
        raise DecodeError(Reason.DECODE_MALFORMED, f"{what} is not valid msgpack ({text})") from exc
    _check_shape(value, 1, limits)
    # _check_shape allowed only canonical types and sorted keys, so packing the value as it
    # is equals encode(value), without building a sorted copy of every container first.
    if msgpack.packb(value, use_bin_type=True) != data:
        raise DecodeError(
            Reason.DECODE_NON_CANONICAL,
            f"{what} is valid msgpack but not in canonical form "
            "(map keys sorted and unique, shortest headers)",
        )
    return value


def _check_shape(value: Any, depth: int, limits: Limits) -> None:
    kind = type(value)
    if value is None or kind in _SCALARS:
        return
    if depth > limits.max_depth and kind in (tuple, dict):
        raise DecodeError(
            Reason.DECODE_TOO_DEEP,
            f"{limits.name} nests deeper than {limits.max_depth} levels",
        )
    if kind is tuple:  # exactly: msgpack's ExtType is a namedtuple and must not pass
        for item in value:
            _check_shape(item, depth + 1, limits)
        return
    if kind is dict:
        previous = ""
        for key, item in value.items():
            if type(key) is not str:
                raise DecodeError(
                    Reason.DECODE_FORBIDDEN_TYPE, f"{limits.name} has a map key that is not a str"
                )
            if key < previous:  # code point order is UTF-8 byte order; "" sorts first
                raise DecodeError(
                    Reason.DECODE_NON_CANONICAL,
                    f"{limits.name} is valid msgpack but not in canonical form "
                    "(map keys sorted and unique, shortest headers)",
                )
            previous = key
            _check_shape(item, depth + 1, limits)
        return
    raise DecodeError(
        Reason.DECODE_FORBIDDEN_TYPE,
        f"{limits.name} contains a {type(value).__name__}; "
        "only nil, bool, int, str, bin, array and map are allowed",
    )


def decode_frame(data: bytes, limits: Limits, fields: dict[str, type]) -> dict[str, Any]:
    """Decode a signed frame: ``{"v": 1, ...fields}``, every field of its exact type.

    A wrong version is SCHEMA_VERSION; missing, extra or mistyped fields SCHEMA_INVALID.
    """
    outer = decode_map(data, limits)
    version = outer.get("v")
    if type(version) is not int or version != 1:
        raise SchemaError(
            Reason.SCHEMA_VERSION, f"{limits.name} version {version!r} is not supported (want 1)"
        )
    if set(outer) != {"v", *fields}:
        raise SchemaError(
            Reason.SCHEMA_INVALID,
            f"{limits.name} has keys {sorted(outer)}; want {sorted({'v', *fields})}",
        )
    for name, kind in fields.items():
        if type(outer[name]) is not kind:
            raise SchemaError(
                Reason.SCHEMA_INVALID, f"{limits.name} field {name!r} must be {kind.__name__}"
            )
    return outer


def decode_map(data: bytes, limits: Limits) -> dict[str, Any]:
    """Decode and require a map at the top level."""
    value = decode(data, limits)
    if not isinstance(value, dict):
        raise DecodeError(
            Reason.DECODE_MALFORMED,
            f"{limits.name} must be a msgpack map, not {type(value).__name__}",
        )
    return value
