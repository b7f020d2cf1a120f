"""Key files whatever their bytes: a key, or a ValueError naming the file and the problem.

fuzz/fuzz_keys.py found the infinite time (1e400 in JSON) escaping as OverflowError; the
deep nesting (RecursionError) was found probing the same loaders by hand; the range cases
are the rule the fix states.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from schemas.keys import (
    EncryptionKey,
    HubPublicKey,
    PublicKeys,
    SigningKey,
    dump_secret_key,
    load_secret_key,
)

NOW = 1_795_000_000_000
SIGN = SigningKey(bytes(range(32)))
ENC = EncryptionKey(bytes(range(1, 33)))


def _org_file(**changes: object) -> bytes:
    doc = json.loads(PublicKeys("jl.cc", SIGN.public, ENC.public, NOW, NOW + 1).dump())
    doc.update(changes)
    return json.dumps(doc).replace('"INF"', "1e400").encode()


def _hub_file(**changes: object) -> bytes:
    doc = json.loads(HubPublicKey(SIGN.public, NOW, NOW + 1).dump())
    doc.update(changes)
    return json.dumps(doc).replace('"INF"', "1e400").encode()


def _load_org(data: bytes) -> object:
    return PublicKeys.load(data, source="jl.cc.pub.json")


def _load_hub(data: bytes) -> object:
    return HubPublicKey.load(data, source="hub.pub.json")


def _load_secret(data: bytes) -> object:
    return load_secret_key(data, source="jl.cc.sign.key")


@pytest.mark.parametrize(
    ("load", "data", "said"),
    [
        (_load_org, _org_file(not_after="INF"), "not_after must be a time in whole milliseconds"),
        (_load_org, _org_file(not_before="INF"), "not_before must be a time in whole millisec"),
        (_load_hub, _hub_file(not_after="INF"), "not_after must be a time in whole milliseconds"),
        (_load_org, _org_file(not_before=-1), "not_before must be a time in whole milliseconds"),
        (_load_hub, _hub_file(not_before=2**63), "(0 to 2^63-1), not 9223372036854775808"),
        (_load_org, b"[" * 5000, "its JSON nests too deeply"),
        (_load_hub, b'{"a":' * 3000, "its JSON nests too deeply"),
        (_load_secret, b"[" * 5000, "its JSON nests too deeply"),
    ],
    ids=[
        "org_infinite_not_after",
        "org_infinite_not_before",
        "hub_infinite_not_after",
        "org_negative_time",
        "hub_time_beyond_the_wire",
        "org_nested_arrays",
        "hub_nested_objects",
        "secret_nested_arrays",
    ],
)
def test_a_key_file_that_is_no_key_is_refused_with_a_value_error_naming_it(
    load: Callable[[bytes], object], data: bytes, said: str
) -> None:
    with pytest.raises(ValueError, match="key file") as refused:
        load(data)
    assert said in str(refused.value)


def test_key_files_as_written_still_load() -> None:
    assert _load_org(_org_file()) == PublicKeys("jl.cc", SIGN.public, ENC.public, NOW, NOW + 1)
    assert _load_hub(_hub_file()) == HubPublicKey(SIGN.public, NOW, NOW + 1)
    assert _load_secret(dump_secret_key("jl.cc", SIGN)) == ("jl.cc", SIGN)
