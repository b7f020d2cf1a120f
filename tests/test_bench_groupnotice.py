"""bench/groupnotice.py, a notice to a large group: it runs end to end at a tiny size through a
real broker and hubd, and what it reports holds (no timing is asserted: the machine is
shared)."""

from __future__ import annotations

import math
from pathlib import Path

from bench.groupnotice import SAMPLED, main
from schemas.merkle import HASH_SIZE
from schemas.slots import INLINE_MAX, SLOT_MAX_BYTES


def test_tiny_group_notice_reaches_every_member_with_bytes_independent_of_the_group(
    tmp_path: Path,
) -> None:
    rows = main(["--orgs", "120", "--groups", f"{INLINE_MAX},20,40", "--timeout", "60",
                 "--tmp", str(tmp_path / "run")])  # fmt: skip
    inline, twenty, forty = rows
    for row in rows:
        assert row.notes == [], row.notes
        assert row.messages_per_member == [1]  # every member got it, once
        assert row.verified == min(SAMPLED, row.group)  # verified and opened to the notice
        assert row.received_min is not None
        assert row.received_max is not None
        assert row.received_median is not None
        for figure in ("accepted_s", "all_have_s", "raw_s", "delivered_s", "hub_cpu_s"):
            assert getattr(row, figure) is not None, figure
        assert row.hub_peak_mb
        assert row.broker_peak_mb
    assert [r.connected for r in rows] == [INLINE_MAX, 20, 40]  # nested groups: 40 in all

    # Up to 16 recipients the header names them (v1): the bench's v1 frame is that frame.
    assert inline.header == "v1 (inline)"
    assert inline.slots_upload_bytes == 0
    assert inline.v1_frame_bytes == inline.frame_bytes
    assert inline.received_min == inline.received_max == inline.v1_per_member

    # Above, each member receives the frame, the body, its slot and a proof of log2(G)
    # hashes: the same frame whatever the group, and a proof one hash longer a doubling.
    for row in (twenty, forty):
        assert row.header == "v2 (slots)"
        assert row.received_max is not None
        assert row.received_min is not None
        proof = math.ceil(math.log2(row.group)) * HASH_SIZE
        beside = row.received_max - row.frame_bytes - row.body_bytes
        assert beside <= SLOT_MAX_BYTES + proof + 32  # and the message's own few bytes
        # members differ only by their proof's length (RFC 9162: shorter at the right
        # edge of an unbalanced tree) and their id's
        assert row.received_max - row.received_min <= proof + 16
        assert row.slots_upload_bytes > row.group * 100  # the sender's one upload of all
        assert row.v1_per_member > row.received_max  # every sealed key in every copy
    assert twenty.frame_bytes == forty.frame_bytes
    assert twenty.received_median is not None
    assert forty.received_median is not None
    assert abs(forty.received_median - twenty.received_median) <= HASH_SIZE + 16  # a doubling
    assert forty.v1_per_member - twenty.v1_per_member > 20 * 100  # v1 grows with the group
