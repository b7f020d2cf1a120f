"""Expiry warnings days ahead: the judgement as a table (schemas.expiry), certificate files
(hubd.provision.certdates), the running hub's log at start, on reload and once a day
(hubd.engine.trustwatch), and ``hubctl status`` (text and ``--json``) against a real hubd.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.config import Expiry, HubConfig, HubFiles, load_config
from hubd.engine.trustwatch import TrustWatch, horizons_of
from hubd.provision.certdates import certificate_files, read_deadlines
from runtime.brokers import BrokerURL
from runtime.clock import now_ms
from schemas.clock import DAY_MS
from schemas.directory import Directory, KeyEntry
from schemas.errors import ConfigError
from schemas.expiry import Deadline, Horizons, Subject, directory_deadlines, judge
from schemas.keys import EncryptionKey, PublicKeys, SigningKey
from schemas.topology import DirectoryPlan, build_directory
from tests.hub.conftest import wait_for_log
from tests.hubproc import HubProcess
from tests.spoke.procs import eventually
from tests.world import NOW, World

FAR = NOW + 365 * DAY_MS
HORIZONS = Horizons()  # 14 days for keys and certificates, 7 for the directory


def directory(
    world: World,
    *,
    ends: Mapping[str, Sequence[tuple[int, bool]]] | None = None,
    expires_at: int = NOW + 30 * DAY_MS,
    hub_until: int = FAR,
    now: int = NOW,
) -> Directory:
    """Every organisation's world key valid until FAR, except the organisations in
    ``ends``: for each, fresh keys ending at the given times (True: revoked)."""
    files = {
        org: [PublicKeys(org, k.signing.public, k.encryption.public, now - DAY_MS, FAR)]
        for org, k in world.keys.items()
    }
    revoked = []
    for org, keys in (ends or {}).items():
        files[org] = []
        for until, is_revoked in keys:
            signing = SigningKey.generate()
            files[org].append(
                PublicKeys(
                    org,
                    signing.public,
                    EncryptionKey.generate().public,
                    min(now, until) - DAY_MS,
                    until,
                )
            )
            if is_revoked:
                revoked.append(files[org][-1].sign_kid)
    hub = world.hub_key
    plan = DirectoryPlan(
        version=3,
        issued_at=now - DAY_MS,
        expires_at=expires_at,
        hub_keys=(
            KeyEntry(kid=hub.kid, public=hub.public, not_before=now - DAY_MS, not_after=hub_until),
        ),
        revoked=tuple(revoked),
    )
    return build_directory(world.topology, files, plan)


def warned(d: Directory, now: int = NOW) -> list[tuple[str, str | None, str | None, float]]:
    """(event, org or version, kind, days_left) of every warning, soonest first."""
    out = []
    for w in judge(directory_deadlines(d), now=now, horizons=HORIZONS):
        fields = w.fields()
        who = fields.get("org") or (
            f"v{fields['version']}" if "version" in fields else fields.get("certificate")
        )
        out.append((w.event, who, fields.get("kind"), w.days_left))
    return out


# ---------------------------------------------------------------- what warns when


def test_nothing_warns_when_every_deadline_is_beyond_its_horizon(world: World) -> None:
    assert warned(directory(world)) == []


@pytest.mark.parametrize(
    ("ends", "expected"),
    [
        # the organisation's only keys end in 10 days: both kinds warn
        (
            [(NOW + 10 * DAY_MS, False)],
            [
                ("key.expiring", "jl.cc", "encryption", 10.0),
                ("key.expiring", "jl.cc", "signing", 10.0),
            ],
        ),
        # exactly at the horizon: warns; a millisecond beyond: does not
        (
            [(NOW + 14 * DAY_MS, False)],
            [
                ("key.expiring", "jl.cc", "encryption", 14.0),
                ("key.expiring", "jl.cc", "signing", 14.0),
            ],
        ),
        ([(NOW + 14 * DAY_MS + 1, False)], []),
        # rotating: the old key closes in 3 days, the new one carries on: no warning
        ([(NOW + 3 * DAY_MS, False), (FAR, False)], []),
        # ... unless the new signing key is revoked: then the old one's end warns
        (
            [(NOW + 3 * DAY_MS, False), (FAR, True)],
            [("key.expiring", "jl.cc", "signing", 3.0)],
        ),
        # ended two days ago: expired (an error in the log)
        (
            [(NOW - 2 * DAY_MS, False)],
            [
                ("key.expired", "jl.cc", "encryption", -2.0),
                ("key.expired", "jl.cc", "signing", -2.0),
            ],
        ),
    ],
)
def test_an_organisation_warns_when_its_last_key_of_a_kind_ends_within_the_horizon(
    world: World, ends: list[tuple[int, bool]], expected: list[tuple[str, str, str, float]]
) -> None:
    d = directory(world, ends={"jl.cc": ends})

    assert sorted(warned(d)) == expected  # the two kinds end together: either comes first


def test_the_warning_names_the_key_that_ends_last(world: World) -> None:
    d = directory(world, ends={"jl.cc": [(NOW + 2 * DAY_MS, False), (NOW + 9 * DAY_MS, False)]})
    org = d.org("jl.cc")
    assert org is not None
    last = next(k.kid for k in org.sign_keys if k.not_after == NOW + 9 * DAY_MS)

    found = [
        w
        for w in judge(directory_deadlines(d), now=NOW, horizons=HORIZONS)
        if w.fields().get("kind") == "signing"
    ]

    assert [w.fields()["kid"] for w in found] == [last]
    assert "jl.cc's last signing key" in found[0].sentence()
    assert "spoke keygen --rotate" in found[0].sentence()


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        (NOW + 8 * DAY_MS, []),  # the directory's horizon is 7 days
        (NOW + 7 * DAY_MS, [("directory.expiring", "v3", None, 7.0)]),
        (NOW + 5 * DAY_MS + DAY_MS // 2, [("directory.expiring", "v3", None, 5.5)]),
        (NOW, [("directory.expired", "v3", None, 0.0)]),
    ],
)
def test_the_directory_warns_within_its_own_horizon(
    world: World, expires_at: int, expected: list[tuple[str, str, None, float]]
) -> None:
    assert warned(directory(world, expires_at=expires_at)) == expected


def test_the_hubs_own_key_warns(world: World) -> None:
    d = directory(world, hub_until=NOW + DAY_MS)

    assert warned(d) == [("key.expiring", "jl.hub", "hub", 1.0)]
    (warning,) = judge(directory_deadlines(d), now=NOW, horizons=HORIZONS)
    assert "spokes refuse receipts signed after it" in warning.sentence()
    assert "expires in 1 day (" in warning.sentence()


def test_warnings_come_soonest_first_across_kinds(world: World) -> None:
    d = directory(
        world,
        ends={"jl.th": [(NOW + 9 * DAY_MS, False)]},
        expires_at=NOW + 6 * DAY_MS,
        hub_until=NOW + 12 * DAY_MS,
    )
    certificate = Deadline(
        Subject.CERTIFICATE, "jl.cc", NOW + 3 * DAY_MS, kind="client", source="x"
    )

    found = judge([*directory_deadlines(d), certificate], now=NOW, horizons=HORIZONS)

    assert [(w.event, w.days_left) for w in found] == [
        ("certificate.expiring", 3.0),
        ("directory.expiring", 6.0),
        ("key.expiring", 9.0),
        ("key.expiring", 9.0),
        ("key.expiring", 12.0),
    ]


def test_a_longer_horizon_warns_earlier(world: World) -> None:
    d = directory(world, ends={"jl.cc": [(NOW + 20 * DAY_MS, False)]})

    found = judge(directory_deadlines(d), now=NOW, horizons=Horizons(keys=30 * DAY_MS))

    assert {w.fields()["org"] for w in found} == {"jl.cc"}


# ---------------------------------------------------------------- certificate files


def certificate(folder: Path, name: str, *, days: float, ca: bool = False) -> Path:
    """A self-signed certificate ending in ``days`` (from the real clock), with its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_certificates_of_the_brokers_and_of_watched_folders_are_read(tmp_path: Path) -> None:
    ca = certificate(tmp_path / "govnet", "govnet-ca", days=700, ca=True)
    client = certificate(tmp_path / "govnet", "jl.hub", days=3)
    watched = tmp_path / "brokers"
    server = certificate(watched / "classified", "broker", days=10)
    junk = watched / "notes.pem"
    junk.write_text("not a certificate\n")
    config = HubConfig(
        channels={"govnet": BrokerURL(url="mqtts://b:8883", ca=ca, cert=client, key=None)},
        expiry=Expiry(certificates=(watched, ca, tmp_path / "gone.pem")),
    )

    files = certificate_files(config)
    deadlines, unreadable = read_deadlines(files)

    assert files == [ca, client, server, junk, tmp_path / "gone.pem"]  # each once, no .key
    assert {(d.name, d.kind) for d in deadlines} == {
        ("govnet-ca", "CA"),
        ("jl.hub", "client"),
        ("broker", "client"),
    }
    assert [u.file for u in unreadable] == [str(junk), str(tmp_path / "gone.pem")]
    assert "not a PEM certificate" in unreadable[0].sentence()
    found = judge(deadlines, now=now_ms(), horizons=HORIZONS)
    assert [(w.event, w.deadline.name) for w in found] == [
        ("certificate.expiring", "jl.hub"),
        ("certificate.expiring", "broker"),
    ]
    assert found[0].fields()["file"] == str(client)


