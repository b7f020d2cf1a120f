"""Fuzz target: a topic and its payload, as the hub's intake and the spoke's inbox route them.

Input: the topic's bytes, a NUL, then the payload (no NUL: the whole input is the topic).
The topic is decoded as MQTT does (UTF-8; bytes that are not are replaced, as they cannot
reach us through a broker). ``topics.parse`` is the decoder: it must return None or
validated ids, and a presence payload is online exactly when it equals ``topics.ONLINE``
(the hub's rule; the spoke publishes ``online`` retained and its will says ``offline``).
The spoke's own routing of the directory and ledger topics is followed too.
The documented outcome for a topic not ours is None; any exception is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["schemas", "world"]):
    from schemas import topics
    from schemas.ids import check_org_id


def test_one_input(data: bytes) -> None:
    raw, _, payload = data.partition(b"\x00")
    topic = raw.decode("utf-8", errors="replace")
    where = topics.parse(topic)
    if where is None:
        parts = topic.split("/")  # the spoke's own topics: directory and ledger (spoke.agent)
        if len(parts) == 4 and parts[3] in ("directory", "ledger"):
            topics.parse("/".join([*parts, "x"]))
        return
    check_org_id(where.channel, what="channel id")  # parse validated both ids
    check_org_id(where.org)
    rebuilt = {
        topics.Kind.UP: topics.up,
        topics.Kind.DOWN: topics.down,
        topics.Kind.PRESENCE: topics.presence,
    }[where.kind](where.channel, where.org)
    if rebuilt != topic:
        raise AssertionError(f"parse({topic!r}) is {where}, which makes the topic {rebuilt!r}")
    if where.kind is topics.Kind.PRESENCE:
        _online = payload == topics.ONLINE


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
