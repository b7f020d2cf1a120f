"""Every verb of hubctl, hubd and spoke takes --config, and without it finds the file as
runtime.configpath says; paths inside the file resolve against its folder, so the commands
work as the docs write them from any working folder (issue 13)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app, hubd_app
from runtime import configpath
from spoke.cli import app as spoke_app
from tests.test_key_tools import Site, keygen, ok
from tests.world import REPO

runner = CliRunner()

HUB_TOML = """
[hub]
topology = "../topology.toml"
org_keys = "../orgs"
key = "../hub/hub.sign.key"
directory = "../directory.bin"
state_dir = "../state"
"""


def commands(app: typer.Typer, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every leaf command (typer's click objects: typer 0.29 carries its own click)."""

    def walk(command: Any, name: str) -> Iterator[tuple[str, Any]]:
        if hasattr(command, "commands"):
            for sub, child in command.commands.items():
                yield from walk(child, f"{name} {sub}")
        else:
            yield name, command

    yield from walk(typer.main.get_command(app), prefix)


ALL = [*commands(hubctl_app, "hubctl"), *commands(hubd_app, "hubd"), *commands(spoke_app, "spoke")]
NEEDS_NO_CONFIG = {"spoke declare"}  # lists a drop's files; reads nothing of an organisation


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_verb_takes_config(name: str, command: Any) -> None:
    options = {o for p in command.params for o in getattr(p, "opts", ())}
    if name in NEEDS_NO_CONFIG:
        assert "--config" not in options
    else:
        assert "--config" in options, name


# Rich reads "[word]" in help text as a style and drops it: "expiring ([expiry] in the
# config)" rendered as "expiring ( in the config)".
RICH_TAG = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_no_help_text_holds_brackets_that_rich_would_swallow(name: str, command: Any) -> None:
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    assert [t for t in texts if RICH_TAG.search(t)] == [], name


def test_status_help_says_where_the_expiry_warnings_are_set() -> None:
    result = runner.invoke(hubctl_app, ["status", "--help"], terminal_width=200)

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "( in the config)" not in text
    assert "expiring (the config's expiry section)" in text


# ------------------------------------------------------------------ the hub's commands


@pytest.fixture
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty /etc/govxchg, no variable, and a working folder without config/."""
    etc = tmp_path / "no-etc"
    etc.mkdir()
    monkeypatch.setattr(configpath, "SYSTEM_DIR", etc)
    monkeypatch.delenv("GOVXCHG_CONFIG", raising=False)
    monkeypatch.delenv("GOVXCHG_SPOKE_CONFIG", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return elsewhere


@pytest.fixture
def site(tmp_path: Path, no_system_config: Path) -> Site:
    (tmp_path / "site").mkdir()
    built = Site(tmp_path / "site")
    (built.root / "etc").mkdir()
    (built.root / "etc" / "hub.toml").write_text(HUB_TOML, encoding="utf-8")
    return built


def hubctl(*args: str) -> Result:
    return runner.invoke(hubctl_app, list(args))


def test_provisioning_commands_find_the_config_from_the_variable_and_resolve_its_paths(
    site: Site, no_system_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from an unrelated folder: every path comes from the file, relative to its folder."""
    monkeypatch.setenv("GOVXCHG_CONFIG", str(site.root / "etc" / "hub.toml"))

    built = ok(hubctl("directory", "build"))
    assert f"written to {site.out}" in built.stdout
    assert site.read().version == 1
    ok(hubctl("directory", "show"))
    listed = json.loads(ok(hubctl("keys", "list", "--json")).stdout)
    assert listed["version"] == 1
    ok(hubctl("keys", "revoke", site.sign_kid("t.pa.x"), "--reason", "server stolen"))
    assert site.read().directory.is_revoked(site.sign_kid("t.pa.x"))
    assert list(no_system_config.iterdir()) == []  # nothing written in the working folder