# ---------------------------------------------------------------- once a day


async def test_the_running_hub_warns_again_once_a_day_by_its_clock(
    world: World, tmp_path: Path
) -> None:
    clock = [NOW]
    config = HubConfig(
        hub=HubFiles(directory=tmp_path / "directory.bin"), expiry=Expiry(check_every=0.01)
    )
    watch = TrustWatch(config, lambda: clock[0])
    d = directory(world, ends={"jl.cc": [(NOW + 5 * DAY_MS, False)]})

    with capture_logs() as logs:
        watch.warn(d, when="start")
        clock[0] = NOW + DAY_MS - 1
        assert not watch.due()
        clock[0] = NOW + DAY_MS
        assert watch.due()
        task = asyncio.create_task(watch.run(lambda: d))
        try:
            await eventually(
                lambda: any(e.get("checked") == "daily" for e in logs), "a daily warning", within=20
            )
        finally:
            task.cancel()

    by_check = {(e["checked"], e["kind"]): e for e in logs if e["event"] == "key.expiring"}
    assert by_check[("start", "signing")]["days_left"] == 5.0
    assert by_check[("daily", "signing")]["days_left"] == 4.0
    assert by_check[("daily", "signing")]["org"] == "jl.cc"
    assert by_check[("daily", "signing")]["log_level"] == "warning"


