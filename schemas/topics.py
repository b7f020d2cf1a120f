"""The MQTT topic layout, in one place, so that a broker ACL can enforce it.

Every topic is ``xchg/v1/<channel>/<kind>[/<org>]``:

| topic | who publishes | who subscribes |
| --- | --- | --- |
| ``xchg/v1/<ch>/up/<org>`` | that organisation's spoke only | the hub (``up/+``) |
| ``xchg/v1/<ch>/down/<org>`` | the hub only | that organisation's spoke only |
| ``xchg/v1/<ch>/presence/<org>`` | that spoke (retained; its will says offline) | the hub |
| ``xchg/v1/<ch>/directory`` | the hub (retained, signed) | every spoke |
| ``xchg/v1/<ch>/ledger`` | the hub (retained: the latest ledger checkpoint) | every spoke |

The channel is part of every topic so that several channels may share one broker. Ids
are validated (:func:`schemas.ids.check_org_id`) before they become a topic level.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.ids import check_org_id

ROOT = "xchg/v1"
ONLINE = b"online"
OFFLINE = b"offline"


class Kind(StrEnum):
    UP = "up"
    DOWN = "down"
    PRESENCE = "presence"


def _topic(channel: str, kind: Kind, org: str) -> str:
    return f"{ROOT}/{check_org_id(channel, what='channel id')}/{kind}/{check_org_id(org)}"


def up(channel: str, org: str) -> str:
    return _topic(channel, Kind.UP, org)


def down(channel: str, org: str) -> str:
    return _topic(channel, Kind.DOWN, org)


def presence(channel: str, org: str) -> str:
    return _topic(channel, Kind.PRESENCE, org)


def directory(channel: str) -> str:
    return f"{ROOT}/{check_org_id(channel, what='channel id')}/directory"


def dirroot(channel: str) -> str:
    """Where the hub publishes the directory's signed root and its latest change, retained
    (schemas.dirtree): what a spoke takes of the directory whatever its size."""
    return f"{ROOT}/{check_org_id(channel, what='channel id')}/dirroot"


def ledger(channel: str) -> str:
    """Where the hub publishes its latest signed ledger checkpoint (schemas.ledger)."""
    return f"{ROOT}/{check_org_id(channel, what='channel id')}/ledger"


def hub_subscriptions(channel: str) -> tuple[str, ...]:
    """What the hub reads on ``channel``: every up topic, every presence topic, and the
    retained directory (to notice when something else replaced the one it serves)."""
    check_org_id(channel, what="channel id")
    return (
        f"{ROOT}/{channel}/{Kind.UP}/+",
        f"{ROOT}/{channel}/{Kind.PRESENCE}/+",
        directory(channel),
    )


def hub_publications(channel: str) -> tuple[str, ...]:
    """What the hub writes on ``channel``: every down topic, the directory (whole, for
    spokes of earlier releases, and its root), the ledger."""
    check_org_id(channel, what="channel id")
    return (
        f"{ROOT}/{channel}/{Kind.DOWN}/+",
        directory(channel),
        dirroot(channel),
        ledger(channel),
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    channel: str
    kind: Kind
    org: str


def parse(topic: str) -> Parsed | None:
    """The (channel, kind, org) of an up/down/presence topic; None for anything else.

    The org is validated, so a topic level that could not have been produced by this
    module (an id with '+' or '..', say) is never taken for an organisation.
    """
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    try:
        kind = Kind(parts[3])
        check_org_id(parts[2], what="channel id")
        check_org_id(parts[4])
    except ValueError:
        return None
    return Parsed(parts[2], kind, parts[4])