def test_a_config_in_the_working_folders_config_is_found(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    (site.root / "config").mkdir()
    (site.root / "config" / "hub.toml").write_text(HUB_TOML, encoding="utf-8")
    monkeypatch.chdir(site.root)

    ok(hubctl("directory", "build"))

    assert site.read().version == 1


def test_explicit_options_need_no_config_at_all(site: Site) -> None:
    ok(site.build())  # --topology, --keys, --hub-key and --out given; nothing found


def test_keys_init_without_out_writes_the_key_where_the_config_names_it(
    tmp_path: Path, no_system_config: Path
) -> None:
    etc = tmp_path / "fresh" / "etc"
    etc.mkdir(parents=True)
    (etc / "hub.toml").write_text('[hub]\nkey = "keys/hub.sign.key"\n', encoding="utf-8")

    ok(hubctl("keys", "init", "--config", str(etc / "hub.toml")))

    assert (etc / "keys" / "hub.sign.key").is_file()
    assert (etc / "keys" / "hub.pub.json").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "list"],
        ["keys", "init"],
        ["keys", "revoke", "0123456789abcdef", "--reason", "stolen"],
        ["directory", "build"],
        ["directory", "show"],
        ["directory", "publish"],
        ["broker-config", "--out", "brokers"],
        ["status"],
        ["queue"],
        ["audit", "verify"],
    ],
    ids=" ".join,
)
def test_with_no_config_anywhere_hubctl_says_in_one_line_where_it_looked(
    argv: list[str], no_system_config: Path
) -> None:
    result = hubctl(*argv)

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "未找到枢纽配置文件 / no hub configuration file" in lines[0]
    assert "/etc/govxchg/hub.toml" in lines[0] or "no-etc/hub.toml" in lines[0]
    assert "./config/hub.toml" in lines[0]
    assert "give --config FILE" in lines[0]


def test_hubd_run_with_no_config_anywhere_says_where_it_looked(no_system_config: Path) -> None:
    result = runner.invoke(hubd_app, ["run"])

    assert result.exit_code == 2
    assert result.stderr.startswith("hubd run: --config: 未找到枢纽配置文件")
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ the spoke's commands


def spoke(*args: str) -> Result:
    return runner.invoke(spoke_app, list(args))


def test_spoke_commands_find_their_own_file_and_resolve_its_paths(
    tmp_path: Path, no_system_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "spoke-t.pa.toml").write_text(
        """
[spoke]
org = "t.pa"
root = "../var/t.pa"
sign_key = "keys/t.pa.sign.key"
enc_key = "keys/t.pa.enc.key"
hub_key = "hub.pub.json"

[channels.govnet]
url = "mqtt://127.0.0.1:11883"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("GOVXCHG_SPOKE_CONFIG", str(etc / "spoke-t.pa.toml"))

    made = ok(spoke("keygen"))  # --org and --out from the file
    assert "organisation   t.pa" in made.stdout
    assert (etc / "keys" / "t.pa.sign.key").is_file()
    ok(spoke("keys"))
    ok(spoke("status"))
    assert (tmp_path / "var" / "t.pa" / ".spoke" / "state.db").is_file()
    assert list(no_system_config.iterdir()) == []


def test_a_spoke_config_named_with_config_works_as_the_unit_starts_it(
    tmp_path: Path, no_system_config: Path
) -> None:
    """spoke@ORG.service runs 'spoke run --config /etc/govxchg/spoke-%i.toml'."""
    keys = tmp_path / "keys"
    ok(keygen("t.pa", keys))
    config = tmp_path / "spoke-t.pa.toml"
    config.write_text(
        f'[spoke]\norg = "t.pa"\nroot = "root"\nsign_key = "{keys}/t.pa.sign.key"\n'
        f'enc_key = "{keys}/t.pa.enc.key"\nhub_key = "hub.pub.json"\n'
        '[channels.govnet]\nurl = "mqtt://127.0.0.1:11883"\n',
        encoding="utf-8",
    )

    ok(spoke("status", "--config", str(config)))


def test_spoke_with_no_config_anywhere_says_where_it_looked(no_system_config: Path) -> None:
    result = spoke("status")

    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "未找到交换端配置文件 / no spoke configuration file" in line
    assert "$GOVXCHG_SPOKE_CONFIG is not set" in line
    assert "./config/spoke.toml" in line


def test_the_revocation_runbook_runs_as_written_with_the_config_found_by_itself(
    site: Site, no_system_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'A key was compromised': keys list, keys revoke, directory build, with no --config
    (these failed with '[Errno 2] ... certs/hub/hub.sign.key' before; GOVXCHG_CONFIG stands
    in for /etc/govxchg/hub.toml)."""
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    runbook = guide.split("**A key was compromised.**", 1)[1].split("\n**", 1)[0]
    spans = [" ".join(s.split()) for s in re.findall(r"`(hubctl [^`]+)`", runbook)]
    assert spans == [
        "hubctl keys list ORG",
        'hubctl keys revoke KID --reason "server stolen 2026-12-01"',
        "hubctl keys list ORG",
        "hubctl directory build",
    ]
    monkeypatch.setenv("GOVXCHG_CONFIG", str(site.root / "etc" / "hub.toml"))
    ok(hubctl("directory", "build"))  # the directory the hub serves before the theft
    kid = site.sign_kid("t.pa")

    for span in spans:
        argv = shlex.split(span.replace("ORG", "t.pa").replace("KID", kid))
        ok(hubctl(*argv[1:]))

    assert site.read().directory.is_revoked(kid)
    assert "revoked: server stolen 2026-12-01" in ok(hubctl("keys", "list", "t.pa")).stdout
