"""``hubctl directory`` and ``hubctl broker-config``: what the operator provisions.

The signed directory (build, show; ``publish`` asks the running hub, in hubd.cli) and the brokers'
configuration, ACLs and certificates, both from the topology.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hubd.provision import brokerconf, natsconf, sources
from hubd.provision.directory import (
    DEFAULT_OVERLAP_MS,
    awaiting_lines,
    build_and_sign,
    load_topology,
    read_directory,
)
from hubd.provision.identities import replica_identities
from hubd.provision.keys import (
    ConfigOption,
    HubKeyOption,
    OrgKeysOption,
    TopologyOption,
    hub_files,
    report_build,
)
from hubd.provision.keys import fail as _fail
from runtime.clock import now_ms as _now
from schemas.clock import ms_to_text, parse_duration
from schemas.display import table
from schemas.errors import ConfigError, XchgError
from schemas.topology import Topology

directory_app = typer.Typer(help="Build, sign and inspect the directory.", no_args_is_help=True)


@directory_app.command("build")
def directory_build(
    config: ConfigOption = None,
    topology: TopologyOption = None,
    keys: OrgKeysOption = None,
    hub_key: HubKeyOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the signed directory (default: hub.directory in the config)"
        ),
    ] = None,
    valid_days: Annotated[int, typer.Option(help="Days until the directory expires")] = 30,
    version: Annotated[int | None, typer.Option(help="Version (default: previous + 1)")] = None,
    revoke: Annotated[list[str] | None, typer.Option(help="Key id to revoke (repeatable)")] = None,
    overlap: Annotated[
        str,
        typer.Option(
            help="When an organisation has a new key: how long its old keys stay valid (7d, 36h, 0)"
        ),
    ] = "7d",
) -> None:
    """Sign a directory from the topology and the organisations' public keys. A new key
    beside an organisation's old one rotates it in: valid from now, the old one closing
    after --overlap. Key windows and revocations carry over; the version goes up by one."""
    files = hub_files(
        "hubctl directory build",
        config,
        topology=topology,
        org_keys=keys,
        hub_key=hub_key,
        directory=out,
    )
    out = files.directory
    try:
        overlap_ms = parse_duration(overlap, what="--overlap") if overlap else DEFAULT_OVERLAP_MS
        built = build_and_sign(
            topology_path=files.topology,
            keys_dir=files.org_keys,
            hub_key_path=files.hub_key,
            out=out,
            now=_now(),
            valid_days=valid_days,
            version=version,
            revoke=revoke or [],
            overlap_ms=overlap_ms,
        )
    except (OSError, ValueError, XchgError) as exc:
        raise _fail("hubctl directory build", exc) from exc
    report_build(built, out)


@directory_app.command("show")
def directory_show(
    path: Annotated[
        Path | None,
        typer.Argument(help="A signed directory file (default: hub.directory in the config)"),
    ] = None,
    hub_pub: Annotated[
        Path | None,
        typer.Option(help="The hub's public key file (default: beside hub.key in the config)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Verify a signed directory and print its organisations as a table."""
    try:
        where = sources.resolve(config, path, hub_pub)
        verified = read_directory(where.directory, where.hub_public, now=_now())
    except (OSError, ValueError, XchgError) as exc:
        raise _fail("hubctl directory show", exc) from exc
    d = verified.directory
    typer.echo(
        f"directory v{d.version} (hub {d.hub_id}), issued {ms_to_text(d.issued_at)}, "
        f"expires {ms_to_text(d.expires_at)}"
    )
    rows = [
        (org.id, org.level.value, str(org.clearance), ",".join(org.channels), org.name_zh)
        for org in d.orgs
    ]
    typer.echo(table(("id", "level", "clearance", "channels", "name"), rows))
    typer.echo("groups: " + ", ".join(f"@{g.id} ({len(g.members)})" for g in d.groups))
    for line in awaiting_lines(d.awaiting_own_keys()):
        typer.echo(line)


class Engine(StrEnum):
    MOSQUITTO = "mosquitto"
    NATS = "nats"


