"""A numbered receipt batch this spoke can never read does not stop the ones behind it.

The hub numbers every batch for a spoke and replays from the spoke's cursor; a batch the
spoke refuses is not counted, so the hub's replay brings it back. That is right when a
newer directory may make it verify (a signature by a key not held yet), and wrong when
nothing will (a newer protocol version, bytes that do not decode): the cursor would stay
behind it for ever, and every later receipt, recall and return with it. Such a batch
(``schema.*``, ``decode.*``) is logged as an error and passed; others are held as before.

In-process, on the fake broker (tests/runtime/test_fakelink_world.py), as
test_receipt_deferred: the real hub and a real agent, the batch handed to ``_receipts``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from schemas import codec
from schemas.keys import DOMAIN_RECEIPT
from tests.runtime.test_fakelink_world import CHANNEL, SENDER, exchange
from tests.spoke.test_receipt_gaps import delivered_by_jl_cc
from tests.world import World


def newer_version(world: World) -> bytes:
    """A hub batch of a protocol version this spoke does not know (v 3), rightly signed."""
    frame = delivered_by_jl_cc(world)
    outer = codec.decode(frame, codec.RECEIPT_FRAME_LIMITS)
    body = codec.decode(outer["rcpt"], codec.RECEIPT_LIMITS)
    body["v"] = 3
    rcpt = codec.encode(body)
    key = world.keys["jl.cc"].signing
    return codec.encode(
        {
            "v": 1,
            "from": "jl.cc",
            "kid": key.kid,
            "rcpt": rcpt,
            "sig": key.sign(DOMAIN_RECEIPT, rcpt),
        }
    )


def badly_signed(world: World) -> bytes:
    frame = delivered_by_jl_cc(world)
    outer = codec.decode(frame, codec.RECEIPT_FRAME_LIMITS)
    outer["sig"] = bytes(len(outer["sig"]))
    return codec.encode(outer)


@pytest.mark.parametrize("kind", ["newer_version", "not_msgpack"])
async def test_a_numbered_batch_this_spoke_cannot_read_is_logged_and_passed(
    world: World, tmp_path: Path, kind: str
) -> None:
    frame = newer_version(world) if kind == "newer_version" else b"\xc1 not a frame"
    async with exchange(world, tmp_path, orgs=(SENDER,)) as ex:
        agent = ex.agents[SENDER]
        assert agent.ctx.book is not None
        await agent.ctx.book.ensure(["jl.cc"])  # the issuer's entry held
        before = agent.ctx.state.cursors().get(CHANNEL, 0)
        with capture_logs() as logs:
            await agent._receipts(CHANNEL, frame, before + 1)
        assert agent.ctx.state.cursors().get(CHANNEL, 0) == before + 1
        [event] = [e for e in logs if e["event"] == "receipt.unreadable_numbered"]
        assert event["log_level"] == "error"
        assert (event["channel"], event["seq"]) == (CHANNEL, before + 1)
        assert event["reason"].startswith(("schema.", "decode."))
        assert event["detail"]
        assert "upgrade the spoke" in event["hint"]


async def test_a_numbered_batch_whose_signature_fails_holds_the_cursor(
    world: World, tmp_path: Path
) -> None:
    async with exchange(world, tmp_path, orgs=(SENDER,)) as ex:
        agent = ex.agents[SENDER]
        assert agent.ctx.book is not None
        await agent.ctx.book.ensure(["jl.cc"])
        before = agent.ctx.state.cursors().get(CHANNEL, 0)
        with capture_logs() as logs:
            await agent._receipts(CHANNEL, badly_signed(world), before + 1)
        assert agent.ctx.state.cursors().get(CHANNEL, 0) == before  # a newer directory may heal it
        [refused] = [e for e in logs if e["event"] == "receipt.refused"]
        assert refused["reason"] == "receipt.bad_signature"
        assert not any(e["event"] == "receipt.unreadable_numbered" for e in logs)
