"""The operator's key commands: ``spoke keygen --rotate``, ``hubctl directory build
--overlap``, ``hubctl keys revoke`` and ``hubctl keys list``.

Everything runs as the operator types it (typer's runner), in folders under tmp_path, with
the real clock: a directory build takes one ``now`` for every window it sets, so windows
are compared with the directory's own ``issued_at``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import Result

from hubd.provision.revocations import load_register, register_path
from runtime.clock import now_ms
from runtime.files import load_encryption_key, load_signing_key
from schemas.clock import DAY_MS, HOUR_MS
from schemas.directory import Directory, KeyEntry
from schemas.errors import Reason, SignatureError
from schemas.keys import PublicKeys
from tests.test_key_tools import Site, hubctl, keygen, ok


def rotate(site: Site, org: str) -> PublicKeys:
    """``spoke keygen --rotate`` on the organisation's server, then the new public key file
    handed to the operator (copied into the keys folder)."""
    folder = site.root / "spokes" / org
    before = set(folder.glob("*.pub.json"))
    ok(keygen(org, folder, "--rotate"))
    (new,) = set(folder.glob("*.pub.json")) - before
    (site.keys / new.name).write_bytes(new.read_bytes())
    return PublicKeys.load(new.read_bytes(), source=str(new))


def sign_window(directory: Directory, org: str, kid: str) -> KeyEntry:
    entry = directory.org(org)
    assert entry is not None
    return next(k for k in entry.sign_keys if k.kid == kid)


def enc_window(directory: Directory, org: str, kid: str) -> KeyEntry:
    entry = directory.org(org)
    assert entry is not None
    return next(k for k in entry.enc_keys if k.kid == kid)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    built = Site(tmp_path)
    ok(built.build())
    return built


# ---------------------------------------------------------------- spoke keygen --rotate


def test_keygen_rotate_writes_a_new_pair_beside_the_old_one_named_by_key_id(site: Site) -> None:
    folder = site.root / "spokes" / "t.pa"
    old = {p.name: p.read_bytes() for p in folder.iterdir()}

    result = ok(keygen("t.pa", folder, "--rotate"))

    new = {p.name for p in folder.iterdir()} - set(old)
    assert len(new) == 3
    (sign,) = (n for n in new if n.startswith("t.pa.sign."))
    (enc,) = (n for n in new if n.startswith("t.pa.enc."))
    (pub,) = (n for n in new if n.endswith(".pub.json"))
    _, signing = load_signing_key(folder / sign)
    _, encryption = load_encryption_key(folder / enc)
    assert sign == f"t.pa.sign.{signing.kid}.key"
    assert enc == f"t.pa.enc.{encryption.kid}.key"
    assert pub == f"t.pa.{signing.kid}.pub.json"
    for name in (sign, enc):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in old} == old
    assert "keeps signing with the old key until" in result.stdout


def test_keygen_rotate_without_keys_to_rotate_says_how_to_start(tmp_path: Path) -> None:
    result = keygen("t.pa", tmp_path / "empty", "--rotate")

    assert result.exit_code == 2
    assert "holds no keys of t.pa to rotate" in result.stderr
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_keygen_rotate_and_force_together_are_refused(site: Site) -> None:
    folder = site.root / "spokes" / "t.pa"
    before = sorted(p.name for p in folder.iterdir())

    result = keygen("t.pa", folder, "--rotate", "--force")

    assert result.exit_code == 2
    assert "pick one" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


# ---------------------------------------------------------------- directory build --overlap


def test_build_rotates_a_new_key_in_from_now_and_closes_the_old_after_the_overlap(
    site: Site,
) -> None:
    old = PublicKeys.load((site.keys / "t.pa.pub.json").read_bytes(), source="old")
    new = rotate(site, "t.pa")

    result = ok(site.build("--overlap", "36h"))

    d = site.read().directory
    assert d.version == 2
    assert sign_window(d, "t.pa", new.sign_kid).not_before == d.issued_at
    assert sign_window(d, "t.pa", new.sign_kid).not_after == new.not_after
    assert sign_window(d, "t.pa", old.sign_kid).not_after == d.issued_at + 36 * HOUR_MS
    assert enc_window(d, "t.pa", old.enc_kid).not_after == d.issued_at + 36 * HOUR_MS
    assert enc_window(d, "t.pa", new.enc_kid).not_before == d.issued_at
    assert f"t.pa signing key {new.sign_kid}: rotated in" in result.stdout
    assert f"t.pa signing key {old.sign_kid}: closing, now valid until" in result.stdout
    assert f"t.pa encryption key {old.enc_kid}: closing" in result.stdout
    assert "systemctl reload hubd" in result.stdout
    # the old key signs until the overlap ends, then is refused naming its window
    assert d.signing_key("t.pa", old.sign_kid, d.issued_at + 36 * HOUR_MS - 1)
    with pytest.raises(SignatureError) as info:
        d.signing_key("t.pa", old.sign_kid, d.issued_at + 36 * HOUR_MS)
    assert info.value.reason is Reason.SIG_KEY_EXPIRED
    assert old.sign_kid in info.value.message


def test_the_default_overlap_is_seven_days(site: Site) -> None:
    old = PublicKeys.load((site.keys / "t.pa.pub.json").read_bytes(), source="old")
    rotate(site, "t.pa")

    ok(site.build())

    d = site.read().directory
    assert sign_window(d, "t.pa", old.sign_kid).not_after == d.issued_at + 7 * DAY_MS


def test_a_later_build_keeps_the_rotated_windows_and_reports_no_change(site: Site) -> None:
    old = PublicKeys.load((site.keys / "t.pa.pub.json").read_bytes(), source="old")
    rotate(site, "t.pa")
    ok(site.build("--overlap", "2d"))
    v2 = site.read().directory

    result = ok(site.build("--overlap", "0"))

    v3 = site.read().directory
    assert v3.version == 3
    assert sign_window(v3, "t.pa", old.sign_kid) == sign_window(v2, "t.pa", old.sign_kid)
    assert "closing" not in result.stdout
    assert "rotated in" not in result.stdout


def test_a_bad_overlap_is_refused_naming_it_and_nothing_is_written(site: Site) -> None:
    before = site.out.read_bytes()

    result = site.build("--overlap", "a week")

    assert result.exit_code == 2
    assert "--overlap 'a week' is not a duration" in result.stderr
    assert site.out.read_bytes() == before


# ---------------------------------------------------------------- hubctl keys revoke


def revoke(site: Site, kid: str, reason: str = "server stolen", *extra: str) -> Result:
    return hubctl(
        "keys",
        "revoke",
        kid,
        "--reason",
        reason,
        "--topology",
        str(site.topology),
        "--keys",
        str(site.keys),
        "--hub-key",
        str(site.hub / "hub.sign.key"),
        "--out",
        str(site.out),
        *extra,
    )


def test_revoke_records_why_and_signs_the_next_directory_listing_the_key(site: Site) -> None:
    kid = site.sign_kid("t.pa.x")
    rotate(site, "t.pa.x")
    ok(site.build())  # the successor is listed first

    result = revoke(site, kid, "服务器被盗 server stolen")

    assert result.exit_code == 0, result.output
    d = site.read().directory
    assert d.version == 3
    assert d.revoked == (kid,)
    with pytest.raises(SignatureError) as info:
        d.signing_key("t.pa.x", kid, now_ms())
    assert info.value.reason is Reason.SIG_KEY_REVOKED
    (entry,) = load_register(register_path(site.out))
    assert (entry.kid, entry.org, entry.kind, entry.reason) == (
        kid,
        "t.pa.x",
        "signing",
        "服务器被盗 server stolen",
    )
    assert f"revoked signing key {kid} of t.pa.x: 服务器被盗 server stolen" in result.stdout
    assert f"key {kid} (t.pa.x): revoked" in result.stdout
    assert "systemctl reload hubd" in result.stdout
    assert "no other valid" not in result.stderr


def test_revoking_the_only_key_warns_that_the_organisation_cannot_send(site: Site) -> None:
    kid = site.sign_kid("t.pa.x")

    result = revoke(site, kid)

    assert result.exit_code == 0
    assert "t.pa.x has no other valid signing key now: it cannot send" in result.stderr
    assert "spoke keygen --org t.pa.x --rotate" in result.stderr


def test_the_register_keeps_a_revocation_when_the_directory_is_moved_aside(site: Site) -> None:
    kid = site.sign_kid("t.pa.x")
    ok(revoke(site, kid))
    site.out.rename(site.out.with_name("directory.bin.damaged"))

    ok(site.build("--version", "10"))

    assert site.read().directory.revoked == (kid,)


@pytest.mark.parametrize(
    ("kid", "reason", "says"),
    [
        ("0123456789abcdef", "stolen", "no organisation key has this id"),
        ("NOTAKEY", "stolen", "must be 16 lowercase hex digits"),
        (None, "   ", "--reason must say why"),
    ],
)
def test_a_revocation_that_names_no_key_or_no_reason_changes_nothing(
    site: Site, kid: str | None, reason: str, says: str
) -> None:
    before = site.out.read_bytes()

    result = revoke(site, kid or site.sign_kid("t.pa"), reason)

    assert result.exit_code == 2
    assert says in result.stderr
    assert site.out.read_bytes() == before
    assert not register_path(site.out).exists()


# ---------------------------------------------------------------- hubctl keys list


def keys_list(site: Site, *extra: str) -> Result:
    return hubctl(
        "keys",
        "list",
        *extra,
        "--directory",
        str(site.out),
        "--hub-pub",
        str(site.hub / "hub.pub.json"),
    )


def test_keys_list_shows_the_rotation_and_the_revocation_with_its_reason(site: Site) -> None:
    old = PublicKeys.load((site.keys / "t.pa.pub.json").read_bytes(), source="old")
    new = rotate(site, "t.pa")
    ok(site.build("--overlap", "3d"))
    gone = site.sign_kid("t.dept.health")
    ok(revoke(site, gone, "laptop lost"))

    result = keys_list(site, "--json")

    assert result.exit_code == 0, result.output
    rows = {(k["kid"], k["kind"]): k for k in json.loads(result.stdout)["keys"]}
    assert rows[(new.sign_kid, "signing")]["state"] == "current"
    assert rows[(old.sign_kid, "signing")]["state"] == "overlap"
    assert rows[(new.enc_kid, "encryption")]["state"] == "current"
    assert rows[(old.enc_kid, "encryption")]["state"] == "overlap"
    assert rows[(gone, "signing")]["state"] == "revoked"
    assert rows[(gone, "signing")]["revocation_reason"] == "laptop lost"
    text = ok(keys_list(site, "t.pa")).stdout
    assert "overlap: closes in 2d23h" in text
    assert "t.dept.health" not in text


def test_keys_list_refuses_an_organisation_that_is_not_there(site: Site) -> None:
    result = keys_list(site, "t.nowhere")

    assert result.exit_code == 2
    assert "'t.nowhere' is not in directory v1" in result.stderr
