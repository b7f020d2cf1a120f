"""What the hub knows of each spoke's presence, and how sure it is.

A spoke's presence is what its broker says: a retained "online" and a will "offline" on its
presence topic. While the hub's connection to that broker is down it knows nothing: every
spoke on those channels is *unknown*, never "offline" (an alert on ``govxchg_spoke_up`` would
page for every spoke at once, for one broker link). Back on the broker, the hub learns
presence again from the retained presence topics, which arrive while it subscribes; what it
knew from before the loss is stale and is shown as unknown until the spoke's presence
arrives again, or until :meth:`PresenceBook.settled` says the retained messages are in (a
spoke the broker holds nothing for is then *unseen*: not connected to that broker).

No I/O and no clock of its own: the dispatcher passes its clock, the hub says when a link
was lost, back and settled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Literal

State = Literal["online", "offline", "unknown", "unseen"]
STATES: Final[tuple[State, ...]] = ("online", "offline", "unknown", "unseen")
Seen = tuple[State, int | None]  # the state word, and since when (ms) where it is known


def presence_state(known: tuple[bool, int] | None) -> Seen:
    """What a presence message said, as a word: never heard of is "unseen"."""
    if known is None:
        return "unseen", None
    online, since = known
    return ("online" if online else "offline"), since


class PresenceBook:
    """Per (channel, org): online or offline since when; per channel: whether it is known."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[bool, int]] = {}  # -> (online, since ms)
        self._stale: set[tuple[str, str]] = set()  # learned before the link was lost
        self._down: set[str] = set()  # channels whose broker link is down

    def set(self, channel: str, org: str, *, online: bool) -> None:
        """A spoke's presence message (or hello) on ``channel``: it is known again."""
        where = (channel, org)
        self._stale.discard(where)
        known = self._known.get(where)
        if known is None or known[0] != online:
            self._known[where] = (online, self._clock())

    def is_online(self, channel: str, org: str) -> bool:
        """What the dispatcher routes by: the last word heard (a stale "online" included:
        a publish on a lost link fails and is tried again anyway)."""
        known = self._known.get((channel, org))
        return known is not None and known[0]

    def last_heard(self, channel: str, org: str) -> tuple[bool, int] | None:
        """(online, since ms) as last heard, however old; None if never heard of."""
        return self._known.get((channel, org))

    def state(self, channel: str, org: str) -> Seen:
        """What the status page, ``hubctl status`` and /metrics say of a spoke."""
        where = (channel, org)
        if channel in self._down or where in self._stale:
            return "unknown", None
        return presence_state(self._known.get(where))

    def channel_known(self, channel: str) -> bool:
        """False while the hub's link to the channel's broker is down."""
        return channel not in self._down

    # ------------------------------------------------------------ the hub's broker links

    def lost(self, channels: Iterable[str]) -> None:
        """The link carrying ``channels`` is down (or not up yet): all of it is unknown."""
        for channel in channels:
            self._down.add(channel)
            self._stale.update(where for where in self._known if where[0] == channel)

    def back(self, channels: Iterable[str]) -> None:
        """The link is up and subscribed: what arrived since is known, the rest stale."""
        self._down.difference_update(channels)

    def settled(self, channels: Iterable[str]) -> list[tuple[str, str]]:
        """The retained presence of ``channels`` has arrived: a spoke still stale has none on
        the broker (it has not connected since the broker started): forget it, so that it
        reads "unseen" and routes as offline. Returns the ones forgotten."""
        wanted = set(channels) - self._down
        gone = [where for where in self._stale if where[0] in wanted]
        for where in gone:
            self._stale.discard(where)
            del self._known[where]
        return gone
