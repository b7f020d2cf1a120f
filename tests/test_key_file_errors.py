"""A damaged key file (or register, or configuration) through every command that reads it.

Issue 13: a key file holding ``1e999`` or ``Infinity`` as a time, or JSON nested deeper
than the decoder goes, made the loaders raise OverflowError or RecursionError: tracebacks
from ``spoke``, ``hubctl directory build`` and ``hubctl route``. Each command here runs as
its console script does (``runtime.startup.guarded``, in-process) and must say in one
line which file and which field, with no traceback, and exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from hubd.cli import hubctl_app, hubd_app
from runtime.startup import guarded
from spoke.cli import app as spoke_app
from tests.hubproc import HubProcess, live_directory
from tests.spoke.procs import SpokeProcess
from tests.test_key_tools import Site, ok
from tests.world import World

DEEP = b"[" * 5000


def with_time(path: Path, field: str, value: str) -> None:
    """Rewrite the JSON file at ``path`` with ``field`` set to the raw JSON ``value``."""
    doc = json.loads(path.read_bytes())
    doc[field] = "TIME"
    path.write_text(json.dumps(doc).replace('"TIME"', value), encoding="utf-8")


def console(
    capsys: pytest.CaptureFixture[str], app: typer.Typer, prog: str, *argv: str
) -> tuple[int, list[str]]:
    """``prog ARGV`` as its console script runs it: (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as exited:
        guarded(prog, f"{prog}.failed", app, list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert isinstance(exited.value.code, int)
    return exited.value.code, err.splitlines()


# ---------------------------------------------------------------- hubctl directory build

DAMAGES: dict[str, Callable[[Path], object]] = {
    "not_after 1e999": lambda p: with_time(p, "not_after", "1e999"),
    "not_before Infinity": lambda p: with_time(p, "not_before", "Infinity"),
    "not_after NaN": lambda p: with_time(p, "not_after", "NaN"),
    "nested": lambda p: p.write_bytes(DEEP),
}
NAMED = {
    "not_after 1e999": "not_after",
    "not_before Infinity": "not_before",
    "not_after NaN": "not_after",
    "nested": "nests too deeply",
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_directory_build_names_the_public_key_file_and_field_in_one_line(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], structlog_restored: None
) -> None:
    site = Site(tmp_path)
    damaged = site.keys / "t.pa.pub.json"
    DAMAGES[damage](damaged)

    code, err = console(
        capsys,
        hubctl_app,
        "hubctl",
        *("directory", "build", "--topology", str(site.topology), "--keys", str(site.keys)),
        *("--hub-key", str(site.hub / "hub.sign.key"), "--out", str(site.out)),
    )

    assert code == 2
    [line] = err
    assert line.startswith("hubctl directory build: ")
    assert str(damaged) in line
    assert NAMED[damage] in line
    assert not site.out.exists()


def test_directory_build_names_a_revocation_register_nested_too_deeply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], structlog_restored: None
) -> None:
    site = Site(tmp_path)
    register = site.out.with_name("revocations.json")
    register.write_bytes(DEEP)

    code, err = console(
        capsys,
        hubctl_app,
        "hubctl",
        *("directory", "build", "--topology", str(site.topology), "--keys", str(site.keys)),
        *("--hub-key", str(site.hub / "hub.sign.key"), "--out", str(site.out)),
    )

    assert code == 2
    [line] = err
    assert str(register) in line
    assert "nests too deeply" in line


# ---------------------------------------------------------------- hubctl route


@pytest.mark.parametrize("damage", ["not_after 1e999", "not_before Infinity", "nested"])
def test_route_names_the_hub_public_key_file_and_field_in_one_line(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], structlog_restored: None
) -> None:
    site = Site(tmp_path)
    ok(site.build())
    hub_pub = site.hub / "hub.pub.json"
    DAMAGES[damage](hub_pub)
    meta = tmp_path / "d.meta.toml"
    meta.write_text('"主送" = "t.pa"\n"密级" = "内部"\n"文种" = "通知"\n"标题" = "通知"\n')

    code, err = console(
        capsys,
        hubctl_app,
        "hubctl",
        *("route", str(meta), "--from", "t.gov"),
        *("--directory", str(site.out), "--hub-pub", str(hub_pub)),
    )

    assert code == 2
    [line] = err
    assert line.startswith("hubctl route: ")
    assert str(hub_pub) in line
    assert NAMED[damage] in line


def test_route_names_a_metadata_file_nested_too_deeply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], structlog_restored: None
) -> None:
    site = Site(tmp_path)
    ok(site.build())
    meta = tmp_path / "d.meta.json"
    meta.write_bytes(DEEP)

    code, err = console(
        capsys,
        hubctl_app,
        "hubctl",
        *("route", str(meta), "--from", "t.gov", "--directory", str(site.out)),
        *("--hub-pub", str(site.hub / "hub.pub.json")),
    )

    assert code == 2
    [line] = err
    assert str(meta) in line
    assert "nest" in line


# ---------------------------------------------------------------- hubd run


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("nested", "nests too deeply"),
        ("mode 0644", "chmod 600"),
        ("missing", "hubctl keys init"),
    ],
)
def test_hubd_run_names_the_hub_key_and_what_to_do_in_one_line(
    damage: str,
    named: str,
    *,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    structlog_restored: None,
) -> None:
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_directory(world))
    config = hub.write()
    key = hub.folder / "keys" / "hub.sign.key"
    if damage == "nested":
        key.write_bytes(DEEP)
    elif damage == "mode 0644":
        key.chmod(0o644)
    else:
        key.unlink()

    code, err = console(capsys, hubd_app, "hubd", "run", "--config", str(config))

    assert code == 2
    [line] = err
    assert line.startswith("hubd run: 配置有误")
    assert "hub.key" in line
    assert str(key) in line
    assert named in line


def test_hubd_run_names_a_configuration_nested_too_deeply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], structlog_restored: None
) -> None:
    config = tmp_path / "hub.toml"
    config.write_bytes(b"a = " + DEEP)

    code, err = console(capsys, hubd_app, "hubd", "run", "--config", str(config))

    assert code == 2
    [line] = err
    assert str(config) in line
    assert "nest too deeply" in line


# ---------------------------------------------------------------- spoke


@pytest.mark.parametrize(
    ("damaged", "damage"),
    [
        ("hub.pub.json", "not_after 1e999"),
        ("hub.pub.json", "not_before Infinity"),
        ("hub.pub.json", "nested"),
        ("keys/jl.cc.sign.key", "nested"),
        ("keys/jl.cc.enc.key", "nested"),
    ],
)
def test_spoke_run_names_its_key_file_and_field_in_one_line(
    damaged: str,
    damage: str,
    *,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    structlog_restored: None,
) -> None:
    spoke = SpokeProcess(tmp_path / "spoke", "jl.cc", world, 1, ("govnet",))
    config = spoke.write()
    path = spoke.folder / damaged
    DAMAGES[damage](path)
    path.chmod(0o600)

    code, err = console(capsys, spoke_app, "spoke", "run", "--config", str(config))

    assert code == 2
    [line] = err
    assert line.startswith("spoke run: ")
    assert str(path) in line
    assert NAMED[damage] in line
