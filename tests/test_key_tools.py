"""The key and directory tools: ``spoke keygen``, ``hubctl keys init``, ``hubctl directory``.

Everything is written under tmp_path with explicit paths; the repository's certs/ is never
touched. The tools read the real clock, so directories they build are verified at the
current time (they are valid for 30 days; nothing here depends on how long a test takes).
"""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from runtime.files import (
    load_encryption_key,
    load_signing_key,
    read_private,
    write_private,
)
from schemas import codec
from schemas.directory import Directory, VerifiedDirectory, verify_directory
from schemas.errors import Reason, SignatureError
from schemas.keys import (
    EncryptionKey,
    HubPublicKey,
    PublicKeys,
    SigningKey,
    dump_secret_key,
    load_secret_key,
)
from spoke.cli import app as spoke_app

runner = CliRunner()

TOPOLOGY = """
[hub]
id = "t.hub"

[[channels]]
id = "govnet"
name = "政务专网"
ceiling = "INTERNAL"

[[channels]]
id = "classified"
name = "涉密通道"
ceiling = "SECRET"

[[orgs]]
id = "t.gov"
name_zh = "省政府办公厅"
name_en = "Provincial office"
level = "province"
clearance = "SECRET"
channels = ["govnet", "classified"]

[[orgs]]
id = "t.pa"
name_zh = "甲市人民政府"
name_en = "City A"
level = "prefecture"
parent = "t.gov"
clearance = "INTERNAL"
channels = ["govnet"]

[[orgs]]
id = "t.pa.x"
name_zh = "甲市X县人民政府"
name_en = "County X"
level = "county"
parent = "t.pa"
clearance = "INTERNAL"
channels = ["govnet"]

[[orgs]]
id = "t.dept.health"
name_zh = "卫生厅"
name_en = "Department of Health"
level = "department"
parent = "t.gov"
clearance = "INTERNAL"
channels = ["govnet"]
"""
ORGS = ("t.gov", "t.pa", "t.pa.x", "t.dept.health")
VENV_BIN = Path(sys.executable).parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keygen(org: str, out: Path, *extra: str) -> Result:
    return runner.invoke(spoke_app, ["keygen", "--org", org, "--out", str(out), *extra])


def hubctl(*args: str) -> Result:
    return runner.invoke(hubctl_app, list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception}"
    return result


# ---------------------------------------------------------------- spoke keygen


def test_keygen_writes_private_keys_0600_in_a_0700_folder(tmp_path: Path) -> None:
    out = tmp_path / "keys"

    ok(keygen("jl.cc", out))

    assert mode(out) == 0o700
    assert mode(out / "jl.cc.sign.key") == 0o600
    assert mode(out / "jl.cc.enc.key") == 0o600
    assert mode(out / "jl.cc.pub.json") == 0o644


def test_keygen_public_file_names_the_keys_it_wrote(tmp_path: Path) -> None:
    ok(keygen("jl.cc", tmp_path))

    public = PublicKeys.load((tmp_path / "jl.cc.pub.json").read_bytes(), source="pub")
    sign_owner, signing = load_signing_key(tmp_path / "jl.cc.sign.key")
    enc_owner, encryption = load_encryption_key(tmp_path / "jl.cc.enc.key")
    assert public.org == sign_owner == enc_owner == "jl.cc"
    assert (public.sign_kid, public.sign_public) == (signing.kid, signing.public)
    assert (public.enc_kid, public.enc_public) == (encryption.kid, encryption.public)
    assert public.not_after > public.not_before


