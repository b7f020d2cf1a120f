"""A spoke says when the directory does not list its own keys (spoke.keyring.own_key_problems).

A spoke whose encryption key was never handed over (or was replaced on the server) ran
without a word, and every document sent to it went DEAD. Now, at start and at every
directory change, the agent logs one ``keys.not_in_directory`` warning, prints one line
in Chinese and English saying what to do, and ``spoke status`` shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from runtime.clock import now_ms
from runtime.files import write_private
from schemas.keys import EncryptionKey, SigningKey, dump_secret_key
from spoke.agent import SpokeAgent
from spoke.cli import app
from spoke.config import load_config
from spoke.keyring import Keyring, own_key_problems
from tests.hubproc import live_directory
from tests.spoke.procs import eventually
from tests.spoke.test_start_up_recovery import ORG, installed, running
from tests.world import World, root_publication


def held(world: World, *, signing: bool = True, encryption: bool = True) -> Keyring:
    """jl.gov's keys as listed, or (False) a pair made on the server and never handed over."""
    keys = world.keys[ORG]
    return Keyring(
        (keys.signing if signing else SigningKey.generate(),),
        (keys.encryption if encryption else EncryptionKey.generate(),),
    )


@pytest.mark.parametrize(
    ("org", "signing", "encryption", "revoke_enc", "kinds"),
    [
        (ORG, True, True, False, []),
        (ORG, True, False, False, ["encryption"]),  # the dead-letter case
        (ORG, False, True, False, ["signing"]),
        (ORG, False, False, False, ["signing", "encryption"]),
        (ORG, True, True, True, ["encryption"]),  # its only encryption key revoked
        ("jl.nowhere", True, True, False, ["organisation"]),
    ],
)
def test_the_keys_a_directory_does_not_list_as_it_must_are_named(
    world: World,
    org: str,
    *,
    signing: bool,
    encryption: bool,
    revoke_enc: bool,
    kinds: list[str],
) -> None:
    revoked = [world.keys[ORG].encryption.kid] if revoke_enc else []
    directory = live_directory(world, revoked=revoked)
    keyring = held(world, signing=signing, encryption=encryption)

    problems = own_key_problems(directory, org, keyring, now_ms())

    assert [p.kind for p in problems] == kinds
    for problem in problems:
        assert "hubctl directory build" in problem.en
        assert "hubctl directory build" in problem.zh
        assert ".pub.json" in problem.en
    if kinds == ["encryption"] and not revoke_enc:
        [problem] = problems
        assert world.keys[ORG].encryption.kid in problem.en  # the one senders seal to
        assert "dead letters" in problem.en
        assert "死信" in problem.zh


async def test_an_agent_without_its_listed_encryption_key_warns_at_start_and_on_a_new_directory(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install = installed(world, tmp_path / ORG, live_directory(world))
    # 'spoke keygen --force' on the server: a new pair the hub operator never received
    write_private(
        install.folder / "keys" / f"{ORG}.enc.key",
        dump_secret_key(ORG, EncryptionKey.generate()),
        overwrite=True,
    )
    listed = world.keys[ORG].encryption.kid
    agent = SpokeAgent(load_config(install.config))

    with capture_logs() as logs:
        async with running(agent):
            await eventually(lambda: agent.ctx.state.own_keys() is not None, "the start check")
            await agent._directory_root(
                root_publication(live_directory(world, version=2), world.hub_key)
            )
            await eventually(
                lambda: len([e for e in logs if e["event"] == "keys.not_in_directory"]) == 2,
                "the check on the new directory",
            )

    warned = [e for e in logs if e["event"] == "keys.not_in_directory"]
    assert [(e["checked"], e["directory_version"]) for e in warned] == [
        ("start", 1),
        ("directory", 2),
    ]
    assert all(e["kinds"] == ["encryption"] and listed in e["detail"] for e in warned)
    printed = [line for line in capsys.readouterr().err.splitlines() if listed in line]
    assert len(printed) == 2  # one line each time
    assert all(
        line.startswith("spoke run: ") and "死信" in line and "dead letters" in line
        for line in printed
    )

    shown = CliRunner().invoke(app, ["status", "--config", str(install.config)])
    assert shown.exit_code == 0, shown.output
    [keys_line] = [line for line in shown.stdout.splitlines() if line.startswith("KEYS")]
    assert "directory v2" in keys_line
    assert listed in keys_line
    assert "hubctl directory build" in keys_line