# ---------------------------------------------------------------- a real hub, hubctl status


@pytest.fixture
def expiring_hub(world: World, tmp_path: Path) -> Iterator[HubProcess]:
    """hubd whose directory lists jl.cc with keys ending in 5 days (real clock), expires in
    a day, and which watches a folder holding a client certificate ending in 3 days."""
    now = now_ms()
    certs = tmp_path / "brokers" / "govnet" / "clients"
    certificate(certs, "jl.dept.health", days=3)
    hub = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        directory(
            world,
            ends={"jl.cc": [(now + 5 * DAY_MS, False)]},
            expires_at=now + DAY_MS,
            now=now,
        ),
        extra_toml=f'[expiry]\ncertificates = ["{tmp_path / "brokers"}"]\n',
    )
    hub.start()
    yield hub
    hub.stop()


async def test_hub_logs_and_hubctl_status_warn_of_a_key_a_certificate_and_the_directory(
    expiring_hub: HubProcess,
) -> None:
    hub = expiring_hub
    kid = hub.directory.org("jl.cc").sign_keys[0].kid  # type: ignore[union-attr]

    logged = await wait_for_log(
        hub, lambda e: e["event"] == "key.expiring" and e.get("kind") == "signing"
    )
    assert (
        logged.items()
        >= {
            "org": "jl.cc",
            "kid": kid,
            "days_left": 5.0,
            "checked": "start",
            "level": "warning",
        }.items()
    )
    await wait_for_log(hub, lambda e: e["event"] == "certificate.expiring")
    await wait_for_log(hub, lambda e: e["event"] == "directory.expiring")

    config = str(hub.folder / "hub.toml")
    result = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, ["status", "--config", config, "--json"]
    )
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    events = {
        (w["event"], w.get("org") or w.get("certificate") or w.get("version")) for w in warnings
    }
    assert ("key.expiring", "jl.cc") in events
    assert ("certificate.expiring", "jl.dept.health") in events
    assert ("directory.expiring", 3) in events
    key = next(w for w in warnings if w.get("kid") == kid)
    assert key["days_left"] == pytest.approx(5.0, abs=0.1)
    assert "spoke keygen --rotate" in key["detail"]

    text = await asyncio.to_thread(CliRunner().invoke, hubctl_app, ["status", "--config", config])
    assert "warnings (4):" in text.stdout
    assert f"expiring: jl.cc's last signing key {kid} expires in" in text.stdout

    hub.hup()
    await wait_for_log(hub, lambda e: e["event"] == "key.expiring" and e.get("checked") == "reload")


def test_watched_certificate_paths_resolve_against_the_configuration_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "etc").mkdir()
    config_file = tmp_path / "etc" / "hub.toml"
    config_file.write_text(
        "[expiry]\nwarn_days = 30\ndirectory_warn_days = 3\n"
        'certificates = ["brokers", "/srv/x.pem"]\n'
    )

    config = load_config(config_file)

    assert config.expiry.certificates == (
        (tmp_path / "etc" / "brokers").resolve(),
        Path("/srv/x.pem"),
    )
    assert horizons_of(config) == Horizons(keys=30 * DAY_MS, directory=3 * DAY_MS)


def test_a_horizon_of_no_days_is_refused_naming_the_key(tmp_path: Path) -> None:
    config_file = tmp_path / "hub.toml"
    config_file.write_text("[expiry]\nwarn_days = 0\n")

    with pytest.raises(ConfigError) as info:
        load_config(config_file)

    assert "expiry.warn_days" in str(info.value)