def test_keygen_prints_the_public_halves_and_never_the_secrets(tmp_path: Path) -> None:
    result = ok(keygen("jl.cc", tmp_path))

    _, signing = load_signing_key(tmp_path / "jl.cc.sign.key")
    _, encryption = load_encryption_key(tmp_path / "jl.cc.enc.key")
    for public in (signing.public, encryption.public):
        assert base64.b64encode(public).decode() in result.stdout
    assert signing.kid in result.stdout
    assert encryption.kid in result.stdout
    for secret in (signing.seed, encryption.secret):
        assert base64.b64encode(secret).decode() not in result.output


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    ok(keygen("jl.cc", tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    result = keygen("jl.cc", tmp_path)

    assert result.exit_code == 2
    assert "jl.cc.sign.key exists" in result.stderr
    assert "--force" in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_keygen_refuses_when_only_the_encryption_key_exists(tmp_path: Path) -> None:
    ok(keygen("jl.cc", tmp_path))
    (tmp_path / "jl.cc.sign.key").unlink()
    enc_before = (tmp_path / "jl.cc.enc.key").read_bytes()

    result = keygen("jl.cc", tmp_path)

    assert result.exit_code == 2
    assert "jl.cc.enc.key exists" in result.stderr
    assert (tmp_path / "jl.cc.enc.key").read_bytes() == enc_before


def test_keygen_with_force_replaces_the_keys(tmp_path: Path) -> None:
    ok(keygen("jl.cc", tmp_path))
    _, old = load_signing_key(tmp_path / "jl.cc.sign.key")

    ok(keygen("jl.cc", tmp_path, "--force"))

    _, new = load_signing_key(tmp_path / "jl.cc.sign.key")
    public = PublicKeys.load((tmp_path / "jl.cc.pub.json").read_bytes(), source="pub")
    assert new.kid != old.kid
    assert public.sign_kid == new.kid
    assert mode(tmp_path / "jl.cc.sign.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jl.cc.enc.key",
        "jl.cc.pub.json",
        "jl.cc.sign.key",
    ]


@pytest.mark.parametrize("bad", ["jl/cc", "../x", "JL.CC", "jl..cc", ""])
def test_keygen_refuses_a_bad_org_id_before_writing_anything(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "keys"

    result = keygen(bad, out)

    assert result.exit_code == 2
    assert "organisation id" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("days", ["0", "-5"])
def test_keygen_refuses_a_validity_of_no_days_before_writing_anything(
    tmp_path: Path, days: str
) -> None:
    out = tmp_path / "keys"

    result = keygen("jl.cc", out, "--valid-days", days)

    assert result.exit_code == 2
    assert "valid" in result.stderr
    assert not out.exists()


def test_keygen_console_script_exits_2_on_a_bad_org_id(tmp_path: Path) -> None:
    proc = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(VENV_BIN / "spoke"), "keygen", "--org", "../x", "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 2
    assert "'/'" in proc.stderr
    assert not (tmp_path / "k").exists()


# ---------------------------------------------------------------- private key files


def secret_file(tmp_path: Path, key: SigningKey | EncryptionKey, name: str) -> Path:
    path = tmp_path / name
    write_private(path, dump_secret_key("jl.cc", key))
    return path


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_private_key_readable_by_others_is_refused_naming_chmod(tmp_path: Path, loose: int) -> None:
    path = secret_file(tmp_path, SigningKey.generate(), "jl.cc.sign.key")
    path.chmod(loose)

    with pytest.raises(PermissionError, match=r"chmod 600") as info:
        read_private(path)
    assert str(path) in str(info.value)
    with pytest.raises(PermissionError, match=r"chmod 600"):
        load_signing_key(path)


@pytest.mark.parametrize("tight", [0o600, 0o400])
def test_private_key_readable_by_owner_only_is_accepted(tmp_path: Path, tight: int) -> None:
    key = SigningKey.generate()
    path = secret_file(tmp_path, key, "jl.cc.sign.key")
    path.chmod(tight)

    owner, loaded = load_signing_key(path)

    assert (owner, loaded.kid, loaded.seed) == ("jl.cc", key.kid, key.seed)


def test_write_private_creates_mode_0600(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SigningKey.generate(), "a.key")

    assert mode(path) == 0o600


def test_secret_key_file_whose_kid_does_not_match_is_refused(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    text = dump_secret_key("jl.cc", key).replace(key.kid.encode(), other.kid.encode())

    with pytest.raises(ValueError, match=r"does not match") as info:
        load_secret_key(text, source="certs/jl.cc.sign.key")

    assert "certs/jl.cc.sign.key" in str(info.value)


def test_encryption_key_file_is_not_a_signing_key(tmp_path: Path) -> None:
    path = secret_file(tmp_path, EncryptionKey.generate(), "jl.cc.enc.key")

    with pytest.raises(ValueError, match=r"encryption key, not a signing key"):
        load_signing_key(path)


# ---------------------------------------------------------------- hubctl keys init


def test_hub_keys_init_writes_a_private_key_and_its_public_half(tmp_path: Path) -> None:
    out = tmp_path / "hub"

    result = ok(hubctl("keys", "init", "--out", str(out)))

    assert mode(out / "hub.sign.key") == 0o600
    assert mode(out) == 0o700
    owner, key = load_signing_key(out / "hub.sign.key")
    public = HubPublicKey.load((out / "hub.pub.json").read_bytes(), source="hub.pub.json")
    assert owner == "hub"
    assert (public.kid, public.public) == (key.kid, key.public)
    assert public.not_after > public.not_before
    assert key.kid in result.stdout


def test_hub_keys_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    ok(hubctl("keys", "init", "--out", str(tmp_path)))
    before = (tmp_path / "hub.sign.key").read_bytes(), (tmp_path / "hub.pub.json").read_bytes()

    result = hubctl("keys", "init", "--out", str(tmp_path))

    assert result.exit_code == 2
    assert "hub.sign.key exists" in result.stderr
    assert "--force" in result.stderr
    after = (tmp_path / "hub.sign.key").read_bytes(), (tmp_path / "hub.pub.json").read_bytes()
    assert after == before


def test_hub_keys_init_with_force_replaces_the_key(tmp_path: Path) -> None:
    ok(hubctl("keys", "init", "--out", str(tmp_path)))
    _, old = load_signing_key(tmp_path / "hub.sign.key")

    ok(hubctl("keys", "init", "--out", str(tmp_path), "--force"))

    _, new = load_signing_key(tmp_path / "hub.sign.key")
    public = HubPublicKey.load((tmp_path / "hub.pub.json").read_bytes(), source="pub")
    assert new.kid != old.kid
    assert public.kid == new.kid


@pytest.mark.parametrize("days", ["0", "-5"])
def test_hub_keys_init_refuses_a_validity_of_no_days_before_writing_anything(
    tmp_path: Path, days: str
) -> None:
    out = tmp_path / "hub"

    result = hubctl("keys", "init", "--out", str(out), "--valid-days", days)

    assert result.exit_code == 2
    assert "valid" in result.stderr
    assert not (out / "hub.sign.key").exists()


# ---------------------------------------------------------------- hubctl directory


class Site:
    """A hub operator's folder: topology, the organisations' public keys, the hub key."""

    def __init__(self, root: Path, orgs: tuple[str, ...] = ORGS) -> None:
        self.root = root
        self.topology = root / "topology.toml"
        self.topology.write_text(TOPOLOGY, encoding="utf-8")
        self.keys = root / "orgs"
        for org in orgs:
            ok(keygen(org, root / "spokes" / org))
            self.keys.mkdir(exist_ok=True)
            pub = f"{org}.pub.json"
            (self.keys / pub).write_bytes((root / "spokes" / org / pub).read_bytes())
        self.hub = root / "hub"
        ok(hubctl("keys", "init", "--out", str(self.hub)))
        self.out = root / "directory.bin"

    def pinned(self, hub: Path | None = None) -> bytes:
        path = (hub or self.hub) / "hub.pub.json"
        return HubPublicKey.load(path.read_bytes(), source=str(path)).public

    def build(self, *extra: str, hub: Path | None = None) -> Result:
        return hubctl(
            "directory",
            "build",
            "--topology",
            str(self.topology),
            "--keys",
            str(self.keys),
            "--hub-key",
            str((hub or self.hub) / "hub.sign.key"),
            "--out",
            str(self.out),
            *extra,
        )

    def read(self) -> VerifiedDirectory:
        return verify_directory(self.out.read_bytes(), self.pinned(), now=now_ms())

    def sign_kid(self, org: str) -> str:
        path = self.keys / f"{org}.pub.json"
        return PublicKeys.load(path.read_bytes(), source=str(path)).sign_kid


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_directory_build_writes_a_directory_the_pinned_hub_key_verifies(site: Site) -> None:
    result = ok(site.build())

    directory = site.read().directory
    assert directory.version == 1
    assert directory.hub_id == "t.hub"
    assert tuple(o.id for o in directory.orgs) == ORGS
    for org in ORGS:
        entry = directory.org(org)
        assert entry is not None
        assert [k.kid for k in entry.sign_keys] == [site.sign_kid(org)]
    _, hub_key = load_signing_key(site.hub / "hub.sign.key")
    assert [k.kid for k in directory.hub_keys] == [hub_key.kid]
    assert "directory v1" in result.stdout


def test_directory_build_again_gives_the_next_version(site: Site) -> None:
    ok(site.build())

    ok(site.build())

    assert site.read().version == 2


def test_directory_revocation_is_listed_and_kept_by_later_builds(site: Site) -> None:
    kid = site.sign_kid("t.pa.x")
    ok(site.build())
    ok(site.build())

    ok(site.build("--revoke", kid))
    v3 = site.read().directory
    ok(site.build())
    v4 = site.read().directory

    assert (v3.version, v4.version) == (3, 4)
    assert v3.revoked == (kid,)
    assert v4.revoked == (kid,)
    assert_revoked(v4, "t.pa.x", kid)


def assert_revoked(directory: Directory, org: str, kid: str) -> None:
    with pytest.raises(SignatureError) as info:
        directory.signing_key(org, kid, now_ms())
    assert info.value.reason is Reason.SIG_KEY_REVOKED


def test_directory_build_signs_without_an_orgs_keys_and_lists_it_awaiting_them(
    site: Site,
) -> None:
    (site.keys / "t.pa.x.pub.json").unlink()

    result = ok(site.build())

    directory = site.read().directory
    assert directory.awaiting_keys() == ("t.pa.x",)
    assert "awaiting keys 尚待提交密钥 (1): t.pa.x" in result.stdout
    assert "spoke keygen --org ORG" in result.stdout
    assert "spoke keygen --org 机关代码" in result.stdout
    shown = ok(
        hubctl("directory", "show", str(site.out), "--hub-pub", str(site.hub / "hub.pub.json"))
    )
    assert "awaiting keys 尚待提交密钥 (1): t.pa.x" in shown.stdout

    # its keys come: the next build lists it with them, and nobody awaits
    ok(keygen("t.pa.x", site.root / "later"))
    (site.keys / "t.pa.x.pub.json").write_bytes(
        (site.root / "later" / "t.pa.x.pub.json").read_bytes()
    )
    again = ok(site.build())
    assert site.read().directory.awaiting_keys() == ()
    assert "awaiting keys" not in again.stdout


def test_directory_build_still_refuses_a_bad_key_file(site: Site) -> None:
    (site.keys / "t.pa.x.pub.json").write_text('{"org": "t.pa.x", "sign": 1e999}')

    result = site.build()

    assert result.exit_code == 2
    assert "t.pa.x.pub.json" in result.stderr
    assert not site.out.exists()


def test_directory_show_prints_each_org(site: Site) -> None:
    ok(site.build())

    result = ok(
        hubctl("directory", "show", str(site.out), "--hub-pub", str(site.hub / "hub.pub.json"))
    )

    assert "directory v1" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    for org, name in [
        ("t.gov", "省政府办公厅"),
        ("t.pa", "甲市人民政府"),
        ("t.pa.x", "甲市X县人民政府"),
        ("t.dept.health", "卫生厅"),
    ]:
        assert any(c[:1] == [org] and c[-1:] == [name] for c in rows), org


def test_directory_show_refuses_one_signed_by_another_hub_key(site: Site, tmp_path: Path) -> None:
    other_hub = tmp_path / "other-hub"
    ok(hubctl("keys", "init", "--out", str(other_hub)))
    ok(site.build(hub=other_hub))

    result = hubctl("directory", "show", str(site.out), "--hub-pub", str(site.hub / "hub.pub.json"))

    assert result.exit_code == 2
    assert Reason.DIR_BAD_SIGNATURE.value in result.stderr
    assert "not by the pinned hub key" in result.stderr


def test_directory_build_refuses_to_replace_a_directory_it_cannot_verify(site: Site) -> None:
    kid = site.sign_kid("t.pa.x")
    ok(site.build())
    ok(site.build("--revoke", kid))
    outer = codec.decode_map(site.out.read_bytes(), codec.DIRECTORY_FRAME_LIMITS)
    sig = bytearray(outer["sig"])
    sig[0] ^= 0x01
    damaged = codec.encode({**outer, "sig": bytes(sig)})
    site.out.write_bytes(damaged)

    result = site.build()

    # restarting at version 1 would silently drop the revocation of kid
    assert result.exit_code == 2
    assert str(site.out) in result.stderr
    assert site.out.read_bytes() == damaged


def test_directory_build_refuses_a_key_file_holding_another_orgs_keys(site: Site) -> None:
    # t.pa.x's file swapped for t.pa's: t.pa.x must not quietly await keys while t.pa
    # takes a second one
    (site.keys / "t.pa.x.pub.json").write_bytes((site.keys / "t.pa.pub.json").read_bytes())

    result = site.build()

    assert result.exit_code == 2
    assert "holds the keys of t.pa, not of the organisation its name says" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not site.out.exists()
