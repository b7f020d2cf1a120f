"""Hello lines in a reconnect storm: the first few each second one by one, the rest counted."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from hubd.engine.stormlog import StormLog


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hello(lines: StormLog, org: str, channel: str = "govnet") -> None:
    lines.info("spoke.hello", org=org, channel=channel, last_seq=0)


async def test_hellos_beyond_a_seconds_budget_are_counted_in_one_storm_line() -> None:
    wall = iter([1_700_000_000_000, 1_700_000_000_250])  # the hub's clock, read per count
    lines = StormLog(
        structlog.get_logger("test"), per_second=3, monotonic=Monotonic(), clock=lambda: next(wall)
    )
    with capture_logs() as logs:
        for n in range(5):
            hello(lines, f"jl.cc.s{n}", "govnet" if n < 4 else "internet")
        lines.summarise()
    assert [e["org"] for e in logs if e["event"] == "spoke.hello"] == [
        "jl.cc.s0",
        "jl.cc.s1",
        "jl.cc.s2",
    ]
    storms = [e for e in logs if e["event"] == "spoke.storm"]
    assert len(storms) == 1
    assert storms[0]["hello"] == 2
    assert storms[0]["channels"] == ["govnet", "internet"]
    assert (storms[0]["first_at"], storms[0]["last_at"]) == (1_700_000_000_000, 1_700_000_000_250)


async def test_the_next_second_writes_hellos_one_by_one_again() -> None:
    clock = Monotonic()
    lines = StormLog(structlog.get_logger("test"), per_second=1, monotonic=clock)
    with capture_logs() as logs:
        hello(lines, "jl.cc")
        hello(lines, "jl.jl")  # counted
        clock.now += 1.0
        hello(lines, "jl.sp")
        lines.summarise()
        lines.summarise()  # nothing more counted: no second summary
    assert [e.get("org") for e in logs] == ["jl.cc", "jl.sp", None]
    assert logs[-1]["event"] == "spoke.storm"
    assert logs[-1]["hello"] == 1


async def test_the_storm_line_comes_by_itself_after_the_first_hello_counted() -> None:
    lines = StormLog(structlog.get_logger("test"), per_second=0)
    with capture_logs() as logs:
        hello(lines, "jl.cc")
        assert logs == []
        async with asyncio.timeout(30):
            while True:  # the summary's timer, on the running loop; bounded above
                if logs:
                    break
                await asyncio.sleep(0.05)
    assert [(e["event"], e["hello"]) for e in logs] == [("spoke.storm", 1)]
