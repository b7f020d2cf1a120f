"""What the running hub answers on its admin socket (:mod:`hubd.admin.server`).

``presence`` is read from the dispatcher; ``redeliver`` and ``directory.publish`` change
the hub, so each is logged as ``admin.request`` with the peer's uid, gid and pid (never a
document's data) and audited in the ledger with who asked: ``delivery.redelivered`` per
delivery (:mod:`hubd.ops.redeliver`), ``directory.published`` for a directory now served.
Only the hub's stable parts are used: ``dispatcher``, ``store``, ``current_directory``,
``draining``, ``clock`` and ``reload``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

from hubd.admin.protocol import HubRefusedError, Op, RedeliverArgs, Request
from hubd.admin.server import Peer
from hubd.core.states import DeliveryState
from hubd.engine.dispatch import Dispatcher
from hubd.engine.jobrows import load_jobs
from hubd.ops.redeliver import Target, redeliver
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.writes import Announce, AppendAudit
from runtime.link import Link
from runtime.startup import one_line
from schemas.directory import Directory
from schemas.errors import ConfigError
from schemas.ids import msg_id_text

log = structlog.get_logger("hubd.admin")


class RunningHub(Protocol):
    """The parts of the running hub (:class:`hubd.daemon.Hub`) the admin answers use."""

    dispatcher: Dispatcher | None
    store: Store | None
    clock: Callable[[], int]

    @property
    def current_directory(self) -> Directory | None: ...

    @property
    def draining(self) -> bool: ...

    async def reload(self) -> ConfigError | None: ...

    def broker_links(self) -> list[Link]: ...

    def uplink_links(self) -> list[Link]: ...


class HubAdmin:
    """``HubAdmin(hub).answer`` is the admin server's handler."""

    def __init__(self, hub: RunningHub) -> None:
        self._hub = hub

    async def answer(self, request: Request, peer: Peer) -> dict[str, Any]:
        if request.op is Op.PRESENCE:
            return self.presence()
        if self._hub.draining:
            self._logged(peer, request.op, "refused", why="draining")
            raise HubRefusedError(
                "hub.draining",
                "the hub is stopping (SIGTERM); it reloads stored work at its next start: "
                "ask again then",
            )
        if request.op is Op.REDELIVER:
            assert isinstance(request.args, RedeliverArgs)  # noqa: S101 - parse_request's pairing
            return await self.redeliver(request.args, peer)
        return await self.publish_directory(peer)

    def presence(self) -> dict[str, Any]:
        """Every organisation of this hub's own on each of its channels: online or not, since;
        ``online`` is null (``state`` "unknown") while the hub's link to its broker is down.
        The neighbour hubs (hubs under hubs: the upstream, the members) the same way on each
        channel of their link; an outside organisation has no presence here (its spoke is
        its own hub's). And each broker connection: up or not, and the node it is on."""
        hub, dispatcher, directory = self._hub, self._hub.dispatcher, self._hub.current_directory
        if dispatcher is None or directory is None:
            raise HubRefusedError("hub.starting", "the hub is starting; ask again in a moment")

        def seen(key: str, who: str, channel: str) -> dict[str, Any]:
            state, since = dispatcher.spokes.state(channel, who)
            return {
                key: who,
                "channel": channel,
                "online": None if state == "unknown" else state == "online",
                "state": state,
                "since": since,
            }

        spokes = [
            seen("org", org.id, channel)
            for org in directory.orgs
            if org.via is None
            for channel in org.channels
        ]
        hubs = [
            seen("hub", other.id, channel)
            for other in directory.hubs
            if directory.relaying(other.id)
            for channel in other.channels
        ]
        hop = directory.next_hop
        via = {j.recipient: hop(j.recipient) for j in dispatcher.pending()}  # awaited here
        return {
            "via": {org: hub for org, hub in via.items() if hub != org},
            "hub": directory.hub_id,
            "directory_version": directory.version,
            "at": hub.clock(),
            "spokes": spokes,
            "hubs": hubs,
            # each broker connection and the node it is on (one of its [channels.X] urls)
            "brokers": [
                {
                    "broker": link.name,
                    "channels": list(link.channels),
                    "connected": link.connected.is_set(),
                    "node": link.node if link.connected.is_set() else None,
                }
                for link in hub.broker_links()
            ]
            + [  # a member hub's connections to the hub above it (hubd.engine.uplink)
                {
                    "broker": link.name,
                    "channels": list(link.channels),
                    "connected": link.connected.is_set(),
                    "node": link.node if link.connected.is_set() else None,
                    "upstream": directory.upstream.id if directory.upstream else None,
                }
                for link in hub.uplink_links()
            ],
        }

    async def redeliver(self, args: RedeliverArgs, peer: Peer) -> dict[str, Any]:
        hub, store, dispatcher = self._hub, self._hub.store, self._hub.dispatcher
        if store is None or dispatcher is None:
            raise HubRefusedError("hub.starting", "the hub is starting; ask again in a moment")
        target = Target(args.msg_id_bytes, args.to)
        outcome = await redeliver(
            store.read,
            store.submit,
            target,
            now=hub.clock(),
            requested_by=peer.as_json(),
            via="admin socket",
        )
        if outcome.redelivered:  # durable now: hand the dispatcher what came back
            moved = set(outcome.redelivered)
            jobs = await load_jobs(
                store.read,
                t.deliveries.c.msg_id.in_(sorted({m for m, _ in moved})),
                t.deliveries.c.state == DeliveryState.PENDING.value,
            )
            for job in jobs:
                if job.key in moved and dispatcher.job(job.msg_id, job.recipient) is None:
                    dispatcher.add(job)  # a replica keeps those it owns
            if store.shared:  # the replicas that own the other recipients load theirs
                await store.submit(Announce(sorted({m for m, _ in moved})))
        self._logged(
            peer,
            Op.REDELIVER,
            "done" if outcome.redelivered or not outcome.refused else "refused",
            msg_id=None if args.msg_id is None else msg_id_text(bytes.fromhex(args.msg_id)),
            dead=args.dead,
            to=args.to,
            redelivered=len(outcome.redelivered),
            refused=len(outcome.refused),
        )
        return outcome.as_json()

    async def publish_directory(self, peer: Peer) -> dict[str, Any]:
        hub, store = self._hub, self._hub.store
        before = hub.current_directory
        problem = await hub.reload()
        now = hub.current_directory
        if problem is not None or now is None:
            self._logged(peer, Op.DIRECTORY_PUBLISH, "refused")
            served = "none" if before is None else f"v{before.version}"
            raise HubRefusedError(
                "directory.refused",
                f"新目录文件被拒绝，枢纽继续使用 {served} / the hub refused the new directory "
                f"file and keeps serving {served}: {one_line(str(problem))}",
            )
        if store is not None:
            await store.submit(
                AppendAudit(
                    [
                        AuditEvent(
                            "directory.published",
                            hub.clock(),
                            None,
                            now.hub_id,
                            {
                                "version": now.version,
                                "previous": None if before is None else before.version,
                                "requested_by": peer.as_json(),
                            },
                        )
                    ]
                )
            )
        self._logged(peer, Op.DIRECTORY_PUBLISH, "done", version=now.version)
        return {
            "version": now.version,
            "previous": None if before is None else before.version,
            "expires_at": now.expires_at,
            "orgs": len(now.orgs),
            "channels": [c.id for c in now.channels],
        }

    @staticmethod
    def _logged(peer: Peer, op: Op, outcome: str, **fields: object) -> None:
        log.info(
            "admin.request",
            op=op.value,
            outcome=outcome,
            uid=peer.uid,
            gid=peer.gid,
            pid=peer.pid,
            **fields,
        )
