"""One message read from a broker, and what the intake does with it in a pass."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hubd.store.writes import Operation


@dataclass(frozen=True, slots=True)
class Arrival:
    channel: str
    org: str
    payload: bytes
    at: int
    n: int  # its place among the messages read from the brokers (presence counts too)


@dataclass(frozen=True, slots=True)
class Slow:
    """A message that has to await something: ``work`` runs in a task of its own, and
    picks up where the quick path stopped (nothing is verified twice)."""

    work: Callable[[], Awaitable[None]]


Then = Callable[[Any], None]  # what to do once the operation's result is durable
Step = tuple[Operation, Then] | Slow | None  # None: answered already (refused, say)