def broker_config(
    out: Annotated[Path, typer.Option(help="Folder to write into (one sub-folder per broker)")],
    config: ConfigOption = None,
    topology: TopologyOption = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Where clients reach a broker: HOST[:PORT] for every channel, or "
            "CHANNEL=HOST[:PORT] (repeatable). Goes into the server certificate. With "
            "--engine nats, three per channel: one for each node, in order"
        ),
    ] = None,
    listen: Annotated[
        list[str] | None,
        typer.Option(
            help="The IP address the broker listens on: ADDRESS for every broker, or "
            "CHANNEL=ADDRESS (repeatable). Default 0.0.0.0: every IPv4 interface (only "
            "holders of the channel's certificates get in); :: for IPv6 too"
        ),
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="Only these channels (default: every channel)")
    ] = None,
    shared: Annotated[
        bool, typer.Option(help="One broker for all the channels instead of one per channel")
    ] = False,
    install: Annotated[
        Path | None,
        typer.Option(help="Where the broker/ folder will live on the broker host (conf paths)"),
    ] = None,
    days: Annotated[int, typer.Option(help="Certificate validity in days")] = 825,
    broker_user: Annotated[
        str, typer.Option(help="The broker's system user (given the server key when run as root)")
    ] = "mosquitto",
    renew: Annotated[
        bool, typer.Option(help="Re-issue every certificate (the CA is kept)")
    ] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            help="mosquitto: one Mosquitto per channel; nats: a 3-node NATS cluster per "
            "channel (nats-server 2.10 or later)"
        ),
    ] = Engine.MOSQUITTO,
    hub_replicas: Annotated[
        str | None,
        typer.Option(
            help="The hub's replicas, NAME,NAME (each as its replicas.name): a certificate of "
            "its own for each, clients/<hub id>~NAME.pem|key, with the hub's permissions. "
            "Give it again on every rerun: without it the replicas leave the ACL"
        ),
    ] = None,
) -> None:
    """Write Mosquitto 2.x configuration, ACL, CA and certificates from the topology, or
    with --engine nats a 3-node NATS cluster's configuration per channel."""
    if topology is None:
        topology = hub_files(
            "hubctl broker-config",
            config,
            topology=None,
            org_keys=None,
            hub_key=None,
            directory=None,
        ).topology
    try:
        topo = load_topology(topology)
        chosen = tuple(channel or [c.id for c in topo.channels])
        replicas = replica_names(hub_replicas)
        replica_identities(topo.hub.id, replicas)  # every name checked before writing
        if engine is Engine.NATS:
            _nats_clusters(
                topo,
                chosen,
                out,
                host or [],
                listen or [],
                shared=shared,
                days=days,
                install=install,
                renew=renew,
                replicas=replicas,
            )
            return
        groups = [chosen] if shared else [(c,) for c in chosen]
        if shared and len(chosen) > 1:
            typer.echo(
                "hubctl broker-config: warning: on one broker for several channels a spoke "
                "holds a connection per channel, so client ids cannot be tied to certificates: "
                "any organisation's certificate can take over (and so disconnect) another's "
                "session. Use a broker per channel in production.",
                err=True,
            )
        names = ["shared" if shared else group[0] for group in groups]
        # every --host and --listen checked before the first broker is written
        listeners = [
            brokerconf.listener_for(host or [], name, group, listen or [])
            for name, group in zip(names, groups, strict=True)
        ]
        for name, group, listener in zip(names, groups, listeners, strict=True):
            issued = brokerconf.write_broker(
                topo,
                group,
                out,
                listener,
                name=name,
                days=days,
                install=install,
                broker_user=broker_user or None,
                renew=renew,
                replicas=replicas,
            )
            typer.echo(
                f"{issued.folder}: broker for {', '.join(group)} at {listener.host}:"
                f"{listener.port}, listening on {listener.bind}; certificates issued for "
                f"{', '.join(issued.issued) or 'nobody (all kept)'}"
            )
    except (ConfigError, XchgError, ValueError, OSError) as exc:
        raise _fail("hubctl broker-config", exc) from exc
    typer.echo(
        "Copy each broker/ folder to its broker host, clients/<id>.pem|key and ca.pem to each "
        "organisation (and the hub); keep ca.key with the operator (docs/operations.md)."
    )
    _replicas_told(topo.hub.id, replicas)


def _replicas_told(hub_id: str, replicas: tuple[str, ...]) -> None:
    for name, identity in zip(replicas, replica_identities(hub_id, replicas), strict=True):
        typer.echo(
            f"Hub replica {name}: clients/{identity}.pem|key and ca.pem go to its host, named "
            "by cert/key in its [channels.X] (the comments of each broker's configuration)."
        )


def replica_names(given: str | None) -> tuple[str, ...]:
    """The names of ``--hub-replicas NAME,NAME`` (none without it); each is checked by
    :func:`replica_identities`."""
    if given is None:
        return ()
    names = tuple(name.strip() for name in given.split(","))
    if not all(names):
        raise ValueError(
            f"--hub-replicas {given!r:.80} 中有空的副本名 / --hub-replicas {given!r:.80} has "
            "an empty name; write the replicas' names separated by commas, e.g. a,b"
        )
    return names


def _nats_clusters(
    topology: Topology,
    channels: tuple[str, ...],
    out: Path,
    hosts: list[str],
    binds: list[str],
    *,
    shared: bool,
    days: int,
    install: Path | None,
    renew: bool,
    replicas: tuple[str, ...],
) -> None:
    """``broker-config --engine nats``: a 3-node cluster for each channel."""
    if shared:
        raise ValueError(
            "--shared does not go with --engine nats: one cluster per channel (classified "
            "networks stay physically separate); leave --shared out"
        )
    # every --host and --listen checked before the first cluster is written
    clusters = [(c, natsconf.nodes_for(hosts, c, binds)) for c in channels]
    for channel, nodes in clusters:
        issued = natsconf.write_nats_cluster(
            topology,
            channel,
            out,
            nodes,
            days=days,
            install=install,
            renew=renew,
            replicas=replicas,
        )
        where = ", ".join(f"{n.host}:{n.port}" for n in nodes)
        typer.echo(
            f"{issued.folder}: NATS cluster for {channel} at {where} (routes on "
            f"{', '.join(str(n.route_port) for n in nodes)}), listening on {nodes[0].bind}; "
            f"certificates issued for {', '.join(issued.issued) or 'nobody (all kept)'}"
        )
    typer.echo(
        "Copy each nodeN/ folder to its node's host (--install is where), start each with "
        "'nats-server -c nodeN/nats.conf'; clients/<id>.pem|key and ca.pem go to each "
        "organisation (and the hub); keep ca.key with the operator (docs/operations.md)."
    )
    _replicas_told(topology.hub.id, replicas)
