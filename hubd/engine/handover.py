"""Up messages a replica read while it did not own their sender, kept a few seconds in
case it comes to own it (hubd.engine.replicas).

Every replica reads every up topic and takes in only its own senders' messages. While a
bucket changes hands (its replica killed: nobody owns it until the lease runs out and
another claims it; or given back to a joining replica, claimed a round later) no replica
takes a message from its senders, and the spoke would send it again only after its
``resend_every`` (30 s by default). Held here instead, such a message is taken in as soon
as this replica gains the bucket. What the owner took in already is a duplicate by
msg_id in the store, answered ACCEPTED again and delivered once.

Envelopes only. A body's chunks would fill the hold in a large upload and push out the
small messages a hand-over needs (a transfer resumes where it stands); a recipient's
receipt batch, a hello, a question come again by themselves (a delivery is published
again until its DELIVERED is stored; presence is retained), and one already handled by
the owner taken in again would be recorded twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from hubd.engine.arrival import Arrival
from schemas.transport import is_envelope

HOLD_BYTES = 8 * 1024 * 1024  # a few seconds of the other replicas' traffic at most


class HandOver:
    def __init__(self, hold_ms: int, max_bytes: int = HOLD_BYTES) -> None:
        self.hold_ms, self.max_bytes = hold_ms, max_bytes
        self._held: deque[Arrival] = deque()
        self._bytes = 0
        self.taken = 0  # held messages taken in after all (a gained bucket's)

    def hold(self, arrival: Arrival) -> None:
        if not is_envelope(arrival.payload) or len(arrival.payload) > self.max_bytes:
            return  # see the module's docstring

        self._held.append(arrival)
        self._bytes += len(arrival.payload)
        self._trim(arrival.at)

    def take(self, owns: Callable[[str], bool], now: int) -> list[Arrival]:
        """The held messages of senders ``owns`` says this replica has now, in the order
        they were read; the others stay until they are too old."""
        self._trim(now)
        taken = [a for a in self._held if owns(a.org)]
        if taken:
            self._held = deque(a for a in self._held if not owns(a.org))
            self._bytes = sum(len(a.payload) for a in self._held)
            self.taken += len(taken)
        return taken

    def _trim(self, now: int) -> None:
        held = self._held
        while held and (held[0].at < now - self.hold_ms or self._bytes > self.max_bytes):
            self._bytes -= len(held.popleft().payload)

    def __len__(self) -> int:
        return len(self._held)
