"""An organisation listed while it awaits its keys: nothing is sealed to it, the hub's
gating and envelope checks refuse a document to it with a sentence that says so (both
languages), and the spoke refuses the drop before anything is sealed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.config import load_config
from hubd.store.db import Store
from runtime.clock import now_ms
from schemas.clock import DAY_MS
from schemas.directory import Directory
from schemas.envelope import verify_envelope
from schemas.errors import DirectoryError, EnvelopeError, Reason, SignatureError
from schemas.gating import Reject, gate
from schemas.labels import Classification
from schemas.seal import seal_bytes
from spoke.checks import gate_drop
from spoke.refusals import Refusal
from tests.hubproc import HubProcess
from tests.world import World

AWAITING = "jl.cc.nongan"


def awaiting(world: World, *orgs: str) -> Directory:
    """The world's directory, with ``orgs`` listed but awaiting their keys."""
    held = dict(world.keys)
    for org in orgs:
        del held[org]
    return dataclasses.replace(world, keys=held).rebuild(version=2)


def test_gating_refuses_a_recipient_awaiting_keys_saying_so_in_both_languages(
    world: World,
) -> None:
    directory = awaiting(world, AWAITING)

    decision = gate("jl.cc", Classification.INTERNAL, [AWAITING], "govnet", directory)

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.ENV_RECIPIENT_AWAITING_KEYS
    assert decision.recipient == AWAITING
    assert "尚待提交密钥" in decision.detail
    assert f"recipient {AWAITING} (" in decision.detail
    assert "is awaiting keys in directory version 2" in decision.detail
    assert "ask the hub operator to sign a new directory" in decision.detail


def test_nothing_is_sealed_to_a_recipient_awaiting_keys(world: World) -> None:
    directory = awaiting(world, AWAITING)
    draft, contents = world.draft("jl.cc", (AWAITING,))

    with pytest.raises(DirectoryError) as info:
        seal_bytes(draft, world.keys["jl.cc"].signing, directory, contents)

    assert info.value.reason is Reason.ENV_RECIPIENT_AWAITING_KEYS


def test_the_hub_refuses_an_envelope_to_a_recipient_its_directory_lists_awaiting_keys(
    world: World,
) -> None:
    # sealed with an older directory that had its keys; the hub's lists it awaiting them
    sealed, _ = world.seal("jl.cc", (AWAITING,))

    with pytest.raises(EnvelopeError) as info:
        verify_envelope(sealed.frame, awaiting(world, AWAITING), expected_sender="jl.cc")

    assert info.value.reason is Reason.ENV_RECIPIENT_AWAITING_KEYS
    assert "is awaiting keys" in info.value.message


def test_the_spoke_refuses_the_drop_naming_the_recipient_and_what_to_do(world: World) -> None:
    directory = awaiting(world, AWAITING)

    with pytest.raises(Refusal) as info:
        gate_drop("jl.cc", Classification.INTERNAL, ["jl.cc.dehui", AWAITING], directory)

    refusal = info.value
    assert refusal.rule == "drop.recipient_awaiting_keys"
    assert AWAITING in refusal.message
    assert "awaiting keys" in refusal.message
    assert "尚待提交密钥" in refusal.message_zh
    assert "hub operator" in refusal.hint


def test_a_sender_awaiting_keys_is_heard_from_by_no_one(world: World) -> None:
    sealed, _ = world.seal(AWAITING, ("jl.cc",))

    with pytest.raises(SignatureError) as info:
        verify_envelope(sealed.frame, awaiting(world, AWAITING), expected_sender=AWAITING)

    assert info.value.reason is Reason.SIG_UNKNOWN_KEY


async def test_hubctl_status_lists_the_organisations_awaiting_keys(
    world: World, tmp_path: Path
) -> None:
    now = now_ms()
    held = {o: k for o, k in world.keys.items() if o != AWAITING}
    directory = dataclasses.replace(world, keys=held).rebuild(
        version=1, issued_at=now - 60_000, expires_at=now + DAY_MS, not_before=now - DAY_MS
    )
    config = HubProcess(tmp_path / "hub", world.hub_key, directory).write()
    (tmp_path / "hub" / "state").mkdir()
    async with Store(load_config(config).store_url()):
        pass  # the store a hub that ran once leaves behind (the hub is stopped now)

    result = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, ["status", "--config", str(config)]
    )
    shown = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, ["status", "--config", str(config), "--json"]
    )

    assert result.exit_code == 0, result.output
    assert f"awaiting keys 尚待提交密钥 (1): {AWAITING}" in result.stdout
    assert json.loads(shown.stdout)["directory"]["awaiting_keys"] == [AWAITING]
