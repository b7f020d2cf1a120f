"""The disk watermark as a table: when the hub refuses new messages, and what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hubd.config import parse_size
from hubd.engine.diskwatch import DiskWatch, Space, judge
from schemas.display import size_text

GIB, MIB = 2**30, 2**20
HUB = Path("/var/lib/govxchg")


@pytest.mark.parametrize(
    "case",
    [
        (10 * GIB, 100 * GIB, 2 * GIB, 5.0, 0, False),  # plenty
        (5 * GIB, 100 * GIB, 2 * GIB, 5.0, 0, False),  # exactly 5 %: still taken
        (5 * GIB - 1, 100 * GIB, 2 * GIB, 5.0, 0, True),  # a byte under 5 %
        (3 * GIB, 20 * GIB, 2 * GIB, 5.0, 0, False),  # 5 % of 20 GiB is 1 GiB: min_free rules
        (2 * GIB - 1, 20 * GIB, 2 * GIB, 5.0, 0, True),  # under min_free
        (3 * GIB, 20 * GIB, 2 * GIB, 5.0, GIB, False),  # a 1 GiB body still leaves 2 GiB
        (3 * GIB, 20 * GIB, 2 * GIB, 5.0, GIB + 1, True),  # one byte more does not
        (0, 20 * GIB, 0, 0.0, 0, False),  # both minimums off: never refused
    ],
)
def test_new_messages_are_refused_exactly_below_the_larger_minimum(
    case: tuple[int, int, int, float, int, bool],
) -> None:
    free, total, min_free, percent, need, refused = case
    why = judge(Space(HUB, free, total), min_free=min_free, min_free_percent=percent, need=need)
    assert (why is not None) is refused


def test_the_refusal_names_the_path_the_free_space_the_minimum_and_what_to_do() -> None:
    why = judge(Space(HUB, 900 * MIB, 100 * GIB), min_free=2 * GIB, min_free_percent=1.0)
    assert why is not None
    assert str(HUB) in why
    assert "900.0 MiB free" in why
    assert "minimum of 2.0 GiB" in why  # the larger of 2 GiB and 1 % (1 GiB)
    assert "min_free 2.0 GiB, min_free_percent 1%" in why
    assert "Send it again later" in why


def test_a_large_body_is_refused_naming_what_it_needs() -> None:
    why = judge(Space(HUB, 3 * GIB, 20 * GIB), min_free=2 * GIB, min_free_percent=0, need=2 * GIB)
    assert why is not None
    assert "this body needs 2.0 GiB" in why


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 * GIB), ("500MB", 500_000_000), ("1.5 GiB", 3 * GIB // 2), ("0", 0), (7, 7)],
)
def test_sizes_are_read_with_their_units(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2 gigabytes", "-1GiB", "GiB", "1e9"])
def test_a_size_without_a_known_unit_is_refused_with_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match='such as "2GiB"'):
        parse_size(text)


def test_size_text_uses_binary_units() -> None:
    assert [size_text(n) for n in (900, 12 * 2**10, 320 * MIB, 3 * GIB // 2)] == [
        "900 B",
        "12.0 KiB",
        "320.0 MiB",
        "1.5 GiB",
    ]


def test_the_watch_logs_going_low_and_recovering_once_each() -> None:
    free = {HUB: 10 * GIB, HUB / "spool": 10 * GIB}

    def measure(path: Path) -> Space:
        return Space(path, free[path], 100 * GIB)

    watch = DiskWatch(
        [HUB, HUB / "spool"], min_free=2 * GIB, min_free_percent=0, every=1, measure=measure
    )
    with capture_logs() as logs:
        assert watch.check() is None
        free[HUB / "spool"] = GIB
        low = watch.check()
        assert watch.check() == low  # still low: logged once
        assert watch.refuse() == low
        free[HUB / "spool"] = 10 * GIB
        assert watch.check() is None
        assert watch.refuse() is None
    assert low is not None
    assert str(HUB / "spool") in low
    assert [e["event"] for e in logs] == ["disk.low", "disk.ok"]


def test_the_watch_refuses_a_body_the_free_space_cannot_take_while_smaller_ones_pass() -> None:
    watch = DiskWatch(
        [HUB],
        min_free=GIB,
        min_free_percent=0,
        every=1,
        measure=lambda path: Space(path, 3 * GIB, 100 * GIB),
    )
    watch.check()
    assert watch.refuse(GIB) is None
    assert watch.refuse(2 * GIB + 1) is not None


def test_a_free_space_that_cannot_be_read_closes_the_intake_and_says_why() -> None:
    def broken(path: Path) -> Space:
        raise PermissionError(13, "Permission denied")

    watch = DiskWatch([HUB], min_free=GIB, min_free_percent=0, every=1, measure=broken)
    why = watch.check()
    assert why is not None
    assert "cannot be read (Permission denied)" in why
